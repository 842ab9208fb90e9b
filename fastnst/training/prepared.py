"""The prepared dataset format, read and written here: photos pre-resized once, so training never decodes
a JPEG again (``fastnst prepare SRC DST --shorter-side 256`` writes one; train with data.root=DST).

Every readable image under SRC is decoded exactly as the training data pipeline does (EXIF orientation,
RGB, JPEG draft mode, shorter side resized to ``--shorter-side``) and its uint8 pixels are appended to one flat
file, ``DST/images.u8``, read through a memory map. Random crops are still taken at training time, from
the same pixels and with the same random numbers as :class:`fastnst.training.data.ImageFolderDataset`, so a run
on DST sees exactly the crops a run on SRC would (at ``data.image_size`` equal to ``--shorter-side``).

The work is resumable: progress is committed every few seconds (``index.npy`` then ``manifest.json``,
each replaced atomically), so an interrupted run (Ctrl-C, a killed job) continues where the last
commit stopped when the same command is run again; bytes written after that commit are discarded.
Unreadable files are skipped, counted and listed in the manifest.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fastnst.errors import UserError
from fastnst.fileio import atomic_write, check_writable_folder
from fastnst.media.image import find_images, open_image, resize_shorter
from fastnst.media.limits import HELD_RESIZED, PixelBudget

FORMAT = "fastnst-prepared"
VERSION = 1
MANIFEST, INDEX, DATA, SOURCES = "manifest.json", "index.npy", "images.u8", "sources.txt"
# index.npy rows: byte offset in images.u8, height, width, position of the source file in sources.txt
INDEX_COLUMNS = ("offset", "height", "width", "source")


@dataclass
class PrepareStats:
    """What a :func:`prepare` call did: images written by this call, in total, skipped, bytes on disk."""

    written: int
    total: int
    skipped: int
    bytes: int
    resumed_at: int
    complete: bool


def is_prepared(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a folder written by :func:`prepare`."""
    p = Path(root).expanduser() / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root).expanduser() / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}); prepare the dataset again into a new folder") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a fastnst prepared-dataset manifest")
    if manifest.get("version") != VERSION:
        raise UserError(f"{path} has format version {manifest.get('version')}, this fastnst reads version {VERSION}; "
                        f"prepare the dataset again")
    return manifest


def read_index(root: str | os.PathLike[str], manifest: dict[str, Any] | None = None) -> np.ndarray:
    """The committed rows of ``index.npy`` as int64 [count, 4] (see INDEX_COLUMNS)."""
    root = Path(root).expanduser()
    manifest = manifest or read_manifest(root)
    count = int(manifest["count"])
    if count == 0:
        return np.zeros((0, 4), np.int64)
    try:
        index = np.load(root / INDEX)
    except (OSError, ValueError) as exc:
        raise UserError(f"{root / INDEX} is unreadable ({type(exc).__name__}); prepare the dataset again") from None
    if index.ndim != 2 or index.shape[1] != 4 or len(index) < count:
        raise UserError(f"{root / INDEX} does not match {root / MANIFEST}; prepare the dataset again")
    return index[:count].astype(np.int64)


def prepared_items(root: str | os.PathLike[str]) -> list[int]:
    """Item numbers 0..count-1 of a prepared dataset (what the data module samples from)."""
    manifest = read_manifest(root)
    if not manifest["count"]:
        raise UserError(f"data.root {root} is a prepared dataset with no images yet; run python -m fastnst.prepare to fill it")
    if not manifest.get("complete"):
        import warnings

        warnings.warn(f"{root} is an incomplete prepared dataset ({manifest['done']} of {manifest['sources']} "
                      f"source files); training uses the {manifest['count']} images it has. Run the same "
                      f"python -m fastnst.prepare command again to finish it.", stacklevel=2)
    return list(range(int(manifest["count"])))


class PreparedDataset(Dataset):
    """A prepared dataset as float32 [3, S, S] crops in [0, 1], like :class:`fastnst.training.data.ImageFolderDataset`.

    Keys are ``Sample`` (index, seed) or ints; a train crop's offsets come from
    ``np.random.default_rng([*seed, 0])`` exactly as ImageFolderDataset draws them for a readable
    file, so both datasets give the same tensors for the same pixels. ``__getitem__`` returns
    ``(image, 0)``: unreadable files were already skipped (and counted) when the dataset was prepared.
    """

    def __init__(self, root: str | os.PathLike[str], items: Sequence[int] | None, image_size: int,
                 train: bool = True) -> None:
        self.root = Path(root).expanduser()
        manifest = read_manifest(self.root)
        self.stored_size = int(manifest["size"])
        self.image_size, self.train = int(image_size), train
        if self.image_size > self.stored_size:
            raise UserError(f"data.image_size={self.image_size} is larger than the {self.stored_size} px the dataset "
                            f"{self.root} was prepared at; prepare it again with --shorter-side {self.image_size} "
                            f"(or more)")
        self.index = read_index(self.root, manifest)
        self.items = list(range(len(self.index))) if items is None else [int(i) for i in items]
        end = int(self.index[-1, 0] + self.index[-1, 1] * self.index[-1, 2] * 3) if len(self.index) else 0
        data = self.root / DATA
        if not data.is_file() or data.stat().st_size < end:
            raise UserError(f"{data} is missing or shorter than its index says; run python -m fastnst.prepare again to repair it")
        self._data: np.ndarray | None = None  # opened lazily: a memory map is per process (loader workers)

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    def pixels(self, item: int) -> np.ndarray:
        """The stored uint8 [h, w, 3] image of item number ``item`` (shorter side = the prepared size)."""
        if self._data is None:
            self._data = np.memmap(self.root / DATA, dtype=np.uint8, mode="r")
        offset, h, w, _ = (int(v) for v in self.index[item])
        return self._data[offset: offset + h * w * 3].reshape(h, w, 3)

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, int]:
        if hasattr(key, "index") and hasattr(key, "seed"):
            index, seed = key.index, key.seed
        else:
            index, seed = int(key), (int(key),)
        arr = self.pixels(self.items[index % len(self.items)])
        s = self.image_size
        if s != self.stored_size:
            arr = np.asarray(resize_shorter(Image.fromarray(arr), s))
        h, w = arr.shape[:2]
        if self.train:
            rng = np.random.default_rng([*seed, 0])  # attempt 0 of ImageFolderDataset's retry loop
            left, top = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        else:
            left, top = (w - s) // 2, (h - s) // 2
        crop = arr[top: top + s, left: left + s]
        return torch.from_numpy(crop.copy()).permute(2, 0, 1).float().div_(255.0), 0


# --- writing -------------------------------------------------------------------------------------
def _decode(job: tuple[str, int, int]) -> tuple[bytes, int, int] | str:
    """Pixels of one file as the training pipeline decodes them, or the error as text (an image too large for the
    memory available to each of the ``copies`` decoding processes is one)."""
    path, size, copies = job
    try:
        img = resize_shorter(open_image(path, draft_size=size, budget=PixelBudget(HELD_RESIZED, copies=copies,
                                                                                    doing="reading it")), size)
        arr = np.asarray(img, dtype=np.uint8)
        return arr.tobytes(), arr.shape[0], arr.shape[1]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _stray_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file left by an interrupted atomic write of one of our files."""
    for ours in (MANIFEST, INDEX, SOURCES):
        stem, suffix = os.path.splitext(ours)
        if name == ours + ".tmp" or (name.startswith(f".{stem}.") and name.endswith(f".tmp{suffix}")):
            return True
    return False


class _Writer:
    """Appends images to DST and commits index then manifest, each atomically."""

    def __init__(self, dst: Path, size: int, src: Path, sources: list[str], overwrite: bool) -> None:
        self.dst, self.size, self.src, self.sources = dst, size, src, sources
        manifest_path = dst / MANIFEST
        if dst.exists() and not dst.is_dir():
            raise UserError(f"DST {dst} is a file; give a folder for the prepared dataset")
        if dst.is_dir():  # temporary files of a write cut short (atomic_write's, and older versions' NAME.tmp)
            for f in dst.iterdir():
                if f.is_file() and _stray_temp(f.name):
                    f.unlink(missing_ok=True)
        if overwrite:
            for name in (MANIFEST, INDEX, DATA, SOURCES):
                (dst / name).unlink(missing_ok=True)
        if manifest_path.exists():
            old = read_manifest(dst)
            if int(old["size"]) != size:
                raise UserError(f"{dst} was prepared at --shorter-side {old['size']}, not {size}; use --shorter-side "
                                f"{old['size']} to resume it, a new DST, or --overwrite")
            done = int(old["done"])
            try:
                old_sources = (dst / SOURCES).read_text().splitlines()
            except OSError:
                raise UserError(f"{dst / SOURCES} is missing; prepare into a new DST or pass --overwrite") from None
            if old_sources[:done] != sources[:done]:
                raise UserError(f"the files under {src} are not those {dst} was being prepared from (the first {done} "
                                f"differ); use a new DST or --overwrite")
            self.done, self.skipped = done, list(old.get("skipped", []))
            self.rows = [list(r) for r in read_index(dst, old)]
        else:
            if dst.is_dir() and any(dst.iterdir()):
                raise UserError(f"DST {dst} is not empty and is not a prepared dataset; choose a new or empty folder")
            dst.mkdir(parents=True, exist_ok=True)
            self.done, self.skipped, self.rows = 0, [], []
        self.resumed_at = self.done
        atomic_write(dst / SOURCES, lambda p: p.write_text("\n".join(sources) + "\n"))
        end = self.end
        mode = "r+b" if (dst / DATA).exists() else "w+b"
        self.file = open(dst / DATA, mode)
        self.file.truncate(end)  # drop bytes written after the last commit
        self.file.seek(end)
        self.written = 0
        if self.done == 0:
            self.commit()

    @property
    def end(self) -> int:
        if not self.rows:
            return 0
        offset, h, w, _ = self.rows[-1]
        return int(offset + h * w * 3)

    def add(self, position: int, result: tuple[bytes, int, int] | str) -> None:
        if isinstance(result, str):
            self.skipped.append({"file": self.sources[position], "error": result[:300]})
        else:
            data, h, w = result
            self.rows.append([self.end, h, w, position])
            self.file.write(data)
            self.written += 1
        self.done = position + 1

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        rows = np.asarray(self.rows, dtype=np.int64).reshape(-1, 4)
        atomic_write(self.dst / INDEX, lambda p: np.save(p, rows))
        manifest = {"format": FORMAT, "version": VERSION, "size": self.size, "source": str(self.src),
                    "sources": len(self.sources), "done": self.done, "count": len(self.rows),
                    "complete": self.done >= len(self.sources), "bytes": self.end,
                    "index_columns": list(INDEX_COLUMNS), "skipped": self.skipped}
        atomic_write(self.dst / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))

    def close(self) -> None:
        self.file.close()


def prepare(src: str | os.PathLike[str], dst: str | os.PathLike[str], size: int = 256, workers: int | None = None,
            limit: int | None = None, overwrite: bool = False, progress: bool = True,
            commit_seconds: float = 5.0) -> PrepareStats:
    """Write (or continue writing) the prepared dataset of ``src`` at ``dst``.

    ``limit`` stops after the first N source files (sorted order); a later call without it continues.
    Raises :class:`UserError` for bad paths; KeyboardInterrupt commits the work done, then propagates.
    """
    if size < 16:
        raise UserError(f"--shorter-side must be at least 16 pixels, got {size}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of files, got {limit}")
    src_p, dst_p = Path(src).expanduser(), Path(dst).expanduser()
    if dst_p.resolve() == src_p.resolve() or src_p.resolve() in dst_p.resolve().parents:
        raise UserError(f"DST {dst_p} is inside SRC {src_p}; write the prepared dataset somewhere else")
    files = find_images(src_p, "SRC")
    sources = [f.relative_to(src_p).as_posix() for f in files]
    check_writable_folder(dst_p, "DST")
    writer = _Writer(dst_p, size, src_p, sources, overwrite)
    target = len(files) if limit is None else min(len(files), max(limit, writer.done))
    todo = list(range(writer.done, target))
    workers = max(1, workers or os.cpu_count() or 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=target, initial=writer.done, unit="img", desc=f"prepare {size}px", dynamic_ncols=True)
    pool = mp.get_context().Pool(workers) if workers > 1 and len(todo) > 32 else None
    jobs = [(str(files[i]), size, workers if pool else 1) for i in todo]
    try:
        results = pool.imap(_decode, jobs, chunksize=8) if pool else map(_decode, jobs)
        last = time.monotonic()
        for position, result in zip(todo, results):
            writer.add(position, result)
            if bar is not None:
                bar.update(1)
                if writer.skipped:
                    bar.set_postfix(skipped=len(writer.skipped), refresh=False)
            if time.monotonic() - last > commit_seconds:
                writer.commit()
                last = time.monotonic()
    finally:
        if pool is not None:
            pool.terminate()
        writer.commit()
        writer.close()
        if bar is not None:
            bar.close()
    return PrepareStats(written=writer.written, total=len(writer.rows), skipped=len(writer.skipped),
                        bytes=writer.end, resumed_at=writer.resumed_at, complete=writer.done >= len(sources))
