"""Exact resume for every way a run can stop: the losses and epochs of a resumed run are an uninterrupted run's.

In-process and fast (the tiny network, 10 photos, batch 2: 5 steps per epoch); the signal path end to end, with
train.py in a subprocess, is in test_faults.py.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl

from fastnst.formats.checkpoint import read_checkpoint
from fastnst.training import fit

from .conftest import tiny_config

STEPS = 14  # steps 1-5 are epoch 0, 6-10 epoch 1, 11-14 epoch 2


class Record(pl.Callback):
    """The loss and epoch of every step; optionally stops the run at a step, the way ``how`` says."""

    def __init__(self, stop_at: int | None = None, how: str = "") -> None:
        self.losses: dict[int, float] = {}
        self.epochs: dict[int, int] = {}
        self.stop_at, self.how = stop_at, how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self.losses[step], self.epochs[step] = float(outputs["loss"]), trainer.current_epoch
        if step == self.stop_at:
            if self.how == "signal":
                signal.raise_signal(signal.SIGINT)  # GracefulStop's handler: the run stops after the next step
            elif self.how == "should_stop":
                trainer.should_stop = True  # what Lightning's Timer (trainer.max_time) does

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.how == "after_validation" and trainer.global_step == self.stop_at:
            trainer.should_stop = True  # what EarlyStopping does


def _config(photo_dir: Path, style_path: Path, **overrides):
    return tiny_config(photo_dir, style_path, **{"trainer.max_steps": STEPS, "checkpoint.every_n_steps": 100,
                                                 **overrides})


@pytest.fixture(scope="module")
def uninterrupted(photo_dir, style_path, tmp_path_factory) -> Record:
    record = Record()
    fit(_config(photo_dir, style_path), tmp_path_factory.mktemp("straight"), callbacks=[record])
    assert sorted(record.losses) == list(range(1, STEPS + 1))
    return record


@pytest.mark.parametrize("how, stop_at", [("signal", 6), pytest.param("should_stop", 7, marks=pytest.mark.slow),
                                          ("should_stop", 10), ("max_steps", 8),
                                          ("after_validation", 4)])
def test_a_stopped_run_resumes_exactly(how, stop_at, uninterrupted, photo_dir, style_path, tmp_path) -> None:
    first = Record(stop_at, how)
    overrides = {"trainer.max_steps": stop_at} if how == "max_steps" else {}
    if how == "after_validation":
        overrides = {"trainer.val_check_interval": 2}
    result = fit(_config(photo_dir, style_path, **overrides), tmp_path, callbacks=[first])
    stopped = result.global_step
    assert stopped < STEPS and stopped in (stop_at, stop_at + 1)
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == stopped and last["epoch"] == uninterrupted.epochs[stopped]
    step_file = read_checkpoint(tmp_path / "checkpoints" / f"step{stopped:07d}.ckpt")
    assert step_file["epoch"] == last["epoch"] and step_file["loops"] == last["loops"]

    second = Record()
    fit(_config(photo_dir, style_path, ckpt_path="last", **({"trainer.val_check_interval": 2}
                                                             if how == "after_validation" else {})),
        tmp_path, callbacks=[second])
    assert sorted(second.losses) == list(range(stopped + 1, STEPS + 1))
    for step, loss in second.losses.items():
        assert loss == pytest.approx(uninterrupted.losses[step], rel=1e-5, abs=1e-6), (how, step)
        assert second.epochs[step] == uninterrupted.epochs[step], (how, step)


def test_resume_from_an_every_n_steps_checkpoint_is_exact(uninterrupted, photo_dir, style_path, tmp_path) -> None:
    """What a crash (kill -9, power loss) leaves: the newest periodic checkpoint, here the one of step 6 of 8."""
    fit(_config(photo_dir, style_path, **{"trainer.max_steps": 8, "checkpoint.every_n_steps": 3}), tmp_path)
    resumed = Record()
    fit(_config(photo_dir, style_path, ckpt_path=str(tmp_path / "checkpoints" / "step0000006.ckpt")), tmp_path,
        callbacks=[resumed])
    assert sorted(resumed.losses) == list(range(7, STEPS + 1))
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(uninterrupted.losses[step], rel=1e-5, abs=1e-6), step
        assert resumed.epochs[step] == uninterrupted.epochs[step], step


def test_resume_with_shortened_epochs_is_exact(photo_dir, style_path, tmp_path) -> None:
    """trainer.limit_train_batches=3 makes epochs of 3 steps (not the sampler's 5): the resumed data follows them."""
    cut = {"trainer.limit_train_batches": 3}
    straight = Record()
    fit(_config(photo_dir, style_path, **cut, **{"trainer.max_steps": 8}), tmp_path / "a", callbacks=[straight])
    fit(_config(photo_dir, style_path, **cut, **{"trainer.max_steps": 4}), tmp_path / "b")
    resumed = Record()
    fit(_config(photo_dir, style_path, **cut, **{"trainer.max_steps": 8}, ckpt_path="last"), tmp_path / "b",
        callbacks=[resumed])
    assert sorted(resumed.losses) == [5, 6, 7, 8] and [straight.epochs[s] for s in (5, 6, 7, 8)] == [1, 1, 2, 2]
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(straight.losses[step], rel=1e-5, abs=1e-6), step
        assert resumed.epochs[step] == straight.epochs[step], step


def test_override_values_are_quoted_for_hydra_only_where_needed() -> None:
    """The resume command's hydra.run.dir: a folder with a space, a non-ASCII letter, a quote or a comma."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from fastnst.training.hydra_checks import override_value

    parser = OverridesParser.create()
    assert override_value("runs/2024-01-01_10-00-00.123") == "runs/2024-01-01_10-00-00.123"
    for value in ["runs/rün 21", "it's", "a,b", "C:\\runs\\x y\\", "a\\'b", "null", " lead"]:
        assert parser.parse_override(f"hydra.run.dir={override_value(value)}").value() == value
    assert override_value("runs/rün 21") == "'runs/rün 21'" and override_value("it's") == "'it\\'s'"
