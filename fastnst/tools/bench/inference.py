"""Inference speed: images/s, latency and peak memory of every inference path as infer.py builds it,
against pytorch/examples' formulation of the same network (:func:`.reference.reference_forward`), timed in turn."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastnst.inference.devices import synchronize
from fastnst.models import create_model
from fastnst.tools.bench.common import BenchConfig, PeakMemory, Variant, _error, time_in_turn
from fastnst.tools.bench.reference import reference_forward

REFERENCE_INFER = "reference (pytorch/examples)"

class _InferenceRunner:
    """Builds one inference path once, as ``infer.py`` builds it (:func:`fastnst.inference.runners.network_runner`,
    :func:`fastnst.load`); ``runner(x)`` stylizes a float32 batch on the
    device and returns float32 on the same device, conversions included as infer.py pays them."""

    def __init__(self, variant: Variant | None, net: nn.Module, device: torch.device, tmp: Path,
                 threads: int | None = None) -> None:
        from fastnst.formats import ModelInfo
        from fastnst.inference import load
        from fastnst.inference.runners import network_runner

        self.variant, self.device = variant, device
        if variant is None:  # the reference: pytorch/examples' formulation, eager fp32
            ref = copy.deepcopy(net).to(device).eval()
            self.fn = torch.inference_mode()(lambda x: reference_forward(ref, x))
        elif variant.ort:
            from fastnst.formats.onnx import export_onnx

            info = ModelInfo(architecture=net.architecture, config=net.config(), styles=["bench"])
            path = export_onnx(copy.deepcopy(net).cpu(), tmp / "bench.onnx", info)
            self.fn: Callable[[torch.Tensor], torch.Tensor] = load(path, device, threads=threads)
        else:
            if variant.compile:
                # Dynamo remembers sizes per code object across torch.compile calls: without a reset, the second
                # size measured would get a shape-generic graph instead of the specialised one infer.py compiles
                # for a file (or a folder of same-size photos).
                torch._dynamo.reset()
            _, run = network_runner(copy.deepcopy(net), device, variant.precision,
                                    channels_last=variant.channels_last, compile=variant.compile)
            self.fn = lambda x: run(x, None)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

def run_infer(cfg: BenchConfig, log: Callable[[str], None],
              on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    dev = cfg.torch_device
    torch.manual_seed(0)
    net = create_model(**{"architecture": "johnson", **cfg.model}).to(dev).eval()
    variants: list[Variant | None] = [Variant.parse(v) for v in cfg.infer_variants]
    if not any(v == Variant() for v in variants):
        variants.insert(0, Variant())  # fastnst's eager fp32 is always measured
    variants.sort(key=lambda v: v != Variant())
    variants.insert(0, None)  # the baseline: pytorch/examples' formulation of the same network, eager fp32
    results: list[dict[str, Any]] = []
    live = {"batch_size": cfg.infer_batch, "network": cfg.model, "results": results}
    g = torch.Generator().manual_seed(1)
    with tempfile.TemporaryDirectory(prefix="fastnst-bench-infer-") as tmp:
        for w, h in cfg.infer_sizes:
            x = torch.rand(cfg.infer_batch, 3, h, w, generator=g)
            warmup, repeats = cfg.infer_plan(w * h)
            # Build every path first (first call and peak memory measured one path at a time), then time them
            # in turn, the order rotating every round, so that load from elsewhere hits all paths alike and
            # the ratios to the reference hold even when the machine's speed drifts during the run.
            built: list[tuple[dict[str, Any], _InferenceRunner, torch.Tensor]] = []
            rows: list[dict[str, Any]] = []
            baseline_out: torch.Tensor | None = None
            for v in variants:
                name = REFERENCE_INFER if v is None else v.name
                log(f"infer: {name} at {w}x{h} ...")
                row: dict[str, Any] = {"path": name, "size": f"{w}x{h}", "batch": cfg.infer_batch}
                rows.append(row)
                try:
                    t_build = time.perf_counter()
                    runner = _InferenceRunner(v, net, dev, Path(tmp), cfg.threads)
                    inp = runner.prepare_input(x)
                    out = runner(inp)  # first call: compilation / session warm-up, timed separately
                    synchronize(dev)
                    row["first_call_s"] = time.perf_counter() - t_build
                    with PeakMemory(dev) as mem:
                        runner(inp)
                        synchronize(dev)
                    row["peak_mib"] = mem.peak_mib
                    out_t = out.float().cpu()
                    if v is None:
                        baseline_out = out_t
                    if baseline_out is not None:
                        row["max_abs_err"] = float((out_t - baseline_out).abs().max())
                    del out
                    built.append((row, runner, inp))
                except Exception as exc:
                    row["error"] = _error(exc)
            if built:
                log(f"infer: timing {len(built)} paths in turn at {w}x{h}, {repeats} rounds ...")
            calls = {id(row): (lambda r, runner=runner, inp=inp: runner(inp)) for row, runner, inp in built}
            times, errors = time_in_turn(calls, dev, max(0, warmup - 1), repeats)
            for row, _, _ in built:
                if id(row) in errors:
                    row["error"] = errors[id(row)]
            baseline_ips = float("nan")
            for row, _, _ in built:
                if times[id(row)] and "error" not in row:
                    med = statistics.median(times[id(row)])
                    row.update(images_per_s=cfg.infer_batch / med, ms=med * 1e3, repeats=len(times[id(row)]))
                    if row["path"] == REFERENCE_INFER:
                        baseline_ips = row["images_per_s"]
            for row in rows:
                if "images_per_s" in row:
                    row["vs_reference"] = row["images_per_s"] / baseline_ips
                results.append(row)
            if on_row:
                on_row(live)
            del built, calls
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return live
