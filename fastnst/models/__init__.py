"""Image transformation networks and the registry every part of fastnst builds them from.

Importing this package registers the built-in architectures: ``johnson`` (Johnson et al. 2016,
:class:`TransformerNet`), ``mobile`` (a light network for CPUs, :class:`MobileNet`), ``pytorch_examples``
(pytorch/examples' layout, for its ``.pth`` files) and ``magenta`` / ``magenta_arbitrary`` (magenta's trained
networks, :mod:`fastnst.models.magenta`).
"""

from fastnst.models.johnson import TransformerNet
from fastnst.models.layers import StyleNorm
from fastnst.models.magenta import MagentaArbitraryNet, MagentaNet
from fastnst.models.mobile import MobileNet
from fastnst.models.pytorch_examples import ExamplesTransformerNet
from fastnst.models.registry import create_model, list_models, model_class, register_model

__all__ = ["ExamplesTransformerNet", "MagentaArbitraryNet", "MagentaNet", "MobileNet", "StyleNorm", "TransformerNet", "create_model", "list_models",
           "model_class", "register_model"]
