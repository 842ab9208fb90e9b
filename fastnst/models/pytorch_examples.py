"""The network of pytorch/examples ``fast_neural_style`` (the most used pretrained fast style models in
PyTorch: candy, mosaic, rain_princess, udnie, and many trained with that project), registered as
``pytorch_examples``, with that project's module names so its ``.pth`` state dicts load as they are.

Its own contract differs from fastnst's: pixels in 0-255 in, an unclamped 0-255 image out (clamped when
saved). This class keeps fastnst's contract ([0, 1] in, [0, 1]-scaled out; clamping where pixels leave
the program) by scaling around the original computation. Upsampling is computed in its exact low-resolution
form (:func:`fastnst.models.layers.upsample_conv`), then cropped to the matching
downsampling stage, so any size gives an output of the input's size; pytorch/examples itself returns
one or two extra rows/columns when a side is not a multiple of 4.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastnst.models.layers import StyleNorm, upsample_conv
from fastnst.models.registry import register_model


class _Conv(nn.Module):
    """pytorch/examples' ConvLayer: reflection padding and a convolution (keys ``conv2d.weight``, ``.bias``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.in1 = _Conv(channels, channels, 3), StyleNorm(channels)
        self.conv2, self.in2 = _Conv(channels, channels, 3), StyleNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.in2(self.conv2(torch.relu(self.in1(self.conv1(x)))))


@register_model("pytorch_examples")
class ExamplesTransformerNet(nn.Module):
    """pytorch/examples' TransformerNet (32-64-128, five residual blocks, nearest upsampling), one style."""

    def __init__(self, num_styles: int = 1) -> None:
        super().__init__()
        if num_styles != 1:
            raise ValueError("the pytorch_examples architecture holds one style")
        self.conv1, self.in1 = _Conv(3, 32, 9), StyleNorm(32)
        self.conv2, self.in2 = _Conv(32, 64, 3, 2), StyleNorm(64)
        self.conv3, self.in3 = _Conv(64, 128, 3, 2), StyleNorm(128)
        for i in range(1, 6):
            setattr(self, f"res{i}", _Residual(128))
        self.deconv1, self.in4 = _Conv(128, 64, 3), StyleNorm(64)
        self.deconv2, self.in5 = _Conv(64, 32, 3), StyleNorm(32)
        self.deconv3 = _Conv(32, 3, 9)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 3, H, W], pytorch/examples' output / 255 (not clamped)."""
        y0 = torch.relu(self.in1(self.conv1(x * 255.0)))
        y1 = torch.relu(self.in2(self.conv2(y0)))
        y = torch.relu(self.in3(self.conv3(y1)))
        for i in range(1, 6):
            y = getattr(self, f"res{i}")(y)
        y = upsample_conv(y, self.deconv1.conv2d)[..., : y1.shape[-2], : y1.shape[-1]]
        y = torch.relu(self.in4(y))
        y = upsample_conv(y, self.deconv2.conv2d)[..., : y0.shape[-2], : y0.shape[-1]]
        y = torch.relu(self.in5(y))
        return self.deconv3(y) / 255.0

    def config(self) -> dict[str, Any]:
        return {"num_styles": 1}
