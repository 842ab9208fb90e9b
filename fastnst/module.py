"""The LightningModule: owns the transformation network and the perceptual loss; steps and optimizers.

Constructor arguments are plain values (dicts, floats, strings), so ``save_hyperparameters()`` is
clean and checkpoints load without Hydra. The loss network has no parameters and no persistent state
(see :mod:`fastnst.vgg`), so checkpoints hold the network, the style targets and the optimizer only.
"""

from __future__ import annotations

import ast
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from fastnst.checkpoint import FORMAT_VERSION, META_KEY
from fastnst.errors import UserError
from fastnst.image import load_style_image
from fastnst.losses import PerceptualLoss
from fastnst.network import TransformerNet


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stops and keeps its last good checkpoint."""


class StyleTransferModule(pl.LightningModule):
    """Trains a :class:`TransformerNet` for one style.

    Args:
        style_image: path of the painting.
        style_size: longer side the style image is resized to before its Gram targets are taken
            (None keeps its size).
        style_name: a name for the style, stored in checkpoints and exported models (default: the
            file name without extension).
        network: :class:`TransformerNet` arguments.
        loss: :class:`fastnst.losses.PerceptualLoss` arguments (layers, weights, gram norm, VGG weights).
        lr, betas, weight_decay: Adam settings.
        scheduler: None, ``cosine`` (to ``min_lr_ratio`` at ``trainer.max_steps``) or ``step``
            (x ``gamma`` every ``step_size`` steps); ``warmup_steps`` of linear warm-up either way.
        channels_last: NHWC memory layout for the network and VGG (faster convolutions on GPUs).
        compile: ``torch.compile`` the network and the loss network.
        on_nonfinite: ``stop`` (raise, keep the last good checkpoint) or ``skip`` (skip the batch, count it).
    """

    def __init__(self, style_image: str, style_size: int | None = 512, style_name: str | None = None,
                 network: dict[str, Any] | None = None, loss: dict[str, Any] | None = None, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, scheduler: str | None = None,
                 warmup_steps: int = 0, min_lr_ratio: float = 0.01, step_size: int = 10000, gamma: float = 0.5,
                 channels_last: bool = False, compile: bool = False, on_nonfinite: str = "stop") -> None:
        super().__init__()
        if scheduler not in (None, "none", "cosine", "step"):
            raise UserError(f"optim.scheduler must be null, cosine or step, got {scheduler!r}")
        if on_nonfinite not in ("stop", "skip"):
            raise UserError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        if lr <= 0:
            raise UserError(f"optim.lr must be positive, got {lr}")
        self.save_hyperparameters()
        self.style_name = style_name or Path(style_image).stem
        self.network = TransformerNet(**(network or {}))
        self.loss_fn = PerceptualLoss(**(loss or {}), style_image=load_style_image(style_image, style_size))
        self.skipped_images = 0
        self.skipped_batches = 0
        self._last_batch_time: float | None = None
        self._net_fn = self.network
        self._loss_call = self.loss_fn

    # --- setup -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            # Kept outside the module tree: state-dict keys stay free of "_orig_mod." and inference loads them.
            self._net_fn = torch.compile(self.network)
            self._loss_call = torch.compile(self.loss_fn)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylize [N, 3, H, W] images in [0, 1]."""
        return self._net_fn(self._prepare(x))

    # --- steps -----------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_time is not None:
            dt = now - self._last_batch_time
            ips = batch[0].shape[0] * self.trainer.world_size / max(dt, 1e-9)
            self.log("train/img_per_s", ips, prog_bar=True, on_step=True, on_epoch=False, batch_size=1, rank_zero_only=True)
        self._last_batch_time = now

    def training_step(self, batch: tuple[torch.Tensor, int], batch_idx: int) -> torch.Tensor | None:
        x, skipped = batch
        self.skipped_images += int(skipped)
        x = self._prepare(x)
        y = self._net_fn(x)
        terms = self._loss_call(y, x)
        total = terms["total"]
        bad = ~torch.isfinite(total.detach())
        trainer = self._trainer  # None when a benchmark drives the step without a Trainer
        if trainer is not None and trainer.world_size > 1:  # all ranks must branch alike, or DDP's all-reduce hangs
            bad = trainer.strategy.reduce(bad.float(), reduce_op="sum") > 0
        if bad:
            if self.hparams.on_nonfinite == "stop":
                raise NonFiniteLossError(
                    f"the training loss became {total.item()} at step {self.global_step}; the run stopped and the "
                    f"last good checkpoint was kept (lower optim.lr, or set on_nonfinite=skip to skip such batches)")
            self.skipped_batches += 1
            self.log("train/nonfinite_skipped", float(self.skipped_batches), on_step=True, batch_size=1)
            return None
        n = x.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "total"}, batch_size=n)
        self.log("data/skipped_images", float(self.skipped_images), batch_size=1)
        return total

    def validation_step(self, batch: tuple[torch.Tensor, int], batch_idx: int) -> None:
        x, _ = batch
        x = self._prepare(x)
        terms = self._loss_call(self._net_fn(x), x)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=x.shape[0], sync_dist=True)

    # --- optimizers ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.Adam(self.network.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if hp.scheduler in (None, "none") and not hp.warmup_steps:
            return opt
        # max_steps, or the number of steps that max_epochs amounts to
        total = int(self._trainer.estimated_stepping_batches) if self._trainer is not None else 0
        warmup, floor = int(hp.warmup_steps), float(hp.min_lr_ratio)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if hp.scheduler == "cosine" and total > warmup:
                t = min(1.0, (step - warmup) / (total - warmup))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
            if hp.scheduler == "step":
                return hp.gamma ** ((step - warmup) // hp.step_size)
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- checkpoints -----------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """What inference and export need, without Hydra or the training config."""
        loss = self.loss_fn
        return {
            "version": FORMAT_VERSION,
            "network": self.network.config(),
            "style_name": self.style_name,
            "style_image": str(self.hparams.style_image),
            "style_size": self.hparams.style_size,
            "loss": {"content_layers": loss.content_layers, "style_layers": loss.style_layers,
                     "content_weight": loss.content_weight, "style_weight": loss.style_weight,
                     "tv_weight": loss.tv_weight, "gram_norm": loss.gram_norm,
                     "vgg_weights": loss.vgg.weights_name, "vgg_pooling": loss.vgg.pooling},
            "global_step": int(self.global_step),
            "skipped_images": int(self.skipped_images),
            "skipped_batches": int(self.skipped_batches),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = self.metadata()
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "image_size"):
            meta["image_size"] = int(dm.image_size)
        checkpoint[META_KEY] = meta
        # Lightning does not save RNG states; nothing in a step draws from them today (crops are seeded
        # per sample), but anything added later (augmentations, noise) must resume exactly too.
        np_state = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [[int(v) for v in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": repr(random.getstate()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(META_KEY, {})
        # Counts are rank 0's; other ranks start from 0 so that the summed report is not multiplied.
        trainer = getattr(self, "_trainer", None)
        first = trainer is None or trainer.global_rank == 0
        self.skipped_images = int(meta.get("skipped_images", 0)) if first else 0
        self.skipped_batches = int(meta.get("skipped_batches", 0)) if first else 0
        rng = checkpoint.get("rng_states")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
            keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
            random.setstate(ast.literal_eval(rng["python"]))
        # Checkpoints written by a compiled module carry "_orig_mod." in their keys.
        sd = checkpoint.get("state_dict", {})
        for k in [k for k in sd if "_orig_mod." in k]:
            sd[k.replace("_orig_mod.", "")] = sd.pop(k)
