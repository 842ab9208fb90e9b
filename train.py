"""Train a style network: ``python train.py data.root=PHOTOS style.image=PAINTING [key=value ...]``.

Hydra composes conf/train.yaml and the command-line overrides; fastnst.training does the rest.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shlex
import sys
import typing
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

# Fields fastnst sets itself (see fastnst.training.fit), so they are not overridable as trainer.NAME.
_TRAINER_OWNED = {"self", "logger", "callbacks", "plugins", "default_root_dir", "use_distributed_sampler"}
_SIMPLE = (int, float, bool, str)


def _field_type(annotation: Any) -> Any:
    """OmegaConf can check int/float/bool/str and Optional of them; anything richer stays Any."""
    if annotation in _SIMPLE:
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        if inner in _SIMPLE:
            return Optional[inner]
    return Any


def lightning_trainer_schema() -> type:
    """A structured config with every ``pytorch_lightning.Trainer`` argument and its default, built
    from the signature so that ``trainer.NAME=value`` works for all of them without a ``+``, and a
    misspelt name or a wrong scalar type fails before any work starts."""
    import pytorch_lightning as pl

    hints = typing.get_type_hints(pl.Trainer.__init__)
    fields = []
    for name, p in inspect.signature(pl.Trainer.__init__).parameters.items():
        if name in _TRAINER_OWNED or p.kind is not p.KEYWORD_ONLY:
            continue
        default = p.default if isinstance(p.default, (*_SIMPLE, type(None))) else None
        fields.append((name, _field_type(hints.get(name, Any)), dataclasses.field(default=default)))
    return dataclasses.make_dataclass("LightningTrainerConf", fields)


ConfigStore.instance().store(group="trainer", name="lightning_trainer", node=lightning_trainer_schema())


def _run_dir_override(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            return arg.split("=", 1)[1]
    return None


def precheck(argv: list[str]) -> str | None:
    """What Hydra itself would fail on with a traceback, as one sentence: an unwritable run folder, and
    a multi-process launch (srun, torchrun) where every process would pick its own timestamped folder."""
    run_dir = _run_dir_override(argv)
    launched = max(int(os.environ.get(k, "1") or 1) for k in ("WORLD_SIZE", "SLURM_NTASKS"))
    if run_dir is None and launched > 1:
        return ("this is one of several launched processes; pass the same hydra.run.dir=... to all of them, "
                "so that they share one run folder")
    folder = Path(run_dir or "runs").expanduser()
    probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("."))
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        return f"the run folder {folder} cannot be created or written; choose another with hydra.run.dir=..."
    return None


def one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker comes back wrapped with the worker's traceback."""
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def resume_hint(run_dir: str) -> str:
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    return shlex.join(["python", "train.py", *overrides, "ckpt_path=last", f"hydra.run.dir={run_dir}"])


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from fastnst.errors import UserError
    from fastnst.training import fit

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # a missing mandatory value (???) or a broken interpolation
        print(f"fastnst: error: {str(exc).splitlines()[0]}; set it on the command line, e.g. "
              f"data.root=/path/to/photos style.image=/path/to/painting.jpg", file=sys.stderr)
        sys.exit(2)
    try:
        result = fit(plain, run_dir)
    except UserError as exc:
        print(f"fastnst: error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    if result.stopped_by_signal is not None:
        import signal

        print(f"fastnst: stopped by {signal.Signals(result.stopped_by_signal).name} at step {result.global_step}; "
              f"checkpoint saved to {result.last_checkpoint}.\nResume with:\n  {resume_hint(run_dir)}", file=sys.stderr)
        sys.exit(128 + int(result.stopped_by_signal))
    print(f"fastnst: finished at step {result.global_step}; checkpoint {result.last_checkpoint}")


if __name__ == "__main__":
    problem = precheck(sys.argv[1:])
    if problem:
        print(f"fastnst: error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
