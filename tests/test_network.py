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
