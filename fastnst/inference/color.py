"""Pixel-wise post-processing of a stylized image: colour preservation and strength."""

from __future__ import annotations

import torch

# YIQ, the colour space Gatys et al. 2016 ("Preserving Color in Neural Artistic Style Transfer") use for
# luminance-only transfer: Y is luminance, I and Q carry the chroma.
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                           [0.595716, -0.274453, -0.321263],
                           [0.211456, -0.522591, 0.311135]])
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB -> YIQ (Y in [0, 1])."""
    return torch.einsum("ij,njhw->nihw", RGB_TO_YIQ.to(x), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", YIQ_TO_RGB.to(x), x)


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the content's chroma (I, Q): the style changes texture and light, not
    colour. Both [N, 3, H, W] in [0, 1]; the result may leave [0, 1] slightly (clamped when saved)."""
    yiq = rgb_to_yiq(content)
    yiq[:, :1] = rgb_to_yiq(stylized)[:, :1]
    return yiq_to_rgb(yiq)


def blend(stylized: torch.Tensor, content: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength`` * stylized + (1 - ``strength``) * content; 0 gives the content back exactly."""
    if strength >= 1.0:
        return stylized
    if strength <= 0.0:
        return content.clone()
    return torch.lerp(content, stylized, strength)
