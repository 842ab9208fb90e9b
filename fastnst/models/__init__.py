"""Image transformation networks and the registry every part of fastnst builds them from.

Importing this package registers the built-in architectures: ``johnson`` (Johnson et al. 2016,
:class:`TransformerNet`), ``mobile`` (a light network for CPUs, :class:`MobileNet`) and ``pytorch_examples``
(pytorch/examples' layout, for its ``.pth`` files).
"""

from fastnst.models.johnson import TransformerNet
from fastnst.models.layers import StyleNorm
from fastnst.models.mobile import MobileNet
from fastnst.models.pytorch_examples import ExamplesTransformerNet
from fastnst.models.registry import create_model, list_models, model_class, register_model

__all__ = ["ExamplesTransformerNet", "MobileNet", "StyleNorm", "TransformerNet", "create_model", "list_models",
           "model_class", "register_model"]
