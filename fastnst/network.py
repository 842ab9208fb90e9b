"""The image transformation network of Johnson et al. 2016 ("Perceptual Losses for Real-Time Style
Transfer and Super-Resolution", supplementary material), as used by training, inference and export.

Pixel contract: input and output are float32 RGB, NCHW, values in [0, 1]. The output has exactly the
input's height and width for any size: each upsampling stage doubles, then crops to the size of the
matching downsampling stage, so no data-dependent padding or Python control flow is needed
(export-friendly).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Upsample = Literal["nearest", "transpose"]


class ConvLayer(nn.Sequential):
    """Reflection padding, convolution, optional instance norm and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True,
                 relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm:
            layers.append(nn.InstanceNorm2d(cout, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers with an identity shortcut (no ReLU after the sum)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3),
                                  ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# Nearest x2 upsampling followed by a reflection-padded 3x3 convolution (pytorch/examples' UpsampleConvLayer)
# equals a stride-2 transposed convolution with a 4x4 kernel on the replicate-padded low-resolution input:
# each output pixel sees 2x2 low-resolution pixels, with taps that are sums of the 3x3 taps. Same result to
# float rounding, 16/36 of the multiply-adds, and no upsampled or padded copy of the high-resolution tensor.
# Row t of the 4-tap kernel sums these 3x3 taps: t=0 -> w2, t=1 -> w1+w2, t=2 -> w0+w1, t=3 -> w0.
_TAPS_3_TO_4 = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def _replicate_pad1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="replicate")`` from slices and cat: Inductor (torch 2.14) mis-strides
    ``replication_pad2d_backward`` after a transposed convolution, so training with ``compile=true`` failed."""
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)


def upsample_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv weight [Cout, Cin, 3, 3] as the equivalent stride-2 transposed-conv weight [Cin, Cout, 4, 4]."""
    m = weight.new_tensor(_TAPS_3_TO_4)
    return torch.einsum("ra,cb,oiab->iorc", m, m, weight)


class UpLayer(nn.Module):
    """Upsample x2 and convolve, then crop to exactly ``like``'s size (odd sizes drop the extra row/column).

    ``nearest`` (default) is nearest-neighbour upsampling, reflection padding and a 3x3 convolution, as in
    pytorch/examples (no checkerboard artefacts, Odena et al. 2016), computed as the equivalent transposed
    convolution (see :func:`upsample_conv_weight`; :meth:`naive` is the literal formulation). ``transpose``
    is the paper's learned 3x3 transposed convolution."""

    def __init__(self, cin: int, cout: int, mode: Upsample) -> None:
        super().__init__()
        self.mode = mode
        if mode == "nearest":
            self.conv = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3))
        elif mode == "transpose":
            self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        else:
            raise ValueError(f"upsample must be 'nearest' or 'transpose', got {mode!r}")
        self.post = nn.Sequential(nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        size = like.shape[-2:]
        if self.mode == "nearest":
            conv = self.conv[1]
            # One extra row and column (output_padding) so that the crop below always cuts something: a crop
            # that may or may not be empty is a branch on the size that torch.export would bake in.
            x = F.conv_transpose2d(_replicate_pad1(x), upsample_conv_weight(conv.weight),
                                   conv.bias, stride=2, padding=3, output_padding=1)
        else:
            x = self.conv(x)
        # 2*h >= target; cropping drops the one extra row/column of odd sizes.
        return self.post(x[..., : size[0], : size[1]])

    def naive(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The literal computation :meth:`forward` is equal to (tests, and the benchmark's baseline)."""
        size = like.shape[-2:]
        if self.mode == "nearest":
            x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        else:
            x = self.conv(x)
        return self.post(x[..., : size[0], : size[1]])


class TransformerNet(nn.Module):
    """Conv 9x9 -> 2 stride-2 convs -> residual blocks -> 2 upsampling stages -> conv 9x9.

    Args:
        channels: widths of the three resolution levels (paper: 32, 64, 128).
        num_residual: number of residual blocks (paper: 5).
        upsample: ``"nearest"`` (upsample + conv) or ``"transpose"`` (transposed conv).
    """

    def __init__(self, channels: tuple[int, int, int] | list[int] = (32, 64, 128), num_residual: int = 5,
                 upsample: Upsample = "nearest") -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.hparams: dict[str, Any] = {"channels": [c1, c2, c3], "num_residual": int(num_residual),
                                        "upsample": str(upsample)}
        self.inp = ConvLayer(3, c1, 9)
        self.down1 = ConvLayer(c1, c2, 3, stride=2)
        self.down2 = ConvLayer(c2, c3, 3, stride=2)
        self.res = nn.Sequential(*[ResidualBlock(c3) for _ in range(int(num_residual))])
        self.up1 = UpLayer(c3, c2, upsample)
        self.up2 = UpLayer(c2, c1, upsample)
        self.out = ConvLayer(c1, 3, 9, norm=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 3, H, W] in [0, 1]."""
        y0 = self.inp(x)
        y1 = self.down1(y0)
        y = self.res(self.down2(y1))
        y = self.up2(self.up1(y, y1), y0)
        # A sigmoid keeps gradients alive where a clamp would cut them; (tanh+1)/2 in other codebases.
        return torch.sigmoid(self.out(y))

    def naive_forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` computed literally, upsampling as pytorch/examples does (tests, benchmark baseline)."""
        y0 = self.inp(x)
        y1 = self.down1(y0)
        y = self.res(self.down2(y1))
        y = self.up2.naive(self.up1.naive(y, y1), y0)
        return torch.sigmoid(self.out(y))

    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild this network from a checkpoint."""
        return dict(self.hparams)
