"""fastnst.export: ONNX (both upsample modes) and .pt2 match eager, dynamic shapes, metadata, variants,
the onnxruntime-only README snippet, and the CLI's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.formats import ModelInfo
from fastnst.formats.deploy import ExportCheckError
from fastnst.formats.onnx import check_onnx, export_onnx
from fastnst.formats.pt2 import export_pt2
from fastnst.inference import load
from fastnst.models import TransformerNet
from fastnst.tools.export import main

from .conftest import ROOT, TINY_MODEL, make_photo


def _net(upsample: str, seed: int = 0) -> TransformerNet:
    torch.manual_seed(seed)
    return TransformerNet(**{**TINY_MODEL, "upsample": upsample}).eval()


def _info(net: TransformerNet, style: str = "test") -> ModelInfo:
    return ModelInfo(architecture="johnson", config=net.config(), styles=[style])


@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
def test_onnx_matches_eager_with_dynamic_shapes(upsample: str, tmp_path: Path) -> None:
    net = _net(upsample)
    path = export_onnx(net, tmp_path / "m.onnx", _info(net))
    results = check_onnx(path, net)  # checker + two sizes, one not a multiple of 4
    assert len(results) == 2 and all(d <= 1e-3 for _, d in results)
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*onnx.load(str(path)).graph.input, *onnx.load(str(path)).graph.output)]
    assert dims == [["batch", 3, "height", "width"]] * 2
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(3, 3, 37, 53), (1, 3, 5, 9), (1, 3, 130, 66)]:
        x = torch.rand(*shape)
        (y,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref = net(x).numpy()
        assert y.shape == shape and np.abs(y - ref).max() < 1e-3
        assert y.min() >= 0 and y.max() <= 1


def test_upsampling_is_sub_pixel_in_torch_and_transposed_in_onnx(tmp_path: Path) -> None:
    """The form each runtime was measured faster with (models.layers.upsample_conv): the same numbers either way."""
    from torch.profiler import ProfilerActivity, profile

    net = _net("nearest")
    ops = {n.op_type for n in onnx.load(str(export_onnx(net, tmp_path / "m.onnx", _info(net)))).graph.node}
    assert "ConvTranspose" in ops and "DepthToSpace" not in ops
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net(torch.rand(1, 3, 36, 44))
    names = {e.key for e in prof.key_averages()}
    assert "aten::pixel_shuffle" in names and "aten::conv_transpose2d" not in names


def test_check_onnx_catches_a_wrong_model(tmp_path: Path) -> None:
    path = export_onnx(_net("nearest", 0), tmp_path / "m.onnx", _info(_net("nearest", 0)))
    with pytest.raises(ExportCheckError, match="differs from PyTorch eager"):
        check_onnx(path, _net("nearest", 1))


def test_pt2_matches_eager(tmp_path: Path) -> None:
    net = _net("nearest")
    model = load(export_pt2(net, tmp_path / "m.pt2", _info(net, "s")), "cpu")
    assert model.styles == ["s"] and model.info.config == net.config()
    for shape in [(2, 3, 37, 53), (1, 3, 64, 96), (1, 3, 5, 6), (1, 3, 66, 71)]:  # odd and even crops at both levels
        x = torch.rand(*shape)
        with torch.no_grad():
            assert torch.allclose(model(x), net(x), atol=1e-5)
    with pytest.raises(UserError, match="upsample=nearest"):
        export_pt2(_net("transpose"), tmp_path / "t.pt2", _info(_net("transpose")))


@pytest.mark.slow
def test_export_cli_variants_and_same_picture(trained_ckpt: Path, photo_dir: Path, tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "fastnst.export", "--ckpt", str(trained_ckpt), "--format", "onnx",
                        "-o", str(onnx_path), "--fp16", "--int8", "--calibration", str(photo_dir),
                        "--calibration-count", "3", "--calibration-size", "64"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "parity vs PyTorch eager" in r.stdout and "m.fp16.onnx" in r.stdout and "vs fp32: max abs diff" in r.stdout
    assert "int8 vs fp32 on 3 calibration photo(s): PSNR" in r.stdout and "int8 vs fp32 speed at" in r.stdout
    for variant in ("m.fp16.onnx", "m.int8.onnx"):
        assert (tmp_path / variant).stat().st_size < onnx_path.stat().st_size
    meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    custom = meta.custom_metadata_map
    assert json.loads(custom["styles"]) == ["stripes"] and "image_size" in custom["training"]
    assert '"channels": [8, 16, 16]' in custom["network"]
    assert ModelInfo.from_json(custom["fastnst"]).exported_from == trained_ckpt.name

    photo = tmp_path / "photo.png"
    make_photo(5, (83, 61)).save(photo)
    from .test_infer import infer_main

    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "ckpt.png", "-q") == 0
    assert infer_main("--ckpt", onnx_path, photo, "-o", tmp_path / "onnx.png", "-q") == 0
    a = np.asarray(Image.open(tmp_path / "ckpt.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "onnx.png"), dtype=np.int16)
    assert a.shape == (61, 83, 3) and np.abs(a - b).max() <= 1

    # The README's onnxruntime-only snippet, with torch made unimportable.
    snippet = ROOT / "docs" / "onnxruntime_example.py"
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, str(snippet), str(onnx_path), str(photo),
                        str(tmp_path / "ort.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "style: stripes" in r.stdout
    c = np.asarray(Image.open(tmp_path / "ort.png"), dtype=np.int16)
    assert np.abs(a - c).max() <= 1


def test_export_cli_errors(trained_ckpt: Path, tmp_path: Path, capsys) -> None:
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"mine")
    assert main(["--ckpt", str(trained_ckpt), "-o", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_bytes() == b"mine"
    assert main(["--ckpt", str(tmp_path / "none.ckpt"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--ckpt", str(existing), "-o", str(tmp_path / "y.onnx")]) == 2
    assert "already an exported model" in capsys.readouterr().err
    assert main(["--ckpt", str(trained_ckpt), "--format", "pt2", "-o", str(tmp_path / "z.onnx")]) == 2
    assert "does not match" in capsys.readouterr().err
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary files left


def test_pt2_written_by_the_cli_has_the_file_name_inside(trained_ckpt: Path, tmp_path: Path) -> None:
    """The archive's inner folder is the file's own name, not the temporary one it was written under (issue 21.15)."""
    import zipfile

    from fastnst.tools.export import main

    out = tmp_path / "starry.pt2"
    assert main(["--ckpt", str(trained_ckpt), "--format", "pt2", "-o", str(out), "--no-check"]) == 0
    with zipfile.ZipFile(out) as z:
        assert {n.split("/", 1)[0] for n in z.namelist()} == {"starry"}
    assert [p.name for p in tmp_path.iterdir()] == ["starry.pt2"]  # no staging folder left behind
    assert load(out, "cpu")(torch.rand(1, 3, 20, 24)).shape == (1, 3, 20, 24)
