import pytest
import torch

from fastnst.network import TransformerNet


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
    assert net.config() == {"channels": [32, 64, 128], "num_residual": 5, "upsample": "nearest"}
    assert len(net.res) == 5
    assert net.inp[1].kernel_size == (9, 9) and net.out[1].kernel_size == (9, 9)
    assert net.down1[1].stride == (2, 2) and net.down2[1].stride == (2, 2)
    assert isinstance(net.inp[0], torch.nn.ReflectionPad2d)
    assert isinstance(net.inp[2], torch.nn.InstanceNorm2d)


def test_config_rebuilds_identical_network() -> None:
    net = TransformerNet(channels=[8, 16, 32], num_residual=3, upsample="transpose")
    clone = TransformerNet(**net.config())
    clone.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 21, 30)
    assert torch.equal(net(x), clone(x))


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (6, 5)])
def test_fast_upsampling_equals_upsample_pad_conv(size: tuple[int, int]) -> None:
    """The transposed-conv form of nearest x2 + reflection pad + 3x3 conv gives the same output and the
    same gradients as the literal computation (float64, so only rounding could differ)."""
    import torch.nn.functional as F

    from fastnst.network import UpLayer

    torch.manual_seed(0)
    layer = UpLayer(6, 4, "nearest").double()
    x = torch.randn(2, 6, (size[0] + 1) // 2, (size[1] + 1) // 2, dtype=torch.float64, requires_grad=True)
    like = torch.empty(1, 1, *size)
    literal = layer.conv(F.interpolate(x, scale_factor=2, mode="nearest"))[..., : size[0], : size[1]]
    assert torch.allclose(layer.forward(x, like), layer.post(literal), atol=1e-12)

    g = torch.randn(2, 4, *size, dtype=torch.float64)
    grads = []
    for fn in (layer.forward, layer.naive):
        layer.zero_grad()
        x.grad = None
        (fn(x, like) * g).sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in layer.parameters())])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
def test_forward_equals_naive_forward(upsample: str) -> None:
    torch.manual_seed(0)
    net = TransformerNet(channels=(8, 16, 32), num_residual=2, upsample=upsample).double()
    x = torch.rand(1, 3, 45, 62, dtype=torch.float64)
    assert torch.allclose(net(x), net.naive_forward(x), atol=1e-12)
