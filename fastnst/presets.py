"""The presets of ``conf/`` (the files train.py's Hydra composes), read without Hydra by the tools, so that
``fastnst.optimize``, ``fastnst.evaluate`` and ``fastnst.bench`` use exactly the settings training uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastnst.errors import UserError


def conf_dir(module_file: str | Path = __file__) -> Path:
    """conf/ of the source checkout (what train.py's Hydra reads), else the copy a regular install ships as
    the package data ``fastnst.conf`` (pyproject.toml). Found through the package's ``__path__``, not
    ``importlib.resources.files``: on Python 3.11 that fails for namespace packages of editable installs."""
    repo = Path(module_file).resolve().parents[1] / "conf"
    if (repo / "train.yaml").is_file():
        return repo
    try:
        import fastnst.conf
    except ImportError:
        return repo  # nothing installed either: read_preset says where it looked
    return next((Path(d) for d in fastnst.conf.__path__ if (Path(d) / "train.yaml").is_file()), repo)


CONF_DIR = conf_dir()


def preset_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def read_preset(group: str, name: str) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` (or a YAML file path) as plain data, read with OmegaConf as Hydra reads it
    (``1.0e5`` is a float there, a string in PyYAML); Hydra's own keys (``defaults``) are left out."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    is_file = name.endswith((".yaml", ".yml")) or "/" in name
    path = Path(name).expanduser() if is_file else CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"{group} preset {name!r} does not exist; choose one of {', '.join(preset_names(group))} "
                        f"(files in {CONF_DIR / group}) or pass the path of a .yaml file")
    try:
        settings = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, YAMLError, OmegaConfBaseException) as exc:
        raise UserError(f"{group} preset {path} is not readable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(settings, dict) or not settings:
        raise UserError(f"{group} preset {path} must be a mapping of settings")
    settings.pop("defaults", None)
    return settings
