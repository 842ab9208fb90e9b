"""magenta's trained style networks as fastnst architectures, so that their real trained weights run through
everything fastnst does (tiling, video, blends, export, the web page).

- ``magenta``: the multi-style network of Dumoulin, Shlens & Kudlur 2017 ("A Learned Representation for Artistic
  Style", magenta's ``image_stylization``) in the small variant of TensorFlow's Android demo: convolutions without
  bias, each followed by a conditional instance norm (:class:`StyleNorm`, one scale and shift per style) and a
  ReLU; three contracting convolutions, residual blocks, nearest-neighbour upsampling + convolution twice, a last
  9x9 convolution with its own norm, then a sigmoid.
- ``magenta_arbitrary``: the transformer of Ghiasi et al. 2017's arbitrary stylization (magenta's
  ``arbitrary_image_stylization``, the small TF Hub / TFLite variant): contracting convolutions with bias and no
  norm, residual blocks and an expanding path whose norms take their scale and shift from the 100-d style vector
  (:meth:`StyleNorm.add_base`), a sigmoid; its style predictor is a MobileNetV2 (:mod:`fastnst.models.mobilenet_v2`).

Files are imported by :mod:`fastnst.formats.magenta`. Reflection padding keeps the originals' borders; each
upsampling is cropped to its contracting stage's size, so every photo size works (the originals need sides that are
a multiple of 4 and give exactly the same pixels there).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastnst.models.layers import Conditional, StyleNorm, add_style_bases, run
from fastnst.models.mobilenet_v2 import MobileNetV2Predictor
from fastnst.models.registry import register_model


class MagentaConv(Conditional):
    """Reflection pad, convolution (``bias`` optional), optional style norm, optional ReLU; ``upsample`` first doubles
    the input (nearest neighbour) and crops the result to ``like``'s size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, norm: bool = True, relu: bool = True,
                 bias: bool = False, num_styles: int = 1) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, bias=bias)
        self.norm = StyleNorm(cout, num_styles) if norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None, like: torch.Tensor | None = None
                ) -> torch.Tensor:
        if like is not None:  # nearest x2, then crop to the matching contracting stage (odd sizes)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")[..., : like.shape[-2], : like.shape[-1]]
        x = self.conv(self.pad(x))
        if self.norm is not None:
            x = self.norm(x, style)
        return torch.relu(x) if self.relu else x


class MagentaResidual(Conditional):
    def __init__(self, channels: int, num_styles: int) -> None:
        super().__init__()
        self.conv1 = MagentaConv(channels, channels, 3, num_styles=num_styles)
        self.conv2 = MagentaConv(channels, channels, 3, relu=False, num_styles=num_styles)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.conv2(self.conv1(x, style), style)


@register_model("magenta")
class MagentaNet(nn.Module):
    """magenta's multi-style network (see the module docstring).

    Args:
        contract: widths of the three contracting convolutions (9x9 stride 1, 3x3 stride 2, 3x3 stride 2).
        expand: widths of the two upsampling convolutions (the last 9x9 convolution gives RGB).
        num_residual: residual blocks.
        num_styles: trained styles (26 in TensorFlow's Android demo).
    """

    def __init__(self, contract: list[int] | tuple[int, ...] = (32, 32, 32), expand: list[int] | tuple[int, ...] = (8, 4),
                 num_residual: int = 6, num_styles: int = 26) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in contract)
        e1, e2 = (int(c) for c in expand)
        s = int(num_styles)
        self._config: dict[str, Any] = {"contract": [c1, c2, c3], "expand": [e1, e2], "num_residual": int(num_residual),
                                        "num_styles": s}
        self.contract = nn.ModuleList([MagentaConv(3, c1, 9, num_styles=s), MagentaConv(c1, c2, 3, 2, num_styles=s),
                                       MagentaConv(c2, c3, 3, 2, num_styles=s)])
        self.res = nn.Sequential(*[MagentaResidual(c3, s) for _ in range(int(num_residual))])
        self.expand = nn.ModuleList([MagentaConv(c3, e1, 3, num_styles=s), MagentaConv(e1, e2, 3, num_styles=s),
                                     MagentaConv(e2, 3, 9, relu=False, num_styles=s)])

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] and [N or 1, S] style weights -> [N, 3, H, W] in [0, 1]."""
        y0 = self.contract[0](x, style)
        y1 = self.contract[1](y0, style)
        y = run(self.res, self.contract[2](y1, style), style)
        y = self.expand[1](self.expand[0](y, style, like=y1), style, like=y0)
        return torch.sigmoid(self.expand[2](y, style))

    def config(self) -> dict[str, Any]:
        return dict(self._config)


@register_model("magenta_arbitrary")
class MagentaArbitraryNet(nn.Module):
    """The transformer of magenta's arbitrary stylization (see the module docstring) with its style predictor.

    Args:
        contract: widths of the contracting convolutions (bias, ReLU, no norm).
        expand: widths of the two upsampling convolutions (style norms; the last 9x9 gives RGB with a style norm).
        num_residual: residual blocks (style norms).
        style_dim: length of the style vector (100).
        encoder: settings of the :class:`fastnst.models.mobilenet_v2.MobileNetV2Predictor`.
        num_styles: 1 (the style comes from a painting).
    """

    def __init__(self, contract: list[int] | tuple[int, ...] = (8, 16, 32), expand: list[int] | tuple[int, ...] = (16, 8),
                 num_residual: int = 5, style_dim: int = 100, encoder: dict[str, Any] | None = None,
                 num_styles: int = 1) -> None:
        super().__init__()
        if int(num_styles) != 1:
            raise ValueError("magenta_arbitrary takes its style from a painting (num_styles must be 1)")
        c1, c2, c3 = (int(c) for c in contract)
        e1, e2 = (int(c) for c in expand)
        d = int(style_dim)
        self.contract = nn.ModuleList([MagentaConv(3, c1, 9, norm=False, bias=True),
                                       MagentaConv(c1, c2, 3, 2, norm=False, bias=True),
                                       MagentaConv(c2, c3, 3, 2, norm=False, bias=True)])
        self.res = nn.Sequential(*[MagentaResidual(c3, d) for _ in range(int(num_residual))])
        self.expand = nn.ModuleList([MagentaConv(c3, e1, 3, num_styles=d, bias=True),
                                     MagentaConv(e1, e2, 3, num_styles=d, bias=True),
                                     MagentaConv(e2, 3, 9, relu=False, num_styles=d, bias=True)])
        add_style_bases(self)
        self.encoder = MobileNetV2Predictor(d, **(encoder or {}))
        self._config: dict[str, Any] = {"contract": [c1, c2, c3], "expand": [e1, e2], "num_residual": int(num_residual),
                                        "style_dim": d, "encoder": self.encoder.config(), "num_styles": 1}

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] and [N or 1, 100] style vectors -> [N, 3, H, W] in [0, 1]."""
        y0 = self.contract[0](x)
        y1 = self.contract[1](y0)
        y = run(self.res, self.contract[2](y1), style)
        y = self.expand[1](self.expand[0](y, style, like=y1), style, like=y0)
        return torch.sigmoid(self.expand[2](y, style))

    def config(self) -> dict[str, Any]:
        return dict(self._config)
