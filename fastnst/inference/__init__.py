"""Inference: a loaded model and its ``stylize`` (:mod:`.stylizer`, the Python API; :mod:`.loading` reads model files), the options every caller
passes (:mod:`.options`), how each format runs (:mod:`.runners`), devices and precision (:mod:`.devices`),
style choices and blends (:mod:`.styles`), tiling (:mod:`.tiling`), colour (:mod:`.color`), videos
(:mod:`.video`), jobs over files (:mod:`.jobs`) and infer.py's body (:mod:`.cli`). Never imports Hydra, Lightning, the data module or VGG."""

from fastnst.inference.options import StylizeOptions
from fastnst.inference.loading import load
from fastnst.inference.stylizer import Stylizer

__all__ = ["StylizeOptions", "Stylizer", "load"]
