"""What a training checkpoint keeps besides the weights: the random number generators' states (so that anything
drawing from them resumes exactly), and the upgrade of format-1 (fastnst 0.1) checkpoints on resume."""

from __future__ import annotations

import ast
import random
from typing import Any

import numpy as np
import torch


def save_rng_states(checkpoint: dict[str, Any]) -> None:
    """Lightning does not save RNG states; nothing in a step draws from them today (crops and styles are seeded
    per step), but anything added later (augmentations, noise) must resume exactly too."""
    np_state = np.random.get_state()
    checkpoint["rng_states"] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [[int(v) for v in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": repr(random.getstate()),
    }


def restore_rng_states(rng: dict[str, Any] | None) -> None:
    if not rng:
        return
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(ast.literal_eval(rng["python"]))


def upgrade_v1(checkpoint: dict[str, Any], own: dict[str, torch.nn.Parameter], params: list[torch.nn.Parameter]) -> None:
    """Format 1 kept style targets as ``loss_fn.style_gram_<layer>``, norm parameters as [C], and a second
    copy of the network and the targets under ``_net_fn.`` and ``_loss_call.``. ``own``: the module's named
    parameters; ``params``: the network's parameters in optimizer order."""
    sd = checkpoint.get("state_dict", {})
    for k in [k for k in sd if k.startswith(("_net_fn.", "_loss_call."))]:
        del sd[k]
    for k in [k for k in sd if k.startswith("loss_fn.style_gram_")]:
        sd["loss_fn.terms.style.gram_" + k[len("loss_fn.style_gram_"):]] = sd.pop(k)
    for k, v in list(sd.items()):
        if k in own and v.shape != own[k].shape and v.numel() == own[k].numel():
            sd[k] = v.reshape(own[k].shape)
    # Adam's moment estimates follow their parameters' shapes (state is keyed by parameter position).
    for opt_state in checkpoint.get("optimizer_states", []):
        for i, state in opt_state.get("state", {}).items():
            if i < len(params):
                for name, value in state.items():
                    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.numel() == params[i].numel():
                        state[name] = value.reshape(params[i].shape)
