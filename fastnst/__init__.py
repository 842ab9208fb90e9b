"""fastnst: fast neural style transfer (Johnson et al. 2016), trained with PyTorch Lightning and Hydra.

The Python API::

    import fastnst
    model = fastnst.load("runs/starry/checkpoints/last.ckpt")   # also .onnx, .pt2, pytorch/examples .pth
    out = model.stylize(Image.open("photo.jpg"))                 # PIL in, PIL out (or uint8 arrays)
    model.info                                                   # architecture, styles, training settings

Networks come from one registry (:mod:`fastnst.models`), files are read and written in
:mod:`fastnst.formats`, inference lives in :mod:`fastnst.inference`, training in :mod:`fastnst.training`,
and the tools (export, evaluate, optimize, prepare, info, bench) in :mod:`fastnst.tools`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastnst.errors import UserError
from fastnst.formats.metadata import ModelInfo, TrainingInfo
from fastnst.inference.options import StylizeOptions
from fastnst.inference.loading import load
from fastnst.inference.stylizer import Stylizer
from fastnst.models import create_model, list_models, register_model

try:
    __version__ = version("fastnst")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["ModelInfo", "StylizeOptions", "Stylizer", "TrainingInfo", "UserError", "__version__", "create_model",
           "list_models", "load", "register_model"]
