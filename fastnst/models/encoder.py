"""The style encoder of networks that take any painting: a painting in, a style vector out.

Ghiasi et al. 2017 ("Exploring the structure of a real-time, arbitrary neural artistic stylization network")
predict a 100-d style vector from the painting with a pretrained Inception-v3 and map it linearly to every
conditional instance norm's scale and shift. What a painting's style *is* to these networks is a set of feature
statistics (Gatys et al.'s Gram matrices; Huang & Belongie 2017, AdaIN: channel means and standard deviations),
so the encoder here is a small CNN whose per-stage channel means and standard deviations go through a small
MLP to the vector, trained end to end with the transformation network under the usual Gram + content loss
(MicroAST, Wang et al. AAAI 2023, shows such light encoders trained end to end are enough for arbitrary
style transfer). It needs no second pretrained network, so it works the same with ImageNet VGG19 and with
the random VGG of the tests, and the VGG19 loss network never becomes part of a deployed model. See
docs/any-painting.md for the comparison with an encoder on frozen VGG19 features.

The norm side lives in :class:`fastnst.models.layers.StyleNorm` (:meth:`~StyleNorm.add_base`): one linear map
per norm from the vector to its scale and shift. :func:`make_arbitrary` turns a registered network into one
that takes a painting; the ``johnson`` and ``mobile`` networks call it when built with ``style_dim``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastnst.models.layers import add_style_bases

DEFAULT_STYLE_DIM = 100  # Ghiasi et al.'s bottleneck
DEFAULT_PAINTING_SIZE = 256  # longer side of the painting the encoder sees (Ghiasi et al.: 256)
MIN_PAINTING_SIDE = 32  # four stride-2 stages leave at least 2x2 positions for the statistics


class StyleEncoder(nn.Module):
    """Painting [N, 3, H, W] in [0, 1] (any H, W >= 32; trained on ``painting_size`` px) -> style vector [N, D].

    Four stride-2 3x3 convolutions with ReLU (``channels``); the channel means and standard deviations of each
    stage's output (Huang & Belongie 2017) are concatenated and mapped by a two-layer MLP (``hidden``) to the
    ``style_dim`` vector. No normalisation layer: it would erase the very statistics that describe the style.
    """

    def __init__(self, style_dim: int = DEFAULT_STYLE_DIM, channels: tuple[int, ...] | list[int] = (32, 64, 128, 256),
                 hidden: int = 256, painting_size: int = DEFAULT_PAINTING_SIZE) -> None:
        super().__init__()
        if style_dim < 1 or hidden < 1 or not channels:
            raise ValueError(f"style_dim, hidden and channels must be positive, got {style_dim}, {hidden}, {channels}")
        if painting_size < MIN_PAINTING_SIDE:
            raise ValueError(f"painting_size must be at least {MIN_PAINTING_SIDE} px, got {painting_size}")
        self.style_dim, self.hidden, self.painting_size = int(style_dim), int(hidden), int(painting_size)
        self.channels = [int(c) for c in channels]
        cin = 3
        stages = []
        for c in self.channels:
            stages.append(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, c, 3, 2), nn.ReLU(inplace=True)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.Linear(2 * sum(self.channels), self.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(self.hidden, self.style_dim))

    def forward(self, painting: torch.Tensor) -> torch.Tensor:
        x = painting - 0.5
        stats = []
        for stage in self.stages:
            x = stage(x)
            var, mean = torch.var_mean(x, dim=(2, 3), unbiased=False)
            stats += [mean, torch.sqrt(var + 1e-5)]
        return self.head(torch.cat(stats, dim=1))

    def config(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "hidden": self.hidden, "painting_size": self.painting_size}


def style_rows(num_styles: int, style_dim: int | None) -> int:
    """Rows of every norm's tables: ``num_styles`` trained styles, or the ``style_dim`` of a network that takes a
    painting (which then holds no trained style: ``num_styles`` must be 1)."""
    if style_dim is None:
        return int(num_styles)
    if int(num_styles) != 1:
        raise ValueError("a network with style_dim takes its style from a painting; it holds no trained styles "
                         f"(num_styles must be 1, got {num_styles})")
    if int(style_dim) < 1:
        raise ValueError(f"style_dim must be at least 1, got {style_dim}")
    return int(style_dim)


def make_arbitrary(net: nn.Module, style_dim: int | None, encoder: dict[str, Any] | None) -> dict[str, Any]:
    """With ``style_dim``: give ``net`` a :class:`StyleEncoder` (``net.encoder``) and turn its norms into linear
    maps from the style vector; returns the config entries that rebuild this (``{}`` without ``style_dim``)."""
    if style_dim is None:
        if encoder:
            raise ValueError("encoder settings need style_dim (a network that takes a painting)")
        return {}
    add_style_bases(net)
    net.encoder = StyleEncoder(int(style_dim), **(encoder or {}))
    return {"style_dim": int(style_dim), "encoder": net.encoder.config()}


def takes_painting(net: nn.Module) -> bool:
    """Whether ``net`` maps a painting to its style (has a style encoder)."""
    return isinstance(getattr(net, "encoder", None), nn.Module)
