"""Callbacks: image previews, and the end-of-run report. Logger-specific code lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torchvision.utils import make_grid

from fastnst.fileio import atomic_write
from fastnst.media.image import save_image, tensor_to_pil


class ImagePreview(pl.Callback):
    """Every ``every_n_steps`` steps (and at the end), stylize fixed validation images and log a grid:
    content images on the top row, stylized below. Always as ``previews/step_XXXXXXX.png`` in the run
    folder, and to wandb and TensorBoard when they are the logger, with the very same 8-bit pixels."""

    def __init__(self, every_n_steps: int = 500, num_images: int = 4, dirpath: str | None = None) -> None:
        self.every_n_steps, self.num_images, self.dirpath = every_n_steps, num_images, dirpath
        self._images: torch.Tensor | None = None
        self._last_step = -1

    def _content(self, trainer: pl.Trainer) -> torch.Tensor | None:
        if self._images is None:
            dm = trainer.datamodule
            if dm is None or not hasattr(dm, "preview_batch") or self.num_images < 1:
                return None
            self._images = dm.preview_batch(self.num_images)
        return self._images

    @rank_zero_only
    def log_preview(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        step = trainer.global_step
        content = self._content(trainer)
        if content is None or step == self._last_step:
            return None
        self._last_step = step
        with torch.no_grad():
            styled = pl_module(content.to(pl_module.device)).float().clamp(0, 1).cpu()
        grid = make_grid(torch.cat([content, styled]), nrow=len(content), padding=2)
        # Pixels leave the program here: 8-bit once, for every destination (wandb casts floats in [0, 1]
        # to uint8 by truncation, which made its previews black).
        image = tensor_to_pil(grid)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="preview", images=[image], step=step, caption=[f"step {step}"])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("preview", np.asarray(image), global_step=step, dataformats="HWC")
        folder = Path(self.dirpath or trainer.default_root_dir) / "previews"
        path = folder / f"step_{step:07d}.png"
        atomic_write(path, lambda tmp: save_image(image, tmp))
        return path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self.log_preview(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_preview(trainer, pl_module)


class RunReport(pl.Callback):
    """Says at the end how many unreadable files were skipped and where the checkpoints are."""

    def __init__(self, checkpoint_dir: str | None = None) -> None:
        self.checkpoint_dir = checkpoint_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A collective: every rank reduces, whatever its own count (a rank that skipped it would hang the rest).
        total = torch.tensor(float(getattr(pl_module, "skipped_images", 0)), device=pl_module.device)
        skipped = int(trainer.strategy.reduce(total, reduce_op="sum").item())
        rank_zero_info(f"fastnst: {trainer.global_step} steps done; {skipped} unreadable image read(s) skipped "
                       f"(a bad file counts once per epoch)"
                       + (f"; checkpoints in {self.checkpoint_dir}" if self.checkpoint_dir else ""))


class StepProgressBar(TQDMProgressBar):
    """The progress bar with the global step (which survives resumes and epochs) instead of v_num."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {"step": trainer.global_step, **metrics}
