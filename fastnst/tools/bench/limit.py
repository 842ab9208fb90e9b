"""The distance to the machine's limit, measured in the same run: large fp32 and bf16 matrix multiplies timed in turn
with the paths they are compared with (so load from elsewhere hits both alike), each path's achieved FLOP/s and
its share of the multiply's; and a per-operation profile of the network's forward pass (``--parts profile``):
which layers hold it back (the 9x9 convolutions, the 3x3 ones, upsampling, instance norm, padding, ...).

FLOPs are those of convolutions and matrix products (PyTorch's FLOP counter, a multiply-add = 2 FLOPs), as for
the MACs/px figure; norms, activations and copies cost time but no counted FLOPs, which is why they show up as
time that lowers the share.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from fastnst.inference.devices import cpu_half_support, synchronize
from fastnst.models import create_model
from fastnst.tools.bench.tables import table

MATMUL_SIZE = 2048  # n of the n x n x n multiply: large enough for the BLAS to reach its peak, ~0.1 s on 2 cores


class MatmulProbe:
    """``probe(round)`` multiplies two n x n matrices of ``dtype``; ``flops`` = 2 n^3."""

    def __init__(self, dtype: torch.dtype, device: torch.device, n: int = MATMUL_SIZE) -> None:
        g = torch.Generator().manual_seed(0)
        self.a = torch.rand(n, n, generator=g).to(device, dtype)
        self.b = torch.rand(n, n, generator=g).to(device, dtype)
        self.flops = 2.0 * n ** 3
        self.n = n

    def __call__(self, _round: int = 0) -> torch.Tensor:
        return torch.mm(self.a, self.b)


def limit_probes(device: torch.device) -> dict[str, MatmulProbe]:
    """One probe per precision the device runs natively: ``limit fp32`` always, ``limit bf16`` where bf16 is native."""
    probes = {"limit fp32": MatmulProbe(torch.float32, device)}
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_half_support()["bf16"]
    if bf16:
        probes["limit bf16"] = MatmulProbe(torch.bfloat16, device)
    return probes


def limit_rates(probes: dict[str, MatmulProbe], times: dict[Any, list[float]]) -> dict[str, float]:
    """{"fp32": FLOP/s, "bf16": FLOP/s} from the probes' timings (median)."""
    return {name.split()[-1]: probe.flops / statistics.median(times[name])
            for name, probe in probes.items() if times.get(name)}


def share(flops_per_s: float, precision: str, rates: dict[str, float]) -> float | None:
    """``flops_per_s`` as a fraction of the multiply's FLOP/s of the same precision (fp16 and onnxruntime: their own
    precision's, fp32 for onnxruntime); None when that precision was not measured."""
    rate = rates.get(precision)
    return flops_per_s / rate if rate else None


def training_flops(step: Callable[[], Any]) -> float:
    """FLOPs of one call of ``step`` (forward, backward and all: a training step), counted by PyTorch."""
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


# --- where the time of a forward pass goes -------------------------------------------------------------------------

def _conv_flops(name: str, args: tuple[Any, ...], out: Any) -> float:
    """FLOPs of a convolution call as it reaches the dispatcher (``conv2d``/``conv_transpose2d`` under inference
    mode, ``convolution`` otherwise): 2 x multiply-adds."""
    x, weight = args[0], args[1]
    k = weight.shape[2] * weight.shape[3]
    transposed = name == "conv_transpose2d" or (name == "convolution" and bool(args[6]))
    if transposed:  # weight [Cin, Cout/groups, kh, kw]: every input value feeds Cout/groups * kh * kw outputs
        return 2.0 * x.numel() * weight.shape[1] * k
    return 2.0 * out.numel() * weight.shape[1] * k  # weight [Cout, Cin/groups, kh, kw]


CONV_OPS = ("conv2d", "convolution", "conv_transpose2d")


def op_group(name: str, args: tuple[Any, ...]) -> str:
    """The row of the profile an aten op belongs to: convolutions by kernel, then norms, padding, upsampling ..."""
    if name in CONV_OPS:
        weight = args[1]
        if name == "conv_transpose2d" or (name == "convolution" and bool(args[6])):
            return "upsampling: transposed conv"
        kh, kw = weight.shape[-2:]
        if (kh, kw) == (2, 2):  # fastnst's upsampling in its sub-pixel form (models.layers.upsample_conv)
            return "upsampling: sub-pixel 2x2 conv"
        if (kh, kw) == (9, 9):
            return "9x9 convolutions (first, last)"
        stride = args[3] if len(args) > 3 else 1
        strided = max(stride) > 1 if isinstance(stride, (list, tuple)) else int(stride) > 1
        return f"{'downsampling ' if strided else ''}{kh}x{kw} convolutions"
    if "batch_norm" in name or "instance_norm" in name or name in ("var_mean", "native_group_norm"):
        return "instance norm"
    if name.startswith(("reflection_pad", "replication_pad", "constant_pad_nd")) or name == "pad":
        return "padding"
    if name == "cat":
        return "upsampling: replicate padding (cat)"
    if name == "einsum":
        return "upsampling: weight taps (einsum)"
    if name in ("relu", "relu_", "threshold", "clamp_min", "clamp_min_"):
        return "ReLU"
    if name in ("add", "add_"):
        return "residual adds"
    if name in ("sigmoid", "sigmoid_"):
        return "sigmoid"
    if name in ("_to_copy", "copy_", "clone", "contiguous", "to"):
        return "copies and conversions"
    if name == "pixel_shuffle":
        return "upsampling: pixel shuffle"
    if name in ("select", "slice", "view", "reshape", "unsqueeze", "squeeze", "expand", "permute", "transpose",
                "as_strided", "detach", "detach_", "lift_fresh", "alias"):
        return "views and crops"
    return f"other ({name})"


class _OpTimer(TorchDispatchMode):
    """Times every top-level aten op of the code it wraps (the CPU runs them synchronously) and counts its FLOPs."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.rows: dict[str, dict[str, float]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        synchronize(self.device)
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        synchronize(self.device)
        dt = time.perf_counter() - t0
        name = func._overloadpacket.__name__
        flops = _conv_flops(name, args, out) if name in CONV_OPS else 0.0
        row = self.rows.setdefault(op_group(name, args), {"seconds": 0.0, "flops": 0.0, "calls": 0})
        row["seconds"] += dt
        row["flops"] += flops
        row["calls"] += 1
        return out


def profile_forward(net: nn.Module, x: torch.Tensor, repeats: int = 2) -> list[dict[str, Any]]:
    """Where one eager forward of ``net`` on ``x`` spends its time, per group of operations (:func:`op_group`):
    ms per call (median over ``repeats`` after one warm-up), share of the pass, and FLOP/s of the counted groups."""
    runs: list[dict[str, dict[str, float]]] = []
    with torch.inference_mode():
        net(x)  # warm-up: oneDNN primitive creation, allocations
        for _ in range(repeats):
            timer = _OpTimer(x.device)
            with timer:
                net(x)
            runs.append(timer.rows)
    groups = sorted({g for r in runs for g in r})
    rows = []
    for g in groups:
        seconds = statistics.median(r.get(g, {}).get("seconds", 0.0) for r in runs)
        flops = runs[0].get(g, {}).get("flops", 0.0)
        rows.append({"group": g, "calls": int(runs[0].get(g, {}).get("calls", 0)), "ms": seconds * 1e3,
                     "gflops": flops / 1e9, "flops_per_s": flops / seconds if seconds and flops else None})
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share_of_time"] = r["ms"] / total if total else None
    return sorted(rows, key=lambda r: -r["ms"])



def _native_bf16(device: torch.device) -> bool:
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_half_support()["bf16"]


def run_profile(cfg: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """``--parts profile``: the per-operation profile of the benchmarked network's forward pass at ``--profile-size``
    for eager fp32, fp32+cl and bf16+cl (where bf16 is native), each next to the same precision's multiply limit,
    all measured in turn."""
    dev = cfg.torch_device
    w, h = cfg.profile_size
    torch.manual_seed(0)
    base = create_model(**cfg.model).eval()
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(2))
    paths = [("fp32", torch.float32, False), ("fp32+cl", torch.float32, True)]
    if _native_bf16(dev):
        paths.append(("bf16+cl", torch.bfloat16, True))
    probes = limit_probes(dev)
    nets = {}
    for name, dtype, cl in paths:
        net = create_model(**cfg.model).eval()
        net.load_state_dict(base.state_dict())
        net = net.to(dev, dtype)
        fmt = torch.channels_last if cl else torch.contiguous_format
        nets[name] = (net.to(memory_format=fmt), x.to(dev, dtype).contiguous(memory_format=fmt))
    profiles: dict[str, list[dict[str, Any]]] = {}
    probe_times: dict[str, list[float]] = {k: [] for k in probes}
    for r in range(cfg.profile_rounds):
        log(f"profile: round {r + 1} of {cfg.profile_rounds} at {w}x{h} ...")
        for name, (net, inp) in nets.items():
            rows = profile_forward(net, inp, repeats=1)
            for row in rows:  # keep every round's figures; the median is taken below
                profiles.setdefault(name, []).append(row)
        for key, probe in probes.items():
            probe()
            synchronize(dev)
            t0 = time.perf_counter()
            probe()
            synchronize(dev)
            probe_times[key].append(time.perf_counter() - t0)
    rates = limit_rates(probes, probe_times)
    out: dict[str, Any] = {"size": f"{w}x{h}", "network": cfg.model, "limit_flops_per_s": rates,
                           "matmul_size": MATMUL_SIZE, "paths": {}}
    for name, dtype, _ in paths:
        merged: dict[str, list[dict[str, Any]]] = {}
        for row in profiles[name]:
            merged.setdefault(row["group"], []).append(row)
        rows = []
        for group, items in merged.items():
            ms = statistics.median(i["ms"] for i in items)
            gflop = items[0]["gflops"]
            rate = gflop * 1e9 / (ms / 1e3) if gflop and ms else None
            rows.append({"group": group, "calls": items[0]["calls"], "ms": ms, "gflops": gflop, "flops_per_s": rate,
                         "share_of_limit": share(rate, "bf16" if dtype == torch.bfloat16 else "fp32", rates)
                         if rate else None})
        total = sum(r["ms"] for r in rows)
        for r in rows:
            r["share_of_time"] = r["ms"] / total if total else None
        gflop_total = sum(r["gflops"] for r in rows)
        precision = "bf16" if dtype == torch.bfloat16 else "fp32"
        rate = gflop_total * 1e9 / (total / 1e3) if total else None
        out["paths"][name] = {"rows": sorted(rows, key=lambda r: -r["ms"]), "ms": total, "gflops": gflop_total,
                              "flops_per_s": rate, "share_of_limit": share(rate, precision, rates) if rate else None}
    return out


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.0%}"


def format_limit_line(rates: dict[str, float], where: str) -> str:
    parts = [f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in rates.items()]
    return (f"limit ({where}): a {MATMUL_SIZE}x{MATMUL_SIZE} matrix multiply timed in turn with the paths: "
            + ", ".join(parts) + "; share = a path's achieved FLOP/s over its precision's multiply")


def format_profile(p: dict[str, Any]) -> list[str]:
    lines = [f"PROFILE  eager forward at {p['size']}, batch 1, time per group of operations (median of rounds); "
             f"GFLOP/s of the counted groups (convolutions); share = of the same precision's "
             f"{p['matmul_size']}x{p['matmul_size']} multiply ("
             + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in p["limit_flops_per_s"].items()) + ")"]
    for name, path in p["paths"].items():
        rows = [[r["group"], str(r["calls"]), f"{r['ms']:.1f}", _pct(r["share_of_time"]),
                 "" if r["flops_per_s"] is None else f"{r['flops_per_s'] / 1e9:.0f}", _pct(r["share_of_limit"])]
                for r in path["rows"]]
        rows.append(["whole forward", "", f"{path['ms']:.1f}", "100%",
                     "" if path["flops_per_s"] is None else f"{path['flops_per_s'] / 1e9:.0f}",
                     _pct(path["share_of_limit"])])
        lines += ["", f"{name}:", table(["operations", "calls", "ms", "of time", "GFLOP/s", "of limit"], rows)]
    return lines
