"""Choosing a style of a multi-style model: a name, an index, or a blend of several."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Union

import torch

from fastnst.errors import UserError

StyleChoice = Union[None, int, str, Mapping[Union[str, int], float], Sequence[float], torch.Tensor]


def _index(key: str | int, names: Sequence[str]) -> int:
    if isinstance(key, str) and key in names:
        return names.index(key)
    text = str(key).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if 0 <= i < len(names):
            return i
        raise UserError(f"style index {i} is out of range: the model holds {len(names)} style(s), 0 to {len(names) - 1} "
                        f"({', '.join(names)})")
    raise UserError(f"the model holds no style {key!r}; its styles are {', '.join(names)}")


def parse_style(text: str) -> StyleChoice:
    """The ``--style`` text: ``NAME``, ``INDEX`` or a blend ``a=0.7,b=0.3`` (names or indices)."""
    text = text.strip()
    if not text:
        raise UserError("--style is empty; give a style name, an index or a blend such as a=0.7,b=0.3")
    if "=" not in text:
        return text
    blend: dict[str | int, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--style {text!r}: each part of a blend is NAME=WEIGHT, e.g. a=0.7,b=0.3")
        try:
            blend[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"--style {text!r}: the weight of {key.strip()!r} is not a number ({value!r})") from None
    return blend


def style_weights(choice: StyleChoice, names: Sequence[str]) -> torch.Tensor | None:
    """[S] float32 weights for ``choice`` (normalised to sum 1), None for a one-style model.

    ``choice``: a style name or index; ``{name or index: weight}`` or ``"a=0.7,b=0.3"`` to blend (weights
    >= 0, not all 0, normalised); S weights as a sequence or tensor. None is the only style of a one-style
    model; a model of several styles needs a choice.
    """
    if isinstance(choice, str):
        choice = parse_style(choice)
    s = len(names)
    if choice is None:
        if s == 1:
            return None
        raise UserError(f"the model holds {s} styles ({', '.join(names)}); choose one by name or index, a blend "
                        f"such as {names[0]}=0.5,{names[1]}=0.5, or every style with stylize_each()")
    if isinstance(choice, (str, int)) and not isinstance(choice, bool):
        weights = torch.zeros(s)
        weights[_index(choice, names)] = 1.0
    elif isinstance(choice, Mapping):
        if not choice:
            raise UserError("the style blend is empty; give NAME=WEIGHT pairs such as a=0.7,b=0.3")
        weights = torch.zeros(s)
        for key, value in choice.items():
            weights[_index(key, names)] += float(value)
    else:
        weights = torch.as_tensor(choice, dtype=torch.float32).flatten()
        if weights.numel() != s:
            raise UserError(f"{weights.numel()} style weights for a model of {s} style(s) ({', '.join(names)})")
    values = weights.tolist()
    if any(not math.isfinite(v) for v in values):
        raise UserError("style weights must be finite numbers")
    if any(v < 0 for v in values):
        bad = [names[i] for i, v in enumerate(values) if v < 0]
        raise UserError(f"style weights must not be negative ({', '.join(bad)}); a blend mixes styles with weights >= 0")
    total = sum(values)
    if total <= 0:
        raise UserError("the style weights are all 0; give at least one style a positive weight")
    weights = weights / total
    return None if s == 1 else weights


def describe_style(weights: torch.Tensor | None, names: Sequence[str]) -> str:
    """``name`` for a pure style, ``a=0.70,b=0.30`` for a blend."""
    if weights is None:
        return names[0]
    parts = [(names[i], float(w)) for i, w in enumerate(weights.tolist()) if w > 0]
    if len(parts) == 1:
        return parts[0][0]
    return ",".join(f"{n}={w:.2f}" for n, w in parts)
