"""The style predictor of magenta's arbitrary stylization (Ghiasi et al. 2017, distilled into MobileNetV2 for TF Hub
and TFLite): MobileNetV2 (Sandler et al. 2018, width 1.0, batch norms folded into the convolutions' biases), global
average pooling and a 1x1 convolution to the 100-d style vector. Used by ``magenta_arbitrary``
(:mod:`fastnst.models.magenta`); its weights come from magenta's file (:mod:`fastnst.formats.magenta`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# (expansion, output channels, blocks, stride) of MobileNetV2 (Sandler et al. 2018, table 2)
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding (for stride 2 on an even side: one row and column at the
    bottom and right only), as the original was trained with; optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True) -> None:
        super().__init__(cin, cout, kernel, stride, groups=groups)
        self.relu6 = relu6

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        k, s = self.kernel_size[0], self.stride[0]
        if k > 1:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):
                total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        y = super().forward(x)
        return F.relu6(y) if self.relu6 else y


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = SameConv(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv(hidden, hidden, 3, stride, groups=hidden)
        self.project = SameConv(hidden, cout, 1, relu6=False)
        self.shortcut = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.shortcut else y


class MobileNetV2Predictor(nn.Module):
    """Painting [N, 3, H, W] in [0, 1] (magenta: 256x256) -> style vector [N, ``style_dim``]."""

    def __init__(self, style_dim: int = 100, painting_size: int = 256) -> None:
        super().__init__()
        self.style_dim, self.painting_size = int(style_dim), int(painting_size)
        self.stem = SameConv(3, 32, 3, 2)
        blocks: list[nn.Module] = []
        cin = 32
        for t, c, n, s in BLOCKS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, t, s if i == 0 else 1))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = SameConv(cin, 1280, 1)
        self.bottleneck = nn.Conv2d(1280, self.style_dim, 1)

    def forward(self, painting: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(painting)))
        return self.bottleneck(x.mean(dim=(2, 3), keepdim=True)).flatten(1)

    def config(self) -> dict[str, Any]:
        return {"painting_size": self.painting_size}
