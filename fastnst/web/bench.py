"""``python -m fastnst.web bench``: per-image latency of the page (headless Chromium, WebAssembly with SIMD and
threads) against native onnxruntime on the same machine, in one run, plus the webcam mode's frames per second.

For each network (a ``conf/model`` preset with random weights: the speed does not depend on the weights) and
each size, the page and native onnxruntime take turns, ``--rounds`` rounds of ``--runs`` timed runs each after
a warm-up, so that load from other processes hits both alike; the medians and their ratio are printed. The
webcam is Chromium's fake camera fed a WxH clip (``--use-file-for-fake-video-capture``), so the page's whole
webcam loop (capture, network, colour, drawing) runs at that size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastnst.errors import UserError
from fastnst.formats.metadata import ModelInfo
from fastnst.formats.onnx import export_onnx
from fastnst.inference.machine import OtherLoad, cpu_summary
from fastnst.models import create_model
from fastnst.presets import read_preset
from fastnst.web.browser import chromium
from fastnst.web.runtime import find_runtime
from fastnst.web.serve import serving
from fastnst.web.site import write_site

SIZES = ((256, 256), (512, 512))
MODELS = ("johnson", "mobile")
GOAL_RATIO = 5.0  # mobile at 512x512 in the page within 5x of native (issue 18)
GOAL_FPS = 10.0  # webcam mode at 256x256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(MODELS), help="network presets (conf/model), default johnson,mobile")
    p.add_argument("--sizes", default="256x256,512x512", help="WIDTHxHEIGHT list (default 256x256,512x512)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per round and side (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, page and native in turn (default 3)")
    p.add_argument("--webcam", default="256x256", help="webcam size WIDTHxHEIGHT, or none (default 256x256)")
    p.add_argument("--webcam-seconds", type=float, default=8.0, help="seconds of webcam frames counted (default 8)")
    p.add_argument("--runtime-dir", metavar="DIR", help="a copy of onnxruntime-web (default: the cache)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        out = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        out = []
    if not out or any(len(s) != 2 or min(s) < 16 for s in out):
        raise UserError(f"sizes {text!r}: give WIDTHxHEIGHT values of at least 16 px, comma-separated")
    return [(s[0], s[1]) for s in out]


def _model(folder: Path, name: str) -> Path:
    import torch


    preset = read_preset("model", name)
    arch = preset.pop("architecture", name)
    torch.manual_seed(0)
    net = create_model(arch, **preset).eval()
    return export_onnx(net, folder / f"{name}.onnx", ModelInfo(architecture=arch, config=net.config()
                                                               if hasattr(net, "config") else preset, styles=[name]))


def _native(model: Path, w: int, h: int, runs: int) -> list[float]:
    import torch

    from fastnst.formats.onnx import ort_session, run_session

    session = ort_session(model, torch.device("cpu"))
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    run_session(session, x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_session(session, x)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _y4m(path: Path, w: int, h: int, frames: int = 30) -> Path:
    """A moving colour pattern as a Y4M clip for Chromium's fake camera."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            y = (128 + 100 * np.sin((xx + 4 * i) / 9.0) * np.cos(yy / 13.0)).astype(np.uint8)
            u = np.full((h // 2, w // 2), 90 + 2 * i, np.uint8)
            v = np.full((h // 2, w // 2), 160 - 2 * i, np.uint8)
            f.write(b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes())
    return path


def _idle_load(seconds: float = 2.0) -> float | None:
    with OtherLoad() as load:
        time.sleep(seconds)
    return load.fraction


def run_bench(args: argparse.Namespace) -> None:
    sizes, names = _sizes(args.sizes), [m.strip() for m in args.models.split(",") if m.strip()]
    webcam = None if args.webcam.lower() == "none" else _sizes(args.webcam)[0]
    if args.runs < 1 or args.rounds < 1:
        raise UserError("--runs and --rounds must be at least 1")
    runtime = find_runtime(args.runtime_dir, None, ("wasm",))
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_summary(), "threads_native": "onnxruntime default",
                              "load_before": _idle_load(), "loadavg_before": os.getloadavg(), "rows": [], "webcam": []}
    with tempfile.TemporaryDirectory(prefix="fastnst-webbench-") as tmp:
        sites = {}
        for name in names:
            model = _model(Path(tmp), name)
            sites[name] = write_site(Path(tmp) / f"site-{name}", model, runtime, log=lambda m: None)
        clip = _y4m(Path(tmp) / "cam.y4m", *webcam) if webcam else None
        flags = [f"--use-file-for-fake-video-capture={clip}"] if clip else []
        with chromium(flags) as browser:
            for name, site in sites.items():
                with serving(site) as url:
                    page = browser.new_page()
                    page.goto(url + "index.html?nosw=1")
                    page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=120_000)
                    if page.evaluate("document.body.dataset.state") == "error":
                        raise UserError(f"the page failed: {page.inner_text('#message')}")
                    backend = page.inner_text("#backend")
                    for w, h in sizes:
                        web: list[float] = []
                        native: list[float] = []
                        for _ in range(args.rounds):
                            web += page.evaluate(f"window.fastnst.benchmark({w}, {h}, {args.runs})")
                            native += _native(site / "model.onnx", w, h, args.runs)
                        row = {"model": name, "size": f"{w}x{h}", "page_ms": statistics.median(web),
                               "native_ms": statistics.median(native), "backend": backend}
                        row["ratio"] = row["page_ms"] / row["native_ms"]
                        report["rows"].append(row)
                        print(f"{name:8s} {w}x{h}: page {row['page_ms']:.1f} ms, native {row['native_ms']:.1f} ms, "
                              f"{row['ratio']:.2f}x ({backend})", flush=True)
                    if webcam:
                        report["webcam"].append({"model": name, **_webcam(page, webcam, args.webcam_seconds)})
                        print(f"{name:8s} webcam {webcam[0]}x{webcam[1]}: {report['webcam'][-1]['fps']:.1f} fps", flush=True)
                    page.close()
    report["load_after"], report["loadavg_after"] = _idle_load(), os.getloadavg()
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def _webcam(page: Any, size: tuple[int, int], seconds: float) -> dict[str, Any]:
    page.select_option("#webcam-size", str(max(size))) if str(max(size)) in ("256", "384", "512") else None
    page.click("#webcam")
    page.wait_for_function("Number(document.body.dataset.frames || 0) >= 3", timeout=120_000)
    f0, t0 = int(page.evaluate("document.body.dataset.frames")), time.perf_counter()
    time.sleep(seconds)
    f1, t1 = int(page.evaluate("document.body.dataset.frames")), time.perf_counter()
    shape = page.evaluate("[document.getElementById('result').width, document.getElementById('result').height]")
    page.click("#webcam")
    return {"size": f"{shape[0]}x{shape[1]}", "frames": f1 - f0, "fps": (f1 - f0) / (t1 - t0)}


def format_report(r: dict[str, Any]) -> str:
    def load(x: float | None) -> str:
        return "unknown" if x is None else f"{x:.0%}"

    lines = [f"fastnst web bench, {r['date']}; CPU: {r['cpu']}",
             f"other processes' CPU use when idle: {load(r['load_before'])} before, {load(r['load_after'])} after "
             f"(load average {r['loadavg_before'][0]:.2f} before, {r['loadavg_after'][0]:.2f} after)", "",
             "| network | size | page (wasm) ms | native onnxruntime ms | page / native |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['size']} | {row['page_ms']:.1f} | {row['native_ms']:.1f} | {row['ratio']:.2f}x |")
    if r["rows"]:
        lines.append(f"\npage backend: {r['rows'][0]['backend']}")
    for cam in r["webcam"]:
        lines.append(f"webcam mode, {cam['model']} at {cam['size']}: {cam['fps']:.1f} fps ({cam['frames']} frames)")
    goal = [row for row in r["rows"] if row["model"] == "mobile" and row["size"] == "512x512"]
    if goal:
        ok = goal[0]["ratio"] <= GOAL_RATIO
        lines.append(f"goal, mobile at 512x512 within {GOAL_RATIO:g}x of native: {'met' if ok else 'NOT met'} "
                     f"({goal[0]['ratio']:.2f}x)")
    for cam in r["webcam"]:
        ok = cam["fps"] >= GOAL_FPS
        lines.append(f"goal, webcam at 256x256 >= {GOAL_FPS:g} fps ({cam['model']}): {'met' if ok else 'NOT met'} "
                     f"({cam['fps']:.1f} fps at {cam['size']})")
    return "\n".join(lines)


__all__ = ["add_arguments", "format_report", "run_bench"]
