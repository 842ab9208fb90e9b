"""Loss terms as pure functions. Images are [N, 3, H, W] RGB in [0, 1]; features are VGG19 activations."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

GramNorm = Literal["hw", "chw"]


def gram_matrix(features: torch.Tensor, norm: GramNorm = "hw") -> torch.Tensor:
    """Gram matrix of [N, C, H, W] features -> [N, C, C], always computed in float32.

    Each [C, H, W] map is reshaped to F = [C, H*W] and G = F @ F.T, divided by H*W (``"hw"``, the seed
    text's definition) or by C*H*W (``"chw"``, Johnson et al. / pytorch-examples). Float32 because
    fp16 Gram sums overflow and bf16 ones lose the small differences the style loss is made of.
    """
    n, c, h, w = features.shape
    if norm not in ("hw", "chw"):
        raise ValueError(f"gram norm must be 'hw' or 'chw', got {norm!r}")
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.reshape(n, c, h * w).float()
        g = torch.bmm(f, f.transpose(1, 2))
    return g / (h * w if norm == "hw" else c * h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared feature difference."""
    return F.mse_loss(features.float(), target.float())


def gram_distance(grams: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared difference of [N, C, C] Grams from [N or 1, C, C] targets -> [N]."""
    return (grams - targets.expand_as(grams)).pow(2).mean(dim=(1, 2))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (anisotropic, squared TV)."""
    dh = images[..., 1:, :] - images[..., :-1, :]
    dw = images[..., :, 1:] - images[..., :, :-1]
    return dh.float().pow(2).mean() + dw.float().pow(2).mean()
