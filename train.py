"""Train a style network: ``python train.py data.root=PHOTOS style.image=PAINTING [key=value ...]``.

Hydra composes conf/train.yaml and the command-line overrides; fastnst.training does the rest. Before
Hydra starts, the overrides are composed once here, so that a misspelt key, an unknown option or a wrong
type ends in one sentence (fastnst.training.hydra_checks) instead of Hydra's multi-line report.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fastnst.training.hydra_checks import check_command_line, override_value, register_trainer_schema

CONF = Path(__file__).resolve().parent / "conf"
register_trainer_schema()


def one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker comes back wrapped with the worker's traceback."""
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def resume_hint(run_dir: str) -> str:
    """The command that continues this run: the interpreter and script that were used, the same overrides."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    # Quoted twice where needed: for Hydra's override grammar (a space, a comma, a non-ASCII letter), then for the shell.
    return shlex.join([sys.executable, sys.argv[0], *overrides, "ckpt_path=last",
                       f"hydra.run.dir={override_value(run_dir)}"])


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
    except OSError as exc:  # a full disk or a folder made read-only during the run; checkpoints so far are kept
        if exc.filename is None:
            raise
        from fastnst.cli import file_error

        print(f"fastnst: error: {file_error(exc)}", file=sys.stderr)
        sys.exit(2)
    if result.stopped_by_signal is not None:
        import signal

        print(f"fastnst: stopped by {signal.Signals(result.stopped_by_signal).name} at step {result.global_step}; "
              f"checkpoint saved to {result.last_checkpoint}.\nResume with:\n  {resume_hint(run_dir)}", file=sys.stderr)
        sys.exit(128 + int(result.stopped_by_signal))
    if result.last_checkpoint is None:
        print(f"fastnst: finished at step {result.global_step}; no checkpoint was written (no training step ran)")
    else:
        print(f"fastnst: finished at step {result.global_step}; checkpoint {result.last_checkpoint}")


if __name__ == "__main__":
    problem = check_command_line(sys.argv[1:], CONF)
    if problem:
        print(f"fastnst: error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
