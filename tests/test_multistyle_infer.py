"""A multi-style model at inference: one output per style, the labelled sheet, blends, every option with every
style choice, the Python API, exported ONNX / .pt2 files, errors, and fastnst.evaluate per style."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastnst
from fastnst.errors import UserError
from fastnst.inference import StylizeOptions, load

from .conftest import MULTI_STYLES, make_photo
from .test_infer import infer_main, pixels


@pytest.fixture(scope="module")
def model(multi_ckpt: Path):
    return load(multi_ckpt, "cpu")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("photo") / "photo.png"
    make_photo(3, (70, 54)).save(p)
    return p


def _weights(i: int) -> torch.Tensor:
    return torch.eye(len(MULTI_STYLES))[i]


def test_no_style_writes_one_image_per_style(model, multi_ckpt: Path, photo: Path, tmp_path: Path, capsys) -> None:
    assert infer_main("--ckpt", multi_ckpt, photo, "-o", tmp_path / "out.png", "-q") == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"out_{n}.png" for n in sorted(MULTI_STYLES)]
    x = torch.from_numpy(pixels(photo).astype(np.float32) / 255).permute(2, 0, 1)[None]
    for i, name in enumerate(MULTI_STYLES):
        expected = (model.stylize_tensor(x, _weights(i))[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
        assert np.abs(pixels(tmp_path / f"out_{name}.png") - expected).max() <= 1
    images = [pixels(tmp_path / f"out_{n}.png") for n in MULTI_STYLES]
    assert np.abs(images[0] - images[1]).max() > 2 and np.abs(images[1] - images[2]).max() > 2
    # the default name is photo_<style>, in the current folder
    work = tmp_path / "cwd"
    work.mkdir()
    import os

    here = os.getcwd()
    os.chdir(work)
    try:
        assert infer_main("--ckpt", multi_ckpt, photo, "-q") == 0
        assert sorted(p.name for p in work.iterdir()) == [f"photo_{n}.png" for n in sorted(MULTI_STYLES)]
        # an existing output is kept unless asked: one sentence, nothing written
        assert infer_main("--ckpt", multi_ckpt, photo, "-q") == 2
        assert "3 output file(s) already exist" in capsys.readouterr().err
        (work / "photo_dots.png").unlink()
        assert infer_main("--ckpt", multi_ckpt, photo, "-q", "--skip-existing") == 0
        assert (work / "photo_dots.png").is_file()
    finally:
        os.chdir(here)


def test_folder_batches_and_every_option_work_per_style(model, multi_ckpt: Path, photo_dir: Path,
                                                        tmp_path: Path) -> None:
    args = ["--ckpt", multi_ckpt, photo_dir, "-q", "--ext", "png", "--preserve-color", "--strength", "0.6"]
    assert infer_main(*args, "-o", tmp_path / "b1") == 0
    assert infer_main(*args, "-o", tmp_path / "b3", "--batch-size", "3") == 0
    names = sorted(p.name for p in (tmp_path / "b1").iterdir())
    assert len(names) == 12 * 3 and "img_00_waves.png" in names
    for name in names:
        assert np.abs(pixels(tmp_path / "b1" / name) - pixels(tmp_path / "b3" / name)).max() <= 1
    # strength 0 gives the photo back exactly in every style
    assert infer_main("--ckpt", multi_ckpt, photo_dir / "img_01.jpg", "-o", tmp_path / "s0.png", "-q",
                      "--strength", "0") == 0
    photo = np.asarray(Image.open(photo_dir / "img_01.jpg").convert("RGB"), dtype=np.int16)
    for n in MULTI_STYLES:
        assert np.array_equal(pixels(tmp_path / f"s0_{n}.png"), photo)


def test_tiling_blends_and_pure_styles(model) -> None:
    x = torch.from_numpy(np.asarray(make_photo(7, (230, 170)), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    opts = StylizeOptions(tile=96, tile_overlap=48)
    for choice in ("dots", "checker=0.3,waves=0.7"):
        w = model.style_weights(choice)
        full, tiled = model.stylize_tensor(x, w), model.stylize_tensor(x, w, opts)
        err = (full - tiled).abs()
        assert float(err.mean()) < 2e-3 and float(err.max()) < 0.05, choice
        other = model.stylize_tensor(x, model.style_weights("checker"))
        assert float((other - tiled).abs().mean()) > 2 * float(err.mean())  # tiles ran in this style
    x = torch.rand(1, 3, 150, 118)
    a, b = model.style_weights("checker"), model.style_weights("waves")
    blend = model.stylize_tensor(x, model.style_weights({"checker": 1, "waves": 3}))
    assert torch.allclose(model.style_weights("checker=1,waves=3"), 0.25 * a + 0.75 * b)
    ends = [model.stylize_tensor(x, w) for w in (a, b)]
    assert all((blend - e).abs().max() > 1e-3 for e in ends)  # a blend is neither end
    assert torch.equal(model.stylize_tensor(x, model.style_weights(2)), model.stylize_tensor(x, b))  # index = name
    # per-image styles in one batch equal each image alone
    xs = torch.rand(3, 3, 40, 44)
    mixed = model(xs, torch.eye(3))
    for i in range(3):
        assert torch.allclose(mixed[i], model(xs[i:i + 1], _weights(i))[0], atol=1e-5)


def test_sheet_shows_the_photo_and_every_style_labelled(model, multi_ckpt: Path, photo: Path, tmp_path: Path) -> None:
    assert infer_main("--ckpt", multi_ckpt, photo, "--sheet", "-o", tmp_path / "sheet.png", "-q") == 0
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"), dtype=np.int16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]
    h, w = 54, 70
    assert sheet.shape[1] >= 4 * w and sheet.shape[0] > h  # four panels side by side, a label strip above
    found = []
    for i, name in enumerate(MULTI_STYLES):
        panel = np.asarray(model.stylize(Image.open(photo), name), dtype=np.int16)
        # the panel is somewhere in the sheet's bottom rows: find its column by matching pixels
        best = min(range(sheet.shape[1] - w + 1), key=lambda c: np.abs(sheet[-h - 4:-4, c:c + w] - panel).mean())
        assert np.abs(sheet[-h - 4:-4, best:best + w] - panel).mean() < 1.0, name
        found.append(best)
    assert found == sorted(found)  # in the model's style order
    label_strip = sheet[: sheet.shape[0] - h - 8]
    assert label_strip.std() > 5  # the names are drawn
    api = fastnst.load(multi_ckpt).style_sheet(Image.open(photo))
    assert np.abs(np.asarray(api, dtype=np.int16) - sheet).max() <= 1


def test_python_api_each_style_and_errors(multi_ckpt: Path, photo: Path, trained_ckpt: Path) -> None:
    m = fastnst.load(multi_ckpt)
    img = Image.open(photo)
    each = m.stylize_each(img, max_size=40)
    assert list(each) == list(MULTI_STYLES) and all(v.size == (40, 31) for v in each.values())
    arr = np.asarray(img.convert("RGB"))
    assert np.array_equal(np.asarray(each["dots"]), m.stylize(arr, "dots", max_size=40))
    with pytest.raises(UserError, match="holds 3 styles .* or every style with stylize_each"):
        m.stylize(img)
    with pytest.raises(UserError, match="holds no style 'nope'; its styles are checker, dots, waves"):
        m.stylize(img, "nope")
    with pytest.raises(UserError, match="unknown option"):
        m.stylize_each(img, colour=True)
    one = fastnst.load(trained_ckpt)
    assert list(one.stylize_each(img)) == ["stripes"]
    with pytest.raises(UserError, match="this model holds one style"):
        one.style_sheet(img)


@pytest.mark.parametrize("style, expect", [
    ("nope", "the model holds no style 'nope'; its styles are checker, dots, waves"),
    ("7", "style index 7 is out of range: the model holds 3 style(s), 0 to 2"),
    ("dots=-1,waves=2", "must not be negative (dots)"),
    ("dots=0,waves=0", "are all 0"),
    ("dots=,waves=1", "the weight of 'dots' is not a number"),
    ("=0.5", "each part of a blend is NAME=WEIGHT"),
    (" ", "--style is empty"),
    ("dots=nan", "finite"),
])
def test_bad_style_choices_are_one_sentence(style: str, expect: str, multi_ckpt: Path, photo: Path, tmp_path: Path,
                                            capsys) -> None:
    assert infer_main("--ckpt", multi_ckpt, photo, "--style", style, "-o", tmp_path / "o.png") == 2
    err = capsys.readouterr().err
    assert err.startswith("fastnst: error: ") and expect in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_sheet_errors_and_single_style_models_unchanged(multi_ckpt: Path, trained_ckpt: Path, photo: Path,
                                                        tmp_path: Path, capsys) -> None:
    assert infer_main("--ckpt", multi_ckpt, photo, "--sheet", "--style", "dots", "-o", tmp_path / "o.png") == 2
    assert "--sheet shows every style of the model; drop --style" in capsys.readouterr().err
    assert infer_main("--ckpt", trained_ckpt, photo, "--sheet", "-o", tmp_path / "o.png") == 2
    assert "this model holds one style (stripes), so drop --sheet" in capsys.readouterr().err
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "one.png", "-q") == 0
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "named.png", "-q", "--style", "stripes") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.png", "one.png"]
    assert np.array_equal(pixels(tmp_path / "one.png"), pixels(tmp_path / "named.png"))


def test_benchmark_times_every_style(multi_ckpt: Path, photo: Path, capsys) -> None:
    assert infer_main("--ckpt", multi_ckpt, photo, "--benchmark", "--benchmark-runs", "2", "--warmup", "1") == 0
    assert "3 styles each" in capsys.readouterr().out
    assert infer_main("--ckpt", multi_ckpt, photo, "--benchmark", "--benchmark-runs", "2", "--warmup", "1",
                      "--style", "dots=0.5,waves=0.5", "--tile", "32") == 0
    out = capsys.readouterr().out
    assert "images/s" in out and "styles each" not in out


def test_exported_multi_style_models_match_the_checkpoint(model, multi_ckpt: Path, photo: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from fastnst.tools.export import export_checkpoint

    onnx_path = export_checkpoint(multi_ckpt, tmp_path / "m.onnx", log=lambda s: None)
    pt2_path = export_checkpoint(multi_ckpt, tmp_path / "m.pt2", log=lambda s: None)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "style_weights"]
    assert json.loads(session.get_modelmeta().custom_metadata_map["styles"]) == list(MULTI_STYLES)
    x = torch.rand(2, 3, 45, 39)
    for path in (onnx_path, pt2_path):
        exported = load(path, "cpu")
        assert exported.styles == list(MULTI_STYLES)
        for choice in ("checker", "waves", "checker=0.25,dots=0.25,waves=0.5"):
            w = model.style_weights(choice)
            assert (exported.stylize_tensor(x, w) - model.stylize_tensor(x, w)).abs().max() < 1e-3, (path, choice)
    out = tmp_path / "out"
    assert infer_main("--ckpt", onnx_path, photo, "-o", out / "p.png", "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == [f"p_{n}.png" for n in sorted(MULTI_STYLES)]
    assert infer_main("--ckpt", multi_ckpt, photo, "-o", out / "c.png", "-q", "--style", "dots") == 0
    assert np.abs(pixels(out / "p_dots.png") - pixels(out / "c.png")).max() <= 1


def test_onnxruntime_example_takes_a_style(multi_ckpt: Path, photo: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from fastnst.tools.export import export_checkpoint

    from .conftest import ROOT

    onnx_path = export_checkpoint(multi_ckpt, tmp_path / "m.onnx", check=False, log=lambda s: None)
    snippet = ROOT / "docs" / "onnxruntime_example.py"
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    base = [sys.executable, "-c", code, str(snippet), str(onnx_path), str(photo)]
    r = subprocess.run([*base, str(tmp_path / "ort.png"), "dots=0.5,waves=0.5"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert infer_main("--ckpt", multi_ckpt, photo, "-o", tmp_path / "c.png", "-q", "--style", "dots=0.5,waves=0.5") == 0
    assert np.abs(pixels(tmp_path / "ort.png") - pixels(tmp_path / "c.png")).max() <= 1
    r = subprocess.run([*base, str(tmp_path / "x.png"), "starry"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "unknown style 'starry'; the model holds checker, dots, waves" in r.stderr


def test_evaluate_measures_every_style_against_its_own_painting(multi_ckpt: Path, style_dir: Path, photo_dir: Path,
                                                                tmp_path: Path, capsys) -> None:
    from fastnst.tools.evaluate import evaluate, main

    images = tmp_path / "few"
    images.mkdir()
    for name in ("img_00.jpg", "img_05.jpg"):
        (images / name).write_bytes((photo_dir / name).read_bytes())
    report = evaluate(multi_ckpt, None, images, size=48, save_outputs=tmp_path / "outs")
    assert report["styles"] == list(MULTI_STYLES)
    for name in MULTI_STYLES:
        r = report["per_style"][name]
        assert r["style"] == str(style_dir / f"{name}.png") and r["model_style"] == name and r["count"] == 2
        assert sorted(p.name for p in (tmp_path / "outs" / name).iterdir()) == ["img_00.png", "img_05.png"]
    one = evaluate(multi_ckpt, style_dir / "waves.png", images, size=48, model_style="waves")
    assert one["summary"]["model"]["style"]["mean"] == pytest.approx(
        report["per_style"]["waves"]["summary"]["model"]["style"]["mean"], rel=1e-6)
    other = evaluate(multi_ckpt, style_dir / "checker.png", images, size=48, model_style="waves")
    assert other["style"].endswith("checker.png")  # an explicit painting is measured against, not the recorded one
    assert other["summary"]["model"]["style"]["mean"] != one["summary"]["model"]["style"]["mean"]
    # paintings moved to another folder are found there by file name
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in MULTI_STYLES:
        (moved / f"{name}.png").write_bytes((style_dir / f"{name}.png").read_bytes())
    again = evaluate(multi_ckpt, moved, images, size=48)
    assert again["per_style"]["dots"]["style"] == str(moved / "dots.png")
    assert main(["--ckpt", str(multi_ckpt), "--images", str(images), "--size", "48", "-q"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{n} " in out for n in MULTI_STYLES) and "against its own painting" in out
    (moved / "dots.png").unlink()
    assert main(["--ckpt", str(multi_ckpt), "--images", str(images), "--style", str(moved), "--size", "48"]) == 2
    assert "holds no painting for style 'dots'" in capsys.readouterr().err
    assert main(["--ckpt", str(multi_ckpt), "--images", str(images), "--style", str(style_dir / "dots.png")]) == 2
    assert "is one painting, but the model holds 3 styles; pass --model-style" in capsys.readouterr().err


def test_an_animation_gets_every_frame_in_every_style(model, multi_ckpt: Path, tmp_path: Path, capsys) -> None:
    frames = [make_photo(i, (40, 32)) for i in range(3)]
    src = tmp_path / "anim.png"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=[50, 60, 70], loop=0)
    assert infer_main("--ckpt", multi_ckpt, src, "-o", tmp_path / "out" / "a.png", "-q", "--batch-size", "2") == 0
    from fastnst.media.image import load_animation

    outs = {n: load_animation(tmp_path / "out" / f"a_{n}.png") for n in MULTI_STYLES}
    for i, name in enumerate(MULTI_STYLES):
        assert len(outs[name].frames) == 3 and list(outs[name].durations) == [50, 60, 70]
        x = torch.from_numpy(np.asarray(frames[1], dtype=np.float32) / 255).permute(2, 0, 1)[None]
        expected = (model.stylize_tensor(x, _weights(i))[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
        got = np.asarray(outs[name].frames[1].convert("RGB"), dtype=np.float32)
        assert np.abs(got - expected).max() <= 1, name
    assert infer_main("--ckpt", multi_ckpt, src, "--sheet", "-o", tmp_path / "sheet.png", "-q") == 2
    assert "anim.png is animated and --sheet makes one still image" in capsys.readouterr().err
    assert not (tmp_path / "sheet.png").exists()


def test_sheets_in_a_folder_are_named_like_the_documentation_says(multi_ckpt: Path, photo_dir: Path,
                                                                  tmp_path: Path) -> None:
    """``--sheet`` into a folder writes NAME_sheet.EXT, as without -o (issue 21.8); an -o file keeps its name."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(photo_dir / "img_00.jpg", src / "ok0.jpg")
    shutil.copy(photo_dir / "img_01.jpg", src / "sub" / "ok1.jpg")
    assert infer_main("--ckpt", multi_ckpt, src, "--sheet", "-o", tmp_path / "sheets", "-q") == 0
    assert sorted(str(p.relative_to(tmp_path / "sheets")) for p in (tmp_path / "sheets").rglob("*.jpg")) == \
        ["ok0_sheet.jpg", "sub/ok1_sheet.jpg"]
    assert infer_main("--ckpt", multi_ckpt, src / "ok0.jpg", "--sheet", "-o", tmp_path / "one", "-q") == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["ok0_sheet.jpg"]
