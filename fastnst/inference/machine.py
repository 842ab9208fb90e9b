"""What CPU this is and how busy it is, the facts speed figures depend on, and how fastnst times things in turn.

The CPU model and its ISA features decide which formulation of a network is fastest (AMX makes bf16
several times faster than fp32; AVX512-BF16 without AMX much less; VNNI decides whether int8 pays), so the
benchmark prints them above every report and the tuning cache (:mod:`fastnst.inference.tuning`) keys its
choices by them. :class:`OtherLoad` measures how much CPU time *other* processes took while we timed, which
the load average cannot say (it counts our own threads too); psutil reads the counters on every platform.

The CPU's model and flags are read from ``/proc/cpuinfo`` rather than with py-cpuinfo: that takes under a
millisecond where py-cpuinfo's ``get_cpu_info()`` takes about a second (it runs itself again in a subprocess),
and ``fastnst stylize --fast`` reads them at every start.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch

from fastnst.inference.devices import synchronize

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
    key: dict[str, Any] = {"cpu": cpu_model(), "isa": cpu_features(), "torch": torch.__version__.split("+")[0],
                           "threads": threads or torch.get_num_threads()}
    with contextlib.suppress(ImportError):
        import onnxruntime

        key["onnxruntime"] = onnxruntime.__version__
    return key


def _machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (psutil, on every platform)."""
    times = psutil.cpu_times()._asdict()
    total = sum(v for k, v in times.items() if k not in ("guest", "guest_nice"))  # guest time is counted in user
    idle = times.get("idle", 0.0) + times.get("iowait", 0.0)
    return total - idle, total


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children (e.g. data-loader workers)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (psutil emulates them where the OS has none); None if unknown."""
    with contextlib.suppress(OSError, AttributeError, RuntimeError):
        return [round(v, 2) for v in psutil.getloadavg()]
    return None


class OtherLoad:
    """``with OtherLoad() as load: ...`` -> ``load.fraction``: the share of all cores that *other* processes
    used while the block ran (machine busy time minus this process's own CPU time, over all cores' time).
    ``busy`` is True above :data:`BUSY_FRACTION`."""

    def __init__(self) -> None:
        self.fraction: float | None = None
        self.load_average: list[float] | None = None

    def __enter__(self) -> OtherLoad:
        self._machine, self._own = _machine_cpu_seconds(), _own_cpu_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        end = _machine_cpu_seconds()
        self.load_average = load_average()
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
    return statistics.median(times[half:]) / statistics.median(times[:half])


def time_in_turn(calls: dict[Any, Callable[[int], Any]], device: torch.device, warmup: int, repeats: int,
                 after_round: Callable[[int], None] | None = None) -> tuple[dict[Any, list[float]], dict[Any, str]]:
    """Run every call once per round (``call(round)``), the order rotating every round, so that load from
    elsewhere on a shared machine hits them alike; return the seconds of the rounds after ``warmup`` per key,
    and the error of each call that failed (it is not called again: one failing path never ends the run).
    The device is synchronised around every call. Our own loop rather than torch.utils.benchmark: that times one
    statement at a time, and only calls timed in turn see the same load on a shared machine."""
    times: dict[Any, list[float]] = {k: [] for k in calls}
    errors: dict[Any, str] = {}
    keys = list(calls)
    for r in range(warmup + repeats):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            if k in errors:
                continue
            synchronize(device)
            t0 = time.perf_counter()
            try:
                calls[k](r)
                synchronize(device)
            except Exception as exc:
                errors[k] = describe_error(exc)
                continue
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
        if after_round:
            after_round(r)
    return times, errors


def describe_error(exc: BaseException) -> str:
    """A failed measurement in one line: the exception's type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
