"""fastnst.models: the registry, the johnson network (sizes, paper layout, the fast upsampling), style norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastnst.errors import UserError
from fastnst.models import StyleNorm, TransformerNet, create_model, list_models, model_class, register_model
from fastnst.models.layers import UpLayer


@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
@pytest.mark.parametrize("size", [(67, 45), (64, 64), (33, 97), (5, 6)])
def test_output_keeps_any_size_and_range(upsample: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = TransformerNet(channels=(8, 16, 32), num_residual=2, upsample=upsample)
    y = net(torch.rand(2, 3, *size))
    assert y.shape == (2, 3, *size)
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1


def test_default_architecture_matches_paper() -> None:
    net = TransformerNet()
    assert net.config() == {"channels": [32, 64, 128], "num_residual": 5, "upsample": "nearest", "num_styles": 1}
    assert len(net.res) == 5
    assert net.inp[1].kernel_size == (9, 9) and net.out[1].kernel_size == (9, 9)
    assert net.down1[1].stride == (2, 2) and net.down2[1].stride == (2, 2)
    assert isinstance(net.inp[0], torch.nn.ReflectionPad2d)
    assert isinstance(net.inp[2], StyleNorm)


def test_registry_builds_rebuilds_and_names_what_it_knows() -> None:
    assert {"johnson", "pytorch_examples"} <= set(list_models())
    net = create_model("johnson", channels=[8, 16, 32], num_residual=3, upsample="transpose")
    assert isinstance(net, TransformerNet) and net.architecture == "johnson"
    clone = create_model(net.architecture, **net.config())
    clone.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 21, 30)
    assert torch.equal(net(x), clone(x))
    with pytest.raises(UserError, match="unknown network architecture 'big'; registered: johnson"):
        model_class("big")
    with pytest.raises(UserError, match="do not fit the 'johnson' architecture"):
        create_model("johnson", width=3)


def test_a_new_architecture_is_one_decorator_away() -> None:
    @register_model("test_identity")
    class Identity(nn.Module):
        def __init__(self, num_styles: int = 1, gain: float = 1.0) -> None:
            super().__init__()
            self.gain, self.num_styles = gain, num_styles
            self.norm = StyleNorm(3, num_styles)

        def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
            return (x * self.gain).clamp(0, 1)

        def config(self) -> dict:
            return {"num_styles": self.num_styles, "gain": self.gain}

    assert "test_identity" in list_models()
    assert create_model("test_identity", gain=0.5)(torch.ones(1, 3, 8, 8)).max() == 0.5
    with pytest.raises(TypeError, match="must define config"):
        register_model("test_broken")(type("Broken", (nn.Module,), {}))


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (6, 5)])
def test_fast_upsampling_equals_upsample_pad_conv(size: tuple[int, int]) -> None:
    """The transposed-conv form of nearest x2 + reflection pad + 3x3 conv gives the same output and the
    same gradients as the literal computation of pytorch/examples (float64: only rounding could differ)."""
    torch.manual_seed(0)
    layer = UpLayer(6, 4, "nearest").double()

    def literal(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        y = layer.conv(F.interpolate(x, scale_factor=2, mode="nearest"))[..., : like.shape[-2], : like.shape[-1]]
        return layer.post[1](layer.post[0](y))

    x = torch.randn(2, 6, (size[0] + 1) // 2, (size[1] + 1) // 2, dtype=torch.float64, requires_grad=True)
    like = torch.empty(1, 1, *size)
    assert torch.allclose(layer(x, like), literal(x, like), atol=1e-12)
    g = torch.randn(2, 4, *size, dtype=torch.float64)
    grads = []
    for fn in (layer.forward, literal):
        layer.zero_grad()
        x.grad = None
        (fn(x, like) * g).sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in layer.parameters())])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_style_norm_one_hot_is_that_style_and_blends_are_linear() -> None:
    torch.manual_seed(0)
    norm = StyleNorm(4, num_styles=3)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 4, 5, 6)
    one = StyleNorm(4)
    with torch.no_grad():
        one.weight.copy_(norm.weight[1:2])
        one.bias.copy_(norm.bias[1:2])
    pure = norm(x, torch.tensor([[0.0, 1.0, 0.0]] * 2))
    assert torch.allclose(pure, one(x), atol=1e-6)
    mix = torch.tensor([[0.25, 0.0, 0.75]] * 2)
    expected = 0.25 * norm(x, torch.tensor([[1.0, 0, 0]] * 2)) + 0.75 * norm(x, torch.tensor([[0, 0, 1.0]] * 2))
    assert torch.allclose(norm(x, mix), expected, atol=1e-5)
    with pytest.raises(ValueError, match="holds 3 styles"):
        norm(x)


def test_multi_style_network_styles_differ_and_a_batch_can_mix_them() -> None:
    torch.manual_seed(0)
    net = TransformerNet(channels=[8, 16, 16], num_residual=1, num_styles=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, StyleNorm):
                m.weight.normal_(1.0, 0.5)
    x = torch.rand(1, 3, 24, 28)
    a = net(x, torch.tensor([[1.0, 0.0]]))
    b = net(x, torch.tensor([[0.0, 1.0]]))
    assert (a - b).abs().max() > 1e-3
    both = net(torch.cat([x, x]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(both[0], a[0], atol=1e-6) and torch.allclose(both[1], b[0], atol=1e-6)


def test_format_1_norm_parameters_load_into_style_norms() -> None:
    """fastnst 0.1 wrote nn.InstanceNorm2d's [C] affine parameters; they load into StyleNorm's [1, C]."""
    net = TransformerNet(channels=[8, 16, 16], num_residual=1)
    old = {k: (v[0] if k.endswith((".2.weight", ".2.bias")) and v.dim() == 2 else v) for k, v in net.state_dict().items()}
    assert any(v.dim() == 1 and v.numel() == 8 for k, v in old.items() if k == "inp.2.weight")
    clone = TransformerNet(channels=[8, 16, 16], num_residual=1)
    clone.load_state_dict(old)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(clone(x), net(x))
