"""What train.py checks before Hydra starts, so that every mistake on the command line is one sentence.

Hydra reports a misspelt key, an unknown option or a wrong type in several lines with exit status 1, and
an unwritable run folder as a traceback. Here the overrides are composed once with Hydra's compose API
(a sweep's first value stands for all of it) and its exceptions become one sentence naming the key and
the valid choices; the run folder is probed by creating (and removing) a folder where Hydra will write.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, Optional

from fastnst.errors import UserError
from fastnst.fileio import FolderLock, launched_rank
from fastnst.training.config import check_model, instantiate

# Fields fastnst sets itself (see fastnst.training.run.fit), so they are not overridable as trainer.NAME.
_TRAINER_OWNED = {"self", "logger", "callbacks", "plugins", "default_root_dir", "use_distributed_sampler"}
_SIMPLE = (int, float, bool, str)
# Flags after which Hydra does not train (help, config printing, shell completion).
_NO_RUN_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                 "--resolve", "--package", "-p")


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


def register_trainer_schema() -> None:
    """Make ``trainer/lightning_trainer`` (the schema conf/trainer/default.yaml extends) known to Hydra."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="trainer", name="lightning_trainer", node=lightning_trainer_schema())


def _overrides(argv: list[str]) -> tuple[list[str], bool]:
    """The key=value overrides of a train.py command line (a sweep reduced to its first value) and whether
    it is a multirun."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = any(a in ("-m", "--multirun") for a in argv)
    raw = [a for a in argv if not a.startswith("-") and "=" in a]
    out = []
    for override in OverridesParser.create().parse_overrides(raw):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()), None)
            key = override.get_key_element()
            out.append(f"{key}={first}" if first is not None else override.input_line)
        else:
            out.append(override.input_line)
    return out, multirun


def _keys_of(conf_dir: Path, overrides: list[str], key: str) -> list[str]:
    """The keys of the config node above ``key`` (composed without the override that named ``key``)."""
    from hydra import compose, initialize_config_dir

    parent = key.rsplit(".", 1)[0] if "." in key else ""
    rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name="train"):
            cfg = compose("train", overrides=rest)
        from omegaconf import OmegaConf

        node = OmegaConf.select(cfg, parent) if parent else cfg
        return [str(k) for k in node.keys()] if node is not None and hasattr(node, "keys") else []
    except Exception:  # noqa: BLE001 - only an aid to the message
        return []


def _composition_problem(argv: list[str], conf_dir: Path) -> str | None:
    """Compose the config as Hydra will; its complaint as one sentence, or None."""
    import re

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    try:
        overrides, _ = _overrides(argv)
    except OverrideParseException as exc:
        return f"cannot read the command line ({str(exc).splitlines()[0]}); overrides look like key=value"
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name="train"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as exc:
        found = re.search(r"Could not find '([\w/]+)/([^']+)'", str(exc))
        options = ", ".join(exc.options or []) if getattr(exc, "options", None) else ""
        if found:
            group, option = found.groups()
            return f"{group}={option} is not an option of the {group} group" + (f"; choose one of {options}" if options else "")
        return str(exc).splitlines()[0]
    except OverrideParseException as exc:
        return f"cannot read the command line ({str(exc).splitlines()[0]}); overrides look like key=value"
    except ConfigCompositionException as exc:
        text = str(exc)
        key = re.search(r"Could not override '([^']+)'", text)
        if key:
            name = key.group(1)
            valid = _keys_of(conf_dir, overrides, name)
            parent = name.rsplit(".", 1)[0] if "." in name else "the config"
            return (f"{name} is not a setting of {parent}" + (f" (valid: {', '.join(valid)})" if valid else "")
                    + f"; to add a new key on purpose use +{name}=...")
        cause = exc.__cause__
        merged = re.search(r"Error merging override (\S+?)=(.*)", text)
        if merged and cause is not None:
            name, value = merged.groups()
            expected = re.search(r"could not be converted to (\w+)", str(cause))
            what = f"expected {expected.group(1).lower()}" if expected else str(cause).splitlines()[0]
            return f"{name}={value!r} has the wrong type: {what}"
        return text.splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - any other composition failure, still one sentence
        return f"the configuration cannot be composed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return _settings_problem(cfg)


def _settings_problem(cfg: Any) -> str | None:
    """The data and model settings checked as training checks them (no file is read): one sentence, or None. A
    missing value (``data.root=???``) or a broken interpolation is left to the training entry, which names it."""
    from omegaconf import OmegaConf

    nodes: dict[str, Any] = {}
    for key in ("style", "model", "data"):
        try:
            nodes[key] = OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True) if key in cfg else None
        except Exception:  # noqa: BLE001 - see above
            nodes[key] = None
    try:
        if isinstance(nodes["model"], dict):
            check_model(nodes["model"], nodes["style"] if isinstance(nodes["style"], dict) else None)
        if isinstance(nodes["data"], dict) and nodes["data"].get("_target_"):
            instantiate(nodes["data"], "data")
    except UserError as exc:
        return str(exc)
    return None


def _run_folder_problem(argv: list[str], multirun: bool) -> str | None:
    """An explicit run folder that cannot be written, or that another training run holds; a multi-process
    launch (srun, torchrun) where every process would pick its own timestamped folder."""
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    explicit = next((a.split("=", 1)[1] for a in argv if a.startswith(key)), None)
    launched = max(int(os.environ.get(k, "1") or 1) for k in ("WORLD_SIZE", "SLURM_NTASKS"))
    if explicit is None and launched > 1 and not multirun:
        return ("this is one of several launched processes; pass the same hydra.run.dir=... to all of them, "
                "so that they share one run folder")
    folder = Path(explicit or ("multirun" if multirun else "runs")).expanduser()
    parent = folder if folder.is_dir() else next((p for p in folder.parents if p.exists()), Path("."))
    try:
        Path(tempfile.mkdtemp(prefix=".fastnst-probe-", dir=parent)).rmdir()
    except OSError as exc:
        return (f"the run folder {folder} cannot be created or written ({exc.strerror or exc}); choose another with "
                f"{key.rstrip('=')}=...")
    if explicit is not None and not multirun and launched_rank() == 0:  # DDP ranks share the folder
        pid = FolderLock.holder(folder)
        if pid is not None:
            who = f"process {pid}" if pid > 0 else "another process"
            return (f"the run folder {folder} is in use by a training run ({who}); wait for it to finish, or start "
                    f"this run in another folder (hydra.run.dir=...)")
    return None


def check_command_line(argv: list[str], conf_dir: Path) -> str | None:
    """The first problem of a train.py command line as one sentence, or None when Hydra may start."""
    if any(a in _NO_RUN_FLAGS for a in argv):
        return None
    register_trainer_schema()
    try:
        _, multirun = _overrides(argv)
    except Exception:  # noqa: BLE001 - reported with the composition below
        multirun = False
    return _run_folder_problem(argv, multirun) or _composition_problem(argv, conf_dir)


def override_value(value: str) -> str:
    """``value`` written for a ``key=value`` override so that Hydra reads it back unchanged: as it is where Hydra's
    grammar allows, else single-quoted (``'`` escaped, and backslashes where they precede a quote or the end)."""
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        if OverridesParser.create().parse_override(f"key={value}").value() == value:
            return value
    except Exception:  # Hydra's lexer or parser refused it: quote it
        pass
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"
