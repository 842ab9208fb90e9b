"""Run a training job from a plain config dict (what train.py composes with Hydra).

Callable from Python and tested with plain dicts. The config has the groups of conf/train.yaml: data,
model, loss, optim, trainer, logger, callbacks, style, checkpoint, preview.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from fastnst.errors import UserError
from fastnst.formats.checkpoint import read_checkpoint, read_info
from fastnst.training.callbacks import RunReport
from fastnst.training.checkpoints import StepCheckpoints
from fastnst.training.config import (
    avoid_known_failures,
    build_callbacks,
    build_module,
    check_arguments,
    check_model,
    instantiate,
    painting_sets,
)
from fastnst.training.faults import (
    AtomicCheckpointIO,
    GracefulStop,
    check_writable,
    claim_run_folder,
    remove_stale_temporaries,
)
from fastnst.training.loggers import build_logger
from fastnst.training.module import NonFiniteLossError, StyleTransferModule

CHECKPOINT_BYTES = 60_000_000  # network + Adam state + style Grams is ~25 MB; keep a margin


@dataclass
class RunResult:
    """What a finished or stopped run left behind."""

    run_dir: Path
    checkpoint_dir: Path
    last_checkpoint: Path | None
    global_step: int
    stopped_by_signal: int | None = None


def resolve_ckpt_path(ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """``last`` means the newest checkpoint of this run folder (or a fresh start when there is none)."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        last = checkpoint_dir / "last.ckpt"
        if last.is_file():
            return str(last)
        steps = sorted(checkpoint_dir.glob("step*.ckpt"), key=lambda p: p.stat().st_mtime)
        if steps:
            return str(steps[-1])
        print(f"fastnst: ckpt_path=last but {checkpoint_dir} has no checkpoint yet; starting from scratch")
        return None
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt_path {path} does not exist; pass a .ckpt file, or ckpt_path=last to resume this run folder")
    return str(path)


def check_resumable(ckpt_path: str, module: StyleTransferModule) -> None:
    """The checkpoint loads (one sentence if corrupt) and fits the configured styles, network and loss layers (the
    styles first: a different style list also changes the network's ``num_styles``)."""
    was = read_info(read_checkpoint(ckpt_path), f"ckpt_path {ckpt_path}")
    now = module.model_info()
    if was.styles != now.styles:
        added = was.training.init_from if was.training else None
        hint = (f"; it added styles to init_from={added}: pass init_from={added} train_only=norm again"
                if added and not now.training.init_from else "")
        raise UserError(f"ckpt_path {ckpt_path} was trained on the styles {was.styles}, the config gives {now.styles}; "
                        f"resume with the run's own style images (in the same order){hint}")
    if (was.architecture, was.config) != (now.architecture, now.config):
        raise UserError(f"ckpt_path {ckpt_path} holds a {was.architecture} network {was.config} but the config builds "
                        f"a {now.architecture} network {now.config}; resume with the run's own model settings")
    loss_was = was.training.loss if was.training else {}
    for key in ("content_layers", "style_layers"):
        if sorted(loss_was.get(key, {})) != sorted(now.training.loss[key]):
            raise UserError(f"ckpt_path {ckpt_path} was trained with loss.{key}={sorted(loss_was.get(key, {}))}, the "
                            f"config says {sorted(now.training.loss[key])}; resume with the run's own loss settings")
    old_paths = was.training.style_images if was.training else []
    if [Path(p).name for p in old_paths] != [Path(p).name for p in now.training.style_images]:
        warnings.warn(f"resuming with style images {now.training.style_images}, but the checkpoint's style targets "
                      f"come from {old_paths} and are the ones kept", stacklevel=1)


def _kept(checkpoint_dir: Path, checkpoints: StepCheckpoints) -> str:
    """What a run that stopped on an error leaves to resume from, as the end of a sentence."""
    last = checkpoint_dir / "last.ckpt"
    if last.is_file():
        step = read_checkpoint(last).get("global_step")
        return f"kept its last good checkpoint, {last} (step {step})"
    every = checkpoints.every_n_steps
    return ("no checkpoint was written before it" + (f" (the first comes at step {every}, checkpoint.every_n_steps)"
                                                     if every > 0 else ""))


def _with_default_callbacks(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config without a callbacks group (a plain dict from Python) gets conf/callbacks/default.yaml's."""
    if cfg.get("callbacks") is not None:
        return cfg
    preview = {"_target_": "fastnst.training.callbacks.ImagePreview", **(cfg.get("preview") or {})}
    return {**cfg, "callbacks": {"preview": preview,
                                 "progress_bar": {"_target_": "fastnst.training.callbacks.StepProgressBar"}}}


def fit(cfg: dict[str, Any], run_dir: str | Path, callbacks: list[pl.Callback] | None = None) -> RunResult:
    """Train as configured; checkpoints under ``run_dir/checkpoint.dir``. Raises :class:`UserError`.

    ``callbacks`` are added to fastnst's own (checkpoints, previews, report, graceful stop)."""
    run_dir = Path(run_dir)
    # Settings first, before anything is read or written: the data, model and trainer arguments.
    datamodule = instantiate(cfg["data"], "data")
    check_model(cfg.get("model") or {}, cfg.get("style"))
    if (cfg.get("trainer") or {}).get("max_steps") == 0:
        raise UserError("trainer.max_steps=0 trains nothing and writes no checkpoint; give a number of steps "
                        "(or -1 to train for trainer.max_epochs)")
    ckpt_cfg = cfg.get("checkpoint") or {}
    checkpoint_dir = run_dir / ckpt_cfg.get("dir", "checkpoints")
    check_writable(checkpoint_dir, CHECKPOINT_BYTES)
    with claim_run_folder(run_dir):
        return _fit(cfg, datamodule, run_dir, checkpoint_dir, ckpt_cfg, callbacks)


def _fit(cfg: dict[str, Any], datamodule: pl.LightningDataModule, run_dir: Path, checkpoint_dir: Path,
         ckpt_cfg: dict[str, Any], callbacks: list[pl.Callback] | None) -> RunResult:
    remove_stale_temporaries(checkpoint_dir)
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)

    # Up-front checks, cheapest first: data folder, style image and VGG weights, resume file.
    datamodule.scan()
    cfg = avoid_known_failures(cfg)
    module = build_module(cfg)
    if module.arbitrary:
        datamodule.attach_paintings(*painting_sets(cfg.get("style") or {}))
    if module.target_bytes:  # many styles make every checkpoint larger by their targets
        check_writable(checkpoint_dir, CHECKPOINT_BYTES + module.target_bytes)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), checkpoint_dir)
    if ckpt_path:
        check_resumable(ckpt_path, module)
    elif any(checkpoint_dir.glob("*.ckpt")):
        raise UserError(f"{checkpoint_dir} already holds checkpoints of an earlier run; resume it with ckpt_path=last, "
                        f"or start a new run in another folder (hydra.run.dir=...)")

    every = int(ckpt_cfg.get("every_n_steps", 500))
    stopper = GracefulStop()
    checkpoints = StepCheckpoints(checkpoint_dir, every)
    # fastnst's own callbacks (the fault guarantees rest on them), then the callbacks group, then the caller's.
    callbacks = [checkpoints, RunReport(str(checkpoint_dir)), stopper,
                 *build_callbacks(_with_default_callbacks(cfg), run_dir), *(callbacks or [])]
    trainer_cfg = dict(cfg.get("trainer") or {})
    for key in ("logger", "callbacks", "plugins", "default_root_dir", "use_distributed_sampler"):
        if key in trainer_cfg:
            raise UserError(f"trainer.{key} is set by fastnst itself; use the logger group, checkpoint.* or hydra.run.dir instead")
    if trainer_cfg.get("enable_checkpointing") is False:
        raise UserError("trainer.enable_checkpointing=false: fastnst always keeps the checkpoints a run needs to "
                        "resume; set checkpoint.every_n_steps=0 to write them only at the end and when stopped")
    trainer_cfg.pop("enable_checkpointing", None)
    check_arguments(pl.Trainer, trainer_cfg, "trainer")
    if module.norm_only is not None and str(trainer_cfg.get("precision")) in ("bf16-true", "16-true"):
        raise UserError(f"trainer.precision={trainer_cfg['precision']} would round the old styles' weights to half "
                        f"precision; train_only=norm keeps them exactly, so use bf16-mixed or 16-mixed")
    logger = build_logger(cfg, run_dir, resuming=ckpt_path is not None)
    if logger:
        try:
            logger.log_hyperparams(cfg)  # the resolved config, as composed
        except Exception as exc:  # a logger problem never stops training
            warnings.warn(f"could not log the config to {type(logger).__name__}: {exc}", stacklevel=1)
    try:
        trainer = pl.Trainer(**trainer_cfg, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
                             default_root_dir=str(run_dir),
                             # our sampler shards across ranks itself (and resumes mid-epoch)
                             use_distributed_sampler=False)
    except (ValueError, TypeError, MisconfigurationException) as exc:
        raise UserError(f"the trainer settings are invalid: {str(exc).splitlines()[0]}") from None
    if hasattr(datamodule, "check_batches"):
        datamodule.check_batches(trainer.world_size)
    if trainer.world_size > 1 and module.hparams.on_nonfinite == "skip":
        raise UserError("on_nonfinite=skip works on one device only (DDP cannot skip a step on one rank); use on_nonfinite=stop")
    try:
        with warnings.catch_warnings():
            # Our sampler resumes mid-epoch from the global step, which Lightning cannot see.
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode")  # the frozen VGG, on purpose
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except NonFiniteLossError as exc:
        raise UserError(f"{exc}; the run stopped and {_kept(checkpoint_dir, checkpoints)}"
                        + (f" ({exc.hint})" if exc.hint else "")) from None
    last = checkpoint_dir / "last.ckpt"
    # A run that finished otherwise than at a batch end (max_epochs, a callback stopping it after validation) gets its
    # final step's checkpoint now. A signal arriving meanwhile waits until it is written.
    with stopper.guard():
        checkpoints.save_final(trainer)
    # A signal after the last step (during the final save) does not make a finished run a stopped one.
    stopped = stopper.signal_received if stopper.stopped_at is not None else None
    return RunResult(run_dir, checkpoint_dir, last if last.exists() else None, trainer.global_step, stopped)

