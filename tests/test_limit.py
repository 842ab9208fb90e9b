"""The distance to the machine's limit (issue 20.3): the multiply probes timed in turn with the paths, each path's
achieved FLOP/s and share, and the per-operation profile. Speed itself is never asserted: the FLOP counts are."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch

from fastnst.models import create_model
from fastnst.models.cost import macs_per_pixel
from fastnst.tools.bench.cli import main
from fastnst.tools.bench.limit import MatmulProbe, limit_rates, op_group, profile_forward, share, training_flops

from .conftest import TINY_MODEL


def test_limit_rates_and_shares_are_flops_over_time() -> None:
    probe = MatmulProbe(torch.float32, torch.device("cpu"), n=64)
    assert probe.flops == 2 * 64 ** 3 and torch.allclose(probe(), probe.a @ probe.b)
    rates = limit_rates({"limit fp32": probe}, {"limit fp32": [0.5, 0.25, 1.0]})
    assert rates == {"fp32": pytest.approx(2 * 64 ** 3 / 0.5)}
    assert share(rates["fp32"] / 4, "fp32", rates) == pytest.approx(0.25)
    assert share(1e9, "bf16", rates) is None  # bf16 not measured: no share rather than a wrong one


def test_profile_counts_every_convolution_and_names_the_layers() -> None:
    torch.manual_seed(0)
    net = create_model("johnson", **TINY_MODEL).eval()
    rows = {r["group"]: r for r in profile_forward(net, torch.rand(1, 3, 48, 64), repeats=1)}
    for group in ("9x9 convolutions (first, last)", "downsampling 3x3 convolutions", "3x3 convolutions",
                  "upsampling: sub-pixel 2x2 conv", "instance norm", "padding"):
        assert group in rows and rows[group]["ms"] > 0, sorted(rows)
    assert rows["9x9 convolutions (first, last)"]["calls"] == 2 and rows["instance norm"]["calls"] == 7
    flops = sum(r["gflops"] for r in rows.values()) * 1e9
    # the MACs/px figure, less the upsampling's weight taps (an einsum on the weights, not on the image)
    assert flops / 2 / (48 * 64) == pytest.approx(macs_per_pixel(net, (48, 64)), rel=1e-2)
    assert rows["instance norm"]["gflops"] == 0 and rows["instance norm"]["flops_per_s"] is None
    assert op_group("convolution", (None, torch.zeros(3, 3, 4, 4), None, [2, 2], [0, 0], [1, 1], True)) == \
        "upsampling: transposed conv"


def test_training_flops_count_forward_and_backward() -> None:
    w = torch.rand(8, 16, requires_grad=True)
    x = torch.rand(4, 8)
    flops = training_flops(lambda: (x @ w).sum().backward())
    assert flops == 2 * 4 * 8 * 16 * 2  # the product and the gradient of w (x needs none)


def test_bench_reports_flops_shares_and_the_profile(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["--quick", "--device", "cpu", "--json", str(out), "--no-peer", "--parts", "train,infer,profile",
                     "--train-variants", "fp32", "--infer-variants", "ort", "--no-trainer"]) == 0
    report, printed = json.loads(out.read_text()), buf.getvalue()
    train = report["train"]
    assert train["flops_per_step"] > 0 and train["limit_flops_per_s"]["fp32"] > 0
    for r in train["results"]:
        assert r["flops_per_s"] == pytest.approx(train["flops_per_step"] / (r["step_ms"] / 1e3))
        assert r["share_of_limit"] == pytest.approx(r["flops_per_s"] / train["limit_flops_per_s"]["fp32"])
    infer = report["infer"]
    for r in infer["results"]:
        w, h = (int(v) for v in r["size"].split("x"))
        assert r["flops_per_s"] == pytest.approx(2 * r["macs_per_pixel"] * w * h * r["images_per_s"])
        assert math.isfinite(r["share_of_limit"]) and r["share_of_limit"] > 0
    assert set(infer["limit_flops_per_s"]) == {"48x32", "64x64"}
    profile = report["profile"]
    assert "fp32" in profile["paths"] and "fp32+cl" in profile["paths"]
    assert any(r["group"] == "instance norm" for r in profile["paths"]["fp32"]["rows"])
    for text in ("GFLOP/s", "of limit", "limit (training", "limit (inference at 48x32)", "PROFILE", "whole forward"):
        assert text in printed


def test_upsampling_taps_are_kept_for_inference_and_never_outlive_the_weight() -> None:
    torch.manual_seed(0)
    net = create_model("johnson", **TINY_MODEL).eval()
    x = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        fresh = net(x)  # no cache: the taps computed in the call
    with torch.inference_mode():
        first, again = net(x), net(x)
    assert torch.equal(first, fresh) and torch.equal(again, fresh)  # the same bits, computed once
    assert "_fastnst_upsample_phase" in net.up1.conv[1].__dict__
    assert not any("upsample" in k for k in net.state_dict())  # never saved in a checkpoint
    with torch.no_grad():
        net.up1.conv[1].weight.mul_(2.0)  # an in-place change (load_state_dict copies in place too)
    with torch.inference_mode():
        changed = net(x)
    with torch.enable_grad():
        expected = net(x).detach()  # training mode path: no cache at all
    assert torch.equal(changed, expected) and not torch.equal(changed, fresh)
