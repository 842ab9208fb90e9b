"""What CPU this is and how busy it is: the facts speed figures depend on.

The CPU model and its ISA features decide which formulation of a network is fastest (AMX makes bf16
several times faster than fp32; AVX512-BF16 without AMX much less; VNNI decides whether int8 pays), so the
benchmark prints them above every report and the tuning cache (:mod:`fastnst.inference.tuning`) keys its
choices by them. :class:`OtherLoad` measures how much CPU time *other* processes took while we timed, which
the load average cannot say (it counts our own threads too).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Any

# /proc/cpuinfo flag -> the name printed in reports, in the order printed
ISA_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX512-BF16", "avx512_fp16": "AVX512-FP16", "amx_tile": "AMX", "amx_bf16": "AMX-BF16",
             "amx_int8": "AMX-INT8", "amx_fp16": "AMX-FP16", "asimd": "NEON", "sve": "SVE", "bf16": "ARM-BF16",
             "i8mm": "ARM-I8MM"}
BUSY_FRACTION = 0.10  # other processes' share of all cores above which a timing is called disturbed


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    return _cpuinfo()[0]


def cpu_features() -> list[str]:
    """The ISA features that matter for this project's kernels, e.g. ``["AVX2", "AVX512", "AVX512-BF16"]``."""
    flags = _cpuinfo()[1]
    return [name for flag, name in ISA_FLAGS.items() if flag in flags]


def cpu_summary() -> str:
    """One line: model, logical CPUs and ISA features (or that none of them were found)."""
    features = cpu_features()
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs; ISA: {', '.join(features) or 'none of the listed features found'}"


def machine_key(threads: int | None = None) -> dict[str, Any]:
    """What a measured speed depends on apart from the model and the size: CPU, ISA, library versions, threads."""
    import torch

    key: dict[str, Any] = {"cpu": cpu_model(), "isa": cpu_features(), "torch": torch.__version__.split("+")[0],
                           "threads": threads or torch.get_num_threads()}
    with contextlib.suppress(ImportError):
        import onnxruntime

        key["onnxruntime"] = onnxruntime.__version__
    return key


def _cpu_jiffies() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / tick, total / tick


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children (e.g. data-loader workers)."""
    try:
        import resource
    except ImportError:  # Windows
        return time.process_time()
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


class OtherLoad:
    """``with OtherLoad() as load: ...`` -> ``load.fraction``: the share of all cores that *other* processes
    used while the block ran (machine busy time minus this process's own CPU time, over cores x wall time);
    None where /proc/stat is missing. ``busy`` is True above :data:`BUSY_FRACTION`."""

    def __init__(self) -> None:
        self.fraction: float | None = None
        self.load_average: list[float] | None = None

    def __enter__(self) -> OtherLoad:
        self._machine, self._own, self._t0 = _cpu_jiffies(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        end = _cpu_jiffies()
        with contextlib.suppress(OSError, AttributeError):
            self.load_average = [round(v, 2) for v in os.getloadavg()]
        if self._machine is None or end is None:
            return
        busy, total = end[0] - self._machine[0], end[1] - self._machine[1]
        own = _own_cpu_seconds() - self._own
        if total > 0:
            self.fraction = max(0.0, min(1.0, (busy - own) / total))

    @property
    def busy(self) -> bool:
        return self.fraction is not None and self.fraction > BUSY_FRACTION

    def to_dict(self) -> dict[str, Any]:
        return {"other_processes_cpu_fraction": None if self.fraction is None else round(self.fraction, 3),
                "busy": self.busy, "load_average_end": self.load_average}


def drift(times: list[float]) -> float | None:
    """How much a repeated timing changed during a run: the median of its second half over that of its first
    half (1.0 = steady; 1.3 = the machine became 30% slower). None with fewer than 4 timings."""
    if len(times) < 4:
        return None
    half = len(times) // 2
    a, b = sorted(times[:half]), sorted(times[half:])
    return b[len(b) // 2] / a[len(a) // 2]
