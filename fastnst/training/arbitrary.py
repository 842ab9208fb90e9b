"""Training parts of networks that take any painting (``style.arbitrary=true``), and per-painting networks
started from such a network's prediction (``init_from=ARB.ckpt style.image=new.jpg``).

A network that takes a painting is a registered network built with ``style_dim``
(:func:`fastnst.models.encoder.make_arbitrary`): its encoder maps each painting to a style vector, every norm
maps the vector to its scale and shift. A per-painting network of the same architecture holds one style: its
norms' one row is exactly what the arbitrary network's norms compute for that painting's vector, its other
weights are copied, so it starts where the arbitrary network's prediction is and training refines it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.models import StyleNorm, create_model
from fastnst.models.encoder import takes_painting

ARBITRARY_KEYS = ("style_dim", "encoder")  # config entries of the painting side, absent from per-painting networks


def one_style_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config of the one-style network with ``config``'s layers (the painting side left out)."""
    return {**{k: v for k, v in config.items() if k not in ARBITRARY_KEYS}, "num_styles": 1}


@torch.no_grad()
def from_prediction(base: nn.Module, architecture: str, painting: torch.Tensor) -> nn.Module:
    """A one-style ``architecture`` network that stylizes exactly as ``base`` (a network that takes a painting)
    does with ``painting`` [1, 3, H, W]: the shared weights copied, every norm's row set to the predicted scale
    and shift."""
    if not takes_painting(base):
        raise UserError("the network to start from takes no painting")
    base = base.eval()
    vector = base.encoder(painting.float())  # [1, D]
    net = create_model(architecture, **one_style_config(base.config()))
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("encoder.") and not k.endswith("_base")}
    norms = {name: m for name, m in base.named_modules() if isinstance(m, StyleNorm)}
    for name, norm in norms.items():
        scale, shift = norm.scale_shift(vector)
        state[f"{name}.weight"], state[f"{name}.bias"] = scale.clone(), shift.clone()
    net.load_state_dict(state)
    return net
