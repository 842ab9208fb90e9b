"""Models of pytorch/examples ``fast_neural_style``: a bare ``state_dict`` saved with ``torch.save``,
keys like ``conv1.conv2d.weight``, ``in1.weight``, ``res1.conv1.conv2d.weight``, ``deconv3.conv2d.bias``.

Older files (the downloadable candy, mosaic, rain_princess, udnie) also hold ``in*.running_mean/var``,
which that project deletes before loading; they are ignored here too. The file carries no metadata: the
style is named after the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fastnst.formats.metadata import SOURCE_PYTORCH_EXAMPLES, ModelInfo

ARCHITECTURE = "pytorch_examples"
_MARKERS = ("conv1.conv2d.weight", "res1.conv1.conv2d.weight", "deconv3.conv2d.weight")


def is_examples_state(obj: Any) -> bool:
    """Whether ``obj`` (a safely loaded file) is a pytorch/examples TransformerNet state dict."""
    return isinstance(obj, dict) and all(isinstance(obj.get(k), torch.Tensor) for k in _MARKERS)


def info_for(path: str | os.PathLike[str]) -> ModelInfo:
    return ModelInfo(architecture=ARCHITECTURE, config={"num_styles": 1}, styles=[Path(path).stem],
                     source=SOURCE_PYTORCH_EXAMPLES)


def read(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> tuple[ModelInfo, dict[str, torch.Tensor]]:
    """The :class:`ModelInfo` of a pytorch/examples state dict and the network's entries of it (``in*.running_*``
    dropped); :func:`fastnst.formats.checkpoint.load_network` builds the network from them."""
    return info_for(path), {k: v for k, v in state.items()
                            if not k.endswith((".running_mean", ".running_var", ".num_batches_tracked"))}
