"""How each model format runs: ``run(x, style) -> y`` with ``x`` float32 [N, 3, H, W] in [0, 1] on any
device, ``style`` None, [N, S] style weights per image or [1, S] for the whole batch, ``y`` float32
[N, 3, H, W] on x's device.

Eager networks (``.ckpt``, pytorch/examples ``.pth``) run through :func:`network_runner` (device, precision,
channels-last, torch.compile), ONNX models through onnxruntime, ``.pt2`` programs as exported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fastnst.formats.onnx import ort_error_message, run_session
from fastnst.formats.openvino import run_openvino
from fastnst.inference.devices import check_precision, out_of_memory

Runner = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class InferenceError(RuntimeError):
    """The model failed on one input (e.g. an onnxruntime runtime error): that image is reported and skipped."""


def network_runner(net: nn.Module, device: torch.device, precision: str = "fp32", *, channels_last: bool = False,
                   compile: bool = False) -> tuple[nn.Module, Runner]:
    """Move ``net`` to ``device`` and ``precision`` (in place) and return it with its runner.

    ``channels_last`` stores weights and activations NHWC (faster convolutions on most CPUs and GPUs);
    ``compile`` wraps the network in ``torch.compile`` with PyTorch's automatic dynamic shapes: the first
    input compiles a graph specialised to its shape (the fastest, and what the benchmark times); the first
    change of height/width, and the first change of batch size, each recompile once into a graph generic in
    that dimension, which then serves all later sizes (at most three compilations for a mixed folder).
    The benchmark (``fastnst.bench``) builds its eager variants through this function, so it times what
    ``infer.py`` runs.
    """
    dtype = check_precision(device, precision)
    net = net.to(device=device, dtype=dtype).eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fn: Callable[..., torch.Tensor] = net
    if compile:
        fn = torch.compile(net, dynamic=None)

    @torch.inference_mode()
    def run(x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        s = None if style is None else style.to(device=device, dtype=dtype)
        y = fn(x.to(device=device, dtype=dtype).contiguous(memory_format=memory_format), s)
        return y.to(device=x.device, dtype=torch.float32).contiguous()

    return net, run


def _ort_failure(exc: Exception) -> RuntimeError:
    """An onnxruntime error as the exception the per-image handler of the jobs catches.
    onnxruntime's types (RuntimeException, Fail, InvalidArgument ...) derive from Exception only."""
    message = ort_error_message(exc)
    if out_of_memory(exc):
        return torch.OutOfMemoryError(f"onnxruntime ran out of memory ({message})")
    return InferenceError(f"onnxruntime failed ({type(exc).__name__}: {message})")


def network_encoder(net: nn.Module, device: torch.device, precision: str = "fp32") -> Callable[[torch.Tensor], torch.Tensor]:
    """The style encoder of an eager network that takes a painting: [1, 3, H, W] in [0, 1] -> [D] float32 (CPU)."""
    dtype = check_precision(device, precision)

    @torch.inference_mode()
    def encode(painting: torch.Tensor) -> torch.Tensor:
        return net.encoder(painting.to(device=device, dtype=dtype)).float().cpu().reshape(-1)

    return encode


def onnx_encoder(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """A style encoder exported to ONNX (``painting`` [1, 3, H, W] -> ``style_vector``) as a function -> [D]."""
    name = session.get_inputs()[0].name

    def encode(painting: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(painting.detach().to("cpu", torch.float32).numpy())
        try:
            (v,) = session.run(None, {name: arr})[:1]
        except Exception as exc:  # noqa: BLE001 - translated: see _ort_failure
            raise _ort_failure(exc) from exc
        return torch.from_numpy(np.asarray(v, dtype=np.float32)).reshape(-1)

    return encode


def program_encoder(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A style encoder exported with torch.export (.pt2) as a function -> [D]."""
    @torch.inference_mode()
    def encode(painting: torch.Tensor) -> torch.Tensor:
        return module(painting.to("cpu", torch.float32)).float().reshape(-1)

    return encode


def onnx_runner(session: Any) -> Runner:
    """Run an onnxruntime session of a fastnst ONNX model (one style: ``image`` only; otherwise the batch's style
    vector, one for the whole batch, as the exported model takes it: ``style_weights`` [S] for trained styles,
    ``style_vector`` [D] for a network that takes a painting)."""
    inputs = [i.name for i in session.get_inputs()]
    style_name = inputs[1] if len(inputs) > 1 else None

    def call(arr: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        try:
            return run_session(session, arr, weights, style_name)
        except Exception as exc:  # noqa: BLE001 - translated: see _ort_failure
            raise _ort_failure(exc) from exc

    return array_runner(call)


def array_runner(call: Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]) -> Runner:
    """A :data:`Runner` around a runtime that takes numpy arrays: ``call(image [N, 3, H, W], style [D] or None)``.
    The exported models take one style row per run, so a batch of mixed styles is split."""
    def run(x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        weights = None
        if style is not None:
            if not torch.equal(style, style[:1].expand_as(style)):
                return torch.cat([run(x[i:i + 1], style[i:i + 1]) for i in range(x.shape[0])])
            weights = np.ascontiguousarray(style[0].detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(call(arr, weights)).to(device=x.device, dtype=torch.float32)

    return run


def program_runner(module: nn.Module, device: torch.device) -> Runner:
    """Run the module of a torch.export program (.pt2) on ``device``."""
    module = module.to(device)

    @torch.inference_mode()
    def run(x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        xs = x.to(device=device, dtype=torch.float32)
        if style is None:
            y = module(xs)
        elif torch.equal(style, style[:1].expand_as(style)):
            y = module(xs, style[0].to(device=device, dtype=torch.float32))
        else:
            return torch.cat([run(x[i:i + 1], style[i:i + 1]) for i in range(x.shape[0])])
        return y.to(device=x.device, dtype=torch.float32)

    return run


def openvino_runner(compiled: Any) -> Runner:
    """Run an OpenVINO compiled model of a fastnst ONNX export, with :func:`onnx_runner`'s contract."""
    def call(arr: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        try:
            return run_openvino(compiled, arr, weights)
        except Exception as exc:  # noqa: BLE001 - one image's failure is reported and skipped by the jobs
            if out_of_memory(exc):
                raise torch.OutOfMemoryError(f"OpenVINO ran out of memory ({exc})") from exc
            raise InferenceError(f"OpenVINO failed ({type(exc).__name__}: {str(exc).strip()[:200]})") from exc

    return array_runner(call)
