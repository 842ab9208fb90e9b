"""Named style vectors saved into a model file that takes any painting: its :class:`ModelInfo` gets the names
and vectors (``styles``, ``style_vectors``), in whichever format the file is; everything else in the file is
kept byte for byte in meaning. The file is rewritten atomically (a crash leaves the old one)."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import torch

from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.formats import detect_format
from fastnst.formats.checkpoint import read_checkpoint, read_info
from fastnst.formats.metadata import META_KEY, ModelInfo
from fastnst.formats.onnx import metadata_props, onnx_info, read_onnx
from fastnst.formats.pt2 import META_FILE, read_pt2_info


def save_styles(path: str | os.PathLike[str], names: list[str], vectors: list[list[float]]) -> ModelInfo:
    """Replace the saved styles of the model file ``path`` by ``names`` with ``vectors`` ([D] each); returns the
    file's new :class:`ModelInfo`."""
    p = Path(path).expanduser()
    fmt = detect_format(p)
    if len(names) != len(vectors) or len(set(names)) != len(names):
        raise UserError("saved styles need one vector per name and distinct names")
    if any(not n or n.strip() != n or "=" in n or "," in n for n in names):
        raise UserError(f"style names must be non-empty, without surrounding spaces, '=' or ',' (got {names})")
    if fmt == "ckpt":
        ckpt = read_checkpoint(p)
        info = _updated(read_info(ckpt, f"model {p}"), p, names, vectors)
        ckpt[META_KEY] = info.to_dict()
        atomic_write(p, lambda tmp: torch.save(ckpt, tmp))
        return info
    if fmt == "onnx":
        import onnx

        proto = read_onnx(p)
        old = onnx_info(proto, p)
        if old is None:
            raise UserError(f"model {p} was not written by fastnst; saved styles go into fastnst's own model files")
        info = _updated(old, p, names, vectors)
        del proto.metadata_props[:]
        for key, value in metadata_props(info).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        atomic_write(p, lambda tmp: onnx.save_model(proto, str(tmp)))
        return info
    old = read_pt2_info(p)
    if old is None:
        raise UserError(f"model {p} has no fastnst metadata; saved styles go into fastnst's own model files")
    info = _updated(old, p, names, vectors)

    def rewrite(tmp: Path) -> None:
        with zipfile.ZipFile(p) as src, zipfile.ZipFile(tmp, "w") as dst:
            for item in src.infolist():
                if item.filename.endswith(f"extra/{META_FILE}"):
                    dst.writestr(item, info.to_json())
                else:
                    with src.open(item) as f, dst.open(item, "w") as out:
                        shutil.copyfileobj(f, out)

    atomic_write(p, rewrite)
    return info


def _updated(info: ModelInfo, path: Path, names: list[str], vectors: list[list[float]]) -> ModelInfo:
    if not info.takes_painting:
        raise UserError(f"model {path} holds trained styles; only a network that takes a painting saves style vectors")
    if any(len(v) != info.style_dim for v in vectors):
        raise UserError(f"model {path} takes {info.style_dim}-d style vectors")
    return info.replace(styles=list(names), style_vectors=[[float(x) for x in v] for v in vectors])
