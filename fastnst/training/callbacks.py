"""Callbacks: labelled image previews (a row per style), and the end-of-run report. Logger-specific code lives here."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from PIL import Image
from torchvision.utils import make_grid

from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.media.image import save_image, tensor_to_pil
from fastnst.media.sheet import labelled_sheet


def preview_styles(trained: Sequence[int], max_styles: int, seed: int = 0) -> list[int]:
    """The styles a preview shows: all trained ones, or a fixed random sample of ``max_styles`` (in order)."""
    if len(trained) <= max_styles:
        return list(trained)
    return sorted(random.Random(seed).sample(list(trained), max_styles))


class ImagePreview(pl.Callback):
    """Every ``every_n_steps`` steps (and at the end), stylize fixed validation images and log a labelled grid:
    the photos on the top row, then one row per style (a fixed sample of ``max_styles`` when the network
    trains more). Always as ``previews/step_XXXXXXX.png`` in the run folder, and to wandb and TensorBoard when
    they are the logger, with the very same 8-bit pixels."""

    def __init__(self, every_n_steps: int = 500, num_images: int = 4, max_styles: int = 8,
                 dirpath: str | None = None) -> None:
        if max_styles < 1:
            raise UserError(f"preview.max_styles must be at least 1, got {max_styles}")
        self.every_n_steps, self.num_images, self.max_styles, self.dirpath = every_n_steps, num_images, max_styles, dirpath
        self._images: torch.Tensor | None = None
        self._last_step = -1

    def _content(self, trainer: pl.Trainer) -> torch.Tensor | None:
        if self._images is None:
            dm = trainer.datamodule
            if dm is None or not hasattr(dm, "preview_batch") or self.num_images < 1:
                return None
            self._images = dm.preview_batch(self.num_images)
        return self._images

    def grid(self, pl_module: pl.LightningModule, content: torch.Tensor) -> Image.Image:
        """The labelled preview of ``content`` [N, 3, H, W]: a row of photos, then a row per previewed style."""
        rows, labels = [content], ["photo"]
        if getattr(pl_module, "arbitrary", False):  # a row per validation painting (training ones if none held out)
            dm = pl_module.trainer.datamodule
            with torch.no_grad():
                for name, painting in dm.preview_paintings(self.max_styles):
                    rows.append(pl_module.stylize_with(content, painting).float().clamp(0, 1).cpu())
                    labels.append(name)
            panels = [tensor_to_pil(make_grid(row, nrow=len(row), padding=2, pad_value=1.0)) for row in rows]
            return labelled_sheet(panels, labels, columns=1, label_side="left")
        names = getattr(pl_module, "style_names", ["stylized"])
        picks = preview_styles(getattr(pl_module, "trained_styles", [0]), self.max_styles)
        with torch.no_grad():
            for s in picks:
                styles = None if len(names) == 1 else torch.full((len(content),), s, dtype=torch.long)
                rows.append(pl_module(content.to(pl_module.device), styles).float().clamp(0, 1).cpu())
                labels.append(names[s])
        panels = [tensor_to_pil(make_grid(row, nrow=len(row), padding=2, pad_value=1.0)) for row in rows]
        return labelled_sheet(panels, labels, columns=1, label_side="left")

    @rank_zero_only
    def log_preview(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        step = trainer.global_step
        content = self._content(trainer)
        if content is None or step == self._last_step:
            return None
        self._last_step = step
        # Pixels leave the program here: 8-bit once (a PIL image), for every destination (wandb casts floats in
        # [0, 1] to uint8 by truncation, which made its previews black).
        image = self.grid(pl_module, content)
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
