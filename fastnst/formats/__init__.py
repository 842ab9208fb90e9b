"""Model file formats, each one's reader and writer side by side, and one typed metadata for all of them.

===========  ===========================================  ==========================================
format       file                                          module
===========  ===========================================  ==========================================
``ckpt``     training checkpoint (``.ckpt``, ``.pt``)      :mod:`fastnst.formats.checkpoint`
``pth``      pytorch/examples fast_neural_style model       :mod:`fastnst.formats.pytorch_examples`
``onnx``     ONNX model, run with onnxruntime              :mod:`fastnst.formats.onnx`
``pt2``      torch.export program                          :mod:`fastnst.formats.pt2`
===========  ===========================================  ==========================================

Every reader is safe on hostile files: torch pickles are read with ``weights_only=True``, ONNX is protobuf.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from fastnst.errors import UserError
from fastnst.formats.metadata import FORMAT_VERSION, META_KEY, ModelInfo, TrainingInfo
from fastnst.media.image import is_image_path

ModelFormat = Literal["ckpt", "onnx", "pt2"]
MODEL_SUFFIXES: dict[str, ModelFormat] = {".ckpt": "ckpt", ".pt": "ckpt", ".pth": "ckpt", ".onnx": "onnx",
                                          ".pt2": "pt2"}


def detect_format(path: str | os.PathLike[str]) -> ModelFormat:
    """The model's format from its extension (``.ckpt``/``.pt``/``.pth``, ``.onnx``, ``.pt2``); a
    :class:`UserError` for a missing file, a folder or another extension. (``.pth`` and ``.pt`` files are
    torch pickles: fastnst checkpoints or pytorch/examples state dicts, told apart by their content.)"""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"model {p} does not exist; pass a training checkpoint (.ckpt), an exported model "
                        f"(.onnx, .pt2) or a pytorch/examples model (.pth)")
    if p.is_dir():
        raise UserError(f"model {p} is a folder; pass a .ckpt, .onnx, .pt2 or .pth file, e.g. "
                        f"{p / 'checkpoints' / 'last.ckpt'}")
    fmt = MODEL_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        hint = " (that is an image: give images as inputs, the model with --ckpt)" if is_image_path(p) else ""
        raise UserError(f"model {p} has an unknown file type '{p.suffix}'{hint}; expected a training checkpoint "
                        f"(.ckpt), an exported model (.onnx, .pt2) or a pytorch/examples model (.pth)")
    return fmt


__all__ = ["FORMAT_VERSION", "META_KEY", "MODEL_SUFFIXES", "ModelFormat", "ModelInfo", "TrainingInfo", "detect_format"]
