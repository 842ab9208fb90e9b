"""Frozen VGG19 feature extractor with layers addressed by name (``relu4_2``, ``conv1_1``, ``pool3``).

The trunk is cut after the deepest requested layer, ImageNet normalisation happens inside it (inputs
are [0, 1] RGB), and its weights are non-persistent buffers: the loss network has no parameters, so it
is never in an optimizer, never in a checkpoint and never synchronised by DDP.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from fastnst.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
_BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block in VGG19
MIN_SIZE = 16  # VGG19's deepest blocks need a few pixels left after four poolings
RANDOM_VGG_NOTE = ("VGG19 weights are RANDOM: these numbers and images are only for tests and smoke runs, "
                   "not a measure of style transfer quality")


def _layer_names() -> list[str]:
    names: list[str] = []
    for b, n in enumerate(_BLOCKS, start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


VGG19_LAYERS: list[str] = _layer_names()  # index i is torchvision's vgg19().features[i]


def load_vgg19_state(weights: str) -> dict[str, torch.Tensor] | None:
    """State dict of torchvision's ``vgg19().features`` for ``weights``.

    ``imagenet`` uses torchvision's ImageNet weights (downloaded once into the torch hub cache),
    a path loads a local file (a full VGG19 or a ``features``-only state dict), ``random`` returns
    None (random initialisation, for tests and offline smoke runs only).
    """
    if weights == "random":
        return None
    if weights == "imagenet":
        from torchvision.models import VGG19_Weights

        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_URL)
        try:
            state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=False)
        except Exception as exc:  # URLError, HTTPError, SSL, timeouts: all mean "not downloadable here"
            raise UserError(
                f"could not download the VGG19 ImageNet weights ({type(exc).__name__}: {exc}); "
                f"download {VGG19_URL} on a machine with internet and put it at {cache}, "
                f"or pass loss.vgg_weights=/path/to/vgg19.pth") from None
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"VGG19 weights file {path} does not exist; pass loss.vgg_weights=imagenet, "
                            f"random, or the path of a VGG19 state dict ({VGG19_URL})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"could not read VGG19 weights from {path} ({type(exc).__name__}); "
                            f"expected a torch state dict such as {VGG19_URL}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"VGG19 weights {weights} are not a state dict")
    # Accept torchvision's keys ("features.0.weight"), features-only ones ("0.weight"), and either under a
    # wrapper prefix ("module.", "vgg.", ...).
    feats = {}
    for key, value in state.items():
        parts = key.split(".")
        for i in range(len(parts) - 1):
            if parts[i].isdigit() and parts[i + 1] in ("weight", "bias") and "classifier" not in parts[:i]:
                feats[f"{parts[i]}.{parts[i + 1]}"] = value
                break
    if not feats:
        raise UserError(f"VGG19 weights {weights} hold no convolution weights (keys like features.0.weight)")
    return feats


class VGGFeatures(nn.Module):
    """VGG19 trunk returning ``{name: feature}`` for the requested layers.

    Args:
        layers: names such as ``relu1_1`` or ``conv4_2``; the trunk ends at the deepest one.
        weights: ``imagenet``, ``random`` or a path (see :func:`load_vgg19_state`).
        pooling: ``max`` (VGG) or ``avg`` (Gatys et al. found average pooling gives smoother results).
    """

    def __init__(self, layers: Iterable[str], weights: str = "imagenet", pooling: str = "max") -> None:
        super().__init__()
        self.layers = list(dict.fromkeys(layers))
        unknown = [n for n in self.layers if n not in VGG19_LAYERS]
        if unknown:
            raise UserError(f"unknown VGG19 layer(s) {unknown}; valid names are conv1_1 ... relu5_4, pool1 ... pool5")
        if pooling not in ("max", "avg"):
            raise UserError(f"loss.vgg_pooling must be 'max' or 'avg', got {pooling!r}")
        depth = max(VGG19_LAYERS.index(n) for n in self.layers) + 1
        self.weights_name, self.pooling = weights, pooling
        state = load_vgg19_state(weights)
        if state is None:
            warnings.warn("VGG19 is RANDOMLY INITIALISED (loss.vgg_weights=random): fine for tests and smoke "
                          "runs, useless for real style transfer.", stacklevel=2)
        from torchvision.models import vgg19

        # A fixed seed makes the random trunk identical in every process (DDP ranks, resumed runs).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            features = vgg19(weights=None).features[:depth]
        if state is not None:
            wanted = {k: v for k, v in state.items() if int(k.split(".")[0]) < depth}
            try:
                features.load_state_dict(wanted)
            except RuntimeError as exc:
                raise UserError(f"VGG19 weights {weights} do not fit torchvision's VGG19: {exc}".splitlines()[0]) from None
        if pooling == "avg":
            for i, m in enumerate(features):
                if isinstance(m, nn.MaxPool2d):
                    features[i] = nn.AvgPool2d(2, 2)
        for m in features:
            if isinstance(m, nn.ReLU):
                m.inplace = False  # a ReLU output we return must not be overwritten by the next layer
            if isinstance(m, nn.Conv2d):
                w, b = m.weight.detach(), m.bias.detach()
                del m.weight, m.bias
                m.register_buffer("weight", w, persistent=False)
                m.register_buffer("bias", b, persistent=False)
        self.features = features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._index = {VGG19_LAYERS.index(n): n for n in self.layers}
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:  # frozen: eval mode forever
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """[N, 3, H, W] RGB in [0, 1] -> {layer name: [N, C, h, w]}.

        ``layers`` (a subset of :attr:`layers`) returns only those and stops after the deepest of them:
        the content targets need VGG19 up to relu4_2, not the style layers' relu5_1.
        """
        index = self._index
        if layers is not None:
            index = {i: n for i, n in self._index.items() if n in layers}
            if len(index) != len(set(layers)):
                raise ValueError(f"layers {sorted(set(layers) - set(self.layers))} are not among {self.layers}")
        last = max(index)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            if i > last:
                break
            x = layer(x)
            if i in index:
                out[index[i]] = x
        return out
