"""torch.export programs (``.pt2``): export, safe reading, and the parity check against eager, side by side.

Same contract as the ONNX export (:mod:`fastnst.formats.deploy`); the :class:`ModelInfo` is the archive's
extra file ``fastnst.json``. Reading restricts every pickle inside the archive to plain data.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.formats.deploy import (
    CHECK_SHAPES,
    TOLERANCE,
    Deployable,
    EncoderDeployable,
    case_name,
    check_inputs,
    check_styles,
    dynamic_shapes,
    encoder_check_inputs,
    encoder_dynamic_shapes,
    raise_if_above,
)
from fastnst.formats.checkpoint import pickle_refusal, quiet_unpickler
from fastnst.formats.metadata import ModelInfo

META_FILE = "fastnst.json"


def export_pt2(net: nn.Module, path: str | os.PathLike[str], info: ModelInfo, archive_name: str | None = None) -> Path:
    """Write ``net`` as a ``torch.export`` program (.pt2) with dynamic batch, height and width.

    The archive's inner folder is ``archive_name`` (default: ``path``'s stem), as ``torch.export.save`` names it
    after the file it writes; a caller writing a temporary file first passes the final file's stem.

    Networks with a learned transposed-conv upsampling (``upsample=transpose``) are refused: their crop makes
    torch.export specialise on the image size modulo 4 (the ONNX export handles them).
    """
    if info.config.get("upsample", "nearest") != "nearest":
        raise UserError("the .pt2 format needs a network with upsample=nearest (torch.export cannot keep H and W "
                        "dynamic through the transposed-conv crop); export this checkpoint with --format onnx")
    path = Path(path)
    model = Deployable(net, info.num_styles, info.config.get("style_dim")).eval().to("cpu", torch.float32)
    with torch.no_grad():
        # The upsampling crops need "h1 <= 2*h2" for symbolic sizes, true for every size but beyond what
        # torch.export proves by itself: kept as a runtime assertion instead of an export error.
        program = torch.export.export(model, model.example_inputs(torch.rand(2, 3, 64, 80)),
                                      dynamic_shapes=dynamic_shapes(model.style_size or 1),
                                      prefer_deferred_runtime_asserts_over_guards=True)
    return _save(program, path, info, archive_name)


def _save(program: Any, path: Path, info: ModelInfo, archive_name: str | None) -> Path:
    """``torch.export.save`` with the :class:`ModelInfo`, the archive's folder named ``archive_name`` (torch names it
    after the file written: the program is saved under that name in a staging folder, then moved to ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".pt2.") as folder:
        staged = Path(folder) / f"{archive_name or path.stem}.pt2"
        torch.export.save(program, staged, extra_files={META_FILE: info.to_json()})
        os.replace(staged, path)
    return path


def export_encoder_pt2(encoder: nn.Module, path: str | os.PathLike[str], info: ModelInfo,
                       archive_name: str | None = None) -> Path:
    """Write the style encoder of a network that takes a painting as a .pt2 program (dynamic height and width); the
    archive's folder as :func:`export_pt2` names it."""
    path = Path(path)
    model = EncoderDeployable(encoder).eval().to("cpu", torch.float32)
    with torch.no_grad():
        program = torch.export.export(model, (torch.rand(1, 3, 64, 48),), dynamic_shapes=encoder_dynamic_shapes())
    return _save(program, path, info, archive_name)


def check_encoder_pt2(path: str | os.PathLike[str], encoder: nn.Module, *, tolerance: float = TOLERANCE
                      ) -> list[tuple[str, float]]:
    """Reload the encoder .pt2 as inference does and compare its vectors with eager on two paintings."""
    program, _ = read_pt2(path)
    loaded = program.module()
    model = EncoderDeployable(encoder).eval().to("cpu", torch.float32)
    results = []
    for x in encoder_check_inputs():
        with torch.no_grad():
            results.append((f"painting {'x'.join(map(str, x.shape))}", float((loaded(x) - model(x)).abs().max())))
    raise_if_above(Path(path), results, tolerance)
    return results


@contextlib.contextmanager
def _pickles_as_data_only() -> Iterator[None]:
    """``torch.export.load`` unpickles some archive members with ``weights_only=False`` (and plain
    ``pickle.loads`` for opaque objects); while active, every such call is restricted to plain data."""
    real_load, real_loads = torch.load, pickle.loads
    real_obj = getattr(torch._C, "_pickle_load_obj", None)

    def safe_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("weights_only: arbitrary Python objects are not allowed in a model file")

    torch.load, pickle.loads = safe_load, refuse  # type: ignore[assignment]
    if real_obj is not None:
        torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load, pickle.loads = real_load, real_loads  # type: ignore[assignment]
        if real_obj is not None:
            torch._C._pickle_load_obj = real_obj


def read_pt2_info(path: str | os.PathLike[str]) -> ModelInfo | None:
    """The :class:`ModelInfo` of a .pt2 archive from its zip directory alone (nothing is unpickled)."""
    p = Path(path)
    if not zipfile.is_zipfile(p):
        raise UserError(f"model {p} is corrupt or not a torch.export .pt2 archive")
    with zipfile.ZipFile(p) as z:
        member = next((n for n in z.namelist() if n.endswith(f"/extra/{META_FILE}") or n == f"extra/{META_FILE}"), None)
        if member is None:
            return None
        return ModelInfo.from_json(z.read(member).decode("utf-8", "replace"), f"model {p}")


def read_pt2(path: str | os.PathLike[str]) -> tuple[Any, ModelInfo | None]:
    """Load a .pt2 archive (a ``torch.export.ExportedProgram``) and its :class:`ModelInfo`, safely."""
    p = Path(path)
    info = read_pt2_info(p)
    try:
        with _pickles_as_data_only(), quiet_unpickler():
            program = torch.export.load(p)
    except pickle.UnpicklingError as exc:
        found = pickle_refusal(str(exc)) or "a pickle instruction"
        raise UserError(f"model {p} was refused: it would run code or build objects ({found}) instead of holding "
                        f"plain data; only load models you trust and that fastnst wrote") from None
    except Exception as exc:  # noqa: BLE001 - the deserialiser raises many types for a damaged archive
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {p} is corrupt or not a torch.export .pt2 archive ({first[:160]})") from None
    return program, info


def check_pt2(path: str | os.PathLike[str], net: nn.Module, num_styles: int = 1, *, tolerance: float = TOLERANCE,
              shapes: Any = CHECK_SHAPES, style_dim: int | None = None) -> list[tuple[str, float]]:
    """Reload the .pt2 the way inference does and compare it with eager on ``shapes`` (and styles)."""
    program, _ = read_pt2(path)
    loaded = program.module()
    model = Deployable(net, num_styles, style_dim).eval().to("cpu", torch.float32)
    results = []
    for x in check_inputs(shapes):
        for style in check_styles(num_styles, style_dim):
            args = (x,) if style is None else (x, style)
            with torch.no_grad():
                ref, y = model(*args), loaded(*args)
            results.append((case_name(x, style), float((y - ref).abs().max())))
    raise_if_above(Path(path), results, tolerance)
    return results
