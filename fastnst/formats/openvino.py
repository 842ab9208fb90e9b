"""OpenVINO as a runtime for fastnst's ONNX exports: the compiled model fastnst runs them with, one run, and the
parity check against eager, beside onnxruntime's in :mod:`fastnst.formats.onnx` (same file, same contract: input
``image`` float32 RGB NCHW in [0, 1], and ``style_weights`` / ``style_vector`` where the network takes one).

OpenVINO is optional (``pip install 'fastnst[openvino]'``). Its CPU plugin computes in bf16 by default on CPUs
with native bf16 (AVX512-BF16, AMX); fastnst asks for ``fp32`` unless told otherwise, so that the image matches
the checkpoint's to float rounding, and names bf16 as a precision of its own (``precision="bf16"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.formats.deploy import CHECK_SHAPES, IMAGE_INPUT, TOLERANCE, check_runtime

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
INSTALL = "pip install 'fastnst[openvino]' (or pip install openvino)"


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def openvino_model(path: str | os.PathLike[str], device: torch.device, threads: int | None = None,
                   precision: str = "fp32") -> Any:
    """The OpenVINO compiled model of an .onnx file on the CPU: latency hint (one image at a time uses every
    core), ``threads`` inference threads (None: OpenVINO's choice), ``precision`` fp32 (the default: the image of
    the checkpoint to float rounding) or bf16 (OpenVINO's own default on CPUs with native bf16)."""
    if device.type != "cpu":
        raise UserError(f"--runtime openvino runs on the CPU here; use --device cpu (or onnxruntime on {device.type})")
    if precision not in PRECISIONS:
        raise UserError(f"OpenVINO precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    try:
        import openvino as ov
    except ImportError:
        raise UserError(f"--runtime openvino needs the openvino package: {INSTALL}") from None
    path = Path(path)
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        core = ov.Core()
        return core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"OpenVINO cannot run {path} ({message})") from None


def input_names(compiled: Any) -> list[str]:
    return [port.get_any_name() for port in compiled.inputs]


def run_openvino(compiled: Any, image: np.ndarray, style_weights: np.ndarray | None = None,
                 style_name: str | None = None) -> np.ndarray:
    """One OpenVINO run: [N, 3, H, W] float32 numpy (and the [D] style input named ``style_name``, by default the
    model's second input) -> the stylized [N, 3, H, W] float32 array."""
    feeds: dict[str, np.ndarray] = {IMAGE_INPUT: image}
    if style_weights is not None:
        feeds[style_name or input_names(compiled)[1]] = style_weights
    request = compiled.create_infer_request()
    result = request.infer(feeds)
    return np.asarray(result[compiled.output(0)], dtype=np.float32)


def check_openvino(path: str | os.PathLike[str], net: nn.Module, num_styles: int = 1, *,
                   tolerance: float = TOLERANCE, shapes: Any = CHECK_SHAPES, style_dim: int | None = None,
                   precision: str = "fp32") -> list[tuple[str, float]]:
    """OpenVINO vs eager on ``shapes`` (and, for a multi-style network, pure styles and a blend), as
    :func:`fastnst.formats.onnx.check_onnx` does for onnxruntime; returns (case, max abs diff) per case and raises
    :class:`fastnst.formats.deploy.ExportCheckError` above ``tolerance``."""
    compiled = openvino_model(path, torch.device("cpu"), precision=precision)
    return check_runtime(Path(path), net, lambda image, style, name: run_openvino(compiled, image, style, name),
                         num_styles, tolerance=tolerance, shapes=shapes, style_dim=style_dim, runtime="OpenVINO")
