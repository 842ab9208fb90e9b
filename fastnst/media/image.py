"""Load, convert and save images with Pillow; tensors are float32 RGB [3, H, W] or [N, 3, H, W] in [0, 1].

Every input mode becomes RGB: grayscale, palette, RGBA/LA (composited on white, not dropped), CMYK,
16-bit and 32-bit integer or float; EXIF orientation is honoured.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, ImageSequence

from fastnst.errors import UserError
from fastnst.media.limits import ENV, HELD_RESIZED, HELD_VGG, ImageTooLarge, PixelBudget

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm",
                              ".pgm", ".pnm", ".jfif"})
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error we count, not grey pixels
# Every image fastnst decodes is checked against the memory its path needs first (fastnst.media.limits), with a
# sentence naming the limit; Pillow's fixed count (a warning, then an error at twice it) would contradict that.
Image.MAX_IMAGE_PIXELS = None
DECODE_ONLY = PixelBudget(HELD_RESIZED)  # decoded, then resized or handed over at once


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def image_files(root: str | os.PathLike[str], exclude: Path | None = None,
                accept: Callable[[str], bool] = is_image_path) -> list[Path]:
    """Image files (or the files ``accept`` takes by name) below ``root`` (recursive, symlinked folders followed,
    extensions case-insensitive), sorted; hidden files and folders, and the folder ``exclude``, are skipped."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if not n.startswith(".") and (exclude is None or (d / n).resolve() != exclude)]
        found += [d / n for n in filenames if not n.startswith(".") and accept(n)]
    return sorted(found)


def find_images(root: str | os.PathLike[str], what: str = "data.root") -> list[Path]:
    """:func:`image_files` of a folder that must exist and hold images; else a :class:`UserError` naming it."""
    p = Path(root).expanduser()
    if not p.exists():
        raise UserError(f"{what} {p} does not exist; point {what}= at a folder of images")
    if not p.is_dir():
        raise UserError(f"{what} {p} is not a folder; point {what}= at a folder of images")
    files = image_files(p)
    if not files:
        raise UserError(f"{what} {p} contains no images (looked for .jpg, .jpeg, .png, .webp, .bmp, .tif ... recursively)")
    return files


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited over ``background``."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if img.mode == "F":
            scale = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        else:
            scale = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("PA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(path: str | os.PathLike[str], draft_size: int | None = None,
               budget: PixelBudget = DECODE_ONLY) -> Image.Image:
    """Decode an image file to RGB with EXIF orientation applied.

    ``draft_size`` lets JPEG decoding skip work (DCT scaling) while keeping the shorter side at least
    that many pixels. Before decoding, the size in the file's header is checked against ``budget`` (what the
    caller's path needs per pixel, :mod:`fastnst.media.limits`): :class:`ImageTooLarge` (a ValueError) when it does
    not fit. Raises OSError/ValueError-family errors for unreadable files.
    """
    with Image.open(path) as img:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        budget.check(*img.size, f"image {path}", img.mode)
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)


def load_image(path: str | os.PathLike[str], what: str = "image", budget: PixelBudget = DECODE_ONLY) -> Image.Image:
    """Like :func:`open_image` but every failure is a :class:`UserError` naming the file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} {p} does not exist")
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder, expected an image file")
    try:
        return open_image(p, budget=budget)
    except ImageTooLarge as exc:
        raise ImageTooLarge(str(exc).replace(f"image {p} ", f"{what} {p} ", 1)) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"{what} {p} is not a readable image ({exc})") from None


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` (antialiased), keeping the aspect ratio."""
    w, h = img.size
    scale = size / min(w, h)
    if scale == 1:
        return img
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC, reducing_gap=3.0)


def resize_longer(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the longer side is at most ``size``; never upsamples."""
    w, h = img.size
    if max(w, h) <= size:
        return img
    scale = size / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC, reducing_gap=3.0)


def resize_longer_to(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the longer side is exactly ``size`` (up or down), as the style image is."""
    w, h = img.size
    if max(w, h) == size:
        return img
    scale = size / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC, reducing_gap=3.0)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 [3, H, W] in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """[3, H, W] or [1, 3, H, W] in [0, 1] -> RGB PIL image (clamped and rounded: pixels leave here)."""
    if t.dim() == 4:
        t = t[0]
    arr = t.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def save_image(t: torch.Tensor | Image.Image, path: str | os.PathLike[str], quality: int = 95) -> None:
    """Save a [3, H, W] tensor in [0, 1] or a PIL image; the format follows the extension."""
    img = t if isinstance(t, Image.Image) else tensor_to_pil(t)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg", ".jfif", ".webp"):
        img.save(path, quality=quality)
    else:
        img.save(path)


STYLE_MIN_SIDE = 16  # VGG19 pools four times: a smaller image has no deep features to take Grams of


def load_style_image(path: str | os.PathLike[str], size: int | None,
                     raise_with: str = f"the environment variable {ENV}=N") -> torch.Tensor:
    """The style image as [1, 3, H, W] in [0, 1], its longer side resized to ``size`` (None keeps it, and the
    loss network then reads the whole painting: that memory counts too).

    A painting upscaled more than 4x warns (its texture becomes a blur); one with a side under 16 px after
    resizing is a :class:`UserError`."""
    budget = PixelBudget(HELD_RESIZED if size else HELD_VGG, raise_with, doing="taking its style")
    img = load_image(path, "style image", budget)
    w, h = img.size
    if size and max(w, h) * 4 < size:
        warnings.warn(f"style image {path} is only {w}x{h} px and is upscaled to {size} px on its longer side: its "
                      f"texture becomes a blur; use a larger image or a smaller style.size", stacklevel=2)
    if size:
        img = resize_longer_to(img, size)
    if min(img.size) < STYLE_MIN_SIDE:
        raise UserError(f"style image {path} is {img.width}x{img.height} px" + (f" at style size {size}" if size else "")
                        + f"; both sides need at least {STYLE_MIN_SIDE} px (VGG19 halves it four times)")
    return pil_to_tensor(img).unsqueeze(0)


# --- animations (GIF, WebP, APNG) ------------------------------------------------------------------

ANIMATION_FORMATS = {"GIF": ".gif", "WEBP": ".webp", "PNG": ".png"}  # Pillow formats that hold several frames


@dataclass
class Animation:
    """The frames of an animated image, each a full RGB picture (disposal and blending applied), with their
    durations in ms and the loop count (None: the file says nothing, so it plays once; 0: forever)."""

    frames: list[Image.Image]
    durations: list[int]
    loop: int | None
    format: str

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size


def is_animated(path: str | os.PathLike[str]) -> bool:
    """Whether an image file holds more than one frame (an animated GIF, WebP or PNG)."""
    try:
        with Image.open(path) as img:
            return bool(getattr(img, "is_animated", False)) and getattr(img, "n_frames", 1) > 1
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def load_animation(path: str | os.PathLike[str], what: str = "image", budget: PixelBudget = DECODE_ONLY) -> Animation:
    """Every frame of an animated image as RGB (transparency composited on white), with its timing; all frames are
    held at once, so ``budget`` is checked for all of them before any is decoded."""
    p = Path(path).expanduser()
    try:
        with Image.open(p) as img:
            budget.check(*img.size, f"{what} {p}", img.mode, frames=getattr(img, "n_frames", 1))
            loop = img.info.get("loop")
            frames, durations = [], []
            for frame in ImageSequence.Iterator(img):
                frame.load()  # WebP sets a frame's duration when the frame is decoded
                durations.append(int(frame.info.get("duration", img.info.get("duration", 100)) or 100))
                frames.append(to_rgb(frame.copy()))
            return Animation(frames, durations, None if loop is None else int(loop), img.format or "GIF")
    except ImageTooLarge:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"{what} {p} is not a readable animation ({exc})") from None


def save_animation(frames: list[Image.Image], path: str | os.PathLike[str], durations: list[int],
                   loop: int | None) -> None:
    """Write frames as an animated GIF, WebP or PNG (by the extension), with the given durations and loop.
    A GIF holds 256 colours a frame (an adaptive palette each); the GIF writer merges a frame identical to
    the one before it into it (their durations add up)."""
    path = Path(path)
    kwargs: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": durations}
    if loop is not None:
        kwargs["loop"] = loop
    ext = path.suffix.lower()
    if ext == ".webp":
        kwargs.update(quality=95, loop=loop if loop is not None else 0)
    elif ext == ".gif":
        kwargs.update(disposal=2)
    frames[0].save(path, format={".gif": "GIF", ".webp": "WEBP", ".png": "PNG"}[ext], **kwargs)
