"""The fast path never breaks training (issue 20): the documented fast training path follows fp32 on this CPU, paths
known to fail on a CPU class are avoided and said in one sentence, a NaN in the first steps of a compiled bf16 run
is that sentence, and the benchmark and --tune never choose a variant that failed. Speed is never asserted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from fastnst.errors import UserError
from fastnst.inference import known_failures
from fastnst.inference.devices import cpu_half_support
from fastnst.inference.fast_paths import FastPath
from fastnst.inference.known_failures import KnownFailure, find
from fastnst.tools.bench.report import format_report
from fastnst.tools.bench.training import check_losses
from fastnst.tools.bench.tune import tune_size
from fastnst.training import fit
from fastnst.training.config import avoid_known_failures
from fastnst.training.fast_path import NonFiniteLossError, check_fast_path_gradients
from fastnst.training.module import StyleTransferModule

from .conftest import TINY_LOSS, TINY_MODEL, make_photo, tiny_config
from .test_infer import infer_main

AMX = ("AVX512", "AVX512-BF16", "AMX", "AMX-BF16")


class _Losses(pl.Callback):
    """The training loss of every step, as the module returned it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


@pytest.mark.skipif(not cpu_half_support()["bf16"], reason="this CPU has no native bf16 kernels (AVX512-BF16, AMX or "
                    "ARM BF16): bf16 is emulated here, so the fast path is fp32 on this CPU and has nothing to follow")
def test_the_documented_fast_training_path_follows_fp32_on_this_cpu(photo_dir: Path, style_path: Path,
                                                                      tmp_path: Path) -> None:
    """docs/train.md's fast path (bf16-mixed + channels_last + compile), as `fastnst train` resolves it on this CPU
    (a known failure is avoided first), against fp32 from the same seed: same weights, same batches."""
    steps = 4
    runs = {}
    for name, extra in (("fp32", {"trainer.precision": "32-true"}),
                        ("fast", {"trainer.precision": "bf16-mixed", "channels_last": True, "compile": True})):
        record = _Losses()
        cfg = tiny_config(photo_dir, style_path, **{"trainer.max_steps": steps, **extra})
        # VGG19 up to relu1_2 only: less to compile (the compiled network, forward and backward, is what matters)
        cfg["loss"] = {**TINY_LOSS, "content_layers": ["relu1_2"], "style_layers": ["relu1_1", "relu1_2"]}
        fit(cfg, tmp_path / name, callbacks=[record])
        runs[name] = record.losses
    assert len(runs["fp32"]) == len(runs["fast"]) == steps
    assert all(math.isfinite(v) for v in runs["fast"]), runs
    worst = max(abs(a - b) / abs(b) for a, b in zip(runs["fast"], runs["fp32"]))
    assert worst <= 0.10, f"the fast path's loss left fp32's by {worst:.1%}: {runs}"


def test_known_failure_rule_names_cpu_torch_and_path() -> None:
    rule = find("train", "bf16", True, features=AMX, torch_version="2.14.1")
    assert rule is not None and rule.avoid == {"compile": False, "channels_last": True}
    assert find("train", "bf16", True, features=AMX, torch_version="2.14.0+cpu") is rule
    assert find("train", "bf16", True, features=("AVX512", "AVX512-BF16"), torch_version="2.14.1") is None  # no AMX
    assert find("train", "bf16", True, features=AMX, torch_version="2.15.0") is None  # not seen there
    assert find("train", "bf16", False, features=AMX, torch_version="2.14.1") is None  # eager bf16 trains
    assert find("train", "fp32", True, features=AMX, torch_version="2.14.1") is None  # fp32 + compile trains
    assert find("train", "bf16", True, device="cuda", features=AMX, torch_version="2.14.1") is None
    assert find("infer", "bf16", True, features=AMX, torch_version="2.14.1") is None  # inference was fine there
    text = rule.sentence("trainer.precision=bf16-mixed with compile=true", applied=False)
    assert "\n" not in text and "NaN" in text and "AMX" in text and "compile=false" in text


def test_train_avoids_a_known_failure_in_one_sentence(monkeypatch: pytest.MonkeyPatch, photo_dir: Path,
                                                       style_path: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(known_failures, "cpu_features", lambda: list(AMX))
    monkeypatch.setattr(known_failures.torch, "__version__", "2.14.1")
    cfg = tiny_config(photo_dir, style_path, **{"trainer.max_steps": 2, "trainer.precision": "bf16-mixed",
                                                "compile": True})
    said: list[str] = []
    fixed = avoid_known_failures(cfg, say=said.append)
    assert fixed["compile"] is False and fixed["channels_last"] is True and cfg["compile"] is True
    assert len(said) == 1 and "known to stop with a NaN loss" in said[0] and "known_failures=ignore" in said[0]
    kept = avoid_known_failures({**cfg, "known_failures": "ignore"}, say=said.append)
    assert kept["compile"] is True and "running it anyway" in said[1]
    with pytest.raises(UserError, match="known_failures='sometimes' is not valid"):
        avoid_known_failures({**cfg, "known_failures": "sometimes"})
    gpu = {**cfg, "trainer": {**cfg["trainer"], "accelerator": "gpu"}}
    assert avoid_known_failures(gpu, say=said.append) is gpu and len(said) == 2  # the rule is about CPUs
    # through the real run: trains uncompiled (no compilation happens: this takes seconds) and says why
    result = fit(cfg, tmp_path / "run")
    assert result.global_step == 2
    hparams = torch.load(result.last_checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["compile"] is False and hparams["channels_last"] is True
    assert "running trainer.precision=bf16-mixed channels_last=true compile=false instead" in capsys.readouterr().out


def test_stylize_says_and_avoids_a_path_known_to_fail(monkeypatch: pytest.MonkeyPatch, trained_ckpt: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rule = KnownFailure(task="infer", precision="fp32", compile=True, cpu_features=(), torch_from="0",
                        torch_before="99", symptom="return black images", instead="--precision fp32 (no --compile)",
                        seen="a test", avoid={"compile": False})
    monkeypatch.setattr(known_failures, "KNOWN_FAILURES", (rule,))
    photo = tmp_path / "p.png"
    make_photo(1, (40, 32)).save(photo)
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "out.png", "--device", "cpu", "--compile") == 0
    err = capsys.readouterr().err
    assert "--precision fp32 --compile is known to return black images" in err and "running --precision fp32 (no " \
        "--compile) instead" in err
    assert (tmp_path / "out.png").is_file()


def _module(style_path: Path, compile: bool) -> StyleTransferModule:
    torch.manual_seed(0)
    return StyleTransferModule(style_images=[str(style_path)], style_size=64, network=dict(TINY_MODEL),
                               loss=dict(TINY_LOSS), compile=compile)  # setup() not called: nothing is compiled


def test_a_nan_in_the_first_steps_of_compiled_bf16_is_one_sentence(style_path: Path) -> None:
    x = torch.full((2, 3, 32, 32), float("nan"))
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(NonFiniteLossError) as info:
        _module(style_path, compile=True).training_step((x, 0), 0)
    text = str(info.value)
    assert "bf16 + compile run on this CPU" in text and "compile=false" in text and "repro_bf16_compile.py" in text
    assert "\n" not in text
    # an uncompiled or fp32 run keeps the ordinary message (a learning-rate problem, most likely; the run adds which
    # checkpoint it kept, then this hint)
    for compiled in (False, True):
        with pytest.raises(NonFiniteLossError, match="the training loss became nan at step 0") as ordinary:
            _module(style_path, compile=compiled).training_step((x, 0), 0)
        assert "lower optim.lr" in (ordinary.value.hint or "")
    # non-finite gradients are caught before the optimizer step makes every weight NaN
    module = _module(style_path, compile=True)
    for p in module.network.parameters():
        p.grad = torch.zeros_like(p)
    next(module.network.parameters()).grad[0] = float("inf")
    check_fast_path_gradients(module)  # fp32: not the fast path's business
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(NonFiniteLossError, match="gradients became"):
        check_fast_path_gradients(module)


def test_bench_never_counts_a_diverged_training_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_failures, "cpu_features", lambda: list(AMX))
    monkeypatch.setattr(known_failures.torch, "__version__", "2.14.1")
    results = {name: {"variant": name, "step_ms": 10.0, "images_per_s": 200.0, "vs_reference": 2.0}
               for name in ("fp32", "bf16+cl", "bf16+cl+compile", "fp32+compile")}
    results["reference"] = {"variant": "reference", "step_ms": 20.0, "images_per_s": 100.0, "vs_reference": 1.0}
    losses = {"fp32": [10.0, 8.0, 6.0], "bf16+cl": [10.1, 8.2, 6.1], "bf16+cl+compile": [10.0, float("nan"), 5.0],
              "fp32+compile": [10.0, 8.0, 8.0]}
    check_losses(results, losses)
    assert "error" not in results["bf16+cl"] and results["bf16+cl"]["loss_vs_fp32"] == pytest.approx(0.025)
    assert results["bf16+cl+compile"]["error"] == "diverged: non-finite loss"
    assert results["fp32+compile"]["error"].startswith("diverged: loss 33% away from fp32's")
    assert "known to stop with a NaN loss" in results["bf16+cl+compile"]["known_failure"]  # measured, and said
    assert "known_failure" not in results["bf16+cl"]
    report = {"machine": {"date": "d", "device": "cpu", "torch": "t", "threads": 2, "cpu": "c", "isa": []},
              "train": {"image_size": 32, "batch_size": 2, "timed_steps": 3, "warmup_steps": 0,
                        "loss_layers": {"content": ["relu2_1"], "style": ["relu1_1"]},
                        "results": [results[n] for n in ("reference", "fp32", "bf16+cl", "bf16+cl+compile")]}}
    text = format_report(report)
    assert "fastnst bf16+cl+compile" in text and "failed" in text and "diverged: non-finite loss" in text
    assert "known to fail: training with bf16+cl+compile is known to stop with a NaN loss" in text


def test_tune_never_chooses_a_path_that_failed() -> None:
    def build(choice: FastPath):
        if choice.name == "fp32+cl":
            raise RuntimeError("no C++ compiler")
        if choice.name == "bf16":
            return lambda x: torch.full_like(x, float("nan"))  # fast and broken
        return lambda x: x.clone()

    paths = [FastPath(), FastPath(channels_last=True), FastPath("bf16")]
    result = tune_size(build, paths, (16, 16), 0.03, lambda s: None)
    rows = {r["path"]: r for r in result["candidates"]}
    assert result["choice"] == "fp32" and "no C++ compiler" in rows["fp32+cl"]["error"]
    assert math.isnan(rows["bf16"]["max_abs_err"])
