"""``python -m fastnst.bench --tune``: time every inference path for one model and size on this machine, in
turn, and record the fastest in the tuning cache that ``infer.py --fast`` reads (:mod:`fastnst.inference.tuning`).

The candidates: eager fp32, channels-last, torch.compile, bf16 (where the CPU runs it natively) and their
combinations, and onnxruntime at each graph optimisation level. Which wins differs between CPUs (AMX makes bf16
fast; without it compile or onnxruntime may win), so nothing is assumed: it is measured here. Paths whose output
differs from eager fp32 by more than ``--tolerance`` (bf16's rounding, about 3/255) are measured but not chosen
with ``--exact``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fastnst.errors import UserError
from fastnst.fileio import check_writable_folder
from fastnst.formats import ModelInfo
from fastnst.formats.onnx import export_onnx
from fastnst.inference import load
from fastnst.inference.devices import cpu_half_support
from fastnst.inference.fast_paths import ORT_LEVELS, FastPath
from fastnst.inference.machine import OtherLoad, cpu_summary, describe_error, drift, time_in_turn
from fastnst.inference.runners import network_runner
from fastnst.inference.loading import read_model
from fastnst.inference.tuning import cache_dir, model_key, record
from fastnst.models import create_model
from fastnst.tools.bench.common import model_preset, parse_sizes
from fastnst.tools.bench.tables import load_warning, table

DEFAULT_SIZES = "512x512,1920x1080"
EXACT_TOLERANCE = 1e-3  # onnxruntime and channels-last reorder float sums: 1e-6-ish; 1e-3 is the export parity limit
DEFAULT_TOLERANCE = 0.03  # bf16 differs by ~0.013 (3/255) on the default network


def candidates(fmt: str, exact: bool, compile_ok: bool = True) -> list[FastPath]:
    """The paths worth timing for a model file of format ``fmt`` on this CPU."""
    ort = [FastPath(ort_level=level) for level in ORT_LEVELS]
    if fmt == "onnx":
        return ort
    eager = [FastPath(), FastPath(channels_last=True)] + ([FastPath(compile=True)] if compile_ok else [])
    if not exact and cpu_half_support()["bf16"]:
        eager += [FastPath("bf16"), FastPath("bf16", True)] + ([FastPath("bf16", True, True)] if compile_ok else [])
    return eager + ort[:2]


def _chosen_paths(text: str, fmt: str) -> list[FastPath]:
    """``--tune-paths``: eager fp32 (the baseline) first, then the named paths."""
    try:
        chosen = [FastPath.parse(t.strip()) for t in text.split(",") if t.strip()]
    except UserError as exc:
        raise UserError(f"--tune-paths {text!r}: {exc}") from None
    if fmt == "onnx":
        if any(c.ort_level is None for c in chosen):
            raise UserError("an .onnx model runs in onnxruntime only: --tune-paths takes onnxruntime[+extended|+basic]")
        return list(dict.fromkeys([FastPath(ort_level="all"), *chosen]))
    return list(dict.fromkeys([FastPath(), *chosen]))


def _builders(args: argparse.Namespace, tmp: Path) -> tuple[str, Any, Callable[[FastPath], Callable[[torch.Tensor], torch.Tensor]]]:
    """(format, ModelInfo, build(choice) -> runner) for --ckpt or a --model preset with random weights."""
    if args.ckpt:
        model = read_model(args.ckpt)
        fmt, info, net = model.format, model.info, model.network
    else:
        preset = model_preset(args.model or "johnson")
        torch.manual_seed(0)
        net = create_model(**preset).eval()
        fmt = "ckpt"
        info = ModelInfo(architecture=preset["architecture"], config=net.config(), styles=["tune"])
    onnx_file = Path(args.ckpt).expanduser() if fmt == "onnx" else tmp / "tune.onnx"

    def build(choice: FastPath) -> Callable[[torch.Tensor], torch.Tensor]:
        if choice.ort_level is not None:
            if not onnx_file.is_file():
                export_onnx(copy.deepcopy(net).cpu().float(), onnx_file, info)
            model = load(onnx_file, "cpu", threads=args.threads, onnx_optimization=choice.ort_level)
            return lambda x: model(x, None if info.num_styles == 1 else 0)
        if choice.compile:
            torch._dynamo.reset()  # a fresh shape-specialised graph per size, as infer.py compiles for a file
        _, run = network_runner(copy.deepcopy(net), torch.device("cpu"), choice.precision,
                                channels_last=choice.channels_last, compile=choice.compile)
        style = None if info.num_styles == 1 else torch.eye(info.num_styles)[:1]
        return lambda x: run(x, None if style is None else style.expand(x.shape[0], -1))

    return fmt, info, build


def tune_size(build: Callable[[FastPath], Callable[[torch.Tensor], torch.Tensor]], paths: list[FastPath],
              size: tuple[int, int], tolerance: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Build and check every path at ``size`` (W, H), time them in turn, and choose the fastest within ``tolerance``."""
    w, h = size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    rows: dict[str, dict[str, Any]] = {}
    baseline: torch.Tensor | None = None
    for choice in paths:
        log(f"tune: building {choice.name} at {w}x{h} ...")
        row: dict[str, Any] = {"path": choice.name}
        rows[choice.name] = row
        try:
            run = build(choice)
            y = run(x).float()  # first call: compilation / session set-up
            if baseline is None:
                baseline = y
            row["max_abs_err"] = float((y - baseline).abs().max())
            runners[choice.name] = run
        except Exception as exc:  # one failing path (no C++ compiler for inductor ...) never ends the tuning
            row["error"] = describe_error(exc)
    warmup, repeats = (2, 5) if w * h <= 512 * 512 else (1, 3)
    log(f"tune: timing {len(runners)} paths in turn at {w}x{h}, {repeats} rounds ...")
    with OtherLoad() as load:
        times, errors = time_in_turn({k: (lambda r, f=f: f(x)) for k, f in runners.items()}, torch.device("cpu"),
                                     warmup, repeats)
    for name, err in errors.items():
        rows[name]["error"] = err
    first = paths[0].name
    for name, t in times.items():
        if t and "error" not in rows[name]:
            rows[name]["ms"] = statistics.median(t) * 1e3
    base_ms = rows[first].get("ms")
    for row in rows.values():
        if "ms" in row and base_ms:
            row["speedup_vs_fp32"] = base_ms / row["ms"]
    ok = [r for r in rows.values() if "ms" in r and r["max_abs_err"] <= tolerance]
    if not ok:
        raise UserError(f"no inference path could be timed at {w}x{h}: "
                        + "; ".join(f"{r['path']}: {r.get('error', 'too far from fp32')}" for r in rows.values()))
    best = min(ok, key=lambda r: r["ms"])
    eager = [r for r in ok if not FastPath.parse(r["path"]).ort]
    return {"choice": best["path"], "best_eager": min(eager, key=lambda r: r["ms"])["path"] if eager else None,
            "tolerance": tolerance, "candidates": list(rows.values()),
            "load": {**load.to_dict(), "fp32_drift": drift(times.get(first, []))}}


def format_tuning(model: dict[str, Any], size: tuple[int, int], result: dict[str, Any]) -> str:
    w, h = size
    lines = [f"TUNING  {model['architecture']} ({model['format']}) at {w}x{h}, batch 1; chosen: {result['choice']} "
             f"(fastest within max |diff| {result['tolerance']:g} of eager fp32)"]
    warning = load_warning(result["load"], result["load"].get("fp32_drift"), f"tuning at {w}x{h}")
    if warning:
        lines.append(warning.replace("ratios", "timings"))
    rows = []
    for r in result["candidates"]:
        if "ms" in r:
            rows.append([r["path"], f"{r['ms']:.1f}", f"{r.get('speedup_vs_fp32', float('nan')):.2f}x",
                         f"{r['max_abs_err']:.1e}", "<- chosen" if r["path"] == result["choice"] else ""])
        else:
            rows.append([r["path"], "failed", "", "", r.get("error", "")[:70]])
    lines.append(table(["path", "ms", "vs fp32", "max |diff|", ""], rows))
    return "\n".join(lines)


def tune_main(args: argparse.Namespace) -> None:
    """The --tune command: every size of --size, recorded one by one (an interrupted run keeps the sizes done)."""
    if args.device not in ("auto", "cpu") and not args.device.startswith("cpu"):
        raise UserError("--tune measures CPU paths; on a GPU use infer.py --precision fp16/bf16 --channels-last --compile")
    if args.ckpt and args.model:
        raise UserError("pass --ckpt (a model file) or --model (a preset), not both")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = parse_sizes(args.size or DEFAULT_SIZES)
    tolerance = EXACT_TOLERANCE if args.exact else DEFAULT_TOLERANCE
    check_writable_folder(cache_dir(), "the tuning cache folder (FASTNST_CACHE_DIR)")  # before minutes of timing
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    print(f"fastnst bench --tune  CPU: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="fastnst-tune-") as tmp:
        fmt, info, build = _builders(args, Path(tmp))
        key = model_key(info.architecture, info.config, fmt)
        paths = candidates(fmt, args.exact)
        if args.tune_paths:
            paths = _chosen_paths(args.tune_paths, fmt)
        for size in sizes:
            result = tune_size(build, paths, size, tolerance, log)
            where = record(key, size, 1, result, threads=args.threads)
            print(format_tuning(key, size, result), flush=True)
            print(f"recorded in {where}: infer.py --fast uses {result['choice']} for this network near "
                  f"{size[0]}x{size[1]} on this machine\n", flush=True)
