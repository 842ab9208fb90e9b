"""A new style for a trained network: ``init_from=PATH.ckpt style.images=[new.jpg] train_only=norm``.

Dumoulin et al. 2017 (sec. 4): every convolution is shared by all styles, so a new painting is learned by
training only its scale and shift in each conditional instance norm. The run builds a network with the old
styles followed by the new ones, copies the old network's weights into it, freezes everything but the norm
parameters, and keeps the old styles' rows of those parameters exactly as they were: their gradients are
zeroed before each optimizer step and the rows are copied back after it (so no optimizer setting, such as
weight decay, can move them). The old styles' outputs stay identical bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.formats.checkpoint import load_network
from fastnst.formats.metadata import ModelInfo
from fastnst.models import StyleNorm

TRAIN_ONLY = ("norm",)


@dataclass
class BaseNetwork:
    """The trained network a run adds styles to."""

    path: str
    info: ModelInfo
    state: dict[str, torch.Tensor]
    network: nn.Module | None = None  # kept for a network that takes a painting (it predicts the new style)

    @property
    def styles(self) -> list[str]:
        return list(self.info.styles)

    @property
    def style_images(self) -> list[str]:
        """One path per old style, as recorded at its training ("" where the file did not record one)."""
        recorded = list(self.info.training.style_images) if self.info.training else []
        return (recorded + [""] * len(self.styles))[: len(self.styles)]


def check_train_only(train_only: str | None, init_from: str | None, from_painting_network: bool = False) -> None:
    """``train_only`` is null or ``norm``, and ``norm`` comes with ``init_from`` (and the other way round, unless
    ``init_from`` is a network that takes a painting: a per-painting network may train every weight)."""
    if train_only not in (None, *TRAIN_ONLY):
        raise UserError(f"train_only must be null (train every weight) or norm (only the new styles' norm "
                        f"parameters), got {train_only!r}")
    if train_only == "norm" and not init_from:
        raise UserError("train_only=norm trains new styles of a trained network; pass init_from=PATH.ckpt too")
    if init_from and train_only != "norm" and not from_painting_network:
        raise UserError("init_from adds styles to a trained network by training only their norm parameters, which "
                        "keeps the old styles exactly; pass train_only=norm too")


def load_base(path: str, architecture: str, config: dict[str, Any]) -> BaseNetwork:
    """The network of the checkpoint ``path``, checked to be the configured ``architecture`` and ``config``
    (``num_styles`` aside); one sentence otherwise."""
    p = Path(path).expanduser()
    if p.suffix.lower() in (".onnx", ".pt2"):
        raise UserError(f"init_from {p} is an exported model; new styles are added to a training checkpoint (.ckpt)")
    net, info = load_network(p)
    skip = ("num_styles", "style_dim", "encoder")  # a network that takes a painting starts one-style networks too
    want = {k: v for k, v in config.items() if k not in skip}
    have = {k: v for k, v in info.config.items() if k not in skip}
    if info.architecture != architecture or have != want:
        raise UserError(f"init_from {p} holds a {info.architecture} network {have}, but the config builds a "
                        f"{architecture} network {want}; pass the model settings it was trained with")
    return BaseNetwork(str(p), info, {k: v.detach().clone() for k, v in net.state_dict().items()},
                       net if info.takes_painting else None)


def check_new_names(base: BaseNetwork, names: list[str], paths: list[str]) -> None:
    """New style names must differ from the network's own (one sentence naming both)."""
    for name, path in zip(names, paths):
        if name in base.styles:
            old = base.style_images[base.styles.index(name)] or "an earlier run"
            raise UserError(f"the new style {path} is named {name!r} like a style the network of init_from "
                            f"{base.path} already holds (from {old}); rename the file (or set style.name)")


def extend(net: nn.Module, base: BaseNetwork) -> None:
    """Load ``base``'s weights into ``net`` (same architecture, more styles): shared weights as they are, each
    norm's old rows as they are, and its new rows set to the mean of the old rows (a blend of all old
    styles: a start nearer to any painting than the identity)."""
    old = len(base.styles)
    state = {}
    own = net.state_dict()
    for key, value in base.state.items():
        target = own.get(key)
        if target is None:
            raise UserError(f"init_from {base.path} has a weight {key} the configured network lacks")
        if value.shape != target.shape:
            if value.dim() != 2 or value.shape[0] != old or value.shape[1:] != target.shape[1:]:
                raise UserError(f"init_from {base.path}: weight {key} of shape {tuple(value.shape)} does not fit "
                                f"{tuple(target.shape)}")
            value = torch.cat([value, value.mean(0, keepdim=True).expand(target.shape[0] - old, -1)])
        state[key] = value
    net.load_state_dict(state)


class NormOnlyTraining:
    """Freezes a network except the rows ``first..`` of its :class:`StyleNorm` parameters.

    :meth:`mask_gradients` before each optimizer step zeroes the frozen rows' gradients (Adam then leaves
    them unchanged and keeps no stale moments); :meth:`restore` after it copies the frozen rows back exactly.
    """

    def __init__(self, net: nn.Module, first: int) -> None:
        self.first = first
        for p in net.parameters():
            p.requires_grad_(False)
        self.params: list[nn.Parameter] = []
        for m in net.modules():
            if isinstance(m, StyleNorm):
                for p in (m.weight, m.bias):
                    p.requires_grad_(True)
                    self.params.append(p)
        self._frozen = [p.detach()[:first].clone() for p in self.params]

    @torch.no_grad()
    def mask_gradients(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad[: self.first] = 0

    @torch.no_grad()
    def restore(self) -> None:
        for i, p in enumerate(self.params):
            if self._frozen[i].device != p.device:  # once, after the module moved to its device
                self._frozen[i] = self._frozen[i].to(p.device)
            p[: self.first] = self._frozen[i].to(p.dtype)
