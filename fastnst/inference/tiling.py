"""Stylize images larger than memory allows in overlapping tiles that look like one stylization.

Instance norm would normalise each tile by its own statistics, so tiles would differ in colour and
contrast. Instead every norm layer (:class:`fastnst.models.StyleNorm`) uses the statistics of the whole
image, measured once on a copy whose longer side is at most ``stats_size``, and tiles are blended with
linear ramps over their overlap. A model that can do that is a :class:`TileModel`: the eager network
(:class:`EagerTiles`, here) or an exported graph (:mod:`fastnst.inference.tiling_exported`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from fastnst.models import StyleNorm
from fastnst.models.layers import Conditional


class FixedStyleNorm(Conditional):
    """A :class:`StyleNorm` with frozen per-channel statistics (shares the original's scale and shift).
    Conditional, so that the blocks around it hand it the style weights as they do the norm it replaces."""

    def __init__(self, norm: StyleNorm) -> None:
        super().__init__()
        self.norm = norm
        self.register_buffer("mean", torch.zeros(norm.num_features))
        self.register_buffer("var", torch.ones(norm.num_features))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        scale, shift = self.norm.scale_shift(style)
        xhat = F.batch_norm(x, self.mean, self.var, None, None, False, 0.0, self.norm.eps)
        if scale.dim() == 1:
            return xhat * scale[None, :, None, None] + shift[None, :, None, None]
        return torch.addcmul(shift[:, :, None, None], xhat, scale[:, :, None, None])


def fixed_norm_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (sharing its weights) whose norms use statistics set by :func:`set_norm_stats`
    instead of each input's own."""
    return _copy_tree(net).eval()


def _copy_tree(module: nn.Module) -> nn.Module:
    if isinstance(module, StyleNorm):
        return FixedStyleNorm(module).to(device=module.weight.device, dtype=module.weight.dtype)
    clone = copy.copy(module)  # shallow: parameters are shared, only the module tree is rebuilt
    clone._modules = {name: _copy_tree(child) for name, child in module.named_children()}
    return clone


def norm_stats(net: nn.Module, x: torch.Tensor, style: torch.Tensor | None = None
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel (mean, biased variance) at the input of every norm of ``net`` for one image."""
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        var, mean = torch.var_mean(args[0].float(), dim=(0, 2, 3), unbiased=False)
        stats.append((mean, var))

    handles = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, StyleNorm)]
    try:
        with torch.inference_mode():
            net(x, style)
    finally:
        for h in handles:
            h.remove()
    return stats


def set_norm_stats(tiler: nn.Module, stats: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    fixed = [m for m in tiler.modules() if isinstance(m, FixedStyleNorm)]
    if len(fixed) != len(stats):
        raise RuntimeError(f"{len(stats)} statistics for {len(fixed)} norm layers")
    for m, (mean, var) in zip(fixed, stats):
        m.mean = mean.to(device=m.mean.device, dtype=m.norm.weight.dtype)
        m.var = var.to(device=m.var.device, dtype=m.norm.weight.dtype)


class TileModel(Protocol):
    """A model whose norms can run with fixed statistics: ``fix_stats(small, style)`` measures every norm's
    statistics on ``small`` ([1, 3, h, w] float32 CPU, the whole image downscaled) and keeps them;
    ``run(tile, style)`` stylizes a [1, 3, h, w] float32 CPU tile with them, float32 CPU out. ``style``: None or
    [1, S] style weights."""

    def fix_stats(self, small: torch.Tensor, style: torch.Tensor | None) -> None: ...

    def run(self, tile: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor: ...


class EagerTiles:
    """:class:`TileModel` of an eager network (on any device and dtype): its statistics through forward hooks, its
    tiles through :func:`fixed_norm_copy` (which shares the weights)."""

    def __init__(self, net: nn.Module) -> None:
        self.net, self.tiler = net, fixed_norm_copy(net)
        p = next(net.parameters())
        self.device, self.dtype = p.device, p.dtype

    def _style(self, style: torch.Tensor | None) -> torch.Tensor | None:
        return None if style is None else style.to(device=self.device, dtype=self.dtype)

    def fix_stats(self, small: torch.Tensor, style: torch.Tensor | None) -> None:
        set_norm_stats(self.tiler, norm_stats(self.net, small.to(device=self.device, dtype=self.dtype),
                                              self._style(style)))

    @torch.inference_mode()
    def run(self, tile: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.tiler(tile.to(device=self.device, dtype=self.dtype), self._style(style)).to("cpu", torch.float32)


def tile_spans(length: int, tile: int, overlap: int, align: int = 4) -> list[tuple[int, int]]:
    """(start, end) of tiles about ``tile`` long covering ``length``, neighbours sharing >= ``overlap`` px.

    Starts are multiples of ``align`` (the network's total stride), so each tile's stride-2 convolutions
    sample the same pixels as they do on the whole image; the last tile may be up to ``align - 1`` longer.
    """
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - tile) / max(1, tile - overlap - align + 1)) + 1
    step = (length - tile) / (n - 1)
    starts = sorted({int(round(i * step)) // align * align for i in range(n)})
    return [(s, s + tile if i < len(starts) - 1 else length) for i, s in enumerate(starts)]


def _ramp(size: int, start: int, length: int, overlap: int) -> torch.Tensor:
    """1-D blending weight of a tile: rises linearly over ``overlap`` pixels at interior edges."""
    w = torch.ones(size)
    if overlap > 0:
        i = torch.arange(size, dtype=torch.float32)
        if start > 0:
            w = torch.minimum(w, (i + 0.5) / overlap)
        if start + size < length:
            w = torch.minimum(w, (size - i - 0.5) / overlap)
    return w


def stylize_tiled(model: TileModel, x: torch.Tensor, *, tile: int, overlap: int, stats_size: int,
                  style: torch.Tensor | None = None,
                  post: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Stylize [1, 3, H, W] (float32, CPU) in overlapping ``tile`` x ``tile`` tiles with feathered blending.

    ``style`` is None or [1, S] style weights. The network's memory is that of one tile (plus the stats
    pass); the full-size images are the float32 input and output, 24 bytes per pixel (the blending weights
    are separable: two vectors). ``post(stylized, content)`` is applied per tile (it must be pixel-wise).
    Returns [1, 3, H, W] float32 on the CPU.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError("stylize_tiled takes one image, [1, 3, H, W]")
    _, _, h, w = x.shape
    scale = min(1.0, stats_size / max(h, w))
    small = x if scale == 1.0 else F.interpolate(
        x, size=(max(5, round(h * scale)), max(5, round(w * scale))), mode="bicubic", antialias=True,
        align_corners=False).clamp_(0, 1)
    model.fix_stats(small, style)
    del small
    out = torch.zeros(1, 3, h, w)
    # A tile's weight is ramp_y (x) ramp_x and the tiles form a grid, so the sum of the weights at a pixel is
    # (sum of row ramps) * (sum of column ramps): two vectors instead of a full-size weight image.
    rows, cols = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    row_sum, col_sum = torch.zeros(h), torch.zeros(w)
    for y0, y1 in rows:
        row_sum[y0:y1] += _ramp(y1 - y0, y0, h, overlap)
    for x0, x1 in cols:
        col_sum[x0:x1] += _ramp(x1 - x0, x0, w, overlap)
    with torch.inference_mode():
        for y0, y1 in rows:
            wy = _ramp(y1 - y0, y0, h, overlap) / row_sum[y0:y1]
            for x0, x1 in cols:
                patch = x[:, :, y0:y1, x0:x1]
                y = model.run(patch, style)
                if post is not None:
                    y = post(y, patch)
                wt = wy[:, None] * (_ramp(x1 - x0, x0, w, overlap) / col_sum[x0:x1])[None, :]
                out[:, :, y0:y1, x0:x1] += y * wt
    return out
