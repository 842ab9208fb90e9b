"""The Python API as the README shows it: ``import fastnst``, ``fastnst.load(path)``, ``model.stylize(image)``,
``model.info``, for every model format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastnst
from fastnst.errors import UserError

from .conftest import make_photo


@pytest.fixture(scope="module")
def exported(trained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fastnst.tools.export import export_checkpoint

    folder = tmp_path_factory.mktemp("api")
    return {"ckpt": trained_ckpt,
            "onnx": export_checkpoint(trained_ckpt, folder / "m.onnx", log=lambda s: None),
            "pt2": export_checkpoint(trained_ckpt, folder / "m.pt2", log=lambda s: None)}


def test_version_and_public_names() -> None:
    assert isinstance(fastnst.__version__, str) and fastnst.__version__[0].isdigit()
    for name in ("load", "Stylizer", "ModelInfo", "register_model", "create_model", "list_models"):
        assert hasattr(fastnst, name)


@pytest.mark.parametrize("fmt", ["ckpt", "onnx", "pt2"])
def test_stylize_pil_and_numpy_keeps_type_and_size(fmt: str, exported: dict[str, Path]) -> None:
    model = fastnst.load(exported[fmt], device="cpu")
    assert model.format == fmt and model.styles == ["stripes"]
    assert model.info.architecture == "johnson" and model.info.training.image_size == 32
    photo = make_photo(4, (67, 45))
    out = model.stylize(photo)
    assert isinstance(out, Image.Image) and out.size == (67, 45) and out.mode == "RGB"
    arr = model.stylize(np.asarray(photo))
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape == (45, 67, 3)
    assert np.abs(arr.astype(int) - np.asarray(out, dtype=int)).max() == 0
    reference = fastnst.load(exported["ckpt"], device="cpu").stylize(photo)
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1  # every format agrees


def test_stylize_options_match_infer(exported: dict[str, Path]) -> None:
    model = fastnst.load(exported["ckpt"], "cpu")
    photo = make_photo(5, (150, 110))
    assert np.array_equal(np.asarray(model.stylize(photo, strength=0.0)), np.asarray(photo))
    tiled = np.asarray(model.stylize(photo, tile=64), dtype=int)
    whole = np.asarray(model.stylize(photo), dtype=int)
    assert tiled.shape == whole.shape and np.abs(tiled - whole).mean() < 2.0
    small = model.stylize(photo, max_size=60)
    assert max(small.size) == 60
    gray = model.stylize(photo.convert("L"))  # any mode in, RGB out
    assert gray.mode == "RGB" and gray.size == photo.size
    rgba = np.dstack([np.asarray(photo), np.full((110, 150), 255, np.uint8)])
    assert model.stylize(rgba).shape == (110, 150, 3)
    from fastnst.inference.devices import cpu_half_support

    if cpu_half_support()["bf16"]:  # refused on CPUs without native bf16 (tests/test_infer.py)
        bf16 = fastnst.load(exported["ckpt"], "cpu", precision="bf16")
        assert np.abs(np.asarray(bf16.stylize(photo), dtype=int) - whole).mean() < 8


def test_bad_api_input_is_a_user_error(exported: dict[str, Path]) -> None:
    model = fastnst.load(exported["ckpt"], "cpu")
    with pytest.raises(UserError, match="uint8 array"):
        model.stylize(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(UserError, match="PIL image or a uint8 numpy array"):
        model.stylize("photo.jpg")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="--strength must be between 0 and 1"):
        model.stylize(make_photo(1), strength=2.0)
    with pytest.raises(UserError, match="holds no style 'udnie'; its styles are stripes"):
        model.stylize(make_photo(1), style="udnie")
    with pytest.raises(UserError, match="too small"):
        model.stylize(Image.new("RGB", (3, 40)))


def test_tensor_call_runs_the_network(exported: dict[str, Path]) -> None:
    model = fastnst.load(exported["ckpt"], "cpu")
    x = torch.rand(2, 3, 33, 41)
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(y, model.network(x), atol=1e-6)


def test_inference_and_export_never_import_the_training_stack(trained_ckpt: Path, tmp_path: Path) -> None:
    """Loading, stylizing and exporting a model import neither Hydra, Lightning, the data module nor VGG19."""
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
import fastnst
from fastnst.tools.export import export_checkpoint
model = fastnst.load({str(trained_ckpt)!r}, "cpu")
model.stylize(np.zeros((20, 24, 3), np.uint8))
export_checkpoint({str(trained_ckpt)!r}, {str(tmp_path / "m.onnx")!r}, log=lambda s: None)
fastnst.load({str(tmp_path / "m.onnx")!r}, "cpu").stylize(np.zeros((20, 24, 3), np.uint8))
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("hydra", "pytorch_lightning", "lightning", "torchvision")
             or m.startswith(("fastnst.training", "fastnst.losses")))
print("LOADED", bad)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout, r.stdout
