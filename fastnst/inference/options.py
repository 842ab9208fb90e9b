"""How to stylize, as options that every caller passes alike: :class:`StylizeOptions` (tiling, colour, strength:
how each image or frame is stylized)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastnst.errors import UserError
from fastnst.inference.color import blend, preserve_color


@dataclass
class StylizeOptions:
    """How to stylize: tiling, colour preservation and strength (all pixel-exact when off)."""

    tile: int | None = None
    tile_overlap: int | None = None  # None: min(96, tile // 3), enough for the paper network's receptive field
    tile_stats_size: int = 1024
    preserve_color: bool = False
    strength: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise UserError(f"--strength must be between 0 and 1, got {self.strength}")
        if self.tile is not None:
            if self.tile < 32:
                raise UserError(f"--tile must be at least 32 px, got {self.tile}")
            if not 0 <= self.overlap <= self.tile // 2:
                raise UserError(f"--tile-overlap must be between 0 and half the tile ({self.tile // 2}), "
                                f"got {self.overlap}")
        if self.tile_stats_size < 32:
            raise UserError(f"--tile-stats-size must be at least 32 px, got {self.tile_stats_size}")

    @property
    def overlap(self) -> int:
        if self.tile_overlap is not None:
            return self.tile_overlap
        return min(96, (self.tile or 0) // 3)

    def post(self, stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        if self.preserve_color:
            stylized = preserve_color(stylized, content)
        return blend(stylized, content, self.strength)
