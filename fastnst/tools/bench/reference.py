"""The baselines: pytorch/examples ``fast_neural_style`` as it is written (kept here, out of the production
network): its literal upsampling (nearest x2, reflection pad, 3x3 conv on the upsampled copy), pixels in
0-255, its VGG slices run whole for every input, and its training loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastnst.losses.vgg import VGG19_LAYERS
from fastnst.models import TransformerNet, create_model


def reference_forward(net: TransformerNet, x: torch.Tensor) -> torch.Tensor:
    """``net``'s function computed as pytorch/examples computes its network: nearest x2 upsampling, then the
    padded 3x3 convolution on the upsampled copy (fastnst computes the same at low resolution, upsample_conv)."""

    def up(layer: nn.Module, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if layer.mode != "nearest":
            return layer(y, like)
        y = layer.conv(F.interpolate(y, scale_factor=2, mode="nearest"))
        return layer.post(y[..., : like.shape[-2], : like.shape[-1]])

    y0 = net.inp(x)
    y1 = net.down1(y0)
    y = net.down2(y1)
    for block in net.res:
        y = block(y)
    y = up(net.up2, up(net.up1, y, y1), y0)
    return torch.sigmoid(net.out(y))


def _normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    """pytorch/examples' utils.normalize_batch: 0-255 -> ImageNet-normalised, constants built per call."""
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch / 255.0
    return (batch - mean) / std

def _reference_gram(y: torch.Tensor, norm: str) -> torch.Tensor:
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    return features.bmm(features_t) / (h * w if norm == "hw" else ch * h * w)

class ReferenceVGG(nn.Module):
    """pytorch/examples' Vgg16 pattern on VGG19: consecutive slices ending at the loss layers, every
    slice run for every input (content images go through to the deepest style layer too)."""

    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__()
        from torchvision.models import vgg19

        ends = sorted({VGG19_LAYERS.index(n) + 1 for n in layers})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            features = vgg19(weights=None).features[: ends[-1]]
        for m in features:
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.names = [VGG19_LAYERS[e - 1] for e in ends]
        self.slices = nn.ModuleList(features[a:b] for a, b in zip([0, *ends[:-1]], ends))
        for p in self.parameters():
            p.requires_grad = False

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, s in zip(self.names, self.slices):
            x = s(x)
            out[name] = x
        return out

class ReferenceTrainer:
    """A naive training step written the way pytorch/examples does it (fp32, eager, NCHW, 0-255)."""

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], style: torch.Tensor, batch_size: int,
                 device: torch.device, lr: float = 1e-3) -> None:
        self.content_layers = list(loss["content_layers"])
        self.style_layers = list(loss["style_layers"])
        self.cw, self.sw, self.norm = float(loss["content_weight"]), float(loss["style_weight"]), loss["gram_norm"]
        self.transformer = create_model(**{"architecture": "johnson", **model}).to(device).train()
        self.vgg = ReferenceVGG([*self.content_layers, *self.style_layers]).to(device)
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), lr)
        style = style.to(device).mul(255).repeat(batch_size, 1, 1, 1)
        features_style = self.vgg(_normalize_batch(style))
        self.gram_style = {n: _reference_gram(features_style[n], self.norm) for n in self.style_layers}

    def step(self, x: torch.Tensor) -> float:
        """One step on [N, 3, H, W] pixels in 0-255."""
        n_batch = len(x)
        self.optimizer.zero_grad()
        # pytorch/examples' network upsamples literally (nearest x2, pad, conv) and outputs 0-255; ours ends in
        # a sigmoid and computes the same upsampling at low resolution (upsample_conv).
        y = reference_forward(self.transformer, x) * 255.0
        y = _normalize_batch(y)
        x = _normalize_batch(x)
        features_y = self.vgg(y)
        features_x = self.vgg(x)
        content_loss = sum(self.cw * F.mse_loss(features_y[n], features_x[n]) for n in self.content_layers)
        style_loss = 0.0
        for n in self.style_layers:
            gm_y = _reference_gram(features_y[n], self.norm)
            style_loss = style_loss + F.mse_loss(gm_y, self.gram_style[n][:n_batch, :, :])
        total = content_loss + self.sw * style_loss
        total.backward()
        self.optimizer.step()
        return float(total.detach())
