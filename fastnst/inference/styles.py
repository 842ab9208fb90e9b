"""The one place that decides how a style reaches a network: a style is a vector throughout.

A network's norms take a style vector of length D (:class:`fastnst.models.StyleNorm`). For a network of trained
styles D is their number and a trained style is a row of the identity (a blend is a convex combination of
rows); for a network that takes any painting a style is its encoder's output for a painting, a saved style is
a stored vector, and a blend is a convex combination of vectors. :func:`style_vector` turns every way a user
names a style (a name, an index, a blend, a painting, a blend of paintings, a vector) into that vector.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.media.painting import painting_tensor

StyleChoice = Union[None, int, str, Mapping[Union[str, int], float], Sequence[float], torch.Tensor]
Painting = Union[Image.Image, str, "os.PathLike[str]"]
# a painting, a blend ``{painting: weight}`` or ``"a.jpg=0.6,b.jpg=0.4"``, or several paintings blended evenly
PaintingChoice = Union[None, Painting, Mapping[Any, float], Sequence[Painting]]


@dataclass
class StyleSpace:
    """The styles a model takes. ``names``: its trained styles, or the saved styles of a network that takes a
    painting; ``vectors``: [K, D] the saved styles' vectors (None: trained styles, one-hot rows); ``dim``: D;
    ``encode``: painting [1, 3, H, W] in [0, 1] -> [D] (None: the model takes no painting); ``painting_size``:
    the longer side the encoder expects."""

    names: list[str]
    vectors: torch.Tensor | None = None
    dim: int = 0
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None
    painting_size: int = 256
    model: str = "the model"

    @property
    def takes_painting(self) -> bool:
        return self.vectors is not None


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


def parse_paintings(text: str) -> dict[str, float]:
    """The ``--style-image`` text: ``PATH`` or a blend ``a.jpg=0.6,b.jpg=0.4`` (weights >= 0, normalised later)."""
    text = text.strip()
    if not text:
        raise UserError("--style-image is empty; give a painting, or a blend such as a.jpg=0.6,b.jpg=0.4")
    if Path(text).expanduser().exists() or "=" not in text:
        return {text: 1.0}
    out: dict[str, float] = {}
    for part in text.split(","):
        path, sep, value = part.rpartition("=")
        if not sep or not path.strip():
            raise UserError(f"--style-image {text!r}: each part of a blend is PAINTING=WEIGHT, e.g. a.jpg=0.6,b.jpg=0.4")
        try:
            out[path.strip()] = out.get(path.strip(), 0.0) + float(value)
        except ValueError:
            raise UserError(f"--style-image {text!r}: the weight of {path.strip()!r} is not a number ({value!r})") from None
    return out


def _painting_weights(painting: PaintingChoice) -> list[tuple[Painting, float]]:
    if isinstance(painting, (Image.Image, os.PathLike)):
        return [(painting, 1.0)]
    if isinstance(painting, str):
        return list(parse_paintings(painting).items())
    if isinstance(painting, Mapping):
        return [(k, float(v)) for k, v in painting.items()]
    return [(p, 1.0) for p in painting]  # type: ignore[union-attr]


def _normalised(values: list[float], what: str) -> list[float]:
    if not values:
        raise UserError(f"the {what} blend is empty")
    if any(not math.isfinite(v) for v in values):
        raise UserError(f"{what} weights must be finite numbers")
    if any(v < 0 for v in values):
        raise UserError(f"{what} weights must not be negative; a blend mixes styles with weights >= 0")
    total = sum(values)
    if total <= 0:
        raise UserError(f"the {what} weights are all 0; give at least one a positive weight")
    return [v / total for v in values]


def encode_paintings(painting: PaintingChoice, space: StyleSpace) -> torch.Tensor:
    """The [D] style vector of a painting or a blend of paintings (a convex combination of their vectors)."""
    if space.encode is None:
        raise UserError(f"{space.model} holds trained styles ({', '.join(space.names)}) and cannot take a painting; "
                        f"choose one with --style, or train a network that takes any painting (style.arbitrary=true)")
    pairs = _painting_weights(painting)
    weights = _normalised([w for _, w in pairs], "style image")
    vector = torch.zeros(space.dim)
    for (p, _), w in zip(pairs, weights):
        if w > 0:  # a painting blended at weight 0 is not read
            vector += w * space.encode(painting_tensor(p, space.painting_size)).reshape(-1).float().cpu()
    return vector


def style_vector(choice: StyleChoice, space: StyleSpace, painting: PaintingChoice = None) -> torch.Tensor | None:
    """The [D] style vector the network gets for a style ``choice`` or a ``painting`` (None: the only style of a
    one-style model). Trained styles: see :func:`style_weights`. A network that takes a painting: a saved style's
    name or index, a blend of saved styles (a convex combination of their vectors), D numbers (the vector as
    it is), or a painting / blend of paintings (:func:`encode_paintings`)."""
    if painting is not None:
        if choice is not None:
            raise UserError("give a style (--style) or a style image (--style-image), not both")
        return encode_paintings(painting, space)
    if not space.takes_painting:
        return style_weights(choice, space.names)
    assert space.vectors is not None
    if choice is None:
        saved = f" or a saved style ({', '.join(space.names)})" if space.names else ""
        raise UserError(f"{space.model} takes the style from a painting: pass --style-image PAINTING (in Python "
                        f"style_image=...){saved}")
    if isinstance(choice, torch.Tensor) or (isinstance(choice, Sequence) and not isinstance(choice, str)):
        vector = torch.as_tensor(choice, dtype=torch.float32).flatten()
        if vector.numel() != space.dim:
            raise UserError(f"a style vector of {vector.numel()} numbers for a network that takes {space.dim}")
        if not torch.isfinite(vector).all():
            raise UserError("the style vector holds NaN or infinite values")
        return vector
    if not space.names:
        raise UserError(f"{space.model} has no saved styles; pass a painting with --style-image (save one with "
                        f"Stylizer.save_style)")
    weights = style_weights(choice, space.names)
    w = torch.ones(1) if weights is None else weights
    return w @ space.vectors
