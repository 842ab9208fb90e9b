"""fastnst.optimize: Gatys-style optimisation under the training loss code, both optimisers, and its CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.losses import PerceptualLoss
from fastnst.losses.presets import load_preset, preset_names
from fastnst.media.image import pil_to_tensor
from fastnst.tools.optimize import main, optimize_image

from .conftest import ROOT, make_painting, make_photo

SEED_STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
# The gatys preset's weights are for ImageNet VGG; under the random VGG of tests this balance lets style dominate.
TEST_WEIGHTS = {"content_weight": 1.0, "style_weight": 1.0e3, "tv_weight": 0.0, "vgg_weights": "random"}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread: None) -> None:
    """Two threads on two busy cores are several times slower than one for these small images."""


@pytest.fixture(scope="module")
def gatys_loss() -> PerceptualLoss:
    """The seed text's loss (gatys preset: relu4_2; relu1_1 ... relu5_1; Gram / HW) under a random VGG."""
    style = pil_to_tensor(make_painting(64)).unsqueeze(0)
    return PerceptualLoss(**{**load_preset("gatys"), **TEST_WEIGHTS}, style_images=[style])


@pytest.fixture(scope="module")
def content() -> torch.Tensor:
    return pil_to_tensor(make_photo(1, (64, 56))).unsqueeze(0)


def test_presets_hold_plain_loss_arguments() -> None:
    assert {"gatys", "johnson"} <= set(preset_names())
    gatys = load_preset("gatys")
    assert gatys["content_layers"] == ["relu4_2"] and gatys["style_layers"] == SEED_STYLE_LAYERS
    assert gatys["gram_norm"] == "hw"
    for name in preset_names():
        settings = load_preset(name)
        # "1.0e5" is a string to PyYAML: the loader must read numbers as Hydra does.
        assert all(isinstance(settings[k], float) for k in ("content_weight", "style_weight", "tv_weight")), name


def test_preset_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="gatys.*johnson|johnson.*gatys"):
        load_preset("no_such_preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("content_layers: [relu4_2]\nstyle_wieght: 1.0\n")
    with pytest.raises(UserError, match="unknown key 'style_wieght'"):
        load_preset(str(bad))


@pytest.mark.parametrize("optimizer, init, steps, lr", [("adam", "content", 30, 0.05), ("lbfgs", "noise", 20, None)])
def test_optimisation_lowers_style_loss_by_a_large_factor(gatys_loss: PerceptualLoss, content: torch.Tensor,
                                                          optimizer: str, init: str, steps: int, lr: float | None) -> None:
    result = optimize_image(content, gatys_loss, steps=steps, optimizer=optimizer, init=init, lr=lr)
    first, last = result.history[0]["style"], result.final["style"]
    assert result.steps == steps and not result.converged
    assert last < first / 10, f"{optimizer}: style loss {first:.4g} -> {last:.4g}"
    assert result.final["total"] < result.history[0]["total"] / 5
    if init == "content":
        assert result.history[0]["content"] == 0.0
    # Valid pixels on 8-bit levels, as saved; the final terms are those of exactly these pixels.
    img = result.image
    assert img.shape == content.shape and img.min() >= 0 and img.max() <= 1
    assert torch.equal(img * 255, (img * 255).round())
    with torch.no_grad():
        again = gatys_loss(img, content)
    assert again["style"].item() == pytest.approx(result.final["style"], rel=1e-5)
    assert again["content"].item() == pytest.approx(result.final["content"], rel=1e-5, abs=1e-12)


def test_intermediate_images_every_k_steps(gatys_loss: PerceptualLoss, content: torch.Tensor) -> None:
    seen: list[tuple[int, float, float]] = []
    result = optimize_image(content, gatys_loss, steps=4, optimizer="lbfgs", save_every=2,
                     on_save=lambda step, x: seen.append((step, x.min().item(), x.max().item())))
    assert [s for s, _, _ in seen] == [2] and result.saved == [2]  # step 4 is the output itself
    assert all(0 <= lo and hi <= 1 for _, lo, hi in seen)
    assert [h["step"] for h in result.history] == [0, 2, 4]


def test_bad_arguments_are_user_errors(gatys_loss: PerceptualLoss, content: torch.Tensor) -> None:
    with pytest.raises(UserError, match="--optimizer"):
        optimize_image(content, gatys_loss, steps=2, optimizer="sgd")
    with pytest.raises(UserError, match="--steps"):
        optimize_image(content, gatys_loss, steps=0)


def _images(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "photo.jpg", tmp_path / "painting.png"
    make_photo(3, (80, 70)).save(content, quality=95)
    make_painting(64).save(style)
    return content, style


@pytest.mark.parametrize("case, message", [
    ("missing content", r"content image \S*missing.jpg does not exist"),
    ("content not an image", r"content image \S*notes.jpg is not a readable image"),
    ("style not an image", r"style image \S*notes.jpg is not a readable image"),
    ("bad output", r"output \S*out.txt has no image extension"),
    ("bad preset", r"loss preset 'nope' does not exist"),
])
def test_bad_input_one_sentence_nonzero_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                                             message: str) -> None:
    content, style = _images(tmp_path)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    argv = {"missing content": ["--content", str(tmp_path / "missing.jpg"), "--style", str(style)],
            "content not an image": ["--content", str(notes), "--style", str(style)],
            "style not an image": ["--content", str(content), "--style", str(notes)],
            "bad output": ["--content", str(content), "--style", str(style)],
            "bad preset": ["--content", str(content), "--style", str(style), "--preset", "nope"]}[case]
    out = tmp_path / ("out.txt" if case == "bad output" else "out.png")
    assert main([*argv, "-o", str(out), "--steps", "2", "--size", "64", "--vgg-weights", "random", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastnst: error: "), err
    assert "Traceback" not in err[0]
    assert re.search(message, err[0]), err[0]
    assert not out.exists()


@pytest.mark.slow
def test_cli_end_to_end(tmp_path: Path) -> None:
    content, style = _images(tmp_path)
    out = tmp_path / "result" / "gatys.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fastnst.optimize", "--content", str(content), "--style", str(style), "-o", str(out),
           "--size", "64", "--steps", "6", "--save-every", "3", "--optimizer", "lbfgs", "--vgg-weights", "random",
           "--content-weight", "1", "--style-weight", "1e3", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "loss fell from" in proc.stdout
    assert "RANDOM" in proc.stderr  # the run says its VGG is only for tests
    with Image.open(out) as img:
        assert img.size == (64, 56)  # longer side --size, aspect kept
    assert (tmp_path / "result" / "gatys.step0003.png").is_file()
    report = json.loads((tmp_path / "result" / "gatys.losses.json").read_text())
    # Explicit flags override the preset; the rest of the gatys preset is kept.
    assert report["loss"]["content_weight"] == 1.0 and report["loss"]["style_weight"] == 1000.0
    assert report["loss"]["content_layers"] == ["relu4_2"] and report["loss"]["style_layers"] == SEED_STYLE_LAYERS
    assert report["vgg_weights"] == "random" and "only for tests" in report["note"]
    assert report["steps"] == 6 and report["history"][-1]["step"] == 6
    assert report["final"]["total"] < report["history"][0]["total"]
    assert set(report["final"]) >= {"total", "content", "style", "tv", *(f"style/{n}" for n in SEED_STYLE_LAYERS)}


def test_lbfgs_tolerances_follow_the_loss_scale(content: torch.Tensor) -> None:
    """With a loss of ~1e-9 (random VGG, tiny weights) L-BFGS stopped before its first step and returned the
    content image (issue 9.8); its tolerances now apply to the loss relative to its starting value."""
    style = pil_to_tensor(make_painting(64)).unsqueeze(0)
    tiny = PerceptualLoss(**{**load_preset("gatys"), **TEST_WEIGHTS, "content_weight": 1e-6, "style_weight": 1e-6},
                          style_images=[style])
    result = optimize_image(content, tiny, steps=4, optimizer="lbfgs")
    assert result.steps == 4 and not result.converged and not result.unchanged
    assert result.final["total"] < 0.9 * result.history[0]["total"] < 1e-6


def test_the_summary_says_which_way_the_loss_went() -> None:
    from fastnst.tools.optimize import describe_change

    assert describe_change(4.6e-06, 1.4e-05) == "rose from 4.6e-06 to 1.4e-05 (3.04x higher)"
    assert describe_change(2.0, 0.5) == "fell from 2 to 0.5 (4x lower)"
    assert describe_change(1.0, 1.0) == "did not change (1)"


def test_an_unchanged_output_is_said_out_loud(tmp_path: Path, capsys) -> None:
    content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "o.png"
    make_photo(1, (40, 32)).save(content)
    make_painting(48).save(style)
    assert main(["--content", str(content), "--style", str(style), "-o", str(out), "--vgg-weights", "random",
                 "--size", "32", "--steps", "1", "--lr", "1e-12", "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning: the saved image is the unchanged content image" in err
