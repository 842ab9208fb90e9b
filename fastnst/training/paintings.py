"""Paintings for a network that takes any painting (``style.arbitrary=true``): the files, split into training
and validation paintings, and datasets that pair each photo with a painting crop.

Nothing is kept per painting but its path: a batch's style targets are computed from its own painting crops
(:meth:`fastnst.losses.PerceptualLoss.style_grams`), so 80k paintings cost what 12 do. Each loader process
keeps its last decoded paintings (:data:`DECODED_CACHE` of them), which pays when a small set repeats.
The painting of each photo is a pure function of the photo's sample seed, so resumed runs draw the same.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fastnst.errors import UserError
from fastnst.media.image import open_image, pil_to_tensor, resize_shorter

DECODED_CACHE = 64  # decoded, resized paintings kept per loader process
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
PAINTING_SEED = 1_000_033  # mixed into a sample's seed to draw its painting apart from its crop


def split_paintings(paths: Sequence[str], val_count: int) -> tuple[list[str], list[str]]:
    """(training, validation) paintings: ``val_count`` evenly spread, fixed paintings held out (never trained on);
    at least one painting stays for training."""
    paths = list(paths)
    if not paths:
        raise UserError("style.images holds no painting; point it at a folder (or a list) of paintings")
    if val_count < 0:
        raise UserError(f"style.val_count must be >= 0, got {val_count}")
    k = min(val_count, len(paths) - 1)
    step = len(paths) / k if k else 0
    held = {int(i * step) for i in range(k)}
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


class PaintingSet:
    """Paintings as [3, crop, crop] float32 crops in [0, 1]: shorter side resized to ``size``, then a random
    (training) or centre (validation) square crop of ``crop`` px. An unreadable painting is replaced by the next
    readable one and counted (a warning names it)."""

    def __init__(self, paths: Sequence[str], size: int, crop: int | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.size = int(size)
        self.crop = int(crop or size)
        if self.crop > self.size:
            raise UserError(f"style.crop={self.crop} is larger than style.size={self.size}")
        self._cache: OrderedDict[int, Image.Image] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def _decoded(self, index: int) -> Image.Image:
        img = self._cache.get(index)
        if img is None:
            img = resize_shorter(open_image(Path(self.paths[index]), draft_size=self.size), self.size)
            self._cache[index] = img
            if len(self._cache) > DECODED_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return img

    def load(self, index: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, int, bool]:
        """(crop, index of the painting used, whether ``index`` itself was unreadable)."""
        for attempt in range(min(16, len(self.paths))):
            i = (index + attempt) % len(self.paths)
            try:
                img = self._decoded(i)
            except UNREADABLE as exc:
                warnings.warn(f"skipping unreadable painting {self.paths[i]}: {type(exc).__name__}: {exc}", stacklevel=1)
                continue
            w, h = img.size
            s = self.crop
            if rng is not None:
                left, top = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            else:
                left, top = (w - s) // 2, (h - s) // 2
            return pil_to_tensor(img.crop((left, top, left + s, top + s))), i, attempt > 0
        raise UserError(f"16 consecutive paintings from {self.paths[index]} on are unreadable; check style.images")


class PairedDataset(Dataset):
    """A photo dataset whose items also carry a painting: ``(photo, skipped, painting, painting index)``.

    Training: the painting is drawn uniformly from the sample's seed (resumable, different per DDP rank).
    Validation: photo ``i`` gets painting ``i mod P``, the same pairs at every validation."""

    def __init__(self, photos: Dataset, paintings: PaintingSet, train: bool) -> None:
        self.photos, self.paintings, self.train = photos, paintings, train

    def __len__(self) -> int:
        return len(self.photos)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, int, torch.Tensor, int]:
        photo, skipped = self.photos[key]
        if self.train and hasattr(key, "seed"):
            rng = np.random.default_rng([*key.seed, PAINTING_SEED])
            index = int(rng.integers(len(self.paintings)))
        else:
            rng, index = None, int(getattr(key, "index", key)) % len(self.paintings)
        painting, used, bad = self.paintings.load(index, rng)
        return photo, skipped + int(bad), painting, used
