"""A light image transformation network for CPUs and phones, registered as ``mobile``.

Johnson et al. 2016's layout (encoder, residual blocks at a quarter of the resolution, decoder, total
stride 4) with the expensive parts replaced by what the efficient-network literature shows works:

- **No wide tensor at full resolution.** The paper's network spends most of its time on its 9x9
  convolutions over 32 channels at full resolution. Here the stem is a strided convolution (3 -> 16
  channels, straight to half resolution), and the last layer is a resize-convolution (nearest x2, 3x3
  convolution to 3 channels; Odena et al. 2016) computed at half resolution in its exact sub-pixel form
  (:func:`fastnst.models.layers.upsample_conv`). The only full-resolution tensors are the input
  and the output. (A free sub-pixel output layer, ESPCN, trained into a visible 2-pixel checkerboard.)
- **Depthwise-separable residual blocks** (Howard et al. 2017, "MobileNets"; as in the residual blocks of
  Sandler et al. 2018, "MobileNetV2", without the expansion): each 3x3 convolution of a residual block is a
  per-channel 3x3 convolution plus a 1x1 convolution, 1/8 of the multiply-adds at 64 channels.
- **Upsampling as a sub-pixel convolution** (quarter to half resolution; Shi et al. 2016, "Real-Time Single
  Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", ESPCN: a 3x3
  convolution at quarter resolution to 4x the channels, rearranged to half resolution), with ICNR initialisation
  (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"): at initialisation it is
  nearest-neighbour upsampling followed by a convolution, the resize-convolution that avoids checkerboard
  artefacts (Odena et al. 2016), and training may move away from it. It is a regular convolution, which
  onnxruntime runs several times faster than a transposed one.
- **Reflection padding** as in the johnson network (``padding="reflect"``, the default): zero padding inside
  the convolutions is about 15% faster in onnxruntime, but tiles then differ from the whole image about 3x more
  near their edges (measured with ``--tile``), and photo borders get darker edges.

Every normalisation is a :class:`fastnst.models.StyleNorm` (conditional instance norm, Dumoulin et al. 2017),
so the network is multi-style, blends styles and tiles like the default one. About 6.3k multiply-adds per
output pixel with the defaults (``python -m fastnst.info MODEL`` prints the count), against 134k for the
default ``johnson`` network. The output has exactly the input's size for any size >= 5 px.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from fastnst.models.encoder import make_arbitrary, style_rows
from fastnst.models.layers import Conditional, StyleNorm, count, run, upsample_conv, widths
from fastnst.models.registry import register_model

PADDINGS = ("zeros", "reflect")


def conv(cin: int, cout: int, kernel: int, stride: int = 1, *, groups: int = 1, bias: bool = True,
         padding: str = "reflect") -> list[nn.Module]:
    """A 'same' convolution (output ceil(size / stride)) as a list of layers: zero padding inside the
    convolution, or a reflection-padding layer before it."""
    if padding == "zeros":
        return [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)]
    return [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=bias)]


class ConditionalSequential(nn.Sequential, Conditional):
    """Layers applied in order, the style weights handed to the norms."""

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return run(self, x, style)


class SeparableResidual(Conditional):
    """Two depthwise-separable 3x3 convolutions (per-channel 3x3, then 1x1), each with a style norm, a ReLU
    between them and an identity shortcut (no ReLU after the sum, as the johnson network's blocks)."""

    def __init__(self, channels: int, num_styles: int = 1, padding: str = "reflect") -> None:
        super().__init__()
        c = channels
        # no bias before the 1x1 convolution: it would be absorbed by the 1x1's bias
        self.body = ConditionalSequential(
            *conv(c, c, 3, groups=c, bias=False, padding=padding), nn.Conv2d(c, c, 1), StyleNorm(c, num_styles),
            nn.ReLU(inplace=True),
            *conv(c, c, 3, groups=c, bias=False, padding=padding), nn.Conv2d(c, c, 1), StyleNorm(c, num_styles))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.body(x, style)


def icnr_(conv: nn.Conv2d, scale: int = 2) -> None:
    """ICNR initialisation (Aitken et al. 2017) of a convolution followed by ``pixel_shuffle(scale)``: the
    ``scale**2`` outputs that become one output channel's sub-pixels start with equal weights, so the layer
    starts as nearest-neighbour upsampling of a convolution's output (no checkerboard at initialisation)."""
    cout = conv.out_channels // scale**2
    base = torch.empty(cout, *conv.weight.shape[1:])
    nn.init.kaiming_uniform_(base, a=5**0.5)  # nn.Conv2d's own default initialisation
    with torch.no_grad():
        conv.weight.copy_(base.repeat_interleave(scale**2, dim=0))
        if conv.bias is not None:
            conv.bias.copy_(conv.bias.view(cout, scale**2)[:, :1].expand(-1, scale**2).reshape(-1))


@register_model("mobile")
class MobileNet(nn.Module):
    """Strided stem -> stride-2 conv -> depthwise-separable residual blocks -> sub-pixel upsampling ->
    resize-convolution to RGB -> sigmoid (see the module docstring for the sources of each choice).

    Args:
        channels: widths at half and at quarter resolution (default 16, 64).
        num_residual: depthwise-separable residual blocks at quarter resolution (default 5).
        stem_kernel: kernel size of the strided first convolution (odd; default 5).
        padding: ``reflect`` (a padding layer before each convolution, default) or ``zeros`` (inside each
            convolution: faster, but tiles and borders show it).
        num_styles: styles held by the network (a scale and shift per style in every norm).
        style_dim, encoder: a network that takes any painting (see :class:`fastnst.models.TransformerNet`).
    """

    def __init__(self, channels: tuple[int, int] | list[int] = (16, 64), num_residual: int = 5, stem_kernel: int = 5,
                 padding: Literal["zeros", "reflect"] = "reflect", num_styles: int = 1,
                 style_dim: int | None = None, encoder: dict[str, Any] | None = None) -> None:
        super().__init__()
        c1, c2 = widths(channels, 2, "[16, 64]")
        count(num_residual, "num_residual")
        count(num_styles, "num_styles", 1)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if count(stem_kernel, "stem_kernel", 1) % 2 != 1:
            raise ValueError(f"stem_kernel must be odd, got {stem_kernel}")
        self._config: dict[str, Any] = {"channels": [c1, c2], "num_residual": int(num_residual),
                                        "stem_kernel": int(stem_kernel), "padding": padding,
                                        "num_styles": int(num_styles)}
        s = style_rows(num_styles, style_dim)
        self.stem = ConditionalSequential(*conv(3, c1, int(stem_kernel), 2, padding=padding), StyleNorm(c1, s),
                                          nn.ReLU(inplace=True))
        self.down = ConditionalSequential(*conv(c1, c2, 3, 2, padding=padding), StyleNorm(c2, s), nn.ReLU(inplace=True))
        self.res = nn.Sequential(*[SeparableResidual(c2, s, padding) for _ in range(int(num_residual))])
        self.up = ConditionalSequential(*conv(c2, 4 * c1, 3, padding=padding), nn.PixelShuffle(2), StyleNorm(c1, s),
                                        nn.ReLU(inplace=True))
        # nearest x2 + padding + this 3x3 convolution, computed at half resolution (upsample_conv)
        self.out = nn.Conv2d(c1, 3, 3)
        icnr_(self.up[-4])
        self._config.update(make_arbitrary(self, style_dim, encoder))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] (and [N, S] style weights) -> [N, 3, H, W] in [0, 1]."""
        y = self.down(self.stem(x, style), style)
        y = self.up(run(self.res, y, style), style)  # half resolution, 2 * ceil(H / 4) rows
        # one row and column more than the input at least, so the crop always cuts (export-friendly)
        y = upsample_conv(y, self.out)[..., : x.shape[-2], : x.shape[-1]]
        # A sigmoid keeps gradients alive where a clamp would cut them (as the johnson network).
        return torch.sigmoid(y)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild this network."""
        return dict(self._config)
