"""fastnst.evaluate: the numbers (zero where they must be, ordered where they must be), the report, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastnst.errors import UserError
from fastnst.losses import PerceptualLoss
from fastnst.losses.presets import load_preset
from fastnst.media.image import load_image, pil_to_tensor
from fastnst.tools.evaluate import evaluate, format_report, luminance_ssim, main, measure, summarise
from fastnst.tools.optimize import optimize_image

from .conftest import ROOT, TINY_LOSS, make_painting, make_photo

TINY_STYLE_LAYERS = TINY_LOSS["style_layers"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread: None) -> None:
    """Two threads on two busy cores are several times slower than one for these small images."""


@pytest.fixture(scope="module")
def style() -> torch.Tensor:
    return pil_to_tensor(make_painting(64)).unsqueeze(0)


@pytest.fixture(scope="module")
def gatys_loss(style: torch.Tensor) -> PerceptualLoss:
    settings = {**load_preset("gatys"), "content_weight": 1.0, "style_weight": 1.0e3, "vgg_weights": "random"}
    return PerceptualLoss(**settings, style_images=[style])


def test_style_image_against_itself_is_zero(gatys_loss: PerceptualLoss, style: torch.Tensor) -> None:
    m = measure(style, style, gatys_loss)
    assert m["style"] == 0.0 and m["content"] == 0.0 and m["total"] == m["tv"]
    assert all(m[f"style/{n}"] == 0.0 for n in gatys_loss.style_layers)
    assert m["ssim"] == pytest.approx(1.0)
    assert m["tv_raw"] > 0  # the stripes are anything but flat


def test_optimised_output_beats_the_content_image_on_style(gatys_loss: PerceptualLoss) -> None:
    content = pil_to_tensor(make_photo(2, (64, 56))).unsqueeze(0)
    result = optimize_image(content, gatys_loss, steps=15, optimizer="lbfgs")
    plain = measure(content, content, gatys_loss)
    styled = measure(result.image, content, gatys_loss)
    assert styled["style"] < plain["style"] / 5
    assert plain["content"] == 0.0 < styled["content"]
    assert styled["ssim"] < plain["ssim"] == pytest.approx(1.0)
    # evaluate's numbers are the optimiser's numbers: one loss code.
    assert styled["style"] == pytest.approx(result.final["style"], rel=1e-5)


def test_ssim_orders_similarity() -> None:
    a = pil_to_tensor(make_photo(4, (64, 48))).unsqueeze(0)
    noisy = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert luminance_ssim(a, a) == pytest.approx(1.0)
    assert luminance_ssim(noisy, a) < 0.95
    assert luminance_ssim(1 - a, a) < luminance_ssim(noisy, a)


def test_summarise_mean_median_worst() -> None:
    rows = [{"style": 1.0, "ssim": 0.9}, {"style": 5.0, "ssim": 0.2}, {"style": 3.0, "ssim": 0.5}]
    s = summarise(rows, ["a", "b", "c"])
    assert s["style"] == {"mean": 3.0, "median": 3.0, "worst": 5.0, "worst_image": "b"}
    assert s["ssim"]["worst"] == 0.2 and s["ssim"]["worst_image"] == "b"  # SSIM: lower is worse
    assert s["ssim"]["mean"] == pytest.approx(1.6 / 3)


def test_report_of_a_checkpoint(trained_ckpt: Path, style_path: Path, photo_dir: Path) -> None:
    report = evaluate(trained_ckpt, style_path, photo_dir, size=64, device="cpu")
    assert report["count"] == 12 and not report["skipped"]
    assert report["loss_source"] == "the checkpoint's training loss"
    assert report["loss"]["style_layers"] == {n: 1.0 for n in TINY_STYLE_LAYERS}
    assert report["vgg_weights"] == "random" and "only for tests" in report["note"]
    model = report["summary"]["model"]
    assert set(model) == {"total", "content", "style", "tv", "tv_raw", "ssim", "latency_ms",
                          *(f"style/{n}" for n in TINY_STYLE_LAYERS)}
    for key, stats in model.items():
        if key == "ssim":
            assert stats["worst"] <= stats["median"] and stats["worst"] <= stats["mean"]
        else:
            assert stats["worst"] >= stats["median"] and stats["worst"] >= stats["mean"] > 0, key
    assert all(max(r["size"]) == 64 for r in report["per_image"])  # every image measured at --size
    # The per-image numbers are measure() of the network's (8-bit) output under the checkpoint's loss.
    from fastnst.formats.checkpoint import load_network
    from fastnst.losses.presets import loss_settings
    from fastnst.media.image import load_style_image, resize_longer_to

    net, info = load_network(trained_ckpt)
    loss = PerceptualLoss(**loss_settings(info.training.loss),
                          style_images=[load_style_image(style_path, info.training.style_size)])
    row = report["per_image"][3]
    x = pil_to_tensor(resize_longer_to(load_image(photo_dir / row["image"]), 64)).unsqueeze(0)
    with torch.no_grad():
        y = net(x).clamp(0, 1).mul(255).round().div(255)
    again = measure(y, x, loss)
    assert again["style"] == pytest.approx(row["model"]["style"], rel=1e-4)
    assert again["ssim"] == pytest.approx(row["model"]["ssim"], rel=1e-4)
    text = format_report(report)
    assert "mean" in text and "median" in text and "worst" in text and "RANDOM" in text


def test_compare_measures_another_set_side_by_side(trained_ckpt: Path, style_path: Path, photo_dir: Path,
                                                   tmp_path: Path) -> None:
    # The "other tool" returns the photos themselves, as PNG: zero content loss, SSIM 1.
    other = tmp_path / "other"
    other.mkdir()
    names = sorted(p.name for p in photo_dir.glob("*.jpg"))[:4]
    for name in names[:3]:
        load_image(photo_dir / name).save(other / Path(name).with_suffix(".png").name)
    load_image(photo_dir / names[3]).crop((0, 0, 40, 60)).save(other / Path(names[3]).with_suffix(".png").name)
    report = evaluate(trained_ckpt, style_path, photo_dir, size=64, compare=other, device="cpu")
    assert report["count"] == 3
    reasons = [s["reason"] for s in report["skipped"]]
    assert sum("no counterpart" in r for r in reasons) == 8
    assert sum("aspect ratio" in r for r in reasons) == 1
    cmp = report["summary"]["compare"]
    assert cmp["content"]["worst"] == 0.0 and cmp["ssim"]["worst"] == pytest.approx(1.0)
    assert "latency_ms" not in cmp
    for row in report["per_image"]:
        assert row["compare"]["style"] > 0 and row["compare_file"].endswith(".png")
    text = format_report(report)
    assert "compare" in text and "skipped 9 image(s)" in text and "and 4 more" in text


def test_preset_override_measures_under_the_preset(trained_ckpt: Path, style_path: Path, photo_dir: Path) -> None:
    one = sorted(photo_dir.glob("*.jpg"))[0]
    report = evaluate(trained_ckpt, style_path, one, size=64, preset="gatys", vgg_weights="random", device="cpu")
    assert report["count"] == 1 and report["loss_source"].startswith("preset gatys")
    assert "--vgg-weights random" in report["loss_source"]
    assert {f"style/{n}" for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")} <= set(report["summary"]["model"])


def test_a_preset_keeps_the_checkpoints_vgg_weights(trained_ckpt: Path, style_path: Path, photo_dir: Path) -> None:
    """--preset johnson changes the layers and weights, not the VGG19 trunk: the checkpoint (trained with random VGG
    weights) is measured offline with them, as without --preset, instead of asking for ImageNet weights."""
    one = sorted(photo_dir.glob("*.jpg"))[0]
    report = evaluate(trained_ckpt, style_path, one, size=64, preset="johnson", device="cpu")
    assert report["vgg_weights"] == "random" and report["loss"]["style_layers"] == ["relu1_2", "relu2_2", "relu3_3",
                                                                                    "relu4_3"]
    assert report["loss_source"] == "preset johnson, VGG19 weights of the checkpoint (random)"


@pytest.mark.slow
def test_cli_prints_table_and_writes_json(trained_ckpt: Path, style_path: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "b.png", "sub/c.jpg"]):
        make_photo(20 + i, (60 + 8 * i, 48)).save(photos / name)
    out_json, outputs = tmp_path / "q" / "q.json", tmp_path / "stylized"
    cmd = [sys.executable, "-m", "fastnst.evaluate", "--ckpt", str(trained_ckpt), "--style", str(style_path),
           "--images", str(photos), "--size", "48", "--json", str(out_json), "--save-outputs", str(outputs),
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for word in ("mean", "median", "worst", "style/relu2_1", "ssim", "latency_ms", "VGG19 weights: random"):
        assert word in proc.stdout
    report = json.loads(out_json.read_text())
    assert report["count"] == 3 and report["size"] == 48
    assert sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*.png")) == ["a.png", "b.png", "sub/c.png"]
    # The saved outputs, compared (matched by relative path, any extension), measure exactly as the model did.
    both = evaluate(trained_ckpt, style_path, photos, size=48, compare=outputs, device="cpu")["summary"]
    assert both["compare"]["style"]["mean"] == pytest.approx(both["model"]["style"]["mean"], rel=1e-4)
    assert both["compare"]["ssim"]["mean"] == pytest.approx(both["model"]["ssim"]["mean"], rel=1e-4)


def test_main_prints_table_and_writes_json(trained_ckpt: Path, style_path: Path, photo_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    one = sorted(photo_dir.glob("*.jpg"))[0]
    out_json = tmp_path / "deep" / "r.json"
    assert main(["--ckpt", str(trained_ckpt), "--style", str(style_path), "--images", str(one), "--size", "48",
                 "--json", str(out_json), "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "worst" in out and "NOTE: VGG19 weights are RANDOM" in out and f"wrote {out_json}" in out
    report = json.loads(out_json.read_text())
    assert report["count"] == 1 and report["per_image"][0]["image"] == one.name
    assert report["summary"]["model"]["ssim"]["mean"] == report["per_image"][0]["model"]["ssim"]


@pytest.mark.parametrize("case, message", [
    ("missing ckpt", r"model \S*nope.ckpt does not exist"),
    ("ckpt not a checkpoint", r"checkpoint \S*notes.ckpt (is corrupt|was refused)"),
    ("image as model", r"model \S*notes.jpg has an unknown file type"),
    ("style not an image", r"style image \S*notes.jpg is not a readable image"),
    ("missing images", r"--images \S*missing does not exist"),
    ("json is a folder", r"--json \S* is a folder"),
])
def test_bad_input_one_sentence_nonzero_exit(trained_ckpt: Path, style_path: Path, photo_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], case: str, message: str) -> None:
    import re

    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    args = {"--ckpt": str(trained_ckpt), "--style": str(style_path), "--images": str(photo_dir)}
    if case == "missing ckpt":
        args["--ckpt"] = str(tmp_path / "nope.ckpt")
    elif case == "ckpt not a checkpoint":
        args["--ckpt"] = str(tmp_path / "notes.ckpt")
        (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    elif case == "image as model":
        args["--ckpt"] = str(notes)
    elif case == "style not an image":
        args["--style"] = str(notes)
    elif case == "missing images":
        args["--images"] = str(tmp_path / "missing")
    elif case == "json is a folder":
        args["--json"] = str(tmp_path)
    assert main([*(x for kv in args.items() for x in kv), "--size", "48", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastnst: error: "), err
    assert re.search(message, err[0]), err[0]


def test_unreadable_images_are_skipped_and_named(trained_ckpt: Path, style_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_photo(5, (64, 48)).save(folder / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    report = evaluate(trained_ckpt, style_path, folder, size=48, device="cpu")
    assert report["count"] == 1 and report["per_image"][0]["image"] == "good.jpg"
    assert report["skipped"][0]["image"] == "broken.jpg" and "not a readable image" in report["skipped"][0]["reason"]
    (folder / "good.jpg").unlink()
    with pytest.raises(UserError, match="none of the 1 images could be measured"):
        evaluate(trained_ckpt, style_path, folder, size=48, device="cpu")
