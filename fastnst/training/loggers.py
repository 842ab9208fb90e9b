"""The logger of a run (the ``logger`` group), and how a resumed run keeps logging where it left off.

A resumed run appends to its own log instead of starting another: the CSV file of the same version folder
(Lightning's CSVLogger would delete it), the same TensorBoard folder, the same wandb run id.
"""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger

from fastnst.errors import UserError
from fastnst.training.config import instantiate


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a ``metrics.csv`` already in the log folder (a resumed run's
    earlier part) is kept and appended to; Lightning's own writer deletes it."""

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        rows: list[dict[str, str]] = []
        keys: list[str] = []
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                keys, rows = list(reader.fieldnames or []), list(reader)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted")
            writer = super().experiment  # removes metrics.csv: its rows are put back below
        if rows:
            writer.metrics_keys, writer.metrics = keys, rows
            writer.save()
        return writer


def _latest_version(folder: Path) -> int | None:
    versions = [int(m.group(1)) for p in folder.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(versions) if versions else None


def _wandb_run_id(folder: Path) -> str | None:
    """The id of the newest wandb run stored under ``folder`` (``wandb/offline-run-DATE-ID`` or ``run-DATE-ID``)."""
    runs = sorted((p for p in folder.glob("wandb/*run-*-*") if p.is_dir()), key=lambda p: p.name.split("-", 2)[-1])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def resume_settings(node: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The logger settings that continue the earlier part of a resumed run in ``run_dir``."""
    target = str(node.get("_target_", ""))
    save_dir = Path(node.get("save_dir") or run_dir)
    if target.endswith(("CSVLogger", "TensorBoardLogger")) and node.get("version") is None:
        version = _latest_version(save_dir / str(node.get("name", "lightning_logs")))
        if version is not None:
            return {**node, "version": version}
    if target.endswith("WandbLogger") and not node.get("id"):
        run_id = _wandb_run_id(save_dir)
        if run_id:
            return {**node, "id": run_id, "resume": "allow"}
    return node


def build_logger(cfg: dict[str, Any], run_dir: Path, resuming: bool = False) -> Logger | bool:
    """The logger of the ``logger`` group (``save_dir: null`` is the run folder); CSV if it cannot start.
    ``resuming``: the run continues a checkpoint of ``run_dir``, so its log continues too."""
    node = cfg.get("logger")
    if not node:
        return False
    node = dict(node)
    if "save_dir" in node and node["save_dir"] is None:
        node["save_dir"] = str(run_dir)
    if resuming:
        node = resume_settings(node, run_dir)
    target = node.get("_target_", "")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted")
            logger = instantiate(node, "logger")
        if str(target).endswith("WandbLogger"):
            _ = logger.experiment  # start wandb now, so a failure falls back before training starts
        return logger
    except UserError:
        raise
    except Exception as exc:
        warnings.warn(f"the logger {target} could not start ({type(exc).__name__}: {exc}); logging to CSV in "
                      f"{run_dir} instead", stacklevel=1)
        return ResumableCSVLogger(save_dir=str(run_dir), name="csv")
