"""End-to-end training on tiny synthetic data: checkpoints, falling loss, exact resume, loggers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fastnst.errors import UserError
from fastnst.formats.checkpoint import load_network, read_checkpoint
from fastnst.training import fit

from .conftest import tiny_config


class LossRecorder(pl.Callback):
    """The training loss of every step, as the optimizer saw it."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is not None:
            self.losses[trainer.global_step] = float(outputs["loss"])


def test_training_loss_falls_and_checkpoint_rebuilds_network(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    rec = LossRecorder()
    result = fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 20, "checkpoint.every_n_steps": 10}),
                 tmp_path, callbacks=[rec])
    assert result.global_step == 20 and result.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    losses = [rec.losses[s] for s in sorted(rec.losses)]
    assert len(losses) == 20
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, losses
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step0000010.ckpt", "step0000020.ckpt"]
    raw = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert raw["global_step"] == 20
    assert not any(k.startswith("loss_fn.vgg") for k in raw["state_dict"])  # the loss network is never saved
    assert any(k.startswith("loss_fn.terms.style.gram_") for k in raw["state_dict"])
    # the network and the style targets once each (fastnst 0.1 also saved its aliases _net_fn and _loss_call)
    assert all(k.startswith(("network.", "loss_fn.terms.style.")) for k in raw["state_dict"]), list(raw["state_dict"])
    net, info = load_network(tmp_path / "checkpoints" / "last.ckpt")
    assert info.architecture == "johnson" and info.format_version == 2
    assert info.config == {"channels": [8, 16, 16], "num_residual": 1, "upsample": "nearest", "num_styles": 1}
    assert info.styles == ["stripes"] and info.training.loss["gram_norm"] == "hw" and info.training.image_size == 32
    assert info.training.global_step == 20
    y = net(torch.rand(1, 3, 37, 41))
    assert y.shape == (1, 3, 37, 41) and y.std() > 0


# Exactness tests run torch on one thread: what they check is that every piece of state is restored or
# seeded, not that multi-threaded MKL/oneDNN reductions repeat bit for bit (see tests/test_faults.py).
@pytest.mark.usefixtures("one_thread")
def test_resume_continues_step_count_optimizer_and_losses(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    # Batches of 2 over 10 training images: 5 steps per epoch, so step 7 is mid-epoch.
    straight = LossRecorder()
    fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 10, "checkpoint.every_n_steps": 7}),
        tmp_path / "a", callbacks=[straight])
    fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 7, "checkpoint.every_n_steps": 7}), tmp_path / "b")
    ckpt = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 7 and ckpt["optimizer_states"][0]["state"]
    resumed = LossRecorder()
    result = fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 10, "checkpoint.every_n_steps": 7,
                                                        "ckpt_path": "last"}), tmp_path / "b", callbacks=[resumed])
    assert result.global_step == 10
    assert sorted(resumed.losses) == [8, 9, 10]  # continues the step count, does not restart
    for step in (8, 9, 10):
        assert math.isclose(resumed.losses[step], straight.losses[step], rel_tol=1e-5, abs_tol=1e-6), (step, resumed.losses, straight.losses)
    a = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.usefixtures("one_thread")
def test_same_seed_same_losses(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    runs = []
    for name in ("x", "y"):
        rec = LossRecorder()
        fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 5}), tmp_path / name, callbacks=[rec])
        runs.append(rec.losses)
    assert runs[0] == runs[1]
    # every 2 steps, and the end (step 5) gets its own numbered checkpoint as well as last.ckpt
    names = sorted(p.name for p in (tmp_path / "x" / "checkpoints").glob("*.ckpt"))
    assert names == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt", "step0000005.ckpt"]
    assert read_checkpoint(tmp_path / "x" / "checkpoints" / "last.ckpt")["global_step"] == 5


def test_nonfinite_loss_stops_with_message_and_keeps_last_good_checkpoint(
        tmp_path: Path, photo_dir: Path, style_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastnst.losses.perceptual as losses

    real_tv, calls = losses.total_variation, {"n": 0}

    def poisoned_tv(images: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = real_tv(images)
        return value * float("nan") if calls["n"] == 4 else value  # the 4th training step goes NaN

    monkeypatch.setattr(losses, "total_variation", poisoned_tv)
    with pytest.raises(UserError, match=r"became nan at step 3; the run stopped and kept its last good checkpoint, "
                                        r"\S+last.ckpt \(step 2\)"):
        fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 8, "checkpoint.every_n_steps": 2}), tmp_path)
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2
    net, _ = load_network(tmp_path / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in net.parameters())

    # Before the first checkpoint: the sentence says that there is none (issue 21.11).
    calls["n"] = 0
    with pytest.raises(UserError, match=r"became nan at step 3; the run stopped and no checkpoint was written before "
                                        r"it \(the first comes at step 100, checkpoint.every_n_steps\)"):
        fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 8, "checkpoint.every_n_steps": 100}),
            tmp_path / "early")
    assert not list((tmp_path / "early" / "checkpoints").glob("*.ckpt"))

    calls["n"] = 0
    result = fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 6, "on_nonfinite": "skip"}), tmp_path / "skip")
    meta = read_checkpoint(result.last_checkpoint)["fastnst"]
    assert meta["training"]["skipped_batches"] == 1


def test_upfront_checks_are_one_sentence(tmp_path: Path, photo_dir: Path, style_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="run folder .* is not writable"):
        fit(tiny_config(photo_dir, style_path), blocker / "run")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="contains no images"):
        fit(tiny_config(empty, style_path), tmp_path / "r1")
    bad_style = tmp_path / "style.jpg"
    bad_style.write_text("not a painting")
    with pytest.raises(UserError, match="style image .* is not a readable image"):
        fit(tiny_config(photo_dir, bad_style), tmp_path / "r2")
    cfg = tiny_config(photo_dir, style_path)
    cfg["loss"]["vgg_weights"] = str(tmp_path / "vgg19.pth")
    with pytest.raises(UserError, match="VGG19 weights file .* does not exist"):
        fit(cfg, tmp_path / "r3")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(UserError, match="corrupt"):
        fit(tiny_config(photo_dir, style_path, ckpt_path=str(corrupt)), tmp_path / "r4")
    with pytest.raises(UserError, match="data.batch_size='two' has the wrong type"):
        fit(tiny_config(photo_dir, style_path, **{"data.batch_size": "two"}), tmp_path / "r5")
    with pytest.raises(UserError, match="trainer.max_stpes is not a setting"):
        fit(tiny_config(photo_dir, style_path, **{"trainer.max_stpes": 3}), tmp_path / "r6")
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError, match="MB free on the disk"):
        fit(tiny_config(photo_dir, style_path), tmp_path / "r7")


def test_logger_failure_falls_back_to_csv(tmp_path: Path, photo_dir: Path, style_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pytorch_lightning.loggers import WandbLogger

    def broken(self):
        raise RuntimeError("wandb could not start")

    monkeypatch.setattr(WandbLogger, "experiment", property(broken))
    cfg = tiny_config(photo_dir, style_path, logger={"_target_": "pytorch_lightning.loggers.WandbLogger",
                                                      "save_dir": None, "offline": True})
    with pytest.warns(UserWarning, match="could not start.*CSV"):
        fit(cfg, tmp_path)
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_loggers_get_metrics_and_preview_files(tmp_path: Path, photo_dir: Path, style_path: Path, logger: str) -> None:
    target = {"csv": "pytorch_lightning.loggers.CSVLogger", "tensorboard": "pytorch_lightning.loggers.TensorBoardLogger"}
    cfg = tiny_config(photo_dir, style_path, logger={"_target_": target[logger], "save_dir": None, "name": logger},
                      preview={"every_n_steps": 2, "num_images": 2}, **{"trainer.max_steps": 4, "trainer.val_check_interval": 2})
    fit(cfg, tmp_path)
    previews = sorted(p.name for p in (tmp_path / "previews").glob("*.png"))
    assert previews == ["step_0000002.png", "step_0000004.png"]
    if logger == "csv":
        text = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
        header = text.splitlines()[0]
        for key in ("train/loss", "train/content", "train/style", "train/tv", "train/style/relu1_1", "val/total",
                    "val/style", "train/img_per_s"):
            assert key in header, key
        hparams = (tmp_path / "csv" / "version_0" / "hparams.yaml").read_text()
        assert "vgg_weights: random" in hparams and "every_n_steps: 2" in hparams  # the resolved config
    else:
        assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_bf16_mixed_channels_last_and_cosine_schedule(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    rec = LossRecorder()
    cfg = tiny_config(photo_dir, style_path, channels_last=True,
                      **{"trainer.max_steps": 4, "trainer.precision": "bf16-mixed", "optim.scheduler": "cosine",
                         "optim.warmup_steps": 2})
    result = fit(cfg, tmp_path, callbacks=[rec])
    assert len(rec.losses) == 4 and all(math.isfinite(v) for v in rec.losses.values())
    ckpt = read_checkpoint(result.last_checkpoint)
    sched = ckpt["lr_schedulers"][0]
    assert sched["last_epoch"] == 4
    lr_end = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr_end == pytest.approx(3e-3 * 0.01, rel=1e-6)  # cosine reached min_lr_ratio at max_steps
    net, _ = load_network(result.last_checkpoint)
    assert net(torch.rand(1, 3, 20, 24)).shape == (1, 3, 20, 24)


def test_channels_last_gives_the_same_loss(photo_dir: Path, style_path: Path) -> None:
    from fastnst.training.config import build_module

    torch.manual_seed(0)
    a = build_module(tiny_config(photo_dir, style_path))
    b = build_module(tiny_config(photo_dir, style_path, channels_last=True))
    b.load_state_dict(a.state_dict())
    b.setup("fit")
    x = torch.rand(2, 3, 32, 32)
    ta, tb = a.loss_fn(a(x), x), b.loss_fn(b(x), x)
    assert torch.allclose(ta["total"], tb["total"], rtol=1e-4)


class BatchLossRecorder(pl.Callback):
    """(global step, loss) of every batch, for runs with gradient accumulation."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append((trainer.global_step, float(outputs["loss"])))


@pytest.mark.usefixtures("one_thread")
def test_resume_with_gradient_accumulation_across_epochs(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    # 5 batches per epoch, 2 per step: steps end at batches 2, 4, 5 (Lightning steps on the epoch's last batch).
    acc = {"trainer.accumulate_grad_batches": 2, "checkpoint.every_n_steps": 4}
    straight = BatchLossRecorder()
    fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 7, **acc}), tmp_path / "a", callbacks=[straight])
    fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 4, **acc}), tmp_path / "b")
    resumed = BatchLossRecorder()
    fit(tiny_config(photo_dir, style_path, ckpt_path="last", **{"trainer.max_steps": 7, **acc}), tmp_path / "b",
        callbacks=[resumed])
    # the batch whose optimizer step made global_step 4 ended mid-epoch 2; the resumed run starts after it
    first_after = next(i for i, (step, _) in enumerate(straight.losses) if step == 4) + 1
    tail = [loss for _, loss in straight.losses[first_after:]]
    assert len(resumed.losses) == len(tail) == 5
    assert [step for step, _ in resumed.losses] == [step for step, _ in straight.losses[first_after:]]
    for (_, a), b in zip(resumed.losses, tail):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (resumed.losses, tail)


def test_refuses_to_overwrite_an_earlier_run_and_mismatched_resume(tmp_path: Path, photo_dir: Path,
                                                                   style_path: Path) -> None:
    fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 2}), tmp_path)
    before = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(UserError, match="already holds checkpoints of an earlier run; resume it with ckpt_path=last"):
        fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 2}), tmp_path)
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == before
    wider = tiny_config(photo_dir, style_path, ckpt_path="last", model={"channels": [8, 16, 32], "num_residual": 1})
    with pytest.raises(UserError, match="holds a johnson network .* but the config builds"):
        fit(wider, tmp_path)
    other_layers = tiny_config(photo_dir, style_path, ckpt_path="last")
    other_layers["loss"]["style_layers"] = ["relu1_1"]
    with pytest.raises(UserError, match="loss.style_layers"):
        fit(other_layers, tmp_path)


def test_checkpoint_restores_rng_states_and_records_pooling(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    import random

    import numpy as np

    from fastnst.training.config import build_module

    result = fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 2}), tmp_path)
    ckpt = read_checkpoint(result.last_checkpoint)
    assert ckpt["fastnst"]["training"]["loss"]["vgg_pooling"] == "max"
    module = build_module(tiny_config(photo_dir, style_path))
    torch.manual_seed(999), np.random.seed(999), random.seed(999)
    module.on_load_checkpoint(ckpt)
    after = (torch.rand(3), np.random.rand(3), random.random())
    torch.set_rng_state(ckpt["rng_states"]["torch"])
    assert torch.equal(after[0], torch.rand(3))
    module.on_load_checkpoint(ckpt)
    torch.rand(3)
    assert np.array_equal(after[1], np.random.rand(3)) and after[2] == random.random()


def test_optimizer_and_callbacks_are_chosen_by_config(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    """optim._target_ picks any torch.optim class (its arguments checked); the callbacks group adds, swaps
    or removes Lightning callbacks while fastnst's own checkpointing stays."""
    cfg = tiny_config(photo_dir, style_path, **{"trainer.max_steps": 2, "checkpoint.every_n_steps": 1})
    cfg["optim"] = {"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9, "nesterov": True}
    cfg["callbacks"] = {"preview": None,
                        "lr": {"_target_": "pytorch_lightning.callbacks.LearningRateMonitor"}}
    cfg["logger"] = {"_target_": "fastnst.training.loggers.ResumableCSVLogger", "save_dir": None, "name": "csv"}
    result = fit(cfg, tmp_path)
    ckpt = read_checkpoint(result.last_checkpoint)
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["momentum"] == 0.9 and group["nesterov"] is True and group["lr"] == 0.01  # SGD, not Adam
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "lr-SGD" in header  # the added LearningRateMonitor logged
    assert not (tmp_path / "previews").exists()  # the preview callback was switched off
    bad = tiny_config(photo_dir, style_path)
    bad["optim"] = {"_target_": "torch.optim.SGD", "lr": 0.01, "momentun": 0.9}
    with pytest.raises(UserError, match="optim.momentun is not a setting of optim"):
        fit(bad, tmp_path / "bad")
    bad["optim"] = {"_target_": "torch.optim.Nope", "lr": 0.01}
    with pytest.raises(UserError, match="cannot import 'torch.optim.Nope' named by optim._target_"):
        fit(bad, tmp_path / "bad")
