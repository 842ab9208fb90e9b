"""How to stylize, as options that every caller passes alike: :class:`StylizeOptions` (tiling, colour, strength:
how each image or frame is stylized) and :class:`VideoOptions` (what a video adds: frames per model call, size,
smoothing in time, encoding)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastnst.errors import UserError
from fastnst.inference.color import blend, preserve_color
from fastnst.media.encoding import EncodeSettings


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


@dataclass(frozen=True)
class VideoOptions:
    """How a video is stylized beyond each frame's :class:`StylizeOptions`: ``batch_size`` frames per model call,
    frames scaled to ``max_size`` (longer side) first, ``temporal_blend`` in [0, 1) (see
    :class:`fastnst.inference.video.TemporalBlend`), the ``encode`` settings, and a progress bar."""

    batch_size: int = 1
    max_size: int | None = None
    temporal_blend: float = 0.0
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    progress: bool = True

    def validate(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_size is not None and self.max_size < 5:
            raise UserError(f"--max-size must be at least 5 px, got {self.max_size}")
        if not 0.0 <= self.temporal_blend < 1.0:
            raise UserError(f"--temporal-blend must be in [0, 1), got {self.temporal_blend}")
