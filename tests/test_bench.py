"""fastnst.bench: the wiring, the report and the reference loop. Speed itself is never asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.formats.openvino import openvino_available
from fastnst.losses import PerceptualLoss
from fastnst.models import TransformerNet
from fastnst.tools.bench.cli import main
from fastnst.inference.fast_paths import FastPath
from fastnst.tools.bench.common import PeakMemory, default_loss, half_support, parse_sizes
from fastnst.tools.bench.data import make_jpegs
from fastnst.tools.bench.reference import ReferenceTrainer

from .conftest import TINY_MODEL

GATYS_LOSS = default_loss()


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "sub" / "bench.json"
    import contextlib
    import io

    import logging
    import warnings

    import pytorch_lightning  # noqa: F401

    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level, filters = rank_zero.level, list(warnings.filters)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--quick", "--device", "cpu", "--json", str(out), "--data-workers", "0", "--no-peer",
                         "--train-variants", "fp32", "--infer-variants", "ort"])
    assert rc == 0
    # the bench quiets Lightning only while it runs: the caller's logging and warnings are as they were
    assert rank_zero.level == level and warnings.filters == filters
    return json.loads(out.read_text()), buf.getvalue()


def test_quick_bench_writes_every_part(quick_report: tuple[dict, str]) -> None:
    report, printed = quick_report
    assert report["machine"]["device"] == "cpu" and report["machine"]["threads"] >= 1
    train = report["train"]["results"]
    assert [r["variant"] for r in train] == ["reference", "fp32", "fp32 (Lightning Trainer)"]
    for r in train:
        assert "error" not in r, r
        assert all(_positive(r[k]) for k in ("step_ms", "images_per_s", "vs_reference"))
        assert r["steps_timed"] == 2
    assert train[0]["vs_reference"] == 1.0

    data = report["data"]
    assert [(r["pipeline"], r["workers"]) for r in data["results"]] == [("jpeg", 0), ("prepared", 0)]
    assert all(_positive(r["images_per_s"]) and _positive(r["images_per_s_per_worker"]) for r in data["results"])
    assert data["prepare"]["images"] == 8 and data["prepare"]["skipped"] == 0 and data["median_size"] == "640x480"

    infer = report["infer"]["results"]
    openvino = [r for r in infer if r["path"].startswith("openvino")]  # beside onnxruntime, where installed
    assert len(openvino) == (2 * (1 + half_support(torch.device("cpu"))["bf16"]) if openvino_available() else 0)
    assert all("error" not in r and r["max_abs_err"] < (0.05 if "bf16" in r["path"] else 1e-4) for r in openvino)
    infer = [r for r in infer if r not in openvino]
    # The reference (pytorch/examples' formulation) and fastnst's eager fp32 are always measured, at every size.
    assert [(r["size"], r["path"]) for r in infer] == [(s, p) for s in ("48x32", "64x64")
                                                      for p in ("reference (pytorch/examples)", "fp32", "onnxruntime")]
    assert all(r["vs_reference"] == 1.0 for r in infer if r["path"].startswith("reference"))
    for r in infer:
        assert "error" not in r, r
        assert _positive(r["images_per_s"]) and _positive(r["ms"]) and _positive(r["vs_reference"])
        assert r["max_abs_err"] < 1e-4  # every fp32 path computes the same image
    assert set(report["seconds"]) == {"train", "data", "infer", "styles"}
    styles = report["styles"]["results"]
    assert [(r["what"], r["styles"]) for r in styles] == [("inference", 1), ("inference", 4), ("training step", 1),
                                                          ("training step", 4)]
    for r in styles:
        assert "error" not in r, r
        assert _positive(r["ms"]) and _positive(r["images_per_s"])
    assert styles[1]["max_abs_diff"] < 1e-5  # the 4-style network computes the 1-style network's image
    assert all(math.isfinite(r["cost"]) for r in styles if r["styles"] == 4)
    for header in ("TRAINING", "vs reference", "DATA", "per worker", "INFERENCE", "vs reference", "onnxruntime",
                   "CONDITIONING"):
        assert header in printed


def test_fast_path_names_parse_and_bad_ones_fail_in_one_sentence(capsys: pytest.CaptureFixture) -> None:
    assert FastPath.parse("bf16+cl+compile") == FastPath("bf16", True, True)
    assert FastPath.parse("fp32").name == "fp32" and FastPath.parse("CL+fp16").name == "fp16+cl"
    assert FastPath.parse("ort").name == "onnxruntime" and FastPath.parse("fp16").dtype == torch.float16
    # the benchmark's short word and --tune's long one are the same path, levels included
    assert FastPath.parse("ort") == FastPath.parse("onnxruntime") == FastPath(ort_level="all")
    assert FastPath.parse("ort+basic").name == "onnxruntime+basic" and FastPath.parse("fp32+ort").ort
    for path in ("fp32", "bf16+cl", "fp16+cl+compile", "onnxruntime", "onnxruntime+extended"):
        assert FastPath.parse(path).name == path
    with pytest.raises(UserError, match="unknown part 'turbo' of the fast path 'fp32\\+turbo'"):
        FastPath.parse("fp32+turbo")
    for bad in ("ort+bf16", "ort+cl", "fp32+extended"):
        with pytest.raises(UserError, match="onnxruntime"):
            FastPath.parse(bad)
    with pytest.raises(UserError, match="one precision"):
        FastPath.parse("fp32+bf16")
    assert parse_sizes("256, 1920x1080") == [(256, 256), (1920, 1080)]
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        parse_sizes("big")
    assert main(["--quick", "--train-variants", "fp32+warp"]) == 2
    assert "unknown part 'warp' of the fast path 'fp32+warp'" in capsys.readouterr().err
    assert main(["--parts", "train,everything"]) == 2
    assert "--parts" in capsys.readouterr().err
    assert main(["--quick", "--train-variants", "ort"]) == 2
    assert "inference path only" in capsys.readouterr().err
    assert main(["--quick", "--styles", "1"]) == 2
    assert "--styles must be at least 2" in capsys.readouterr().err


def test_reference_loop_computes_the_projects_loss() -> None:
    """Same network weights, VGG19 and layers: the pytorch/examples-style loop (0-255 pixels, repeated
    style Grams, full VGG on the content) and PerceptualLoss give the same loss, so the benchmark
    compares two ways of doing the same work."""
    torch.manual_seed(0)
    style = torch.rand(1, 3, 40, 40)
    x = torch.rand(2, 3, 32, 32)
    ref = ReferenceTrainer(TINY_MODEL, GATYS_LOSS, style, 2, torch.device("cpu"))
    net = TransformerNet(**TINY_MODEL)
    net.load_state_dict(ref.transformer.state_dict())
    ours = PerceptualLoss(**GATYS_LOSS, style_images=[style])
    expected = float(ours(net(x), x)["total"].detach())
    before = [p.detach().clone() for p in ref.transformer.parameters()]
    got = ref.step(x * 255)
    assert got == pytest.approx(expected, rel=2e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, ref.transformer.parameters()))  # it trained


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(64, 2**20 // 4)  # 64 MiB, touched
        assert block.sum() > 0
    assert 40 < mem.peak_mib < 1000
    del block


def test_synthetic_jpegs_are_coco_sized(tmp_path: Path) -> None:
    files = make_jpegs(tmp_path, 2)
    for f in files:
        with Image.open(f) as im:
            assert im.size == (640, 480) and im.format == "JPEG"
    assert files[0].read_bytes() != files[1].read_bytes()


def test_content_targets_stop_at_the_deepest_content_layer() -> None:
    """The training fast path: content features come from VGG19 cut at relu4_2 (not relu5_1), unchanged."""
    loss = PerceptualLoss(**GATYS_LOSS, style_images=[torch.rand(1, 3, 32, 32)])
    x = torch.rand(2, 3, 48, 48)
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: seen.append(k)) for k, m in enumerate(loss.vgg.features)]
    targets = loss.content_targets(x)
    for h in hooks:
        h.remove()
    full = loss.vgg(x)
    assert list(targets) == ["relu4_2"] and torch.equal(targets["relu4_2"], full["relu4_2"])
    assert max(seen) == 22  # relu4_2 is features[22]; relu5_1 would be features[29]
    with pytest.raises(ValueError, match="not among"):
        loss.vgg(x, ["relu1_2"])
