"""A Lightning callback the DDP test adds through the config (``+callbacks.probe=...``): each rank writes what
DDP would broadcast before every forward, and the trainable parameters, to ``<dirpath>/probe_rank<N>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class BufferProbe(pl.Callback):
    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step != 0:
            return
        ddp = trainer.strategy.model
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "wrapper": type(ddp).__name__,
                  "broadcast_buffers": sorted(getattr(ddp, "named_module_buffers", {}) or {}),
                  "module_buffers": len(list(pl_module.named_buffers()))}
        Path(self.dirpath or ".", f"probe_rank{trainer.global_rank}.json").write_text(json.dumps(report))
