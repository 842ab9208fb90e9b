"""One small module that composes the loss terms under a frozen VGG19 and returns them named and weighted.

The built-in terms are content, style, total variation and (for video) the stability term; more are added as
weighted term modules (``terms={name: {"_target_": "pkg.module.Class", "weight": w, ...}}``, built with
``hydra.utils.instantiate``). Built in or added, each is a :class:`~fastnst.losses.base.LossTerm` with a weight
in one list (:func:`term_weights`): every report, log and checkpoint takes its list of terms from the loss
(:attr:`PerceptualLoss.term_names`, :func:`term_weights` of the stored settings), not from a list of its own.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.losses.base import LossInputs, LossTerm
from fastnst.losses.temporal import TemporalTerm
from fastnst.losses.terms import GramNorm, content_loss, gram_distance, gram_matrix, total_variation
from fastnst.losses.vgg import VGGFeatures

STYLE_SAMPLES = "style_per_image"  # key of the [N] per-image style losses (unweighted) in forward's result


class ContentTerm(LossTerm):
    """Weighted sum over layers of the mean squared feature difference to the content image."""

    def __init__(self, layers: Mapping[str, float]) -> None:
        super().__init__()
        self.layers = dict(layers)
        self.vgg_layers = tuple(self.layers)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return sum(w * content_loss(inputs.features[n], inputs.content_features[n]) for n, w in self.layers.items())


class StyleTerm(LossTerm):
    """Weighted sum over layers of the mean squared Gram difference to each image's style.

    Targets are buffers ``gram_<layer>`` of shape [S, C, C], one row per style, computed once
    (:meth:`set_targets`); a batch may mix styles (``inputs.styles``). ``inputs.style_grams`` (each image's own
    painting, computed per batch) replaces them: training on tens of thousands of paintings keeps no target."""

    def __init__(self, layers: Mapping[str, float], gram_norm: GramNorm = "hw") -> None:
        super().__init__()
        self.layers, self.gram_norm = dict(layers), gram_norm
        self.vgg_layers = tuple(self.layers)
        for name in self.layers:
            self.register_buffer(f"gram_{name}", torch.empty(0))

    @torch.no_grad()
    def set_targets(self, features: Sequence[Mapping[str, torch.Tensor]]) -> None:
        """Targets from the VGG features of each style image, in style order."""
        for name in self.layers:
            setattr(self, f"gram_{name}", torch.cat([gram_matrix(f[name], self.gram_norm) for f in features]))

    def targets(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"gram_{name}") for name in self.layers}

    @property
    def num_styles(self) -> int:
        first = getattr(self, f"gram_{next(iter(self.layers))}")
        return int(first.shape[0]) if first.numel() else 0

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        per_image = 0.0
        for name, weight in self.layers.items():
            if inputs.style_grams is not None:
                target = inputs.style_grams[name]
            else:
                target = getattr(self, f"gram_{name}")
                target = target[:1] if inputs.styles is None else target[inputs.styles]
            d = gram_distance(gram_matrix(inputs.features[name], self.gram_norm), target)
            inputs.details[f"style/{name}"] = d.mean()
            per_image = per_image + weight * d
        inputs.details[STYLE_SAMPLES] = per_image.detach()
        return per_image.mean()


class TVTerm(LossTerm):
    """Total variation of the output (smoothness)."""

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return total_variation(inputs.output)


def _as_weights(layers: Mapping[str, float] | Sequence[str], what: str) -> dict[str, float]:
    if isinstance(layers, Mapping):
        out = {str(k): float(v) for k, v in layers.items()}
    else:
        out = {str(k): 1.0 for k in layers}
    if not out:
        raise UserError(f"{what} is empty; name at least one VGG19 layer such as relu4_2")
    return out


BUILT_IN_TERMS = ("content", "style", "tv", "temporal")  # an added term takes none of these names, nor "total"


def term_weights(settings: Mapping[str, Any]) -> dict[str, float]:
    """The weighted terms of a loss with ``settings`` (:class:`PerceptualLoss`'s arguments, e.g. a checkpoint's
    stored loss; missing ones take the constructor's defaults) in the order they are summed: content, style, tv,
    temporal (when its weight is > 0), then the added terms. The loss builds exactly these, and every report
    lists its terms from here or from :attr:`PerceptualLoss.term_names`, never from a list of its own."""
    defaults = {k: p.default for k, p in inspect.signature(PerceptualLoss).parameters.items()}
    get = lambda key: settings.get(key, defaults[key])  # noqa: E731
    weights = {"content": float(get("content_weight")), "style": float(get("style_weight")),
               "tv": float(get("tv_weight"))}
    if float(get("temporal_weight")) > 0:
        weights["temporal"] = float(get("temporal_weight"))
    for name, node in (get("terms") or {}).items():
        weights[str(name)] = float(dict(node).get("weight", 1.0))
    return weights


def _added_term(name: str, node: Mapping[str, Any]) -> LossTerm:
    """An added term built from its node (``_target_``: the class; the other keys but ``weight``: its arguments)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    node = {k: v for k, v in node.items() if k != "weight"}
    if "_target_" not in node:
        raise UserError(f"loss.terms.{name} needs a _target_ (the class of the term, e.g. mypkg.losses.MyTerm)")
    try:
        return instantiate(node)
    except InstantiationException as exc:
        raise UserError(f"loss.terms.{name} could not be built ({str(exc).splitlines()[0][:200]})") from None


class PerceptualLoss(nn.Module):
    """Content + style + total variation (+ the stability term, + any added terms) under a frozen VGG19.

    Every term, built in or added, is a :class:`~fastnst.losses.base.LossTerm` with a weight, built by one loop
    from the list :func:`term_weights` gives for these arguments.

    Args:
        content_layers, style_layers: layer names, or ``{name: weight}``.
        content_weight, style_weight, tv_weight: term weights.
        gram_norm: see :func:`fastnst.losses.terms.gram_matrix`.
        vgg_weights, vgg_pooling: see :class:`fastnst.losses.vgg.VGGFeatures`.
        terms: added terms, ``{name: {"_target_": class path, "weight": w, **arguments}}``.
        temporal_weight, temporal_shift, temporal_zoom, temporal_noise: the stability term for video
            (:class:`fastnst.losses.temporal.TemporalTerm`, named ``temporal``), on when the weight is > 0.
        style_images: [1, 3, H, W] images in [0, 1], one per style; their Gram targets become buffers.
    """

    def __init__(self, content_layers: Mapping[str, float] | list[str], style_layers: Mapping[str, float] | list[str],
                 content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 0.0,
                 gram_norm: GramNorm = "hw", vgg_weights: str = "imagenet", vgg_pooling: str = "max",
                 terms: Mapping[str, Mapping[str, Any]] | None = None, temporal_weight: float = 0.0,
                 temporal_shift: float = 2.0, temporal_zoom: float = 0.03, temporal_noise: float = 0.02,
                 style_images: Sequence[torch.Tensor] | None = None) -> None:
        super().__init__()
        if gram_norm not in ("hw", "chw"):
            raise UserError(f"loss.gram_norm must be 'hw' or 'chw', got {gram_norm!r}")
        self.content_layers = _as_weights(content_layers, "loss.content_layers")
        self.style_layers = _as_weights(style_layers, "loss.style_layers")
        self.content_weight, self.style_weight, self.tv_weight = float(content_weight), float(style_weight), float(tv_weight)
        self.gram_norm: GramNorm = gram_norm
        self._extra = copy.deepcopy(dict(terms or {}))
        reserved = {*BUILT_IN_TERMS, "total"} & set(self._extra)
        if reserved:
            raise UserError(f"loss.terms.{sorted(reserved)[0]} is a built-in term; give the added term another name")
        self.temporal = {"temporal_weight": float(temporal_weight), "temporal_shift": float(temporal_shift),
                         "temporal_zoom": float(temporal_zoom), "temporal_noise": float(temporal_noise)}
        if temporal_weight < 0:
            raise UserError(f"loss.temporal_weight must be >= 0, got {temporal_weight}")
        builders: dict[str, Callable[[], LossTerm]] = {
            "content": lambda: ContentTerm(self.content_layers),
            "style": lambda: StyleTerm(self.style_layers, gram_norm),
            "tv": TVTerm,
            "temporal": lambda: TemporalTerm(temporal_shift, temporal_zoom, temporal_noise),
            **{name: (lambda name=name, node=node: _added_term(name, node)) for name, node in self._extra.items()},
        }
        self.weights = term_weights({"content_weight": content_weight, "style_weight": style_weight,
                                     "tv_weight": tv_weight, "temporal_weight": temporal_weight, "terms": self._extra})
        self.terms = nn.ModuleDict()
        for name in self.weights:
            try:
                term = builders[name]()
            except ValueError as exc:  # a built-in term's settings, e.g. the temporal zoom
                raise UserError(f"loss.{exc}") from None
            if not isinstance(term, LossTerm):
                raise UserError(f"loss.terms.{name}: {self._extra[name]['_target_']} is not a fastnst.losses.LossTerm")
            self.terms[name] = term
        layers = [layer for term in self.terms.values() for layer in term.vgg_layers]
        self.vgg = VGGFeatures(layers, vgg_weights, vgg_pooling)
        if style_images is not None:
            self.set_styles(style_images)

    @property
    def term_names(self) -> list[str]:
        """The weighted terms, in the order they are summed (``total`` is their sum)."""
        return list(self.terms)

    @property
    def needs_network(self) -> bool:
        return any(term.needs_network for term in self.terms.values())

    @property
    def style_term(self) -> StyleTerm:
        return self.terms["style"]  # type: ignore[return-value]

    @property
    def num_styles(self) -> int:
        return self.style_term.num_styles

    def settings(self) -> dict[str, Any]:
        """The constructor arguments (plain data): stored in checkpoints, shown by reports."""
        out: dict[str, Any] = {"content_layers": dict(self.content_layers), "style_layers": dict(self.style_layers),
                               "content_weight": self.content_weight, "style_weight": self.style_weight,
                               "tv_weight": self.tv_weight, "gram_norm": self.gram_norm,
                               "vgg_weights": self.vgg.weights_name, "vgg_pooling": self.vgg.pooling}
        if self._extra:
            out["terms"] = copy.deepcopy(self._extra)
        if self.temporal["temporal_weight"] > 0:
            out.update(self.temporal)
        return out

    @torch.no_grad()
    def set_styles(self, style_images: Sequence[torch.Tensor]) -> None:
        """Compute the style targets once from [1, 3, H, W] images in [0, 1], one per style."""
        device = self.vgg.mean.device
        self.style_term.set_targets([self.vgg(s.to(device, torch.float32), self.style_term.vgg_layers)
                                     for s in style_images])

    @torch.no_grad()
    def style_grams(self, paintings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Style targets of [N, 3, H, W] paintings in [0, 1]: {style layer: [N, C, C] Gram}, float32, no grad."""
        feats = self.vgg(paintings, self.style_term.vgg_layers)
        return {name: gram_matrix(f, self.gram_norm) for name, f in feats.items()}

    @torch.no_grad()
    def content_targets(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Content-layer features of [N, 3, H, W] images, without grad (VGG run only as deep as they need)."""
        return self.vgg(content, self.content_layers)

    def forward(self, output: torch.Tensor, content: torch.Tensor | None = None,
                content_feats: Mapping[str, torch.Tensor] | None = None, styles: torch.Tensor | None = None,
                stylize: Callable[[torch.Tensor], torch.Tensor] | None = None,
                per_image: bool = False, seed: int | None = None,
                style_grams: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Weighted loss terms of ``output`` against ``content`` (or precomputed ``content_feats``) and the
        styles ``styles`` ([N] indices; None: style 0), or each image's own ``style_grams`` (:meth:`style_grams`);
        ``stylize`` and ``seed``: see :class:`LossInputs`.

        Returns scalars: ``total``, each term weighted (``content``, ``style``, ``tv``, added terms) and
        ``style/<layer>`` (unweighted); with ``per_image``, also ``style_per_image`` ([N], unweighted, for
        per-style reports).
        """
        if content_feats is None:
            if content is None:
                raise ValueError("pass content or content_feats")
            content_feats = self.content_targets(content)
        if self.num_styles == 0 and style_grams is None:
            raise ValueError("the loss has no style targets; call set_styles(style_images) first")
        inputs = LossInputs(output=output, content=content, features=self.vgg(output),
                            content_features=content_feats, styles=styles, stylize=stylize, seed=seed,
                            style_grams=style_grams)
        terms = {name: self.weights[name] * term(inputs) for name, term in self.terms.items()}
        terms["total"] = sum(terms.values())  # type: ignore[assignment]
        terms.update(inputs.details)
        if not per_image:
            terms.pop(STYLE_SAMPLES, None)
        return terms
