"""The one registry of image transformation networks, used by training, inference and export.

An architecture is an ``nn.Module`` class registered under a name (timm's ``register_model`` /
``create_model``). Its contract:

- ``__init__(**config)`` takes plain values only (ints, floats, strings, lists) and ``num_styles``;
- ``config()`` returns those constructor arguments, so ``create_model(name, **net.config())`` rebuilds it;
- ``forward(x, style=None)``: ``x`` is float RGB [N, 3, H, W] in [0, 1], any H, W >= 5; ``style`` is
  None (a one-style network), [N, num_styles] style weights per image or [1, num_styles] for the whole
  batch (a one-hot row picks a style, a convex combination blends); the output has x's shape, in [0, 1].

Architectures outside this package register through the ``fastnst.models`` entry-point group
(``[project.entry-points."fastnst.models"] mynet = "mypkg.mynet"``): the module is imported the first
time an unknown name is asked for, and registers itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from fastnst.errors import UserError

ENTRY_POINT_GROUP = "fastnst.models"
M = TypeVar("M", bound=type[nn.Module])
_MODELS: dict[str, type[nn.Module]] = {}
_plugins_loaded = False


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make an architecture available as ``model=NAME`` and to every model loader."""

    def add(cls: M) -> M:
        if not callable(getattr(cls, "config", None)):
            raise TypeError(f"architecture {name!r}: {cls.__name__} must define config() -> its constructor arguments")
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"architecture {name!r} is registered twice ({_MODELS[name].__qualname__}, {cls.__qualname__})")
        cls.architecture = name  # type: ignore[attr-defined]
        _MODELS[name] = cls
        return cls

    return add


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the built-in architectures
            import warnings

            warnings.warn(f"fastnst: the model plugin {ep.name} ({ep.value}) failed to import: {exc}", stacklevel=2)


def list_models() -> list[str]:
    """Names of the registered architectures (plugins included)."""
    _load_plugins()
    return sorted(_MODELS)


def model_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; a :class:`UserError` listing the known names otherwise."""
    if name not in _MODELS:
        _load_plugins()
    if name not in _MODELS:
        raise UserError(f"unknown network architecture {name!r}; registered: {', '.join(list_models())} "
                        f"(add one with @fastnst.models.register_model)")
    return _MODELS[name]


def create_model(architecture: str, **config: Any) -> nn.Module:
    """Build the registered ``architecture`` with its constructor arguments."""
    cls = model_class(architecture)
    try:
        return cls(**config)
    except TypeError as exc:  # an argument the architecture does not take
        raise UserError(f"model settings {config} do not fit the {architecture!r} architecture ({exc})") from None
