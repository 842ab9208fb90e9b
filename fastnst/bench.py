"""Side-by-side speed benchmark on the current device: training, data loading and inference.

    python -m fastnst.bench --device cpu                 # the full CPU run (a few minutes on 2 cores)
    python -m fastnst.bench --device cuda --json gpu.json
    python -m fastnst.bench --quick --json out.json      # seconds: tiny sizes, checks the wiring only

* training: steady-state images/s of the project's real training step (StyleTransferModule's
  training_step + Adam, driven by a Lightning Trainer as train.py does) for several fast-path
  variants, against a naive reference loop written here the way pytorch/examples fast_neural_style
  trains (fp32, eager, NCHW, pixels 0-255, style image repeated per batch, full VGG on the content
  images), with the same network, VGG19 layers, size and batch;
* data: images/s of the training data pipeline (StyleDataModule's loader) on a folder of JPEGs, per
  worker, and of the same photos after ``python -m fastnst.prepare``;
* inference: images/s, latency and peak memory of the eager fp32 network and each fast path.

Warm-up iterations are excluded, figures are medians over repeats, CUDA is synchronised around every
timed call. VGG weights are random (no download): the FLOPs are the same as with ImageNet weights.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastnst.cli import Parser, run_main
from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.inference import synchronize

# The seed document's VGG19 layers (conf/loss/gatys.yaml) with random weights.
GATYS_LOSS: dict[str, Any] = {"content_layers": ["relu4_2"],
                              "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
                              "content_weight": 1.0e5, "style_weight": 1.0e5, "tv_weight": 0.0, "gram_norm": "hw",
                              "vgg_weights": "random", "vgg_pooling": "max"}
JOHNSON_NET: dict[str, Any] = {"channels": [32, 64, 128], "num_residual": 5, "upsample": "nearest"}
TINY_NET: dict[str, Any] = {"channels": [8, 16, 16], "num_residual": 1, "upsample": "nearest"}
PRECISIONS = ("fp32", "bf16", "fp16")
FLAGS = ("cl", "compile", "ort")
INFER_SIZES = "256x256,512x512,1920x1080"


# --- variants ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A fast-path combination written as ``precision[+cl][+compile][+ort]``, e.g. ``bf16+cl+compile``."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    ort: bool = False

    @classmethod
    def parse(cls, text: str) -> Variant:
        tokens = [t for t in text.strip().lower().split("+") if t]
        precision = "fp32"
        flags: set[str] = set()
        for t in tokens:
            if t in PRECISIONS:
                precision = t
            elif t in FLAGS:
                flags.add(t)
            else:
                raise UserError(f"unknown variant part {t!r} in {text!r}; use a precision ({', '.join(PRECISIONS)}) "
                                f"joined by '+' with any of {', '.join(FLAGS)}, e.g. bf16+cl+compile")
        if "ort" in flags and (flags - {"ort"} or precision != "fp32"):
            raise UserError(f"variant {text!r}: onnxruntime ('ort') runs the fp32 ONNX export and takes no other option")
        return cls(precision, "cl" in flags, "compile" in flags, "ort" in flags)

    @property
    def name(self) -> str:
        if self.ort:
            return "onnxruntime"
        return "+".join([self.precision] + (["cl"] * self.channels_last) + (["compile"] * self.compile))

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def half_support(device: torch.device) -> dict[str, bool]:
    """Whether the device runs bf16 / fp16 convolutions natively (CPU: AVX512-BF16/AMX, AVX512-FP16)."""
    if device.type == "cuda":
        return {"bf16": torch.cuda.is_bf16_supported(), "fp16": True}
    out = {"bf16": False, "fp16": False}
    with contextlib.suppress(Exception):
        out["bf16"] = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    with contextlib.suppress(Exception):
        out["fp16"] = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return out


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


# --- timing helpers ------------------------------------------------------------------------------
def time_in_turn(calls: dict[Any, Callable[[int], Any]], device: torch.device, warmup: int, repeats: int,
                 after_round: Callable[[int], None] | None = None) -> tuple[dict[Any, list[float]], dict[Any, str]]:
    """Run every call once per round (``call(round)``), the order rotating every round, so that load from
    elsewhere on a shared machine hits them alike; return the seconds of the rounds after ``warmup`` per key,
    and the error of each call that failed (it is not called again: one failing path never ends the run)."""
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
                errors[k] = _error(exc)
                continue
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
        if after_round:
            after_round(r)
    return times, errors


def _release_freed_memory() -> None:
    """Give memory freed by earlier work back to the OS (glibc), so resident-set growth is this work's own."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory used by the code inside the ``with`` block, in MiB above what was in use before.

    CUDA: the allocator's peak (``max_memory_allocated``). CPU: growth of the process's resident set size,
    sampled every 2 ms by a thread after freed memory is returned to the OS (an estimate: allocations
    shorter than 2 ms can be missed).
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, float("nan")
        self._stop = threading.Event()
        self._base = self._peak = 0

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

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


def _quiet_lightning() -> None:
    import pytorch_lightning  # noqa: F401  (creates its loggers, so their levels can be set)

    prefixes = ("pytorch_lightning", "lightning")
    for name in [*logging.root.manager.loggerDict, *prefixes]:
        if name.startswith(prefixes):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*self.log\\(\\)` but the `self.trainer` reference.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*VGG19 is RANDOMLY INITIALISED.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")


# --- the reference: pytorch/examples fast_neural_style's training loop --------------------------
def _normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    """pytorch/examples' utils.normalize_batch: 0-255 -> ImageNet-normalised, constants built per call."""
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch / 255.0
    return (batch - mean) / std


def _reference_gram(y: torch.Tensor, norm: str) -> torch.Tensor:
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    return features.bmm(features_t) / (h * w if norm == "hw" else ch * h * w)


class ReferenceVGG(nn.Module):
    """pytorch/examples' Vgg16 pattern on VGG19: consecutive slices ending at the loss layers, every
    slice run for every input (content images go through to the deepest style layer too)."""

    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__()
        from torchvision.models import vgg19

        from fastnst.vgg import VGG19_LAYERS

        ends = sorted({VGG19_LAYERS.index(n) + 1 for n in layers})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            features = vgg19(weights=None).features[: ends[-1]]
        for m in features:
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.names = [VGG19_LAYERS[e - 1] for e in ends]
        self.slices = nn.ModuleList(features[a:b] for a, b in zip([0, *ends[:-1]], ends))
        for p in self.parameters():
            p.requires_grad = False

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, s in zip(self.names, self.slices):
            x = s(x)
            out[name] = x
        return out


class ReferenceTrainer:
    """A naive training step written the way pytorch/examples does it (fp32, eager, NCHW, 0-255)."""

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], style: torch.Tensor, batch_size: int,
                 device: torch.device, lr: float = 1e-3) -> None:
        from fastnst.network import TransformerNet

        self.content_layers = list(loss["content_layers"])
        self.style_layers = list(loss["style_layers"])
        self.cw, self.sw, self.norm = float(loss["content_weight"]), float(loss["style_weight"]), loss["gram_norm"]
        self.transformer = TransformerNet(**model).to(device).train()
        self.vgg = ReferenceVGG([*self.content_layers, *self.style_layers]).to(device)
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), lr)
        style = style.to(device).mul(255).repeat(batch_size, 1, 1, 1)
        features_style = self.vgg(_normalize_batch(style))
        self.gram_style = {n: _reference_gram(features_style[n], self.norm) for n in self.style_layers}

    def step(self, x: torch.Tensor) -> float:
        """One step on [N, 3, H, W] pixels in 0-255."""
        n_batch = len(x)
        self.optimizer.zero_grad()
        # pytorch/examples' network upsamples literally (nearest x2, pad, conv) and outputs 0-255; ours ends in
        # a sigmoid and computes the same upsampling as a transposed convolution.
        y = self.transformer.naive_forward(x) * 255.0
        y = _normalize_batch(y)
        x = _normalize_batch(x)
        features_y = self.vgg(y)
        features_x = self.vgg(x)
        content_loss = sum(self.cw * F.mse_loss(features_y[n], features_x[n]) for n in self.content_layers)
        style_loss = 0.0
        for n in self.style_layers:
            gm_y = _reference_gram(features_y[n], self.norm)
            style_loss = style_loss + F.mse_loss(gm_y, self.gram_style[n][:n_batch, :, :])
        total = content_loss + self.sw * style_loss
        total.backward()
        self.optimizer.step()
        return float(total.detach())


# --- training ------------------------------------------------------------------------------------
class _StepTimer:
    """Lightning callback: wall time of every training step (forward, backward, optimizer)."""

    def __init__(self, device: torch.device) -> None:
        import pytorch_lightning as pl

        class _Cb(pl.Callback):
            def __init__(cb) -> None:
                cb.times: list[float] = []
                cb.t0 = 0.0

            def on_train_batch_start(cb, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
                synchronize(device)
                cb.t0 = time.perf_counter()

            def on_train_batch_end(cb, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
                synchronize(device)
                cb.times.append(time.perf_counter() - cb.t0)

        self.callback = _Cb()


class _FixedBatches(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], 0


def _summary(times: Sequence[float], batch: int) -> dict[str, Any]:
    med = statistics.median(times)
    return {"step_ms": med * 1e3, "images_per_s": batch / med, "steps_timed": len(times),
            "step_ms_min": min(times) * 1e3, "step_ms_max": max(times) * 1e3}


class _ModuleStepper:
    """The project's training step without the Trainer loop around it: StyleTransferModule.setup (channels_last,
    torch.compile), then per step training_step under the precision's autocast, backward and the module's
    own optimizer (with a GradScaler for fp16), as Lightning's precision plugins do."""

    def __init__(self, cfg: BenchConfig, variant: Variant, style_path: Path) -> None:
        from fastnst.module import StyleTransferModule

        dev = cfg.torch_device
        torch.manual_seed(0)
        self.module = StyleTransferModule(style_image=str(style_path), style_size=None, network=copy.deepcopy(cfg.model),
                                          loss=copy.deepcopy(cfg.loss), channels_last=variant.channels_last,
                                          compile=variant.compile).to(dev)
        self.module.setup("fit")
        self.module.train()
        opt = self.module.configure_optimizers()
        self.optimizer = opt["optimizer"] if isinstance(opt, dict) else opt
        self.autocast = torch.autocast(dev.type, dtype=variant.dtype, enabled=variant.precision != "fp32")
        self.scaler = torch.amp.GradScaler(dev.type) if variant.precision == "fp16" else None
        self.calls = 0

    def step(self, x: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.module.training_step((x, 0), self.calls)
        self.calls += 1
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()


def bench_in_trainer(cfg: BenchConfig, variant: Variant, style_path: Path, images: torch.Tensor) -> dict[str, Any]:
    """The same step inside a real Lightning Trainer (what train.py runs), timed by a callback."""
    import pytorch_lightning as pl

    from fastnst.data import collate
    from fastnst.module import StyleTransferModule

    dev = cfg.torch_device
    torch.manual_seed(0)
    module = StyleTransferModule(style_image=str(style_path), style_size=None, network=copy.deepcopy(cfg.model),
                                 loss=copy.deepcopy(cfg.loss), channels_last=variant.channels_last,
                                 compile=variant.compile)
    timer = _StepTimer(dev)
    loader = torch.utils.data.DataLoader(_FixedBatches(images), batch_size=cfg.batch, shuffle=False, drop_last=True,
                                         collate_fn=collate, pin_memory=dev.type == "cuda")
    precision = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[variant.precision]
    trainer = pl.Trainer(accelerator="gpu" if dev.type == "cuda" else "cpu",
                         devices=[dev.index or 0] if dev.type == "cuda" else 1, precision=precision,
                         max_steps=min(len(loader), cfg.train_warmup + cfg.train_steps), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=10, callbacks=[timer.callback])
    trainer.fit(module, train_dataloaders=loader)
    times = timer.callback.times[cfg.train_warmup:]
    if not times:
        raise RuntimeError(f"training variant {variant.name} ran no timed step in the Trainer")
    return {"variant": f"{variant.name} (Lightning Trainer)", **_summary(times, cfg.batch)}


def run_train(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """All variants are built first, then stepped in turn (round-robin, the order rotating every round), so a
    neighbour's load on a shared machine slows them alike and the ratios stay fair."""
    from fastnst.image import load_style_image, save_image

    dev = cfg.torch_device
    g = torch.Generator().manual_seed(0)
    rounds = cfg.train_warmup + cfg.train_steps
    # distinct batches, so every step sees new pixels as it would from a data loader
    images = torch.rand(cfg.batch * min(rounds, 8), 3, cfg.train_size, cfg.train_size, generator=g)
    batches = [images[i: i + cfg.batch].to(dev) for i in range(0, len(images), cfg.batch)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fastnst-bench-") as tmp:
        style_path = Path(tmp) / "style.png"
        save_image(torch.rand(3, cfg.style_size, cfg.style_size, generator=g), style_path)
        style = load_style_image(style_path, None)  # exactly the pixels the module reads
        log(f"train: building the reference (pytorch/examples style) and {len(cfg.train_variants)} fastnst variant(s), "
            f"{cfg.train_size}px, batch {cfg.batch} ...")
        torch.manual_seed(0)
        ref = ReferenceTrainer(cfg.model, cfg.loss, style, cfg.batch, dev)
        steppers: dict[str, Callable[[torch.Tensor], Any]] = {"reference": lambda x: ref.step(x * 255.0)}
        for text in cfg.train_variants:
            variant = Variant.parse(text)
            try:
                steppers[variant.name] = _ModuleStepper(cfg, variant, style_path).step
            except Exception as exc:
                results[variant.name] = {"variant": variant.name, "error": _error(exc)}
        names = list(steppers)

        def after_round(r: int) -> None:
            if r == 0:
                log(f"train: first round done (compilation included); {rounds - 1} more ...")

        # bind each stepper now; a batch per round, so every step sees new pixels as it would from a data loader
        calls = {name: (lambda r, step=steppers[name]: step(batches[r % len(batches)])) for name in names
                 if name not in results}
        times, errors = time_in_turn(calls, dev, cfg.train_warmup, cfg.train_steps, after_round)
        for name, error in errors.items():  # one failing fast path (e.g. no C++ compiler for inductor)
            results[name] = {"variant": name, "error": error}
        for name in names:
            if name not in results:
                results[name] = {"variant": name, **_summary(times[name], cfg.batch)}
        del steppers, ref, calls
        ordered = [results[n] for n in names] + [r for n, r in results.items() if n not in names]
        best = max((r for r in ordered[1:] if "images_per_s" in r), key=lambda r: r["images_per_s"], default=None)
        if cfg.train_in_trainer and best is not None:
            log(f"train: {best['variant']} inside a Lightning Trainer ...")
            try:
                ordered.append(bench_in_trainer(cfg, Variant.parse(best["variant"]), style_path,
                                                images.repeat(max(1, -(-rounds * cfg.batch // len(images))), 1, 1, 1)))
            except Exception as exc:
                ordered.append({"variant": f"{best['variant']} (Lightning Trainer)", "error": _error(exc)})
    ref_ips = results["reference"].get("images_per_s")
    for r in ordered:
        if "images_per_s" in r and ref_ips:
            r["vs_reference"] = r["images_per_s"] / ref_ips
    return {"image_size": cfg.train_size, "batch_size": cfg.batch, "network": cfg.model,
            "loss_layers": {"content": cfg.loss["content_layers"], "style": cfg.loss["style_layers"]},
            "warmup_steps": cfg.train_warmup, "timed_steps": cfg.train_steps, "results": ordered}


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# --- data ----------------------------------------------------------------------------------------
def make_jpegs(folder: Path, count: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (smooth colour fields, edges and sensor noise; COCO's typical size)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(count):
        base = Image.fromarray(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        arr = np.asarray(base, dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        arr += 30 * np.sin(xx / (4 + i % 7) + yy / (9 + i % 5))[..., None]
        arr += rng.normal(0, 6, arr.shape)
        p = folder / f"photo_{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(p, quality=90)
        out.append(p)
    return out


def _loader_rate(root: str, cfg: BenchConfig, workers: int) -> dict[str, Any]:
    """Images/s of StyleDataModule's training loader, after its first batch (worker start-up)."""
    from fastnst.data import StyleDataModule

    dm = StyleDataModule(root, image_size=cfg.data_size, batch_size=cfg.data_batch, num_workers=workers,
                         val_count=0, seed=0)
    loader = dm.train_dataloader()
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(cfg.data_epochs + 1):
            dm.sampler.set_epoch(epoch)
            # timed from iter(): the queues start empty, so prefetching cannot inflate the rate
            n, t0 = 0, time.perf_counter()
            for images, _ in loader:
                assert images.shape[-1] == cfg.data_size
                n += images.shape[0]
            dt = time.perf_counter() - t0
            if epoch > 0 and n:  # epoch 0 warms the page cache and the workers
                rates.append(n / dt)
    del loader
    ips = statistics.median(rates) if rates else float("nan")
    return {"workers": workers, "images_per_s": ips, "images_per_s_per_worker": ips / max(1, workers)}


def run_data(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    from fastnst.image import find_images
    from fastnst.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="fastnst-bench-data-") as tmp:
        if cfg.data_root:
            root = str(Path(cfg.data_root).expanduser())
            source = f"{root}"
        else:
            root = str(Path(tmp) / "jpegs")
            make_jpegs(Path(root), cfg.data_images)
            source = f"{cfg.data_images} synthetic 640x480 JPEGs"
        files = find_images(root, "--data-root")
        from PIL import Image

        sizes = []
        for f in files[:64]:
            with contextlib.suppress(OSError), Image.open(f) as im:
                sizes.append(im.size)
        median_px = f"{int(np.median([s[0] for s in sizes]))}x{int(np.median([s[1] for s in sizes]))}" if sizes else None
        results = []
        for w in cfg.data_workers:
            log(f"data: JPEG folder, {w} worker(s) ...")
            results.append({"pipeline": "jpeg", **_loader_rate(root, cfg, w)})
        prep: dict[str, Any] | None = None
        if cfg.data_prepared:
            dst = Path(tmp) / "prepared"
            log("data: python -m fastnst.prepare ...")
            t0 = time.perf_counter()
            stats = prepare(root, dst, size=cfg.data_size, workers=max(1, os.cpu_count() or 1), progress=False)
            dt = time.perf_counter() - t0
            prep = {"seconds": dt, "images_per_s": stats.written / dt if dt > 0 else float("nan"),
                    "images": stats.written, "skipped": stats.skipped, "bytes": stats.bytes}
            for w in cfg.data_workers:
                log(f"data: prepared dataset, {w} worker(s) ...")
                results.append({"pipeline": "prepared", **_loader_rate(str(dst), cfg, w)})
    return {"source": source, "images": len(files), "median_size": median_px, "crop": cfg.data_size,
            "batch_size": cfg.data_batch, "epochs_timed": cfg.data_epochs, "prepare": prep, "results": results}


# --- inference -----------------------------------------------------------------------------------
def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


REFERENCE_INFER = "reference (pytorch/examples)"


class _InferenceRunner:
    """Builds one inference path once, as ``infer.py`` builds it (:func:`fastnst.inference.network_runner`,
    :func:`fastnst.inference.ort_session` via ``load_model``); ``runner(x)`` stylizes a float32 batch on the
    device and returns float32 on the same device, conversions included as infer.py pays them."""

    def __init__(self, variant: Variant | None, net: nn.Module, device: torch.device, tmp: Path,
                 threads: int | None = None) -> None:
        from fastnst.inference import load_model, network_runner

        self.variant, self.device = variant, device
        if variant is None:  # the reference: pytorch/examples' formulation, eager fp32
            ref = copy.deepcopy(net).to(device).eval()
            self.fn = torch.inference_mode()(ref.naive_forward)
        elif variant.ort:
            from fastnst.export import export_onnx

            path = export_onnx(copy.deepcopy(net).cpu(), tmp / "bench.onnx")
            self.fn: Callable[[torch.Tensor], torch.Tensor] = load_model(path, device, threads=threads)
        else:
            if variant.compile:
                # Dynamo remembers sizes per code object across torch.compile calls: without a reset, the second
                # size measured would get a shape-generic graph instead of the specialised one infer.py compiles
                # for a file (or a folder of same-size photos).
                torch._dynamo.reset()
            _, self.fn = network_runner(copy.deepcopy(net), device, variant.precision,
                                        channels_last=variant.channels_last, compile=variant.compile)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def run_infer(cfg: BenchConfig, log: Callable[[str], None],
              on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from fastnst.network import TransformerNet

    dev = cfg.torch_device
    torch.manual_seed(0)
    net = TransformerNet(**cfg.model).to(dev).eval()
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


# --- configuration, report -----------------------------------------------------------------------
@dataclass
class BenchConfig:
    device: str = "auto"
    parts: tuple[str, ...] = ("train", "data", "infer")
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
    threads: int | None = None

    def __post_init__(self) -> None:
        self.model = dict(self.model or JOHNSON_NET)
        self.loss = dict(self.loss or GATYS_LOSS)
        dev = self.torch_device
        if self.train_variants is None:
            self.train_variants = default_train_variants(dev)
        if self.infer_variants is None:
            self.infer_variants = default_infer_variants(dev)
        if self.infer_sizes is None:
            self.infer_sizes = parse_sizes(INFER_SIZES)
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


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError, AttributeError):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info["cpu"] = cpu
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["half_precision"] = half_support(device)
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [f"fastnst bench  {m['date']}  device={m['device']}  {m.get('gpu') or m.get('cpu', '')}  "
           f"torch {m['torch']}  threads={m['threads']}  load={m.get('load_average', 'n/a')}"]
    if "train" in report:
        t = report["train"]
        out += ["", f"TRAINING  {t['image_size']}px, batch {t['batch_size']}, VGG19 content {','.join(t['loss_layers']['content'])} "
                f"style {','.join(t['loss_layers']['style'])}; median of {t['timed_steps']} steps after {t['warmup_steps']} warm-up"]
        rows = []
        for r in t["results"]:
            name = "reference (pytorch/examples)" if r["variant"] == "reference" else f"fastnst {r['variant']}"
            if "error" in r:
                rows.append([name, "failed", "", r["error"][:60]])
            else:
                rows.append([name, _fmt(r["step_ms"]), _fmt(r["images_per_s"], 2), f"{r['vs_reference']:.2f}x"])
        out.append(_table(["variant", "step ms", "images/s", "vs reference"], rows))
    if "data" in report:
        d = report["data"]
        out += ["", f"DATA  {d['source']} ({d['images']} images, median {d['median_size']}) -> {d['crop']}px crops, batch {d['batch_size']}"]
        rows = [[r["pipeline"], str(r["workers"]), _fmt(r["images_per_s"]), _fmt(r["images_per_s_per_worker"])]
                for r in d["results"]]
        out.append(_table(["pipeline", "workers", "images/s", "per worker"], rows))
        out.append("(0 workers: decoding in the main process, i.e. the rate of one worker)")
        if d.get("prepare"):
            p = d["prepare"]
            out.append(f"prepare: {p['images']} images in {p['seconds']:.1f} s ({p['images_per_s']:.0f} images/s), "
                       f"{p['bytes'] / 2**20:.1f} MiB, {p['skipped']} skipped")
    if "infer" in report:
        i = report["infer"]
        out += ["", f"INFERENCE  batch {i['batch_size']}, median over repeats after warm-up; peak = memory above the model's"]
        rows = []
        for r in i["results"]:
            if "error" in r:
                rows.append([r["size"], r["path"], "failed", "", "", "", r["error"][:60]])
            else:
                rows.append([r["size"], r["path"], _fmt(r["images_per_s"], 2), _fmt(r["ms"]), _fmt(r["peak_mib"], 0),
                             f"{r['vs_reference']:.2f}x", f"{r.get('max_abs_err', 0.0):.1e}"])
        out.append(_table(["size", "path", "images/s", "ms", "peak MiB", "vs reference", "max |diff|"], rows))
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
    _quiet_lightning()
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report: dict[str, Any] = {"machine": machine_info(dev), "config": {
        "parts": list(cfg.parts), "train_variants": cfg.train_variants, "infer_variants": cfg.infer_variants,
        "infer_sizes": [f"{w}x{h}" for w, h in cfg.infer_sizes], "model": cfg.model}}
    report["seconds"] = {}
    for part, fn in (("train", run_train), ("data", run_data), ("infer", run_infer)):
        if part in cfg.parts:
            t0 = time.perf_counter()
            if part == "infer":
                def on_row(live: dict[str, Any]) -> None:
                    report["infer"] = live
                    if save:
                        save(report)

                report[part] = run_infer(cfg, log, on_row=on_row)
            else:
                report[part] = fn(cfg, log)
            report["seconds"][part] = round(time.perf_counter() - t0, 1)
            if save:
                save(report)
    report["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return report


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fastnst-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--parts", default="train,data,infer", help="comma-separated subset of train,data,infer")
    p.add_argument("--quick", action="store_true", help="tiny sizes and network, one or two repeats: checks the wiring in seconds")
    p.add_argument("--json", metavar="FILE", help="also write the full results as JSON")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    g = p.add_argument_group("training")
    g.add_argument("--train-size", type=int, help="crop size (default 128 on CPU, 256 on GPU)")
    g.add_argument("--batch", type=int, help="batch size (default 2 on CPU, 16 on GPU)")
    g.add_argument("--train-steps", type=int, help="timed steps per variant (default 10 CPU, 30 GPU)")
    g.add_argument("--train-warmup", type=int, help="untimed warm-up steps per variant (default 3 CPU, 15 GPU)")
    g.add_argument("--train-variants", help="comma-separated, e.g. fp32,fp32+cl,bf16+cl+compile (default: per device)")
    g.add_argument("--no-trainer", action="store_true", help="skip the confirmation run of the fastest variant inside a Lightning Trainer")
    g.add_argument("--model", choices=("johnson", "tiny"), default=None, help="network size (default johnson; tiny with --quick)")
    g = p.add_argument_group("data")
    g.add_argument("--data-root", help="folder of JPEGs (default: synthetic 640x480 JPEGs in a temp folder)")
    g.add_argument("--data-images", type=int, help="number of synthetic JPEGs (default 128)")
    g.add_argument("--data-size", type=int, help="crop size (default 256)")
    g.add_argument("--data-workers", help="comma-separated worker counts (default 0,1,min(cpus,8))")
    g.add_argument("--no-prepared", action="store_true", help="skip the prepared-dataset measurement")
    g = p.add_argument_group("inference")
    g.add_argument("--infer-sizes", help=f"comma-separated WIDTHxHEIGHT (default {INFER_SIZES})")
    g.add_argument("--infer-variants", help="comma-separated paths, e.g. fp32,fp32+cl,fp32+cl+compile,ort,bf16+cl,fp16+cl")
    g.add_argument("--infer-batch", type=int, default=1, help="images per call (default 1)")
    g.add_argument("--infer-repeats", type=int, default=0, help="timed calls per path and size (default: by size)")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    parts = tuple(s.strip() for s in args.parts.split(",") if s.strip())
    bad = [s for s in parts if s not in ("train", "data", "infer")]
    if bad or not parts:
        raise UserError(f"--parts {args.parts!r}: choose from train, data, infer (comma-separated)")
    device = args.device
    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    gpu = (torch.device("cuda") if device == "auto" and torch.cuda.is_available() else torch.device(device if device != "auto" else "cpu")).type == "cuda"
    split = lambda s: [v.strip() for v in s.split(",") if v.strip()] if s else None  # noqa: E731
    kw: dict[str, Any] = {"device": device, "parts": parts, "threads": args.threads}
    if args.quick:
        kw.update(model=TINY_NET, train_size=32, batch=2, style_size=48, train_warmup=1, train_steps=2,
                  data_images=8, data_size=32, data_batch=2, data_workers=[0, 1], data_epochs=1,
                  infer_sizes=[(48, 32), (64, 64)], infer_batch=1, infer_repeats=2,
                  train_variants=["fp32", "fp32+cl"], infer_variants=["fp32", "fp32+cl", "ort"])
    elif gpu:
        kw.update(train_size=256, batch=16, train_warmup=15, train_steps=30)
    if args.model:
        kw["model"] = TINY_NET if args.model == "tiny" else JOHNSON_NET
    for arg, key in (("train_size", "train_size"), ("batch", "batch"), ("train_steps", "train_steps"),
                     ("train_warmup", "train_warmup"), ("data_images", "data_images"), ("data_size", "data_size")):
        v = getattr(args, arg)
        if v is not None:
            if v < (0 if arg == "train_warmup" else 1):
                raise UserError(f"--{arg.replace('_', '-')} must be positive, got {v}")
            kw[key] = v
    if args.train_variants:
        kw["train_variants"] = split(args.train_variants)
    if args.infer_variants:
        kw["infer_variants"] = split(args.infer_variants)
    for text in (kw.get("train_variants") or []) + (kw.get("infer_variants") or []):
        Variant.parse(text)
    if any(Variant.parse(t).ort for t in kw.get("train_variants") or []):
        raise UserError("--train-variants: onnxruntime ('ort') is an inference path only")
    if args.infer_sizes:
        kw["infer_sizes"] = parse_sizes(args.infer_sizes)
    if args.data_root:
        kw["data_root"] = args.data_root
    if args.data_workers:
        try:
            kw["data_workers"] = [int(v) for v in split(args.data_workers)]
        except ValueError:
            raise UserError(f"--data-workers {args.data_workers!r} is not a comma-separated list of numbers") from None
    if args.no_trainer:
        kw["train_in_trainer"] = False
    if args.no_prepared:
        kw["data_prepared"] = False
    if args.infer_batch < 1:
        raise UserError(f"--infer-batch must be at least 1, got {args.infer_batch}")
    kw["infer_batch"] = args.infer_batch
    if args.infer_repeats:
        kw["infer_repeats"] = args.infer_repeats
    return BenchConfig(**kw)


def _write_json(report: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(report, indent=2, default=str)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _main(args))


def _main(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    if cfg.torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    save = None
    if args.json:
        path = Path(args.json).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after minutes of measuring
        save = lambda r: _write_json(r, path)  # noqa: E731
    report = run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True), save=save)
    print(format_report(report), flush=True)
    if args.json:
        path = Path(args.json).expanduser()
        _write_json(report, path)
        print(f"\nwrote {path}")


if __name__ == "__main__":
    sys.exit(main())
