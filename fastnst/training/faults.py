"""Fault tolerance: atomic checkpoint files, clean stops on SIGTERM/SIGINT, up-front checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info

from fastnst.errors import UserError
from fastnst.fileio import FolderInUse, FolderLock, atomic_write, launched_rank
from fastnst.formats.checkpoint import read_checkpoint


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through :func:`fastnst.fileio.atomic_write`: a crash at any moment leaves either the
    old file or the new one, never a half-written one."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp), keep_suffix=False)


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary checkpoint files a SIGKILL left behind mid-save (they never replaced a finished file)."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O with atomic writes and safe (``weights_only``) reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


class GracefulStop(pl.Callback):
    """On SIGTERM or SIGINT, finish the current step and stop the run cleanly (the run's
    :class:`~fastnst.training.checkpoints.StepCheckpoints` writes that step's checkpoint as the stop is set).
    A second signal interrupts at once."""

    def __init__(self) -> None:
        self.signal_received: int | None = None
        self.stopped_at: int | None = None  # the global step the run stopped at because of a signal
        self._previous: dict[int, Any] = {}
        self._last_step = -1

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_received is not None:  # second signal: the user really means it
            self._restore()
            raise KeyboardInterrupt
        self.signal_received = signum
        rank_zero_info(f"fastnst: {signal.Signals(signum).name} received; saving a checkpoint after this step ...")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Defer SIGTERM/SIGINT around work done after training ended (the final checkpoint write):
        the signal is recorded, the work finishes, and the previous handlers come back afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._install()
        try:
            yield
        finally:
            self._restore()

    def _install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        if threading.current_thread() is threading.main_thread():
            self._install()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Only right after an optimizer step: mid-accumulation, the partial gradients would be lost and the
        # data position would not match the step count.
        stepped, self._last_step = trainer.global_step != self._last_step, trainer.global_step
        if not stepped:
            return
        flag = self.signal_received is not None
        if trainer.world_size > 1:  # any rank's signal stops every rank at the same step
            t = torch.tensor(float(flag), device=pl_module.device)
            flag = bool(trainer.strategy.reduce(t, reduce_op="sum").item() > 0)
        finished = 0 <= (trainer.max_steps if trainer.max_steps is not None else -1) <= trainer.global_step
        if flag and self.stopped_at is None and not finished:  # on the last step the run ends anyway, as finished
            self.stopped_at = trainer.global_step
            self.signal_received = self.signal_received or signal.SIGTERM
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()


@contextlib.contextmanager
def claim_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive claim on the run folder while training (the first process of a launch only: DDP
    ranks share it). A second run started in the same folder, by accident or by two jobs started in the same
    second, stops with one sentence instead of overwriting the first run's checkpoints."""
    if launched_rank() > 0:
        yield
        return
    try:
        lock = FolderLock(run_dir).acquire()
    except FolderInUse as exc:
        who = f"process {exc.pid}" if exc.pid and exc.pid > 0 else "another process"
        raise UserError(f"the run folder {run_dir} is in use by a training run ({who}); wait for it to finish, or "
                        f"start this run in another folder (hydra.run.dir=...)") from None
    try:
        yield
    finally:
        lock.release()


def check_writable(folder: Path, need_bytes: int) -> None:
    """The run folder can be created and written, with ``need_bytes`` free for checkpoints."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"the run folder {folder} is not writable ({exc.strerror}); choose another with "
                        f"hydra.run.dir=...") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise UserError(f"only {free / 1e6:.0f} MB free on the disk of {folder}, a checkpoint needs about "
                        f"{need_bytes / 1e6:.0f} MB; free some space or choose another hydra.run.dir")
