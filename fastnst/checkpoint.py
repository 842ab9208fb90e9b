"""Rebuild a trained network from a checkpoint file alone: no Hydra, no training config, no VGG.

A checkpoint is data, never code: it is read with ``torch.load(weights_only=True)``, which refuses any
pickle that would construct arbitrary objects or run code.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fastnst.errors import UserError
from fastnst.network import TransformerNet

META_KEY = "fastnst"  # checkpoint["fastnst"]: network config, style name, loss settings
FORMAT_VERSION = 1


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict safely; every failure is a one-sentence :class:`UserError`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist")
    if p.is_dir():
        raise UserError(f"checkpoint {p} is a folder, expected a .ckpt file")
    if p.stat().st_size == 0:
        raise UserError(f"checkpoint {p} is empty (0 bytes); it was probably cut off while being written")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        unsafe = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", text, re.I) or "Unsupported operand" in text
        if unsafe:
            what = unsafe.group(1) if isinstance(unsafe, re.Match) else "a pickle instruction"
            raise UserError(f"checkpoint {p} was refused: it would run code or build objects ({what}) instead of "
                            f"holding plain data; only load checkpoints that fastnst wrote") from None
        raise UserError(f"checkpoint {p} is corrupt or not a PyTorch checkpoint") from None
    except Exception as exc:  # zip, EOF, key and runtime errors all mean a damaged or foreign file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() and not isinstance(exc, KeyError) else ""
        raise UserError(f"checkpoint {p} is corrupt or truncated" + (f" ({msg[:160]})" if msg else "")) from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {p} does not hold a dict of tensors")
    return ckpt


def network_state(state_dict: dict[str, torch.Tensor], prefix: str = "network.") -> dict[str, torch.Tensor]:
    """The network's entries of a module state dict, wrapper prefixes (torch.compile) stripped."""
    out = {}
    for k, v in state_dict.items():
        k = k.replace("_orig_mod.", "")
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
    return out


def load_network(path: str | os.PathLike[str]) -> tuple[TransformerNet, dict[str, Any]]:
    """Rebuild the :class:`TransformerNet` of a fastnst checkpoint, in eval mode on the CPU.

    Returns the network and the checkpoint's metadata (network config, style name, loss settings,
    global step).
    """
    ckpt = read_checkpoint(path)
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "network" not in meta:
        raise UserError(f"checkpoint {path} was not written by fastnst training (no '{META_KEY}' metadata)")
    try:
        net = TransformerNet(**meta["network"])
        net.load_state_dict(network_state(ckpt.get("state_dict", {})))
    except (TypeError, RuntimeError, ValueError) as exc:
        raise UserError(f"checkpoint {path} does not match the network it describes "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return net.eval(), meta
