"""How large an image fastnst takes in: decided from the memory this process can still use, not a constant.

A small file can hold a huge picture (a 20000x20000 greyscale PNG of one colour is a few hundred KB), and
decoding it alone takes width x height x bytes-per-pixel. Before an image is decoded, its header's size is
checked against what the path in question will hold for each of its pixels (:class:`PixelBudget`: the decoded
buffer and its conversion to RGB, plus what is kept afterwards) and the memory available now
(:func:`available_bytes`: free RAM, the cgroup's limit, ``ulimit -v``). What cannot be processed is refused with
one sentence naming the limit and how to raise it; what can is processed with bounded memory (stylizing tiles
a large image automatically, :mod:`fastnst.inference.stylizer`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastnst.errors import UserError

ENV = "FASTNST_MAX_PIXELS"  # a pixel count that replaces the computed limit (an int, e.g. 400000000)
SHARE = 0.75  # of the available memory one image may take: the rest is headroom (allocator, other buffers)
FLAG = f"--max-pixels N or {ENV}=N"  # how the stylize command raises the limit

# Peak bytes per pixel of decoding to 8-bit RGB (fastnst.media.image.open_image), by Pillow mode: the decoded
# buffer, a copy for the EXIF rotation, and the conversion (alpha compositing holds three RGBA images; 16-bit and
# float images are scaled through float64 arrays).
DECODE_BYTES = {"1": 5, "L": 5, "P": 5, "RGB": 6, "YCbCr": 9, "LAB": 9, "HSV": 9, "CMYK": 11, "LA": 19, "PA": 19,
                "RGBA": 19, "RGBa": 19, "La": 19, "I;16": 35, "I;16L": 35, "I;16B": 35, "I;16N": 35, "I": 37,
                "F": 37}
DECODE_DEFAULT = 37
# What a path keeps per pixel of the image after decoding it:
HELD_RESIZED = 4  # resized at once (training crops, paintings at style.size, --max-size, evaluate, optimize)
HELD_STYLIZED = 36  # stylized at full size: float32 input and output, the 8-bit result and the encoder's rows
HELD_VGG = 1200  # VGG19 features of the whole picture (style targets of a painting kept at its own size)
HELD_VGG_TRAIN = 3600  # VGG19 forward and backward with the image as the variable (fastnst optimize)


def available_bytes() -> int:
    """Bytes this process can still allocate: the least of the machine's available memory, its cgroup's limit
    minus its usage (a container, a batch job) and the address-space limit (``ulimit -v``) minus what is mapped."""
    import psutil

    free = int(psutil.virtual_memory().available)
    for limit, usage in _cgroup_files():
        try:
            free = min(free, int(limit.read_text()) - int(usage.read_text()))
        except (OSError, ValueError):  # no such controller, or "max" (no limit)
            continue
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            free = min(free, soft - int(psutil.Process().memory_info().vms))
    except (ImportError, OSError, ValueError):  # not on this platform
        pass
    return max(0, free)


def _cgroup_files() -> list[tuple[Path, Path]]:
    """(limit, usage) files of this process's memory cgroup, v2 then v1."""
    root = Path("/sys/fs/cgroup")
    out = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # cgroup v2
                out.append((root / path.lstrip("/") / "memory.max", root / path.lstrip("/") / "memory.current"))
            elif "memory" in controllers.split(","):
                base = root / "memory" / path.lstrip("/")
                out.append((base / "memory.limit_in_bytes", base / "memory.usage_in_bytes"))
    except (OSError, ValueError):
        pass
    out += [(root / "memory.max", root / "memory.current"),
            (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes")]
    return out


_override: int | None = None


def set_max_pixels(pixels: int | None) -> None:
    """A pixel limit for this process instead of the computed one (``--max-pixels``); None restores the default."""
    global _override
    if pixels is not None and pixels < 1:
        raise UserError(f"--max-pixels must be a positive number of pixels, got {pixels}")
    _override = pixels


def _explicit_limit() -> int | None:
    if _override is not None:
        return _override
    value = os.environ.get(ENV, "").strip().replace("_", "")
    if not value:
        return None
    try:
        return max(1, int(float(value)))
    except ValueError:
        raise UserError(f"{ENV}={os.environ[ENV]!r} is not a number of pixels; set it to e.g. 400000000") from None


class ImageTooLarge(UserError, ValueError):
    """An image larger than this process can take in now (a ValueError, so that loops over files treat it as an
    unreadable file: skipped with a warning where others are)."""


@dataclass(frozen=True)
class PixelBudget:
    """What one image costs on a path: ``held`` bytes per pixel kept after decoding (plus the decoding itself),
    ``copies`` such images at once (loader processes, a video's batch), and the setting that raises the limit."""

    held: float
    raise_with: str = f"the environment variable {ENV}=N"
    copies: int = 1
    doing: str = "processing it"

    def bytes_per_pixel(self, mode: str | None = None) -> float:
        return DECODE_BYTES.get(mode or "", DECODE_DEFAULT) + self.held

    def limit(self, mode: str | None = None) -> tuple[int, int | None]:
        """(pixel limit, available bytes it came from; None for an explicit limit)."""
        explicit = _explicit_limit()
        if explicit is not None:
            return explicit, None
        free = available_bytes()
        return int(free * SHARE / (self.bytes_per_pixel(mode) * max(1, self.copies))), free

    def check(self, width: int, height: int, what: str, mode: str | None = None, frames: int = 1) -> None:
        """Raise :class:`ImageTooLarge` when ``frames`` pictures of ``width`` x ``height`` cannot be taken in."""
        pixels = int(width) * int(height) * max(1, frames)
        limit, free = self.limit(mode)
        if pixels <= limit:
            return
        size = f"{width}x{height} px" + (f" x {frames} frames" if frames > 1 else "") + f" ({pixels / 1e6:,.0f} MP)"
        if free is None:
            why = f"the limit set by --max-pixels or {ENV} is {limit / 1e6:,.1f} MP"
        else:
            need = pixels * self.bytes_per_pixel(mode) * max(1, self.copies)
            why = (f"{self.doing} needs about {need / 1e9:,.1f} GB and {free / 1e9:,.1f} GB of memory is available, "
                   f"so at most {limit / 1e6:,.1f} MP can be taken in here")
        raise ImageTooLarge(f"{what} is {size}: {why}; downscale it, free memory, or raise the limit with "
                            f"{self.raise_with}, at the risk of running out of memory")
