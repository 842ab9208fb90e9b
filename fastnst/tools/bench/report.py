"""The benchmark's report: machine facts, the tables, and ``run`` (the parts in order, saved as they come)."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from fastnst.errors import UserError
from fastnst.inference.machine import OtherLoad, cpu_features, cpu_model, load_average
from fastnst.tools.bench.common import BenchConfig, _quiet_lightning, half_support
from fastnst.tools.bench.data import run_data
from fastnst.tools.bench.inference import run_infer
from fastnst.tools.bench.limit import format_limit_line, format_profile, run_profile
from fastnst.tools.bench.styles import format_styles, run_styles
from fastnst.tools.bench.tables import fmt, load_warning, table
from fastnst.tools.bench.training import run_train
from fastnst.tools.bench.video import run_video

PARTS = ("train", "data", "infer", "styles", "video", "profile")


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if (load := load_average()) is not None:
        info["load_average"] = load
    info["cpu"] = cpu_model()
    info["isa"] = cpu_features()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["half_precision"] = half_support(device)
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info

def _flops_cells(row: dict[str, Any]) -> list[str]:
    """GFLOP/s achieved and its share of the same precision's matrix multiply, where measured."""
    rate, part = row.get("flops_per_s"), row.get("share_of_limit")
    return ["" if rate is None else f"{rate / 1e9:.0f}", "" if part is None else f"{part:.0%}"]


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [f"fastnst bench  {m['date']}  device={m['device']}  {m.get('gpu') or m.get('cpu', '')}  "
           f"torch {m['torch']}  onnxruntime {m.get('onnxruntime', 'n/a')}  threads={m['threads']}  "
           f"load={m.get('load_average', 'n/a')}",
           f"CPU: {m.get('cpu', '?')}, {m.get('cpu_count', '?')} logical CPUs; ISA: {', '.join(m.get('isa') or []) or 'none of the listed features found'}"]
    if "train" in report:
        t = report["train"]
        out += ["", f"TRAINING  {t['image_size']}px, batch {t['batch_size']}, VGG19 content {','.join(t['loss_layers']['content'])} "
                f"style {','.join(t['loss_layers']['style'])}; median of {t['timed_steps']} steps after {t['warmup_steps']} warm-up"]
        ref = next((r for r in t["results"] if r["variant"] == "reference"), {})
        warning = load_warning(report.get("load", {}).get("train"), ref.get("drift"), "training")
        if warning:
            out.append(warning)
        rows = []
        for r in t["results"]:
            name = "reference (pytorch/examples)" if r["variant"] == "reference" else f"fastnst {r['variant']}"
            diverged = r.get("loss_vs_fp32")
            loss = "" if diverged is None else f"{diverged:.1%}"
            if "error" in r:
                rows.append([name, "failed", "", "", "", "", loss, r["error"][:90]])
            else:
                rows.append([name, fmt(r["step_ms"]), fmt(r["images_per_s"], 2), f"{r['vs_reference']:.2f}x",
                             *_flops_cells(r), loss, ""])
        out.append(table(["variant", "step ms", "images/s", "vs reference", "GFLOP/s", "of limit", "loss vs fp32", ""],
                          rows))
        if t.get("limit_flops_per_s"):
            out.append(format_limit_line(t["limit_flops_per_s"], f"training; a step is {t['flops_per_step'] / 1e9:.1f} "
                                         f"GFLOP, counted on fastnst's fp32 step"))
        out.append("(loss vs fp32: the largest relative difference of the variant's loss from fastnst fp32's over the "
                   "steps, same weights and batches; above 10% the variant failed and is never chosen)")
        out += [f"known to fail: {r['known_failure']}" for r in t["results"] if r.get("known_failure")]
    if "data" in report:
        d = report["data"]
        out += ["", f"DATA  {d['source']} ({d['images']} images, median {d['median_size']}) -> {d['crop']}px crops, batch {d['batch_size']}"]
        rows = [[r["pipeline"], str(r["workers"]), fmt(r["images_per_s"]), fmt(r["images_per_s_per_worker"])]
                for r in d["results"]]
        out.append(table(["pipeline", "workers", "images/s", "per worker"], rows))
        out.append("(0 workers: decoding in the main process, i.e. the rate of one worker)")
        if d.get("prepare"):
            p = d["prepare"]
            out.append(f"prepare: {p['images']} images in {p['seconds']:.1f} s ({p['images_per_s']:.0f} images/s), "
                       f"{p['bytes'] / 2**20:.1f} MiB, {p['skipped']} skipped")
    if "infer" in report:
        i = report["infer"]
        out += ["", f"INFERENCE  batch {i['batch_size']}, median over repeats after warm-up; peak = memory above the model's; "
                "MACs/px = multiply-adds per output pixel; max |diff| = against the model's eager fp32 (the reference for "
                "its own network)"]
        for size, load in (i.get("load") or {}).items():
            warning = load_warning(load, load.get("reference_drift"), f"inference at {size}")
            if warning:
                out.append(warning)
        rows = []
        for r in i["results"]:
            macs = r.get("macs_per_pixel")
            macs_s = f"{macs / 1e3:.1f}k" if macs else "n/a"
            if "error" in r:
                rows.append([r["size"], r["path"], macs_s, "failed", "", "", "", "", "", r["error"][:60]])
            else:
                err = r.get("max_abs_err")
                rows.append([r["size"], r["path"], macs_s, fmt(r["images_per_s"], 2), fmt(r["ms"]),
                             fmt(r["peak_mib"], 0), f"{r['vs_reference']:.2f}x", *_flops_cells(r),
                             "n/a" if err is None else f"{err:.1e}"])
        out.append(table(["size", "path", "MACs/px", "images/s", "ms", "peak MiB", "vs reference", "GFLOP/s", "of limit",
                           "max |diff|"], rows))
        for size, rates in (i.get("limit_flops_per_s") or {}).items():
            out.append(format_limit_line(rates, f"inference at {size}"))
    if "styles" in report:
        out += ["", *format_styles(report["styles"])]
    if "profile" in report:
        out += ["", *format_profile(report["profile"])]
    if "video" in report:
        v = report["video"]
        out += ["", f"VIDEO  end to end = decode + stylize (batch {v['batch_size']}) + encode, H.264 clip with audio; "
                f"median of {v['rounds']} runs in turn"]
        rows = []
        for r in v["results"]:
            if "error" in r:
                rows.append([r["size"], str(r["frames"]), r["path"], "skipped" if "not installed" in r["error"]
                             else "failed", "", "", r["error"][:70]])
            else:
                vs = r["vs_reference"]
                rows.append([r["size"], str(r["frames"]), r["path"], fmt(r["fps"], 2), f"{vs:.2f}x" if vs == vs else "n/a",
                             f"{r['vs_network_only']:.2f}" if "vs_network_only" in r else "", ""])
        out.append(table(["size", "frames", "path", "frames/s", "vs loop", "e2e / network", "note"], rows))
    return "\n".join(out)

def run(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None,
        save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the chosen parts; returns the report dict (what ``--json`` writes). ``save`` receives the report
    after every part and every inference row, so a run cut short by a time limit keeps what it measured."""
    dev = cfg.torch_device
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report: dict[str, Any] = {"machine": machine_info(dev), "config": {
        "parts": list(cfg.parts), "train_variants": cfg.train_variants, "infer_variants": cfg.infer_variants,
        "infer_sizes": [f"{w}x{h}" for w, h in cfg.infer_sizes], "model": cfg.model,
        "video_sizes": [f"{w}x{h}" for w, h in cfg.video_sizes or []], "video_frames": cfg.video_frames}}
    report["seconds"] = {}
    with _quiet_lightning():
        _run_parts(cfg, log, save, report)
    report["machine"]["load_average_end"] = load_average()
    return report

def _run_parts(cfg: BenchConfig, log: Callable[[str], None], save: Callable[[dict[str, Any]], None] | None,
               report: dict[str, Any]) -> None:
    report["load"] = {}
    def on_row(live: dict[str, Any]) -> None:
        report["infer"] = live
        if save:
            save(report)

    for part, fn in (("train", run_train), ("data", run_data), ("infer", run_infer), ("styles", run_styles),
                     ("video", run_video), ("profile", run_profile)):
        if part not in cfg.parts:
            continue
        t0 = time.perf_counter()
        with OtherLoad() as load:  # what other processes took from the CPUs during this part
            report[part] = run_infer(cfg, log, on_row=on_row) if part == "infer" else fn(cfg, log)
        report["seconds"][part] = round(time.perf_counter() - t0, 1)
        report["load"][part] = load.to_dict()
        if save:
            save(report)
