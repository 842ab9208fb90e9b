"""Perceptual losses: pure functions first, then one small module that composes them.

All images are [N, 3, H, W] RGB in [0, 1]; ImageNet normalisation happens inside the VGG trunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fastnst.errors import UserError
from fastnst.vgg import VGGFeatures

GramNorm = Literal["hw", "chw"]


def gram_matrix(features: torch.Tensor, norm: GramNorm = "hw") -> torch.Tensor:
    """Gram matrix of [N, C, H, W] features -> [N, C, C], always computed in float32.

    Each [C, H, W] map is reshaped to F = [C, H*W] and G = F @ F.T, divided by H*W (``"hw"``, the seed
    text's definition) or by C*H*W (``"chw"``, Johnson et al. / pytorch-examples). Float32 because
    fp16 Gram sums overflow and bf16 ones lose the small differences the style loss is made of.
    """
    n, c, h, w = features.shape
    if norm not in ("hw", "chw"):
        raise ValueError(f"gram norm must be 'hw' or 'chw', got {norm!r}")
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.reshape(n, c, h * w).float()
        g = torch.bmm(f, f.transpose(1, 2))
    return g / (h * w if norm == "hw" else c * h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared feature difference."""
    return F.mse_loss(features.float(), target.float())


def style_loss(grams: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
               weights: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum over layers of the mean squared Gram difference; also returns the per-layer terms.

    A [1, C, C] target broadcasts over a batch of [N, C, C] Grams (no repeated style image).
    """
    per_layer = {name: F.mse_loss(grams[name], targets[name].expand_as(grams[name])) for name in weights}
    total = sum(weights[name] * value for name, value in per_layer.items())
    return total, per_layer  # type: ignore[return-value]


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (anisotropic, squared TV)."""
    dh = images[..., 1:, :] - images[..., :-1, :]
    dw = images[..., :, 1:] - images[..., :, :-1]
    return dh.float().pow(2).mean() + dw.float().pow(2).mean()


def _as_weights(layers: Mapping[str, float] | list[str] | tuple[str, ...], what: str) -> dict[str, float]:
    if isinstance(layers, Mapping):
        out = {str(k): float(v) for k, v in layers.items()}
    else:
        out = {str(k): 1.0 for k in layers}
    if not out:
        raise UserError(f"{what} is empty; name at least one VGG19 layer such as relu4_2")
    return out


class PerceptualLoss(nn.Module):
    """Content + style + total variation loss under a frozen VGG19.

    Args:
        content_layers, style_layers: layer names, or ``{name: weight}``.
        content_weight, style_weight, tv_weight: term weights.
        gram_norm: see :func:`gram_matrix`.
        vgg_weights, vgg_pooling: see :class:`fastnst.vgg.VGGFeatures`.
        style_image: [1, 3, H, W] in [0, 1]; its Gram matrices become buffers, computed once.
    """

    def __init__(self, content_layers: Mapping[str, float] | list[str], style_layers: Mapping[str, float] | list[str],
                 content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 0.0,
                 gram_norm: GramNorm = "hw", vgg_weights: str = "imagenet", vgg_pooling: str = "max",
                 style_image: torch.Tensor | None = None) -> None:
        super().__init__()
        self.content_layers = _as_weights(content_layers, "loss.content_layers")
        self.style_layers = _as_weights(style_layers, "loss.style_layers")
        if gram_norm not in ("hw", "chw"):
            raise UserError(f"loss.gram_norm must be 'hw' or 'chw', got {gram_norm!r}")
        self.content_weight, self.style_weight, self.tv_weight = float(content_weight), float(style_weight), float(tv_weight)
        self.gram_norm: GramNorm = gram_norm
        self.vgg = VGGFeatures([*self.content_layers, *self.style_layers], vgg_weights, vgg_pooling)
        for name in self.style_layers:
            self.register_buffer(f"style_gram_{name}", torch.empty(0))
        if style_image is not None:
            self.set_style(style_image)

    @torch.no_grad()
    def set_style(self, style_image: torch.Tensor) -> None:
        """Compute the style targets once from a [1, 3, H, W] image in [0, 1]."""
        feats = self.vgg(style_image.to(self.vgg.mean.device, torch.float32))
        for name in self.style_layers:
            setattr(self, f"style_gram_{name}", gram_matrix(feats[name], self.gram_norm))

    def style_targets(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"style_gram_{name}") for name in self.style_layers}

    @torch.no_grad()
    def content_targets(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Content-layer features of [N, 3, H, W] images, without grad (VGG run only as deep as they need)."""
        return self.vgg(content, self.content_layers)

    def forward(self, output: torch.Tensor, content: torch.Tensor | None = None,
                content_feats: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Weighted loss terms of ``output`` against ``content`` (or precomputed ``content_feats``).

        Returns ``total``, ``content``, ``style``, ``tv`` (weighted) and ``style/<layer>`` (unweighted).
        """
        if content_feats is None:
            if content is None:
                raise ValueError("pass content or content_feats")
            content_feats = self.content_targets(content)
        feats = self.vgg(output)
        c = sum(w * content_loss(feats[n], content_feats[n]) for n, w in self.content_layers.items())
        grams = {n: gram_matrix(feats[n], self.gram_norm) for n in self.style_layers}
        s, per_layer = style_loss(grams, self.style_targets(), self.style_layers)
        tv = total_variation(output)
        terms = {"content": self.content_weight * c, "style": self.style_weight * s, "tv": self.tv_weight * tv}
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        terms.update({f"style/{n}": v for n, v in per_layer.items()})
        return terms
