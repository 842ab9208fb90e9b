"""A painting as a style encoder sees it: read with one-sentence errors, resized so that its longer side is the
encoder's painting size, float32 RGB [1, 3, H, W] in [0, 1]. Training (fine-tuning from a prediction) and
inference read paintings through here alone, so they see the same pixels."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.media.image import is_animated, load_image, pil_to_tensor, resize_longer_to, to_rgb
from fastnst.media.video import is_video_path

MIN_PAINTING_SIDE = 32  # smaller paintings hold too few brush strokes to describe a style


def check_painting_size(size: tuple[int, int], what: str) -> None:
    if min(size) < MIN_PAINTING_SIDE:
        raise UserError(f"{what} is {size[0]}x{size[1]} px, too small to describe a style; give a painting of at least "
                        f"{MIN_PAINTING_SIDE} px on each side")


def read_painting(path: str | os.PathLike[str]) -> Image.Image:
    """The painting file ``path`` as an RGB image; a video, an unreadable file or a tiny image is one sentence."""
    p = Path(path).expanduser()
    if is_video_path(p):
        raise UserError(f"style image {p} is a video; give a still image of the painting (JPEG, PNG, ...)")
    img = load_image(p, "style image")
    if p.exists() and is_animated(p):
        raise UserError(f"style image {p} is animated; give a still image of the painting")
    check_painting_size(img.size, f"style image {p}")
    return img


def painting_tensor(painting: Image.Image | str | os.PathLike[str], size: int) -> torch.Tensor:
    """[1, 3, H, W] float32 in [0, 1], longer side ``size`` (aspect kept) for a PIL image or a file path."""
    if isinstance(painting, Image.Image):
        img = to_rgb(painting)
        check_painting_size(img.size, "the style image")
    elif isinstance(painting, (str, os.PathLike)):
        img = read_painting(painting)
    else:
        raise UserError(f"a style image is a PIL image or a file path, got {type(painting).__name__}")
    return pil_to_tensor(resize_longer_to(img, size)).unsqueeze(0)
