"""The tuning cache: which inference path was measured fastest for a model and an image size on this machine.

``python -m fastnst.bench --tune --ckpt MODEL --size WxH`` times every candidate path (eager fp32/bf16,
channels-last, torch.compile, onnxruntime with its graph optimisation levels) and records the winner here;
``infer.py --fast`` reads it (:func:`load_fast`) for the size of its first image.
Nothing is assumed about a CPU: an entry counts only for the machine key it was measured under (CPU model,
ISA features, torch and onnxruntime versions, threads), the network (architecture and settings, not the
weights: they do not change the speed) and the model file's format.

The cache is one JSON file, ``$FASTNST_CACHE_DIR/tuning.json`` (default: the user cache folder of the platform,
``~/.cache/fastnst`` or ``$XDG_CACHE_HOME/fastnst`` on Linux, ``~/Library/Caches/fastnst`` on macOS,
``%LOCALAPPDATA%\\fastnst\\Cache`` on Windows); deleting it forgets every choice.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from platformdirs import user_cache_path

from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.formats.onnx import check_onnx, export_onnx
from fastnst.inference.fast_paths import FastPath
from fastnst.inference.machine import machine_key
from fastnst.inference.loading import load, read_model
from fastnst.inference.stylizer import Stylizer

CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where fastnst keeps what it measured and derived: ``$FASTNST_CACHE_DIR``, else the platform's user cache
    folder for fastnst (platformdirs: ``$XDG_CACHE_HOME/fastnst`` or ``~/.cache/fastnst`` on Linux)."""
    if os.environ.get("FASTNST_CACHE_DIR"):
        return Path(os.environ["FASTNST_CACHE_DIR"]).expanduser()
    return user_cache_path("fastnst", appauthor=False)


def cache_file() -> Path:
    return cache_dir() / "tuning.json"


def model_key(architecture: str, config: dict[str, Any], fmt: str) -> dict[str, Any]:
    # ckpt and pth both run the eager network: one entry serves both
    return {"architecture": architecture, "config": config, "format": "onnx" if fmt == "onnx" else "eager"}


def _read() -> dict[str, Any]:
    path = cache_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": CACHE_VERSION, "entries": []}
    except (OSError, ValueError):
        return {"version": CACHE_VERSION, "entries": []}  # a damaged cache is a forgotten one
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), list):
        return {"version": CACHE_VERSION, "entries": []}
    return data


def record(model: dict[str, Any], size: tuple[int, int], batch: int, result: dict[str, Any],
           threads: int | None = None) -> Path:
    """Store a tuning result (``result["choice"]`` and what was measured) for ``model`` at ``size`` (W, H),
    replacing an older one for the same machine, model, size and batch. Returns the cache file."""
    data = _read()
    machine = machine_key(threads)
    entry = {"machine": machine, "model": model, "size": list(size), "batch": batch,
             "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **result}
    data["entries"] = [e for e in data["entries"] if not (e.get("machine") == machine and e.get("model") == model
                                                          and e.get("size") == list(size) and e.get("batch") == batch)]
    data["entries"].append(entry)
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1)))
    except OSError as exc:
        raise UserError(f"cannot write the tuning cache {path} ({exc.strerror or exc}); set FASTNST_CACHE_DIR to a "
                        f"writable folder") from None
    return path


def lookup(model: dict[str, Any], size: tuple[int, int], batch: int = 1,
           threads: int | None = None) -> dict[str, Any] | None:
    """The entry measured on this machine for ``model`` at the size nearest to ``size`` (W, H) in pixel count
    (exact size first), preferring the same batch size; None when this machine never tuned this model."""
    machine = machine_key(threads)
    entries = [e for e in _read()["entries"] if e.get("machine") == machine and e.get("model") == model
               and isinstance(e.get("size"), list) and len(e["size"]) == 2]
    if not entries:
        return None
    pixels = size[0] * size[1]
    return min(entries, key=lambda e: (abs(math.log(max(1, e["size"][0] * e["size"][1]) / max(1, pixels))),
                                       e["size"] != list(size), e.get("batch") != batch))


def exported_onnx(ckpt: Path) -> Path:
    """Where ``infer.py --fast`` keeps the ONNX export of a checkpoint whose tuned path is onnxruntime: keyed by
    the file's content, so a retrained checkpoint of the same name is exported again."""
    digest = hashlib.sha256()
    with open(ckpt, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"


def load_fast(path: str | os.PathLike[str], size: tuple[int, int], *, threads: int | None = None, tiled: bool = False,
              say: Any = print) -> Stylizer:
    """:func:`fastnst.load` with the path this machine measured fastest for the model at ``size`` (W, H); the plain
    eager fp32 model, and a sentence saying how to tune, when it never tuned this model. ``tiled``: tiling runs
    the eager network, so an onnxruntime choice gives way to the fastest eager path measured. The file is read
    once, whichever path runs it."""
    model = read_model(path)
    p = model.path
    key = model_key(model.info.architecture, model.info.config, model.format)
    entry = lookup(key, size, threads=threads)
    w, h = size
    if entry is None:
        say(f"fastnst: --fast: this machine has not tuned {model.info.architecture} ({model.format}) yet, so the "
            f"default path runs; tune once with: python -m fastnst.bench --tune --ckpt {p} --size {w}x{h}")
        return model.stylizer("cpu", threads=threads)
    choice = FastPath.parse(entry["choice"])
    if tiled and choice.ort and model.format != "onnx":
        choice = FastPath.parse(entry.get("best_eager") or "fp32")
    measured = next((c for c in entry.get("candidates", []) if c.get("path") == choice.name), {})
    tuned_size = "x".join(map(str, entry["size"]))
    say(f"fastnst: --fast: {choice.name} (tuned {entry.get('date', '?')[:10]} at {tuned_size}: "
        f"{measured.get('speedup_vs_fp32', float('nan')):.2f}x eager fp32, max pixel difference "
        f"{measured.get('max_abs_err', float('nan')):.1e})")
    if model.format == "onnx":
        return model.stylizer("cpu", threads=threads, onnx_optimization=choice.ort_level or "all")
    if not choice.ort:
        return model.stylizer("cpu", choice.precision, channels_last=choice.channels_last, compile=choice.compile)
    onnx_path = exported_onnx(p)
    if not onnx_path.is_file():
        say(f"fastnst: --fast: exporting {p.name} to ONNX once ({onnx_path}) ...")
        net = model.network
        onnx_path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            export_onnx(net, tmp, model.info)
            check_onnx(tmp, net, model.info.num_styles)  # the export must match eager before it is used

        atomic_write(onnx_path, write)
    return load(onnx_path, "cpu", threads=threads, onnx_optimization=choice.ort_level)
