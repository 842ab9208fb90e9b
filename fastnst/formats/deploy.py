"""What exported models share: the deployable wrapper (the pixel contract of a model file) and the
parity check of an exported file against PyTorch eager."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastnst.errors import UserError

CHECK_SHAPES = ((1, 3, 96, 128), (2, 3, 75, 101))  # the second is not a multiple of 4 and has batch 2
TOLERANCE = 1e-3
IMAGE_INPUT, STYLE_INPUT, OUTPUT = "image", "style_weights", "stylized"


class ExportCheckError(UserError):
    """The exported model does not reproduce PyTorch eager within the tolerance."""


class Deployable(nn.Module):
    """A network with the pixel contract of exported models: ``image`` float32 [N, 3, H, W] in [0, 1]
    (and, for a multi-style network, ``style_weights`` float32 [S], applied to every image of the batch)
    -> ``stylized`` [N, 3, H, W] clamped to [0, 1]."""

    def __init__(self, net: nn.Module, num_styles: int = 1) -> None:
        super().__init__()
        self.net, self.num_styles = net, num_styles

    def forward(self, image: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        style = None
        if self.num_styles > 1:
            if style_weights is None:
                raise ValueError("a multi-style model needs style_weights")
            style = style_weights.reshape(1, -1).expand(image.shape[0], -1)
        return self.net(image, style).clamp(0.0, 1.0)

    def example_inputs(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (image,) if self.num_styles == 1 else (image, torch.full((self.num_styles,), 1.0 / self.num_styles))


def dynamic_shapes(num_styles: int) -> tuple[dict[int, Any], ...]:
    """torch.export's dynamic dimensions of the exported inputs: batch, height and width of ``image``
    (``style_weights`` is [S], fixed by the network)."""
    from torch.export import Dim

    image = {0: Dim("batch", min=1, max=4096), 2: Dim("height", min=5, max=65536), 3: Dim("width", min=5, max=65536)}
    return (image,) if num_styles == 1 else (image, {})


def check_inputs(shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES, seed: int = 0) -> list[torch.Tensor]:
    """Photo-like test inputs: smooth random colour fields plus fine noise, float32 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, c, h, w in shapes:
        coarse = torch.rand(n, c, 4, 5, generator=g)
        smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        out.append((smooth + 0.05 * torch.randn(n, c, h, w, generator=g)).clamp(0, 1))
    return out


def check_styles(num_styles: int) -> list[torch.Tensor | None]:
    """Style weights a parity check covers: none for one style; the first and last pure styles and an
    uneven blend of all otherwise."""
    if num_styles == 1:
        return [None]
    first, last = torch.zeros(num_styles), torch.zeros(num_styles)
    first[0], last[-1] = 1.0, 1.0
    blend = torch.arange(1, num_styles + 1, dtype=torch.float32)
    return [first, last, blend / blend.sum()]


def diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((d ** 2).mean())
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "psnr_db": float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)}


def raise_if_above(path: Path, results: list[tuple[str, float]], tolerance: float) -> None:
    worst = max(results, key=lambda r: r[1])
    if not worst[1] <= tolerance:  # also catches NaN
        raise ExportCheckError(f"{path} differs from PyTorch eager by {worst[1]:.3g} at {worst[0]} "
                               f"(tolerance {tolerance:g}); the export is not trustworthy")


def case_name(x: torch.Tensor, style: torch.Tensor | None) -> str:
    shape = "x".join(map(str, x.shape))
    if style is None:
        return shape
    return f"{shape} style " + ",".join(f"{v:.2g}" for v in style.tolist())
