"""Training speed: the project's real training step in every fast-path variant, against pytorch/examples'
loop (:mod:`.reference`), stepped in turn; the fastest variant again inside a Lightning Trainer."""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fastnst.inference import known_failures
from fastnst.inference.devices import synchronize
from fastnst.inference.fast_paths import FastPath
from fastnst.inference.machine import describe_error, drift, time_in_turn
from fastnst.media.image import load_style_image, save_image
from fastnst.tools.bench.common import BenchConfig
from fastnst.tools.bench.limit import limit_probes, limit_rates, share, training_flops
from fastnst.tools.bench.reference import ReferenceTrainer


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

    def __init__(self, cfg: BenchConfig, variant: FastPath, style_path: Path | Sequence[Path]) -> None:
        from fastnst.training.module import StyleTransferModule

        dev = cfg.torch_device
        paths = [style_path] if isinstance(style_path, Path) else list(style_path)  # several: a conditional network
        torch.manual_seed(0)
        self.module = StyleTransferModule(style_images=[str(p) for p in paths], style_size=None,
                                          network=copy.deepcopy(cfg.model),
                                          loss=copy.deepcopy(cfg.loss), channels_last=variant.channels_last,
                                          compile=variant.compile).to(dev)
        self.module.setup("fit")
        self.module.train()
        opt = self.module.configure_optimizers()
        self.optimizer = opt["optimizer"] if isinstance(opt, dict) else opt
        self.autocast = torch.autocast(dev.type, dtype=variant.dtype, enabled=variant.precision != "fp32")
        self.scaler = torch.amp.GradScaler(dev.type) if variant.precision == "fp16" else None
        self.calls = 0
        self.losses: list[float] = []  # per step: every variant starts from the same weights and sees the same batches

    def step(self, x: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.module.training_step((x, 0), self.calls)
        self.calls += 1
        self.losses.append(float(loss.detach()))
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

def bench_in_trainer(cfg: BenchConfig, variant: FastPath, style_path: Path, images: torch.Tensor) -> dict[str, Any]:
    """The same step inside a real Lightning Trainer (what train.py runs), timed by a callback."""
    import pytorch_lightning as pl

    from fastnst.training.data import collate
    from fastnst.training.module import StyleTransferModule

    dev = cfg.torch_device
    torch.manual_seed(0)
    module = StyleTransferModule(style_images=[str(style_path)], style_size=None, network=copy.deepcopy(cfg.model),
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

LOSS_TOLERANCE = 0.10  # a fast path's loss must stay this close to fp32's (relative) over the steps timed, or it failed


def loss_divergence(losses: Sequence[float], baseline: Sequence[float]) -> float:
    """The largest relative difference of a variant's per-step losses from the fp32 variant's (inf when non-finite)."""
    pairs = list(zip(losses, baseline))
    if not pairs or not all(math.isfinite(a) for a, _ in pairs):
        return math.inf
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in pairs)


def check_losses(results: dict[str, dict[str, Any]], losses: dict[str, list[float]]) -> None:
    """Mark every variant whose loss left fp32's by more than :data:`LOSS_TOLERANCE` as failed (never the fastest),
    and record each variant's divergence (``loss_vs_fp32``) and any known failure of its path on this CPU."""
    base = losses.get("fp32")
    for name, row in results.items():
        if name == "reference":
            continue
        variant = FastPath.parse(name)
        rule = known_failures.find("train", variant.precision, variant.compile)
        if rule is not None:
            row["known_failure"] = rule.sentence(f"training with {name}", applied=False)
        if base is None or name == "fp32" or name not in losses or "error" in row:
            continue
        worst = loss_divergence(losses[name], base)
        row["loss_vs_fp32"] = worst
        if worst > LOSS_TOLERANCE:
            row["error"] = (f"diverged: loss {worst:.0%} away from fp32's on the same seed and batches (limit "
                            f"{LOSS_TOLERANCE:.0%})" if math.isfinite(worst) else "diverged: non-finite loss")


def run_train(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """All variants are built first, then stepped in turn (round-robin, the order rotating every round), so a
    neighbour's load on a shared machine slows them alike and the ratios stay fair."""
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
        losses: dict[str, list[float]] = {}
        for text in cfg.train_variants:
            variant = FastPath.parse(text)
            try:
                stepper = _ModuleStepper(cfg, variant, style_path)
                steppers[variant.name], losses[variant.name] = stepper.step, stepper.losses
            except Exception as exc:
                results[variant.name] = {"variant": variant.name, "error": describe_error(exc)}
        names = list(steppers)

        def after_round(r: int) -> None:
            if r == 0:
                log(f"train: first round done (compilation included); {rounds - 1} more ...")

        # bind each stepper now; a batch per round, so every step sees new pixels as it would from a data loader
        calls: dict[str, Callable[[int], Any]] = {name: (lambda r, step=steppers[name]: step(batches[r % len(batches)]))
                                                  for name in names if name not in results}
        flops = None
        probes = {}
        if cfg.limit:
            counted = _ModuleStepper(cfg, FastPath(), style_path)  # a fresh fp32 step: the FLOPs of every variant's step
            flops = training_flops(lambda: counted.step(batches[0]))
            del counted
            probes = limit_probes(dev)
            calls.update(probes)  # the machine's multiply rate, timed in turn with the steps
        times, errors = time_in_turn(calls, dev, cfg.train_warmup, cfg.train_steps, after_round)
        rates = limit_rates(probes, times)
        for name, error in errors.items():  # one failing fast path (e.g. no C++ compiler for inductor)
            if name not in probes:
                results[name] = {"variant": name, "error": error}
        for name in names:
            if name not in results:
                results[name] = {"variant": name, **_summary(times[name], cfg.batch)}
        check_losses(results, losses)
        if "images_per_s" in results.get("reference", {}):
            results["reference"]["drift"] = drift(times["reference"])
        del steppers, ref, calls
        ordered = [results[n] for n in names] + [r for n, r in results.items() if n not in names]
        best = max((r for r in ordered[1:] if "images_per_s" in r and "error" not in r), key=lambda r: r["images_per_s"],
                   default=None)
        if cfg.train_in_trainer and best is not None:
            log(f"train: {best['variant']} inside a Lightning Trainer ...")
            try:
                ordered.append(bench_in_trainer(cfg, FastPath.parse(best["variant"]), style_path,
                                                images.repeat(max(1, -(-rounds * cfg.batch // len(images))), 1, 1, 1)))
            except Exception as exc:
                ordered.append({"variant": f"{best['variant']} (Lightning Trainer)", "error": describe_error(exc)})
    ref_ips = results["reference"].get("images_per_s")
    for r in ordered:
        if "images_per_s" in r and ref_ips:
            r["vs_reference"] = r["images_per_s"] / ref_ips
        if "step_ms" in r and flops:
            r["flops_per_s"] = flops / (r["step_ms"] / 1e3)
            name = r["variant"].split(" (")[0]
            r["share_of_limit"] = share(r["flops_per_s"], "fp32" if name == "reference" else
                                        FastPath.parse(name).precision, rates)
    return {"image_size": cfg.train_size, "batch_size": cfg.batch, "network": cfg.model, "flops_per_step": flops,
            "limit_flops_per_s": rates,
            "loss_layers": {"content": cfg.loss["content_layers"], "style": cfg.loss["style_layers"]},
            "warmup_steps": cfg.train_warmup, "timed_steps": cfg.train_steps, "results": ordered}
