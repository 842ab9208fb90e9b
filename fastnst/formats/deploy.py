"""What exported models share: the deployable wrapper (the pixel contract of a model file) and the
parity check of an exported file against PyTorch eager."""

from __future__ import annotations

import copy
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
VECTOR_INPUT = "style_vector"  # the style input of a network that takes a painting, and its encoder's output
PAINTING_INPUT = "painting"  # the encoder's input: [1, 3, H, W] in [0, 1], longer side ModelInfo.painting_size


def encoder_path(model: str | Path) -> Path:
    """Where the style encoder of an exported network that takes a painting lives: ``<stem>.encoder<suffix>``."""
    p = Path(model)
    return p.with_name(f"{p.stem}.encoder{p.suffix}")


class ExportCheckError(UserError):
    """The exported model does not reproduce PyTorch eager within the tolerance."""


class Deployable(nn.Module):
    """A network with the pixel contract of exported models: ``image`` float32 [N, 3, H, W] in [0, 1] (and, for a
    multi-style network, ``style_weights`` float32 [S]; for a network that takes a painting (``style_dim`` D),
    ``style_vector`` float32 [D]; applied to every image of the batch) -> ``stylized`` [N, 3, H, W] clamped to
    [0, 1]."""

    def __init__(self, net: nn.Module, num_styles: int = 1, style_dim: int | None = None) -> None:
        super().__init__()
        if "encoder" in net._modules:  # exported in its own file: not a weight of this one
            net = copy.copy(net)
            net._modules = {k: m for k, m in net._modules.items() if k != "encoder"}
        self.net, self.num_styles, self.style_dim = net, num_styles, style_dim

    @property
    def style_size(self) -> int | None:
        """Length of the style input (None: the network takes none)."""
        if self.style_dim is not None:
            return self.style_dim
        return self.num_styles if self.num_styles > 1 else None

    @property
    def input_names(self) -> list[str]:
        if self.style_size is None:
            return [IMAGE_INPUT]
        return [IMAGE_INPUT, VECTOR_INPUT if self.style_dim is not None else STYLE_INPUT]

    def forward(self, image: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        style = None
        if self.style_size is not None:
            if style_weights is None:
                raise ValueError("this network needs its style input")
            style = style_weights.reshape(1, -1).expand(image.shape[0], -1)
        return self.net(image, style).clamp(0.0, 1.0)

    def example_inputs(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.style_size
        return (image,) if n is None else (image, torch.full((n,), 1.0 / n))


class EncoderDeployable(nn.Module):
    """The style encoder of a network that takes a painting, as exported beside it: ``painting`` float32
    [1, 3, H, W] in [0, 1] (longer side the model's ``painting_size``) -> ``style_vector`` float32 [D]."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, painting: torch.Tensor) -> torch.Tensor:
        return self.encoder(painting).reshape(-1)


def encoder_dynamic_shapes() -> tuple[dict[int, Any], ...]:
    from torch.export import Dim

    return ({2: Dim("height", min=32, max=8192), 3: Dim("width", min=32, max=8192)},)


def encoder_check_inputs() -> list[torch.Tensor]:
    """Paintings a parity check of an encoder covers: a square one and one of odd, unequal sides."""
    return check_inputs(((1, 3, 64, 64), (1, 3, 77, 50)), seed=3)


def dynamic_shapes(num_styles: int) -> tuple[dict[int, Any], ...]:
    """torch.export's dynamic dimensions of the exported inputs: batch, height and width of ``image``
    (the style input, [S] or [D], is fixed by the network); ``num_styles`` 1 means no style input."""
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


def check_styles(num_styles: int, style_dim: int | None = None) -> list[torch.Tensor | None]:
    """Style inputs a parity check covers: none for one style; the first and last pure styles and an uneven
    blend of all otherwise; for a network that takes a painting (``style_dim`` D), two seeded random vectors."""
    if style_dim is not None:
        g = torch.Generator().manual_seed(5)
        return [torch.randn(style_dim, generator=g), 0.5 * torch.randn(style_dim, generator=g)]
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
    if style.numel() > 8:  # a style vector: its length and norm say which one
        return f"{shape} style vector [{style.numel()}] |v|={float(style.norm()):.2f}"
    return f"{shape} style " + ",".join(f"{v:.2g}" for v in style.tolist())


def check_runtime(path: Path, net: nn.Module, run: Any, num_styles: int = 1, *, tolerance: float = TOLERANCE,
                  shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES, style_dim: int | None = None,
                  runtime: str = "the runtime") -> list[tuple[str, float]]:
    """A runtime's output against PyTorch eager on ``shapes`` and :func:`check_styles`: ``run(image, style, name)``
    takes numpy arrays (``style`` None for one style; ``name`` the model's style input) and returns the stylized
    array. Returns (case, max abs diff) per case; raises :class:`ExportCheckError` above ``tolerance``."""
    model = Deployable(net, num_styles, style_dim).eval().to("cpu", torch.float32)
    style_name = model.input_names[-1]
    results = []
    for x in check_inputs(shapes):
        for style in check_styles(num_styles, style_dim):
            with torch.no_grad():
                ref = model(x, style).numpy()
            y = run(x.numpy(), None if style is None else style.numpy(), style_name)
            if y.shape != ref.shape:
                raise ExportCheckError(f"{path} returned shape {y.shape} in {runtime} for input {tuple(x.shape)}; "
                                       f"expected {ref.shape}")
            results.append((case_name(x, style), diff(y, ref)["max_abs"]))
    raise_if_above(path, results, tolerance)
    return results
