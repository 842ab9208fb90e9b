"""Hydra's entry into training: ``fastnst train`` and ``python train.py`` both run :func:`main`.

The configs are the package's own (``fastnst.conf``: the repository's conf/ in a source checkout, the
installed package data otherwise), so an installed fastnst trains from any folder. Before Hydra starts, the
overrides are composed once (:mod:`fastnst.training.hydra_checks`), so that a misspelt key, an unknown option
or a wrong type ends in one sentence instead of Hydra's multi-line report.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fastnst.cli import file_error, quiet_on_broken_pipe
from fastnst.errors import UserError
from fastnst.presets import CONF_DIR
from fastnst.training.hydra_checks import check_command_line, override_value, register_trainer_schema
from fastnst.training.run import fit

register_trainer_schema()
# How this process was started (e.g. ``python train.py`` or ``fastnst train``): the resume hint repeats it.
_invocation: list[str] = [sys.executable, "train.py"]


def one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker comes back wrapped with the worker's traceback."""
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def resume_hint(run_dir: str) -> str:
    """The command that continues this run: the command that was used, the same overrides."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    # Quoted twice where needed: for Hydra's override grammar (a space, a comma, a non-ASCII letter), then for the shell.
    return shlex.join([*_invocation, *overrides, "ckpt_path=last", f"hydra.run.dir={override_value(run_dir)}"])


def _fail(message: str) -> None:
    print(f"fastnst: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _train(cfg: DictConfig) -> None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # a missing mandatory value (???) or a broken interpolation
        _fail(f"{str(exc).splitlines()[0]}; set it on the command line, e.g. "
              f"data.root=/path/to/photos style.image=/path/to/painting.jpg")
    try:
        result = fit(plain, run_dir)
    except UserError as exc:
        _fail(one_line(str(exc)))
    except OSError as exc:  # a full disk or a folder made read-only during the run; checkpoints so far are kept
        if exc.filename is None:
            raise
        _fail(file_error(exc))
    if result.stopped_by_signal is not None:
        import signal

        print(f"fastnst: stopped by {signal.Signals(result.stopped_by_signal).name} at step {result.global_step}; "
              f"checkpoint saved to {result.last_checkpoint}.\nResume with:\n  {resume_hint(run_dir)}", file=sys.stderr)
        sys.exit(128 + int(result.stopped_by_signal))
    if result.last_checkpoint is None:
        print(f"fastnst: finished at step {result.global_step}; no checkpoint was written (no training step ran)")
    else:
        print(f"fastnst: finished at step {result.global_step}; checkpoint {result.last_checkpoint}")


@quiet_on_broken_pipe
def main(argv: Sequence[str] | None = None, invocation: Sequence[str] | None = None) -> None:
    """Train with Hydra overrides ``argv`` (default: the process's arguments); exits with Hydra's status.
    ``invocation`` is how the command was typed (it starts the printed resume command)."""
    global _invocation
    args = list(sys.argv[1:] if argv is None else argv)
    # Hydra's parser takes -m/--multirun only before the overrides (after one, the rest is "unrecognized"). An override
    # never starts with "-", so the flag moves to the front wherever it was typed.
    sweep = [a for a in args if a in ("-m", "--multirun")]
    args = sweep[:1] + [a for a in args if a not in ("-m", "--multirun")]
    if invocation is not None:
        _invocation = list(invocation)
    problem = check_command_line(args, CONF_DIR)
    if problem:
        _fail(problem)
    sys.argv = [sys.argv[0], *args]  # Hydra reads the command line from sys.argv
    _train()
