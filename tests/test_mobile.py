"""The light network (``mobile``): sizes, styles, its cost, its initialisation, and that every format and
tiling work with it as with the default network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastnst.formats import ModelInfo
from fastnst.formats.onnx import check_onnx, export_onnx, onnx_macs_per_pixel
from fastnst.formats.pt2 import check_pt2, export_pt2
from fastnst.inference import load
from fastnst.inference.stylizer import Stylizer, StylizeOptions
from fastnst.inference.runners import network_runner
from fastnst.inference.tiling import EagerTiles, stylize_tiled
from fastnst.models import MobileNet, StyleNorm, create_model
from fastnst.models.cost import macs_per_pixel
from fastnst.models.layers import upsample_conv
from fastnst.presets import read_preset

from .conftest import make_photo

SMALL = {"channels": [8, 16], "num_residual": 2}


def _net(num_styles: int = 1, seed: int = 0, **kw) -> MobileNet:
    torch.manual_seed(seed)
    net = MobileNet(**{**SMALL, **kw}, num_styles=num_styles).eval()
    with torch.no_grad():  # away from the initialisation, so styles and formats really differ
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("size", [(5, 6), (64, 64), (67, 45), (33, 97), (4 * 13 + 2, 4 * 7 + 3)])
@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_output_keeps_any_size_and_range(size: tuple[int, int], padding: str) -> None:
    net = _net(padding=padding)
    y = net(torch.rand(2, 3, *size))
    assert y.shape == (2, 3, *size) and torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1


def test_preset_is_the_registered_light_network_under_20k_macs() -> None:
    preset = read_preset("model", "mobile")
    net = create_model(preset.pop("architecture"), **preset)
    assert isinstance(net, MobileNet) and net.architecture == "mobile"
    assert all(isinstance(m, StyleNorm) for m in net.modules() if "Norm" in type(m).__name__)
    macs = macs_per_pixel(net)
    assert 3_000 < macs <= 20_000, macs  # the budget: at most 20k multiply-adds per output pixel
    assert macs_per_pixel(create_model("johnson")) == pytest.approx(133_721, rel=1e-3)  # the paper network
    clone = create_model("mobile", **net.config())
    clone.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 40, 52)
    assert torch.equal(clone(x), net(x))
    with pytest.raises(ValueError, match="padding"):
        MobileNet(padding="circular")
    with pytest.raises(ValueError, match="odd"):
        MobileNet(stem_kernel=4)


def test_the_onnx_count_of_multiply_adds_agrees_with_pytorchs(tmp_path: Path) -> None:
    net = _net()
    path = export_onnx(net, tmp_path / "m.onnx", ModelInfo(architecture="mobile", config=net.config(), styles=["s"]))
    assert onnx_macs_per_pixel(path) == pytest.approx(macs_per_pixel(net), rel=0.02)


def test_upsampling_layers_are_checkerboard_free_at_initialisation() -> None:
    """ICNR: at initialisation each 2x2 block of the sub-pixel layer's output is one value (no checkerboard)."""
    torch.manual_seed(0)
    net = MobileNet(**SMALL)
    x = torch.rand(1, 16, 9, 11)
    up = net.up[:-2](x)  # convolution and pixel shuffle
    assert torch.equal(up, F.interpolate(up[..., ::2, ::2], scale_factor=2, mode="nearest"))
    # the output layer is a resize-convolution (nearest x2, reflection pad, 3x3 conv), computed at half resolution
    y = torch.rand(1, 8, 9, 11)
    literal = net.out(F.pad(F.interpolate(y, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect"))
    assert torch.allclose(upsample_conv(y, net.out)[..., :18, :22], literal, atol=1e-5)


def test_multi_style_pure_styles_differ_and_blends_interpolate() -> None:
    net = _net(num_styles=3)
    x = torch.rand(1, 3, 48, 40)
    eye = torch.eye(3)
    a, b = net(x, eye[:1]), net(x, eye[1:2])
    assert (a - b).abs().mean() > 1e-3
    # a blend is a blend of the norms' parameters: halfway weights give the halfway scale and shift
    norm = next(m for m in net.stem if isinstance(m, StyleNorm))
    scale, shift = norm.scale_shift(torch.tensor([[0.5, 0.5, 0.0]]))
    assert torch.allclose(scale[0], (norm.weight[0] + norm.weight[1]) / 2)
    assert torch.allclose(shift[0], (norm.bias[0] + norm.bias[1]) / 2)
    with pytest.raises(ValueError, match="3 styles"):
        net(x)


@pytest.mark.parametrize("num_styles", [1, 3])
def test_onnx_and_pt2_exports_match_eager(num_styles: int, tmp_path: Path) -> None:
    net = _net(num_styles)
    info = ModelInfo(architecture="mobile", config=net.config(), styles=[f"s{i}" for i in range(num_styles)])
    onnx_path = export_onnx(net, tmp_path / "m.onnx", info)
    assert max(d for _, d in check_onnx(onnx_path, net, num_styles)) < 1e-4
    pt2_path = export_pt2(net, tmp_path / "m.pt2", info)
    assert max(d for _, d in check_pt2(pt2_path, net, num_styles)) < 1e-4
    for path in (onnx_path, pt2_path):  # dynamic shapes: sizes the export never saw, odd and even
        model = load(path, "cpu")
        assert model.info.architecture == "mobile"
        for shape in [(1, 3, 37, 53), (2, 3, 64, 96), (1, 3, 5, 6), (1, 3, 66, 71)]:
            x = torch.rand(*shape)
            style = None if num_styles == 1 else torch.eye(num_styles)[1:2].expand(shape[0], -1)
            with torch.no_grad():
                assert torch.allclose(model(x, style), net(x, style).clamp(0, 1), atol=1e-4)


def test_tiled_output_matches_untiled() -> None:
    """Tiling relies on StyleNorm: all tiles share whole-image statistics and blend without seams."""
    net = _net()
    x = torch.from_numpy(np.asarray(make_photo(7, (230, 170)), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = net(x)
    tiled = stylize_tiled(EagerTiles(net), x, tile=96, overlap=48, stats_size=1024)
    err = (tiled - ref).abs()
    # (an untrained, randomly perturbed network: the default network measures 4.8e-3 / 0.11 here)
    assert tiled.shape == ref.shape and float(err.mean()) < 4e-3 and float(err.max()) < 0.08


def test_eager_fast_paths_compute_the_same_image() -> None:
    net = _net()
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        ref = net(x)
    _, run = network_runner(_net(), torch.device("cpu"), channels_last=True)
    assert torch.allclose(run(x, None), ref, atol=1e-5)
    # the Python API stylizes with it like with any network
    model = Stylizer(Path("m.ckpt"), "ckpt", torch.device("cpu"), "fp32", run,
                     ModelInfo(architecture="mobile", config=net.config(), styles=["s"]), net)
    assert model.stylize_tensor(x, None, StylizeOptions()).shape == x.shape


@pytest.mark.usefixtures("one_thread")
def test_trains_several_styles_and_learns_a_new_one_with_the_old_ones_kept(photo_dir: Path, style_dir: Path,
                                                                          tmp_path: Path) -> None:
    """model=mobile through the real training path: a 3-style run, then a 4th style by its norm rows only."""
    from fastnst.formats.checkpoint import load_network
    from fastnst.training import fit

    from .conftest import make_pattern, multi_config

    mobile = {"architecture": "mobile", "channels": [8, 16], "num_residual": 1}
    base = fit(multi_config(photo_dir, style_dir, model=dict(mobile), **{"trainer.max_steps": 2}), tmp_path / "a")
    painting = tmp_path / "noise.png"
    make_pattern("noise").save(painting)
    added = fit(multi_config(photo_dir, [painting], model=dict(mobile), init_from=str(base.last_checkpoint),
                             train_only="norm", **{"trainer.max_steps": 2}), tmp_path / "b")
    old, _ = load_network(base.last_checkpoint)
    new, info = load_network(added.last_checkpoint)
    assert info.architecture == "mobile" and len(info.styles) == 4 and info.styles[-1] == "noise"
    x = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        for i in range(3):
            assert torch.equal(old(x, torch.eye(3)[i][None]), new(x, torch.eye(4)[i][None]))
        assert (new(x, torch.eye(4)[3][None]) - new(x, torch.eye(4)[0][None])).abs().max() > 1e-4
