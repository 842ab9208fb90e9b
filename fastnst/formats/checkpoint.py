"""Training checkpoints (``.ckpt``): read safely, metadata in and out, the network rebuilt from the file alone.

A checkpoint is data, never code: it is read with ``torch.load(weights_only=True)``, which refuses any
pickle that would construct arbitrary objects or run code. Lightning writes the file (through
``fastnst.training.faults.AtomicCheckpointIO``); the fastnst entry is put in by :func:`write_info`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.formats import pytorch_examples
from fastnst.formats.metadata import META_KEY, ModelInfo

NETWORK_PREFIX = "network."  # the LightningModule's attribute holding the transformation network


def pickle_refusal(text: str) -> str | None:
    """What a ``weights_only`` refusal message names (a global such as ``posix.system``, or "a pickle instruction"),
    None when the message is not such a refusal."""
    unsafe = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", text, re.I)
    if unsafe:
        return unsafe.group(1)
    if re.search(r"Unsupported operand|Weights only load failed", text):
        return "a pickle instruction"
    return None


@contextlib.contextmanager
def quiet_unpickler() -> Iterator[None]:
    """torch's safe unpickler warns (two lines, in the user's terminal) about pickle protocols it was not written
    with before it refuses or reads such a file; the outcome is what fastnst reports."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.(_weights_only_unpickler|serialization)")
        yield


def read_torch_file(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` of a file; every failure is a one-sentence :class:`UserError`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} {p} does not exist")
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder, expected a .ckpt file")
    if p.stat().st_size == 0:
        raise UserError(f"{what} {p} is empty (0 bytes); it was probably cut off while being written")
    try:
        with quiet_unpickler():
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = pickle_refusal(str(exc))
        if found:
            raise UserError(f"{what} {p} was refused: it would run code or build objects ({found}) instead of "
                            f"holding plain data; only load files that hold weights") from None
        raise UserError(f"{what} {p} is corrupt or not a PyTorch file") from None
    except Exception as exc:  # zip, EOF, key and runtime errors all mean a damaged or foreign file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() and not isinstance(exc, KeyError) else ""
        raise UserError(f"{what} {p} is corrupt or truncated" + (f" ({msg[:160]})" if msg else "")) from None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's dict, read safely (see :func:`read_torch_file`)."""
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} does not hold a dict of tensors")
    return ckpt


def write_info(checkpoint: dict[str, Any], info: ModelInfo) -> None:
    """Put ``info`` into a checkpoint dict about to be saved."""
    checkpoint[META_KEY] = info.to_dict()


def read_info(checkpoint: dict[str, Any], where: str = "checkpoint") -> ModelInfo:
    """The :class:`ModelInfo` of a fastnst checkpoint dict (any format version)."""
    meta = checkpoint.get(META_KEY)
    if meta is None:
        raise UserError(f"{where} was not written by fastnst training (no '{META_KEY}' metadata)")
    return ModelInfo.from_dict(meta, where)


def network_state(state_dict: dict[str, torch.Tensor], prefix: str = NETWORK_PREFIX) -> dict[str, torch.Tensor]:
    """The network's entries of a module state dict, wrapper prefixes (torch.compile) stripped."""
    out = {}
    for k, v in state_dict.items():
        k = k.replace("_orig_mod.", "")
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
    return out


def build_network(info: ModelInfo, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """``info``'s network with ``state`` loaded (strictly), in eval mode on the CPU."""
    net = info.build()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{where} does not match the network it describes "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return net.eval()


def load_network(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the network of a fastnst checkpoint (``.ckpt``) or a pytorch/examples ``.pth`` state dict,
    in eval mode on the CPU, with its :class:`ModelInfo`."""
    obj = read_torch_file(path)
    where = f"checkpoint {path}"
    if pytorch_examples.is_examples_state(obj):
        info, state = pytorch_examples.read(obj, path)
        return build_network(info, state, f"pytorch/examples model {path}"), info
    if not isinstance(obj, dict):
        raise UserError(f"{where} does not hold a dict of tensors")
    if META_KEY not in obj:
        if "state_dict" not in obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"{where} is a bare state dict of an unknown network (neither a fastnst checkpoint nor a "
                            f"pytorch/examples fast_neural_style model)")
    info = read_info(obj, where)
    return build_network(info, network_state(obj.get("state_dict", {})), where), info
