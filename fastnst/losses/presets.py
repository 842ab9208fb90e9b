"""Loss presets: the ``conf/loss/*.yaml`` files train.py composes, read without Hydra for the tools
(``fastnst.optimize``, ``fastnst.evaluate``), so that every tool measures with the settings training used."""

from __future__ import annotations

import inspect
from typing import Any

from fastnst.errors import UserError
from fastnst.losses.perceptual import PerceptualLoss, term_weights
from fastnst.presets import CONF_DIR, read_preset
from fastnst.presets import preset_names as _names

PRESET_DIR = CONF_DIR / "loss"
# The settings a preset may hold: PerceptualLoss's constructor arguments, read from the class itself.
LOSS_KEYS = tuple(p for p in inspect.signature(PerceptualLoss).parameters if p != "style_images")


def preset_names() -> list[str]:
    return _names("loss")


def load_preset(name: str) -> dict[str, Any]:
    """The loss settings of ``conf/loss/<name>.yaml`` (or of a YAML file path) as PerceptualLoss arguments."""
    settings = read_preset("loss", name)
    unknown = sorted(set(settings) - set(LOSS_KEYS))
    if unknown:
        raise UserError(f"loss preset {name} has unknown key {unknown[0]!r}; valid keys are {', '.join(LOSS_KEYS)}")
    return settings


def loss_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The PerceptualLoss arguments among ``settings`` (a checkpoint's stored loss may hold more)."""
    return {k: v for k, v in settings.items() if k in LOSS_KEYS}


def describe_loss(settings: dict[str, Any]) -> str:
    """One line naming the layers, Gram normalisation and the weight of every term of a loss configuration."""
    def names(layers: Any) -> str:
        return ", ".join(layers)

    weights = ", ".join(f"{name} {weight:g}" for name, weight in term_weights(settings).items())
    return (f"content {names(settings.get('content_layers', []))}; style {names(settings.get('style_layers', []))}; "
            f"gram /{settings.get('gram_norm', 'hw')}; weights {weights}")
