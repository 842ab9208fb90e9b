"""fastnst's checkpoint writer: ``step<N>.ckpt`` and ``last.ckpt``, every N steps, when the run stops, and at the end.

Every checkpoint records the run as it stood right after its step's batch, whenever the file is written. A run
that stops mid-epoch (at max_steps, on a signal, or because a callback set ``trainer.should_stop``) closes
Lightning's epoch loop, which marks the epoch complete; a checkpoint written after that resumed in the *next*
epoch while the data carried on in the old one, so a resumed run trained on other images than an uninterrupted
run. Here the loop counters of a checkpoint are always those taken at the end of its step's batch, the state
Lightning restores mid-epoch (the same as its own every-N-steps checkpoints).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint


class StepCheckpoints(Checkpoint):
    """Writes ``step<N:07d>.ckpt`` and ``last.ckpt`` in ``dirpath`` (atomically, through the trainer's checkpoint
    I/O) every ``every_n_steps`` optimizer steps (0: never), at the batch where the run is told to stop
    (``trainer.should_stop``, e.g. by :class:`fastnst.training.faults.GracefulStop`) or reaches max_steps, and,
    through :meth:`save_final`, at the end of any other way of finishing.

    A :class:`~pytorch_lightning.callbacks.Checkpoint` so that Lightning adds no checkpoint callback of its own and
    runs this one after every other callback of a batch (a stop requested by them is seen at the same batch)."""

    def __init__(self, dirpath: str | Path, every_n_steps: int = 500) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.saved_step: int | None = None  # global step of the newest checkpoint written by this process
        self.saved_path: Path | None = None
        self._after_step: dict[str, Any] | None = None
        self._seen_step = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seen_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._seen_step:  # mid-accumulation: no optimizer step, nothing to record or save
            return
        self._seen_step = step
        # The loop counters as they stand between this step's batch and the next (a small dict of integers).
        self._after_step = {"global_step": step, "epoch": trainer.current_epoch,
                            "fit_loop": copy.deepcopy(trainer.fit_loop.state_dict())}
        max_steps = trainer.max_steps
        due = self.every_n_steps > 0 and step % self.every_n_steps == 0
        if due or trainer.should_stop or (max_steps is not None and 0 <= max_steps <= step):
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> Path:
        """Write the current step's checkpoint and ``last.ckpt`` (every rank calls this; rank 0 writes)."""
        path = self.dirpath / f"step{trainer.global_step:07d}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        trainer.save_checkpoint(self.dirpath / "last.ckpt", weights_only=False)
        self.saved_step, self.saved_path = trainer.global_step, path
        return path

    def save_final(self, trainer: pl.Trainer) -> Path | None:
        """After ``trainer.fit``: the final step's checkpoint, unless it was written already (or no step ran)."""
        if trainer.global_step == self.saved_step or self._after_step is None:
            return None
        return self.save(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        after = self._after_step
        if after is not None and after["global_step"] == checkpoint.get("global_step"):
            # Written after the loops moved on (epoch closed, validation run, fit returned): record them as they were
            # right after this step's batch.
            checkpoint.setdefault("loops", {})["fit_loop"] = copy.deepcopy(after["fit_loop"])
            checkpoint["epoch"] = after["epoch"]
