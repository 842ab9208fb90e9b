"""Devices and precisions for inference: which device ``auto`` means, whether a device can run a precision
at a useful speed, and waiting for queued device work."""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import torch

from fastnst.errors import UserError

Precision = Literal["fp32", "fp16", "bf16"]  # the one list of precisions (infer.py --precision, fast paths)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.float16, torch.bfloat16)))


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable explicit choice is a UserError."""
    if isinstance(name, torch.device):
        return name
    name = name.lower()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu or auto")
        return torch.device(name)
    if name == "mps":
        if not mps_ok:
            raise UserError("--device mps was requested but Apple MPS is not available; use --device cpu or auto")
        return torch.device("mps")
    raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or mps")


def cpu_half_support() -> dict[str, bool]:
    """Whether this CPU runs bf16 / fp16 convolutions natively through oneDNN (AVX512-BF16/AMX, AVX512-FP16/AMX-FP16)."""
    out = {"bf16": False, "fp16": False}
    with contextlib.suppress(Exception):
        out["bf16"] = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    with contextlib.suppress(Exception):
        out["fp16"] = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return out


def check_precision(device: torch.device, precision: str) -> torch.dtype:
    """The dtype for ``precision`` on ``device``, or a UserError where the device cannot run it."""
    if precision not in DTYPES:
        raise UserError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")
    if precision != "fp32" and device.type == "cpu" and not cpu_half_support()[precision]:
        # Without native kernels PyTorch emulates half precision on the CPU: tens of times slower than fp32
        # (fp16 measured 48x slower than fp32 on an AMD EPYC with AVX512-BF16 but no AVX512-FP16).
        other = "bf16" if precision == "fp16" and cpu_half_support()["bf16"] else None
        raise UserError(f"--precision {precision} has no native kernels on this CPU and would run many times slower "
                        f"than fp32; use " + (f"--precision {other} (native here) or " if other else "")
                        + "--precision fp32, or a GPU (--device cuda)")
    if precision != "fp32" and device.type == "mps":
        try:
            torch.zeros(1, device=device, dtype=DTYPES[precision]) + 1
        except (RuntimeError, TypeError):
            raise UserError(f"--precision {precision} is not supported on MPS here; use fp32 or fp16") from None
    return DTYPES[precision]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS), so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def out_of_memory(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in msg or "can't allocate memory" in msg \
        or "failed to allocate" in msg or "bad_alloc" in msg or "bad allocation" in msg
