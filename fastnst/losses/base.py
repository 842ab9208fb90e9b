"""What a loss term is: :class:`LossTerm` reads :class:`LossInputs` and returns an unweighted scalar; the composer
(:class:`fastnst.losses.PerceptualLoss`) weighs and sums the terms. The built-in terms and the ones added with
``loss.terms`` derive from it alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LossInputs:
    """What a term may look at. ``features``: VGG features of ``output`` for every layer any term asked for;
    ``content_features``: those of the content images at the content layers; ``styles``: [N] style indices
    (None: style 0); ``stylize``: the network under training with the same styles (for terms that run it
    again, such as a stability term), None outside training; ``seed``: the seed of this step's random draws
    (a function of the run's seed and the step, so that resumed runs draw the same; None: 0); ``style_grams``:
    each image's own style targets (a network that takes any painting), used instead of the stored ones."""

    output: torch.Tensor
    content: torch.Tensor | None
    features: dict[str, torch.Tensor]
    content_features: Mapping[str, torch.Tensor]
    styles: torch.Tensor | None = None
    stylize: Callable[[torch.Tensor], torch.Tensor] | None = None
    seed: int | None = None
    style_grams: Mapping[str, torch.Tensor] | None = None  # [N, C, C] per style layer: each image's own target
    details: dict[str, torch.Tensor] = field(default_factory=dict)  # terms add named unweighted parts here


class LossTerm(nn.Module):
    """A loss term: ``forward(inputs: LossInputs) -> scalar tensor`` (unweighted; the composer weighs it).

    ``vgg_layers`` names the VGG19 layers of the output it reads from ``inputs.features``; ``needs_network``
    says it calls ``inputs.stylize`` (training passes it only to losses that have such a term)."""

    vgg_layers: tuple[str, ...] = ()
    needs_network: bool = False
