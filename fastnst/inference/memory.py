"""Stylizing within the memory available: when an image would not fit through the network whole, tiles.

The network's working memory per pixel is estimated from its layers (:func:`fastnst.models.cost.
activation_bytes_per_pixel`); the image itself holds :data:`fastnst.media.limits.HELD_STYLIZED` bytes a pixel
whatever the tiling (float32 input and output, the 8-bit result). Images that cannot be held at all are refused
before they are decoded (:mod:`fastnst.media.limits`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from fastnst.formats import ModelInfo
from fastnst.inference.options import StylizeOptions
from fastnst.media.limits import HELD_STYLIZED, SHARE, available_bytes
from fastnst.models import create_model
from fastnst.models.cost import activation_bytes_per_pixel

MIN_AUTO_TILE, MAX_AUTO_TILE = 128, 2048  # tile sides chosen for memory (a larger tile only saves blending)
UNKNOWN_NETWORK_BYTES = 1400.0  # an architecture not installed here: about the default network's estimate
ORT_ARENA = 1.5  # onnxruntime's memory arena holds about half as much again as PyTorch for the same graph


def device_memory(device: torch.device) -> int:
    """Bytes still free on ``device``: the GPU's free memory, else what this process can allocate."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_bytes()


def network_bytes_per_pixel(network: nn.Module | None, info: ModelInfo, onnxruntime: bool = False) -> float:
    """The estimated working memory of a model's network per pixel of its input: of ``network`` itself (an eager
    model, in its dtype), else of the architecture ``info`` records, built with random weights."""
    try:
        if network is not None:
            estimate = activation_bytes_per_pixel(network)
        else:
            with torch.random.fork_rng(devices=[]):
                estimate = activation_bytes_per_pixel(create_model(info.architecture, **info.config).eval())
    except Exception:  # noqa: BLE001 - an architecture not installed here: the default network's figure
        estimate = UNKNOWN_NETWORK_BYTES
    return estimate * (ORT_ARENA if onnxruntime else 1.0)


def fit_in_memory(x: torch.Tensor, opts: StylizeOptions, network_bytes: float, device: torch.device,
                  note: Callable[[str], None]) -> StylizeOptions:
    """``opts``, with tiles when ``x`` [N, 3, H, W] stylized whole would need more memory than ``device`` has
    available (and no tile size was asked for): the network then holds one tile's activations, sized to a quarter
    of that memory (between 128 and 2048 px), and the image its float input and output. ``note`` is told once."""
    if opts.tile is not None or max(x.shape[-2:]) <= MIN_AUTO_TILE:
        return opts
    n, _, h, w = x.shape
    per_pixel = network_bytes + HELD_STYLIZED
    free = device_memory(device) * SHARE
    if n * h * w * per_pixel <= free:
        return opts
    side = int(math.sqrt(max(free / 4, 0) / network_bytes)) // 32 * 32
    tile = max(MIN_AUTO_TILE, min(MAX_AUTO_TILE, side))
    if max(h, w) <= tile:
        return opts
    note(f"fastnst: {w}x{h} px{f' (batch of {n})' if n > 1 else ''} would need about {n * h * w * per_pixel / 1e9:.1f} "
         f"GB stylized whole and {free / SHARE / 1e9:.1f} GB is available: stylizing in {tile} px tiles (--tile)")
    return replace(opts, tile=tile)
