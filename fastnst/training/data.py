"""Training data: any tree of photos (COCO train2014 is one flat folder of ~83k JPEGs).

Unreadable files are skipped and counted, never fatal. Sampling is a pure function of
(seed, epoch, position), crops included, so a run resumed mid-epoch sees exactly the images and crops
an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from fastnst.errors import UserError
from fastnst.media.image import find_images, open_image, pil_to_tensor, resize_shorter
from fastnst.media.limits import HELD_RESIZED, PixelBudget
from fastnst.training.paintings import PairedDataset, PaintingSet
from fastnst.training.prepared import PreparedDataset, is_prepared, prepared_items

MAX_RETRIES = 16  # consecutive unreadable files tolerated before a sample gives up
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # ImageTooLarge is a ValueError


def training_budget() -> PixelBudget:
    """What decoding one training photo may take: decoded then resized at once, in every loader process at the same
    time (an image larger than that is skipped and counted like an unreadable one)."""
    info = torch.utils.data.get_worker_info()
    return PixelBudget(HELD_RESIZED, copies=info.num_workers if info is not None else 1, doing="reading it")


def readable(path: Path, size: int) -> bool:
    """Whether ``path`` decodes (as training would decode it); a warning names it when it does not."""
    try:
        open_image(path, draft_size=size, budget=training_budget())
        return True
    except UNREADABLE as exc:
        warnings.warn(f"skipping unreadable image {path}: {type(exc).__name__}: {exc}", stacklevel=2)
        return False


def _list_items(root: str, what: str) -> list[Path] | list[int]:
    """Image files under a folder, or the item numbers of a dataset written by ``python -m fastnst.prepare``."""
    return prepared_items(root) if is_prepared(root) else find_images(root, what)


class Sample:
    """Sampler key: which file, and the seed of its random crop."""

    __slots__ = ("index", "seed")

    def __init__(self, index: int, seed: tuple[int, ...]) -> None:
        self.index, self.seed = index, seed


class ImageFolderDataset(Dataset):
    """Images as float32 [3, S, S] in [0, 1]: shorter side resized to S, then a random (train) or
    centre (validation) crop. ``__getitem__`` returns ``(image, 1 if the file at that index was unreadable else 0)``;
    an unreadable file is replaced by the next readable one."""

    def __init__(self, files: Sequence[Path], image_size: int, train: bool = True) -> None:
        self.files = list(files)
        self.image_size = int(image_size)
        self.train = train

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path, rng: np.random.Generator | None) -> torch.Tensor:
        s = self.image_size
        img = resize_shorter(open_image(path, draft_size=s, budget=training_budget()), s)
        w, h = img.size
        if rng is not None:
            left, top = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        else:
            left, top = (w - s) // 2, (h - s) // 2
        return pil_to_tensor(img.crop((left, top, left + s, top + s)))

    def __getitem__(self, key: Sample | int) -> tuple[torch.Tensor, int]:
        if isinstance(key, Sample):
            index, seed = key.index, key.seed
        else:
            index, seed = int(key), (int(key),)
        tries = min(MAX_RETRIES, len(self.files))
        for attempt in range(tries):
            path = self.files[(index + attempt) % len(self.files)]
            rng = np.random.default_rng([*seed, attempt]) if self.train else None
            try:
                # Count the file at ``index`` only: neighbours tried as stand-ins are counted at their own index.
                return self._load(path, rng), int(attempt > 0)
            except UNREADABLE as exc:
                warnings.warn(f"skipping unreadable image {path}: {type(exc).__name__}: {exc}", stacklevel=1)
        if tries == len(self.files):
            raise UserError(f"all {tries} images of this {'training' if self.train else 'validation'} set are "
                            f"unreadable (e.g. {self.files[index]}); check the data folder")
        raise UserError(f"{tries} consecutive images from {self.files[index]} on are unreadable; check the data folder")


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers ignore SIGINT/SIGTERM sent to the whole process group (Ctrl-C, scancel): the main
    process finishes its step and checkpoints, then shuts the workers down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def collate(batch: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Stack images; add up the skipped-file counts (they travel with the batch out of the workers). Items with a
    painting (:class:`fastnst.training.paintings.PairedDataset`) also give the stacked paintings and their indices."""
    images = torch.stack([b[0] for b in batch])
    skipped = sum(b[1] for b in batch)
    if len(batch[0]) == 2:
        return images, skipped
    return images, skipped, torch.stack([b[2] for b in batch]), torch.tensor([b[3] for b in batch])


class ResumableSampler(Sampler[Sample]):
    """Shuffled, sharded and resumable: epoch ``e`` is a fixed permutation of (seed, e), cut into
    ``world_size`` shards of whole batches; :meth:`resume` skips the batches a checkpoint already
    consumed. ``len()`` stays the full epoch so the trainer's epoch bookkeeping is unchanged."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.batches = (n // world_size) // batch_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batch: int) -> None:
        self.epoch, self._resume = epoch, (epoch, batch)

    def __iter__(self) -> Iterator[Sample]:
        epoch = self.epoch
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        shard = perm[self.rank: self.batches * self.batch_size * self.world_size: self.world_size]
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1] * self.batch_size
            self._resume = None
        for pos in range(start, len(shard)):
            yield Sample(shard[pos], (self.seed, epoch, self.rank, pos))


class StyleDataModule(pl.LightningDataModule):
    """Photos for training, plus a fixed set of validation images.

    Args:
        root: folder (searched recursively) of training photos.
        image_size: crop size S; the shorter side is resized to S first.
        batch_size: images per step and device.
        num_workers: loader processes (None: up to 8, leaving one core for the trainer).
        limit: use only the first N files (sorted order) for training.
        val_root: a separate folder of validation images; otherwise ``val_count`` files are held out.
        val_count: number of validation images.
        seed: shuffling and crop seed.
    """

    def __init__(self, root: str, image_size: int = 256, batch_size: int = 4, num_workers: int | None = None,
                 limit: int | None = None, val_root: str | None = None, val_count: int = 8, seed: int = 0,
                 prefetch_factor: int = 4) -> None:
        super().__init__()
        if image_size < 16:
            raise UserError(f"data.image_size must be at least 16 pixels, got {image_size}")
        if batch_size < 1:
            raise UserError(f"data.batch_size must be at least 1, got {batch_size}")
        if limit is not None and limit < 1:
            raise UserError(f"data.limit must be a positive number of images or null, got {limit}")
        if num_workers is not None and num_workers < 0:
            raise UserError(f"data.num_workers must be 0 (load in the training process) or more, or null (up to 8), "
                            f"got {num_workers}")
        if val_count < 0:
            raise UserError(f"data.val_count must be 0 (no validation) or more, got {val_count}")
        if prefetch_factor < 1:
            raise UserError(f"data.prefetch_factor must be at least 1 batch per loader process, got {prefetch_factor}")
        self.root, self.val_root = root, val_root
        self.image_size, self.batch_size, self.limit = image_size, batch_size, limit
        self.val_count, self.seed, self.prefetch_factor = val_count, seed, prefetch_factor
        self.num_workers = num_workers if num_workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))
        self.train_files: list[Path] = []
        self.val_files: list[Path] = []
        self.sampler: ResumableSampler | None = None
        self.paintings: PaintingSet | None = None  # training paintings of a network that takes any painting
        self.val_paintings: PaintingSet | None = None

    def attach_paintings(self, train: PaintingSet, val: PaintingSet | None) -> None:
        """Pair every photo with a painting (``style.arbitrary=true``): training photos with a random training
        painting, validation photos with the validation paintings (``val/unseen``) and with training paintings
        (``val/seen``)."""
        self.paintings, self.val_paintings = train, val

    def scan(self) -> None:
        """List the files (cheap, no decoding); errors name the folder. Idempotent."""
        if self.train_files:
            return
        files = _list_items(self.root, "data.root")
        if self.val_root:
            candidates = _list_items(self.val_root, "data.val_root")
            val = self._readable_subset(candidates, range(self.val_count), set())
            if self.val_count > 0 and not val:
                raise UserError(f"data.val_root {self.val_root} holds no readable image ({len(candidates)} tried); "
                                f"point it at a folder of photos, or leave it null to hold out training images")
        else:
            # Hold out an evenly spread, fixed set so validation never sees training images; an unreadable
            # pick is replaced by the next readable file (it stays in the training set, where it is skipped).
            k = min(self.val_count, max(0, len(files) - 1)) if len(files) > 1 else 0
            step = len(files) / k if k else 0
            wanted = [int(i * step) for i in range(k)]
            val = self._readable_subset(files, wanted, set(), limit=max(0, len(files) - 1))
            chosen = set(val)
            files = [f for f in files if f not in chosen]
        if self.limit:
            files = files[: self.limit]
        self.train_files, self.val_files = files, val

    def _readable_subset(self, items: Sequence[Any], wanted: Any, taken: set[Any], limit: int | None = None) -> list[Any]:
        """The items at positions ``wanted``, each unreadable one replaced by the next readable item not yet
        taken (at most ``limit`` items in all). Items of a prepared dataset are always readable."""
        out: list[Any] = []
        bad: set[int] = set()
        for i in wanted:
            if limit is not None and len(out) >= limit:
                break
            for j in range(i, len(items)):
                item = items[j]
                if j in bad or item in taken:
                    continue
                if isinstance(item, int) or readable(item, self.image_size):
                    out.append(item)
                    taken.add(item)
                    break
                bad.add(j)
        return out

    def check_batches(self, world_size: int = 1) -> None:
        """Every device gets at least one whole batch of training images (called before training starts)."""
        self.scan()
        n = len(self.train_files)
        if n // world_size < self.batch_size:
            raise UserError(f"data.root {self.root} has {n} training images, fewer than data.batch_size="
                            f"{self.batch_size} x {world_size} device(s); add images or lower data.batch_size")

    def setup(self, stage: str | None = None) -> None:
        self.scan()

    def _dataset(self, items: Sequence[Any], train: bool, root: str) -> Dataset:
        if items and isinstance(items[0], int):  # item numbers of a dataset written by fastnst.prepare

            return PreparedDataset(root, items, self.image_size, train)
        return ImageFolderDataset(items, self.image_size, train)

    def _loader_kwargs(self) -> dict[str, Any]:
        on_gpu = self.trainer is not None and self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        kw: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": on_gpu, "collate_fn": collate,
                              "worker_init_fn": _ignore_stop_signals if self.num_workers > 0 else None}
        if self.num_workers > 0:
            kw.update(persistent_workers=True, prefetch_factor=self.prefetch_factor)
        return kw

    def train_dataloader(self) -> DataLoader:
        self.scan()
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        n = len(self.train_files)
        self.check_batches(world)
        self.sampler = ResumableSampler(n, self.batch_size, self.seed, True, rank, world)
        if self.trainer is not None and self.trainer.global_step > 0:
            # Restored from a checkpoint (always written right after an optimizer step): continue mid-epoch
            # where it stopped. Lightning also steps on an epoch's last batch, so an epoch of B batches
            # has ceil(B / accumulate) steps.
            acc = self.trainer.accumulate_grad_batches
            steps_per_epoch = -(-self._batches_per_epoch() // acc)
            epoch, step_in_epoch = divmod(self.trainer.global_step, steps_per_epoch)
            self.sampler.resume(epoch, step_in_epoch * acc)
        ds = self._dataset(self.train_files, True, self.root)
        if self.paintings is not None:
            ds = PairedDataset(ds, self.paintings, train=True)
        return DataLoader(ds, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
                          **self._loader_kwargs())

    def _batches_per_epoch(self) -> int:
        """The batches of an epoch as the trainer runs them: the sampler's, cut by ``trainer.limit_train_batches``
        as Lightning cuts them (an int: at most that many; a fraction: that share, rounded down)."""
        assert self.sampler is not None
        batches = self.sampler.batches
        limit = getattr(self.trainer, "limit_train_batches", None)
        if isinstance(limit, int) and not isinstance(limit, bool):
            return max(1, min(batches, limit))
        if isinstance(limit, float) and limit < 1.0:
            return max(1, int(batches * limit))
        return batches

    def val_dataloader(self) -> DataLoader | list:
        self.scan()
        if not self.val_files:
            return []
        ds = self._dataset(self.val_files, False, self.val_root or self.root)
        kw = self._loader_kwargs()
        kw.update(num_workers=0, persistent_workers=False)
        kw.pop("prefetch_factor", None)
        if self.paintings is None:
            return DataLoader(ds, batch_size=self.batch_size, shuffle=False, **kw)
        # loader 0: the training paintings (seen), loader 1: the validation paintings (unseen), if any
        sets = [self.paintings] + ([self.val_paintings] if self.val_paintings is not None and len(self.val_paintings) else [])
        return [DataLoader(PairedDataset(ds, p, train=False), batch_size=self.batch_size, shuffle=False, **kw)
                for p in sets]

    def preview_paintings(self, count: int) -> list[tuple[str, torch.Tensor]]:
        """(name, [1, 3, P, P] centre crop) of the first ``count`` validation paintings (training ones if none)."""
        paintings = self.val_paintings if self.val_paintings is not None and len(self.val_paintings) else self.paintings
        if paintings is None:
            return []
        out = []
        for i in range(min(count, len(paintings))):
            crop, used, _ = paintings.load(i, None)
            out.append((Path(paintings.paths[used]).stem, crop.unsqueeze(0)))
        return out

    def preview_batch(self, count: int) -> torch.Tensor:
        """The first ``count`` validation images as [N, 3, S, S], for preview grids."""
        self.scan()
        if self.val_files:
            ds = self._dataset(self.val_files, False, self.val_root or self.root)
        else:
            ds = self._dataset(self.train_files, False, self.root)
        return torch.stack([ds[i][0] for i in range(min(count, len(ds)))])
