"""The one vocabulary for speed: a fast path is a way to run a network, written ``precision[+cl][+compile]``
(eager PyTorch: fp32, fp16 or bf16, channels-last memory, torch.compile) or ``onnxruntime[+extended|+basic]``
(the fp32 ONNX export in onnxruntime at a graph optimisation level; ``ort`` is the short word for it).

``infer.py`` runs one (``--precision``, ``--channels-last``, ``--compile``), the benchmark times several
(``--train-variants``, ``--infer-variants``), ``--tune`` chooses among them (``--tune-paths``) and ``infer.py
--fast`` runs the one chosen for this machine (:mod:`fastnst.inference.tuning`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastnst.errors import UserError
from fastnst.inference.devices import DTYPES, PRECISIONS

ORT_LEVELS = ("all", "extended", "basic")  # onnxruntime's GraphOptimizationLevel, fastest-first by default
ORT_WORDS = ("onnxruntime", "ort")
FLAGS = ("cl", "compile")


@dataclass(frozen=True)
class FastPath:
    """A way to run a network: eager (``precision``, ``channels_last``, ``compile``) or onnxruntime
    (``ort_level``, which runs the fp32 export and takes no other option)."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    ort_level: str | None = None  # None: eager PyTorch

    @classmethod
    def parse(cls, text: str) -> FastPath:
        """``bf16+cl+compile``, ``fp16+cl``, ``onnxruntime+extended``, ``ort`` ... (parts in any order, any case);
        a :class:`UserError` naming the part it does not know."""
        tokens = [t for t in text.strip().lower().split("+") if t]
        precisions = [t for t in tokens if t in PRECISIONS]
        ort = [t for t in tokens if t in ORT_WORDS]
        levels = [t for t in tokens if t in ORT_LEVELS]
        for t in tokens:
            if t not in PRECISIONS and t not in ORT_WORDS and t not in ORT_LEVELS and t not in FLAGS:
                raise UserError(f"unknown part {t!r} of the fast path {text!r}; write a precision "
                                f"({', '.join(PRECISIONS)}) joined by '+' with any of {', '.join(FLAGS)} (e.g. "
                                f"bf16+cl+compile), or onnxruntime (ort) with +{' or +'.join(ORT_LEVELS[1:])}")
        if not tokens or len(precisions) > 1 or len(ort) > 1 or len(levels) > 1:
            raise UserError(f"fast path {text!r} needs one precision ({', '.join(PRECISIONS)}) or onnxruntime")
        if ort or levels:
            if not ort or set(tokens) - {*ort, *levels, "fp32"}:
                raise UserError(f"fast path {text!r}: onnxruntime ('ort') runs the fp32 ONNX export and takes no "
                                f"other option than its graph optimisation level ({', '.join(ORT_LEVELS)})")
            return cls(ort_level=levels[0] if levels else "all")
        return cls(precisions[0] if precisions else "fp32", "cl" in tokens, "compile" in tokens)

    @property
    def name(self) -> str:
        """The path as it is written (and parsed back): ``fp16+cl``, ``onnxruntime``, ``onnxruntime+basic``."""
        if self.ort_level is not None:
            return "onnxruntime" + ("" if self.ort_level == "all" else f"+{self.ort_level}")
        return "+".join([self.precision] + ["cl"] * self.channels_last + ["compile"] * self.compile)

    @property
    def ort(self) -> bool:
        return self.ort_level is not None

    @property
    def exact(self) -> bool:
        """Computes in fp32 (the same image as eager fp32 to float rounding)."""
        return self.ort or self.precision == "fp32"

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]
