"""Files that fastnst 0.1 with format 2 wrote, before style vectors and networks that take a painting
(tests/fixtures/v2): they load, stylize as they did, export, describe themselves and resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastnst
from fastnst.formats.metadata import FORMAT_VERSION

from .conftest import ROOT, make_painting, make_pattern, multi_config, tiny_config

V2 = ROOT / "tests" / "fixtures" / "v2"
MOBILE = {"architecture": "mobile", "channels": [8, 16], "num_residual": 1, "stem_kernel": 5, "padding": "reflect"}


def _input() -> torch.Tensor:
    from fastnst.media.image import pil_to_tensor

    return pil_to_tensor(Image.open(V2 / "input.png").convert("RGB")).unsqueeze(0)


def _expected(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(V2 / f"expected_{name}.npy"))


# Within float rounding, not bit for bit: the upsampling is computed in another exact form (sub-pixel instead of
# a transposed convolution, models.layers.upsample_conv) than when these files were made; the weights are the same.
ROUNDING = 1e-6


def test_a_format_2_multi_style_checkpoint_stylizes_as_it_did() -> None:
    model = fastnst.load(V2 / "multi.ckpt", "cpu")
    assert model.styles == ["checker", "dots"] and model.info.format_version == 2
    for name in model.styles:
        assert (model(_input(), name) - _expected(f"multi_{name}")).abs().max() < ROUNDING, name
    blend = model(_input(), {"checker": 0.5, "dots": 0.5})
    assert not torch.equal(blend, _expected("multi_checker")) and not torch.equal(blend, _expected("multi_dots"))


def test_a_format_2_mobile_checkpoint_stylizes_as_it_did() -> None:
    model = fastnst.load(V2 / "mobile.ckpt", "cpu")
    assert model.info.architecture == "mobile"
    assert (model(_input()) - _expected("mobile")).abs().max() < ROUNDING


@pytest.mark.parametrize(("name", "expected"), [("multi.onnx", "multi_dots"), ("mobile.pt2", "mobile")])
def test_format_2_exported_files_load_and_stylize(name: str, expected: str) -> None:
    model = fastnst.load(V2 / name, "cpu")
    out = model(_input(), "dots") if model.styles and len(model.styles) > 1 else model(_input())
    assert (out - _expected(expected)).abs().max() < 1e-4


def test_format_2_checkpoints_export_again_and_describe_themselves(tmp_path: Path) -> None:
    from fastnst.tools.export import export_checkpoint
    from fastnst.tools.info import describe_model

    for name, expected, fmt in (("multi.ckpt", "multi_checker", "onnx"), ("mobile.ckpt", "mobile", "pt2")):
        out = export_checkpoint(V2 / name, tmp_path / f"again.{fmt}", log=lambda s: None)
        model = fastnst.load(out, "cpu")
        got = model(_input(), "checker") if name == "multi.ckpt" else model(_input())
        assert (got - _expected(expected)).abs().max() < 1e-4, name
        d = describe_model(V2 / name)
        assert d["format"] == "ckpt" and d["resumable"] and d["model"]["format_version"] == 2


def test_format_2_checkpoints_resume(tmp_path: Path, photo_dir: Path) -> None:
    from fastnst.formats.checkpoint import load_network
    from fastnst.training import fit

    paintings = tmp_path / "paintings"
    paintings.mkdir()
    for name in ("checker", "dots"):
        make_pattern(name).save(paintings / f"{name}.png")
    stripes = tmp_path / "stripes.png"
    make_painting().save(stripes)
    configs = {"multi.ckpt": multi_config(photo_dir, paintings, ckpt_path="last", **{"trainer.max_steps": 4}),
               "mobile.ckpt": tiny_config(photo_dir, stripes, ckpt_path="last", model=dict(MOBILE),
                                          **{"trainer.max_steps": 4})}
    for name, cfg in configs.items():
        run = tmp_path / name.split(".")[0]
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(V2 / name, run / "checkpoints" / "last.ckpt")
        result = fit(cfg, run)
        assert result.global_step == 4, name
        net, info = load_network(result.last_checkpoint)
        assert info.format_version == FORMAT_VERSION and info.training.global_step == 4
        assert all(torch.isfinite(p).all() for p in net.parameters())
