"""The image transformation network of Johnson et al. 2016 ("Perceptual Losses for Real-Time Style
Transfer and Super-Resolution", supplementary material), registered as ``johnson``.

The output has exactly the input's height and width for any size: each upsampling stage doubles, then
crops to the size of the matching downsampling stage, so no data-dependent padding or Python control
flow is needed (export-friendly). With ``num_styles`` > 1 every norm is conditional (Dumoulin et al. 2017).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from fastnst.models.encoder import make_arbitrary, style_rows
from fastnst.models.layers import ConvLayer, ResidualBlock, UpLayer, count, run, widths
from fastnst.models.registry import register_model


@register_model("johnson")
class TransformerNet(nn.Module):
    """Conv 9x9 -> 2 stride-2 convs -> residual blocks -> 2 upsampling stages -> conv 9x9 -> sigmoid.

    Args:
        channels: widths of the three resolution levels (paper: 32, 64, 128).
        num_residual: number of residual blocks (paper: 5).
        upsample: ``"nearest"`` (upsample + conv) or ``"transpose"`` (transposed conv).
        num_styles: styles held by the network (a scale and shift per style in every norm).
        style_dim: set, the network takes any painting: a :class:`fastnst.models.encoder.StyleEncoder`
            (``encoder``: its settings) maps it to a ``style_dim`` vector that sets every norm (Ghiasi et al. 2017).
    """

    def __init__(self, channels: tuple[int, int, int] | list[int] = (32, 64, 128), num_residual: int = 5,
                 upsample: Literal["nearest", "transpose"] = "nearest", num_styles: int = 1,
                 style_dim: int | None = None, encoder: dict[str, Any] | None = None) -> None:
        super().__init__()
        c1, c2, c3 = widths(channels, 3, "[32, 64, 128]")
        count(num_residual, "num_residual")
        count(num_styles, "num_styles", 1)
        if upsample not in ("nearest", "transpose"):
            raise ValueError(f"upsample must be 'nearest' or 'transpose', got {upsample!r}")
        self._config: dict[str, Any] = {"channels": [c1, c2, c3], "num_residual": int(num_residual),
                                        "upsample": str(upsample), "num_styles": int(num_styles)}
        s = style_rows(num_styles, style_dim)
        self.inp = ConvLayer(3, c1, 9, num_styles=s)
        self.down1 = ConvLayer(c1, c2, 3, stride=2, num_styles=s)
        self.down2 = ConvLayer(c2, c3, 3, stride=2, num_styles=s)
        self.res = nn.Sequential(*[ResidualBlock(c3, s) for _ in range(int(num_residual))])
        self.up1 = UpLayer(c3, c2, upsample, s)
        self.up2 = UpLayer(c2, c1, upsample, s)
        self.out = ConvLayer(c1, 3, 9, norm=False, relu=False)
        self._config.update(make_arbitrary(self, style_dim, encoder))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] (and [N or 1, S] style weights or style vectors) -> [N, 3, H, W] in [0, 1]."""
        y0 = self.inp(x, style)
        y1 = self.down1(y0, style)
        y = run(self.res, self.down2(y1, style), style)
        y = self.up2(self.up1(y, y1, style), y0, style)
        # A sigmoid keeps gradients alive where a clamp would cut them; (tanh+1)/2 in other codebases.
        return torch.sigmoid(self.out(y))

    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild this network."""
        return dict(self._config)
