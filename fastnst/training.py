"""Build and run a training job from a plain config dict (what train.py composes with Hydra).

Kept free of Hydra so it can be called from Python and tested with plain dicts. The config has the
groups of conf/train.yaml: data, model, loss, optim, trainer, logger, style, checkpoint, preview.
"""

from __future__ import annotations

import importlib
import inspect
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from fastnst.callbacks import ImagePreview, RunReport, StepProgressBar
from fastnst.errors import UserError
from fastnst.module import NonFiniteLossError, StyleTransferModule
from fastnst.safety import AtomicCheckpointIO, GracefulStop, check_writable, remove_stale_temporaries

MODULE_OPTIM_KEYS = ("lr", "betas", "weight_decay", "scheduler", "warmup_steps", "min_lr_ratio", "step_size", "gamma")
CHECKPOINT_BYTES = 60_000_000  # network + Adam state + style Grams is ~25 MB; keep a margin


def locate(target: str) -> Any:
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise UserError(f"cannot import {target!r} named by a _target_ in the config") from None


def check_arguments(fn: Any, kwargs: dict[str, Any], where: str) -> None:
    """Every key is a parameter of ``fn`` and every value fits its annotation, else one sentence."""
    sig = inspect.signature(fn)
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # unresolvable annotations in a third-party signature: check names only
        hints = {}
    for key, value in kwargs.items():
        if key not in params:
            if takes_any:
                continue
            valid = ", ".join(k for k in params if k not in ("self", "args", "kwargs"))
            raise UserError(f"{where}.{key} is not a setting of {where} (valid: {valid})")
        hint = hints.get(key)
        if hint is None or hint is Any:
            continue
        try:
            pydantic.TypeAdapter(hint, config=pydantic.ConfigDict(arbitrary_types_allowed=True)).validate_python(value)
        except pydantic.ValidationError as exc:
            expected = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            detail = exc.errors()[0].get("msg", "")
            raise UserError(f"{where}.{key}={value!r} has the wrong type: expected {expected} ({detail})") from None
        except (pydantic.PydanticSchemaGenerationError, TypeError):
            continue


def instantiate(node: dict[str, Any], where: str, **extra: Any) -> Any:
    """Build ``node['_target_'](**rest)`` after checking the arguments."""
    node = dict(node)
    target = locate(node.pop("_target_"))
    check_arguments(target, node, where)
    return target(**node, **extra)


@dataclass
class RunResult:
    """What a finished or stopped run left behind."""

    run_dir: Path
    checkpoint_dir: Path
    last_checkpoint: Path | None
    global_step: int
    stopped_by_signal: int | None = None


def build_logger(cfg: dict[str, Any], run_dir: Path) -> Logger | bool:
    node = cfg.get("logger")
    if not node:
        return False
    node = dict(node)
    if "save_dir" in node and node["save_dir"] is None:
        node["save_dir"] = str(run_dir)
    target = node.get("_target_", "")
    try:
        logger = instantiate(node, "logger")
        if target.endswith("WandbLogger"):
            _ = logger.experiment  # start wandb now, so a failure falls back before training starts
        return logger
    except UserError:
        raise
    except Exception as exc:
        warnings.warn(f"the logger {target} could not start ({type(exc).__name__}: {exc}); logging to CSV in {run_dir} instead",
                      stacklevel=1)
        return CSVLogger(save_dir=str(run_dir), name="csv")


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
    """The checkpoint loads (one sentence if corrupt) and fits the configured network and loss layers."""
    from fastnst.checkpoint import META_KEY, read_checkpoint

    meta = read_checkpoint(ckpt_path).get(META_KEY) or {}
    if not meta:
        raise UserError(f"ckpt_path {ckpt_path} was not written by fastnst training; it cannot be resumed")
    now = module.metadata()
    if meta.get("network") != now["network"]:
        raise UserError(f"ckpt_path {ckpt_path} holds a network {meta.get('network')} but the config builds "
                        f"{now['network']}; resume with the run's own model settings")
    for key in ("content_layers", "style_layers"):
        if sorted(meta.get("loss", {}).get(key, {})) != sorted(now["loss"][key]):
            raise UserError(f"ckpt_path {ckpt_path} was trained with loss.{key}={sorted(meta['loss'][key])}, the config "
                            f"says {sorted(now['loss'][key])}; resume with the run's own loss settings")
    if Path(meta.get("style_image", "")).name != Path(now["style_image"]).name:
        warnings.warn(f"resuming with style.image={now['style_image']}, but the checkpoint's style targets come from "
                      f"{meta.get('style_image')} and are the ones kept", stacklevel=1)


def build_module(cfg: dict[str, Any]) -> StyleTransferModule:
    style = cfg["style"]
    optim = dict(cfg.get("optim") or {})
    unknown = set(optim) - set(MODULE_OPTIM_KEYS)
    if unknown:
        raise UserError(f"optim.{sorted(unknown)[0]} is not an optimizer setting (valid: {', '.join(MODULE_OPTIM_KEYS)})")
    from fastnst.losses import PerceptualLoss
    from fastnst.network import TransformerNet

    check_arguments(TransformerNet, cfg.get("model") or {}, "model")
    check_arguments(PerceptualLoss, cfg.get("loss") or {}, "loss")
    kwargs = dict(style_image=style["image"], style_size=style.get("size"), style_name=style.get("name"),
                  network=cfg.get("model") or {}, loss=cfg.get("loss") or {}, **optim,
                  channels_last=cfg.get("channels_last", False), compile=cfg.get("compile", False),
                  on_nonfinite=cfg.get("on_nonfinite", "stop"))
    check_arguments(StyleTransferModule, kwargs, "config")
    if not style.get("image"):
        raise UserError("style.image is not set; pass style.image=/path/to/painting.jpg")
    return StyleTransferModule(**kwargs)


def fit(cfg: dict[str, Any], run_dir: str | Path, callbacks: list[pl.Callback] | None = None) -> RunResult:
    """Train as configured; checkpoints under ``run_dir/checkpoint.dir``. Raises :class:`UserError`.

    ``callbacks`` are added to fastnst's own (checkpoints, previews, report, graceful stop)."""
    run_dir = Path(run_dir)
    ckpt_cfg = cfg.get("checkpoint") or {}
    checkpoint_dir = run_dir / ckpt_cfg.get("dir", "checkpoints")
    check_writable(checkpoint_dir, CHECKPOINT_BYTES)
    remove_stale_temporaries(checkpoint_dir)
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)

    # Up-front checks, cheapest first: data folder, style image and VGG weights, resume file.
    datamodule = instantiate(cfg["data"], "data")
    datamodule.scan()
    module = build_module(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), checkpoint_dir)
    if ckpt_path:
        check_resumable(ckpt_path, module)
    elif any(checkpoint_dir.glob("*.ckpt")):
        raise UserError(f"{checkpoint_dir} already holds checkpoints of an earlier run; resume it with ckpt_path=last, "
                        f"or start a new run in another folder (hydra.run.dir=...)")

    every = int(ckpt_cfg.get("every_n_steps", 500))
    stopper = GracefulStop(str(checkpoint_dir))
    periodic = ModelCheckpoint(dirpath=str(checkpoint_dir), filename="step{step:07d}", auto_insert_metric_name=False,
                               every_n_train_steps=every if every > 0 else None, save_top_k=-1, save_last=True,
                               save_on_train_epoch_end=False, enable_version_counter=False)
    callbacks: list[pl.Callback] = [
        periodic,
        ImagePreview(**(cfg.get("preview") or {}), dirpath=str(run_dir)),
        RunReport(str(checkpoint_dir)),
        stopper,
        *(callbacks or []),
    ]
    if (cfg.get("trainer") or {}).get("enable_progress_bar") is not False:
        callbacks.append(StepProgressBar())
    trainer_cfg = dict(cfg.get("trainer") or {})
    for key in ("logger", "callbacks", "plugins", "default_root_dir", "use_distributed_sampler"):
        if key in trainer_cfg:
            raise UserError(f"trainer.{key} is set by fastnst itself; use the logger group, checkpoint.* or hydra.run.dir instead")
    check_arguments(pl.Trainer, trainer_cfg, "trainer")
    logger = build_logger(cfg, run_dir)
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
    if trainer.world_size > 1 and module.hparams.on_nonfinite == "skip":
        raise UserError("on_nonfinite=skip works on one device only (DDP cannot skip a step on one rank); use on_nonfinite=stop")
    try:
        with warnings.catch_warnings():
            # Our sampler resumes mid-epoch from the global step, which Lightning cannot see.
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode")  # the frozen VGG, on purpose
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except NonFiniteLossError as exc:
        raise UserError(str(exc)) from None
    last = checkpoint_dir / "last.ckpt"
    if stopper.saved_path is None and not (every > 0 and trainer.global_step % every == 0):
        # The end of training gets a step-numbered checkpoint too, not only every N steps (a multiple of N
        # was just saved by the periodic checkpoint). A signal arriving now waits until both are written.
        with stopper.guard():
            trainer.save_checkpoint(checkpoint_dir / f"step{trainer.global_step:07d}.ckpt", weights_only=False)
            trainer.save_checkpoint(last, weights_only=False)
    # A signal after the last step (during the final save) does not make a finished run a stopped one.
    stopped = stopper.signal_received if stopper.saved_path is not None else None
    return RunResult(run_dir, checkpoint_dir, last if last.exists() else None, trainer.global_step, stopped)

