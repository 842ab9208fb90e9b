"""Inference: a loaded model and its ``stylize`` (:mod:`.stylizer`, the Python API), how each format runs
(:mod:`.runners`), devices and precision (:mod:`.devices`), style choices and blends (:mod:`.styles`),
tiling (:mod:`.tiling`), colour (:mod:`.color`), jobs over files (:mod:`.jobs`) and infer.py's body
(:mod:`.cli`). Never imports Hydra, Lightning, the data module or VGG."""

from fastnst.inference.stylizer import StylizeOptions, Stylizer, load

__all__ = ["StylizeOptions", "Stylizer", "load"]
