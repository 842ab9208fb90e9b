"""Write the static web folder of a fastnst ONNX model: the page (plain ES modules, no build step), the model
files, the JSON sidecar the page reads (onnxruntime-web cannot read ONNX metadata) and the runtime.

Folder layout::

    index.html  style.css  sw.js  js/*.js      the page (package data of fastnst.web.static)
    model.onnx  [model.int8.onnx]              the network (input ``image`` [1, 3, H, W] float32 in [0, 1])
    [model.encoder.onnx]                       arbitrary-style models: painting -> style vector
    model.json                                 the sidecar: kind, styles, inputs, files, runtime
    ort/                                       onnxruntime-web files (absent with a CDN runtime)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from fastnst.errors import UserError
from fastnst.formats.deploy import IMAGE_INPUT, OUTPUT, PAINTING_INPUT, STYLE_INPUT, VECTOR_INPUT, encoder_path
from fastnst.formats.metadata import ModelInfo
from fastnst.formats.onnx import onnx_info, onnx_precision, read_onnx
from fastnst.web.runtime import INTEGRITY, NPM_PACKAGE, ORT_WEB_VERSION, Runtime, runtime_files

SIDECAR = "model.json"
SIDECAR_VERSION = 1
DEFAULT_PAINTING_SIZE = 256  # an encoder's painting size when nothing says it (ModelInfo's default too)
DEFAULT_MAX_SIDE = 1024  # longer side the page stylizes at by default (the user can raise it)
PAGE_FILES = ("index.html", "style.css", "sw.js", "js/app.js", "js/model.js", "js/pixels.js", "js/runtime.js",
              "js/onnxmeta.js", "js/webcam.js", "js/ui.js", "js/styles.js")


def page_files() -> dict[str, bytes]:
    """The page's files (relative path -> bytes) from the installed package data."""
    root = resources.files("fastnst.web") / "static"
    return {name: root.joinpath(*name.split("/")).read_bytes() for name in PAGE_FILES}


def _inputs(proto: Any) -> dict[str, list[int | str]]:
    out = {}
    initializers = {t.name for t in proto.graph.initializer}
    for i in proto.graph.input:
        if i.name in initializers:
            continue
        dims = i.type.tensor_type.shape.dim
        out[i.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return out


def describe_model(model: Path) -> tuple[dict[str, Any], ModelInfo]:
    """The sidecar's description of an exported fastnst ONNX model (and its encoder, for an arbitrary-style
    model); a UserError for an ONNX file fastnst did not write or one whose inputs break the contract."""
    proto = read_onnx(model)
    info = onnx_info(proto, model)
    if info is None:
        raise UserError(f"{model} has no fastnst metadata; a web folder needs an ONNX model exported by fastnst "
                        f"(fastnst export --ckpt MODEL.ckpt --format web -o DIR)")
    inputs = _inputs(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    desc: dict[str, Any] = {"image_input": IMAGE_INPUT, "output": OUTPUT, "min_side": 5}
    if IMAGE_INPUT not in inputs or len(proto.graph.output) != 1 or proto.graph.output[0].name != OUTPUT:
        raise UserError(f"{model} has inputs {sorted(inputs)} and outputs {[o.name for o in proto.graph.output]}; a "
                        f"fastnst model takes '{IMAGE_INPUT}' and returns '{OUTPUT}'")
    if VECTOR_INPUT in inputs:
        desc.update(kind="arbitrary", style_input=VECTOR_INPUT, style_dim=_last_dim(inputs[VECTOR_INPUT], model),
                    style_rank=len(inputs[VECTOR_INPUT]), styles=[], saved_styles=_saved_styles(info, props, model))
        desc["encoder"] = _describe_encoder(encoder_path(model), info, props, desc["style_dim"])
    elif STYLE_INPUT in inputs:
        desc.update(kind="styles", style_input=STYLE_INPUT, styles=list(info.styles))
        if _last_dim(inputs[STYLE_INPUT], model) != info.num_styles:
            raise UserError(f"{model} takes {inputs[STYLE_INPUT]} style weights but names {info.num_styles} styles")
    else:
        if info.num_styles != 1:
            raise UserError(f"{model} names {info.num_styles} styles but has no '{STYLE_INPUT}' input")
        desc.update(kind="styles", style_input=None, styles=list(info.styles))
    return desc, info


def _last_dim(shape: list[int | str], model: Path) -> int:
    if not shape or not isinstance(shape[-1], int) or shape[-1] < 1:
        raise UserError(f"{model}: the style input has no fixed size ({shape})")
    return shape[-1]


def _saved_styles(info: ModelInfo, props: dict[str, str], model: Path) -> list[dict[str, Any]]:
    """Named style vectors stored with a network that takes a painting: the metadata's ``styles`` and
    ``style_vectors`` (else the ONNX key ``style_vectors``: {name: [D floats]})."""
    if info.style_vectors is not None:
        return [{"name": n, "vector": [float(v) for v in vec]} for n, vec in zip(info.styles, info.style_vectors)]
    text = props.get("style_vectors")
    if not text:
        return []
    try:
        data = json.loads(text)
        return [{"name": str(k), "vector": [float(v) for v in vec]} for k, vec in data.items()]
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{model} has unreadable saved style vectors (metadata 'style_vectors')") from None


def _describe_encoder(path: Path, info: ModelInfo, props: dict[str, str], dim: int) -> dict[str, Any]:
    """The encoder's entry: its file, and how the page sizes a painting for it: the longer side
    ``painting_size`` with the aspect kept (as fastnst.media.painting does), or exactly ``painting_shape``
    [H, W] for an encoder whose input size is fixed."""
    if not path.is_file():
        raise UserError(f"{path} is missing: an arbitrary-style model needs its painting encoder beside it")
    proto = read_onnx(path)
    inputs = _inputs(proto)
    if list(inputs) != [PAINTING_INPUT] or [o.name for o in proto.graph.output] != [VECTOR_INPUT]:
        raise UserError(f"{path} has inputs {list(inputs)} and outputs {[o.name for o in proto.graph.output]}; a "
                        f"painting encoder takes '{PAINTING_INPUT}' and returns '{VECTOR_INPUT}'")
    enc_props = {p.key: p.value for p in proto.metadata_props}
    shape = inputs[PAINTING_INPUT]
    fixed = len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:])
    size = info.painting_size or props.get("painting_size") or enc_props.get("painting_size")
    try:
        longer = int(size) if size else (max(int(shape[2]), int(shape[3])) if fixed else DEFAULT_PAINTING_SIZE)
    except (TypeError, ValueError):
        raise UserError(f"{path} has an unreadable painting size ({size!r})") from None
    return {"file": "model.encoder.onnx", "input": PAINTING_INPUT, "output": VECTOR_INPUT, "painting_size": longer,
            "painting_shape": [int(shape[2]), int(shape[3])] if fixed else None, "style_dim": dim,
            "bytes": path.stat().st_size}


def sidecar(desc: dict[str, Any], info: ModelInfo, models: list[dict[str, Any]], runtime: Runtime,
            max_side: int) -> dict[str, Any]:
    """The JSON the page reads: what the model is, its inputs, its files and the runtime."""
    from fastnst import __version__

    return {"fastnst_web": SIDECAR_VERSION, "fastnst_version": __version__,
            "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "architecture": info.architecture, "config": info.config, "source": info.source,
            "exported_from": info.exported_from, **desc, "models": models, "max_side": max_side,
            "runtime": runtime.sidecar()}


def _is_web_folder(path: Path) -> bool:
    try:
        return "fastnst_web" in json.loads((path / SIDECAR).read_text())
    except (OSError, ValueError, TypeError):
        return False


def write_site(out: str | os.PathLike[str], model: str | os.PathLike[str], runtime: Runtime, *,
               int8: str | os.PathLike[str] | None = None, max_side: int = DEFAULT_MAX_SIDE,
               overwrite: bool = False, log: Any = print) -> Path:
    """Write the web folder ``out`` for the exported fastnst ONNX ``model`` (and its ``int8`` variant).

    The folder is assembled beside ``out`` and renamed into place at the end, so a failure leaves no half
    folder; an existing ``out`` is replaced only with ``overwrite`` and only if it is a fastnst web folder (or
    empty): other files are never deleted.
    """
    out, model = Path(out).expanduser(), Path(model)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"-o {out} is a file; a web export writes a folder: choose a new folder name")
        if any(out.iterdir()):
            if not overwrite:
                raise UserError(f"{out} already exists; pass --overwrite to replace it or choose another -o")
            if not _is_web_folder(out):
                raise UserError(f"{out} is a folder that is not a fastnst web export; it is not replaced, choose an "
                                f"empty or new folder for -o")
    if max_side < 64:
        raise UserError(f"--web-max-side must be at least 64 px, got {max_side}")
    desc, info = describe_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a web folder is served by others
    try:
        for name, data in page_files().items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        models = [_copy_model(model, staging / "model.onnx", "fp32")]
        if int8 is not None:
            models.append(_copy_model(Path(int8), staging / "model.int8.onnx", "int8"))
        if desc["kind"] == "arbitrary":
            shutil.copyfile(encoder_path(model), staging / desc["encoder"]["file"])
        if runtime.folder is not None:
            ort = staging / "ort"
            ort.mkdir()
            for name in runtime_files(runtime.backends):
                shutil.copyfile(runtime.folder / name, ort / name)
            (ort / "NOTICE.txt").write_text(
                f"{NPM_PACKAGE} {ORT_WEB_VERSION} (MIT License, Copyright (c) Microsoft Corporation), "
                f"files from the npm package's dist/ folder, unchanged.\n")
        meta = sidecar(desc, info, models, runtime, max_side)
        (staging / SIDECAR).write_text(json.dumps(meta, indent=1) + "\n")
        _stamp_service_worker(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    kind = (f"{len(desc['styles'])} style(s): {', '.join(desc['styles'])}" if desc["kind"] == "styles"
            else f"any painting ({len(desc['saved_styles'])} saved styles)")
    log(f"fastnst: wrote the web folder {out} ({size / 1e6:.1f} MB; {kind}; runtime {NPM_PACKAGE} {ORT_WEB_VERSION} "
        + (f"from {runtime.cdn}" if runtime.cdn else "in ort/") + ")")
    log(f"fastnst: try it with `fastnst web serve {out}` (a plain file:// page cannot run it)")
    return out


def _copy_model(src: Path, dst: Path, precision: str) -> dict[str, Any]:
    shutil.copyfile(src, dst)
    return {"file": dst.name, "precision": onnx_precision(read_onnx(dst)) if precision != "fp32" else precision,
            "bytes": dst.stat().st_size}


def _stamp_service_worker(folder: Path) -> None:
    """Give the service worker a cache name that changes with any file of the folder, so a re-export reaches
    visitors who have the old one cached."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "sw.js" and f.parent.name != "ort":
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    for name in sorted(INTEGRITY):
        h.update(INTEGRITY[name].encode())
    sw = folder / "sw.js"
    sw.write_text(sw.read_text().replace("__FASTNST_CACHE_VERSION__", h.hexdigest()[:16]))


__all__ = ["DEFAULT_MAX_SIDE", "SIDECAR", "describe_model", "encoder_path", "page_files", "write_site"]
