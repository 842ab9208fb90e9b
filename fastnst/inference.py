"""Stylize images with a trained network: a training checkpoint (.ckpt), an ONNX model (.onnx, run with
onnxruntime) or a torch.export program (.pt2), each rebuilt from the file alone.

Pixel contract: float32 RGB NCHW in [0, 1] in and out; clamping happens only when an image is saved.
Imports torch, onnxruntime, Pillow and the network class; never Hydra, the data module, VGG or Lightning.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import math
import os
import pickle
import statistics
import sys
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fastnst.checkpoint import load_network
from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.image import (IMAGE_EXTENSIONS, image_files, is_image_path, load_image, pil_to_tensor, resize_longer,
                           save_image)
from fastnst.network import TransformerNet

ModelFormat = Literal["ckpt", "onnx", "pt2"]
Precision = Literal["fp32", "fp16", "bf16"]
MODEL_SUFFIXES: dict[str, ModelFormat] = {".ckpt": "ckpt", ".pt": "ckpt", ".pth": "ckpt", ".onnx": "onnx",
                                          ".pt2": "pt2"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ONNX_INPUT, ONNX_OUTPUT = "image", "stylized"  # tensor names of exported ONNX models
PT2_META_FILE = "fastnst.json"  # extra file of exported .pt2 archives holding the metadata


# --------------------------------------------------------------------------------------------- models

def detect_model_format(path: str | os.PathLike[str]) -> ModelFormat:
    """The model's format from its extension (``.ckpt``/``.pt``/``.pth``, ``.onnx``, ``.pt2``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"model {p} does not exist; pass a training checkpoint (.ckpt) or an exported "
                        f"model (.onnx, .pt2) with --ckpt")
    if p.is_dir():
        raise UserError(f"model {p} is a folder; pass a .ckpt, .onnx or .pt2 file, e.g. "
                        f"{p / 'checkpoints' / 'last.ckpt'}")
    fmt = MODEL_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        hint = " (that is an image: give images as inputs, the model with --ckpt)" if is_image_path(p) else ""
        raise UserError(f"model {p} has an unknown file type '{p.suffix}'{hint}; expected a training checkpoint "
                        f"(.ckpt) or an exported model (.onnx, .pt2)")
    return fmt


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable explicit choice is a UserError."""
    name = name.lower()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu or auto")
        return torch.device(name)
    if name == "mps":
        if not mps_ok:
            raise UserError("--device mps was requested but Apple MPS is not available; use --device cpu or auto")
        return torch.device("mps")
    raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or mps")


def check_precision(device: torch.device, precision: str) -> torch.dtype:
    """The dtype for ``precision`` on ``device``, or a UserError where the device cannot run it."""
    if precision not in DTYPES:
        raise UserError(f"unknown precision {precision!r}; use fp32, fp16 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")
    if precision != "fp32" and device.type == "mps":
        try:
            torch.zeros(1, device=device, dtype=DTYPES[precision]) + 1
        except (RuntimeError, TypeError):
            raise UserError(f"--precision {precision} is not supported on MPS here; use fp32 or fp16") from None
    return DTYPES[precision]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS), so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class _FixedNorm(nn.Module):
    """Instance norm with frozen per-channel statistics: every tile is normalised like the whole image."""

    def __init__(self, norm: nn.InstanceNorm2d) -> None:
        super().__init__()
        self.norm = norm  # shares weight and bias with the original network
        self.register_buffer("mean", torch.zeros(norm.num_features))
        self.register_buffer("var", torch.ones(norm.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.mean, self.var, self.norm.weight, self.norm.bias, False, 0.0, self.norm.eps)


class Model:
    """A stylizer loaded from a file: ``model(x)`` maps [N, 3, H, W] float32 in [0, 1] on any device to the
    stylized [N, 3, H, W] float32 on the same device. ``net`` is the eager network for checkpoints (needed by
    tiling), None for exported formats; ``meta`` is the training metadata stored in the file."""

    def __init__(self, path: Path, fmt: ModelFormat, device: torch.device, precision: str,
                 run: Callable[[torch.Tensor], torch.Tensor], meta: dict[str, Any],
                 net: TransformerNet | None = None) -> None:
        self.path, self.format, self.device, self.precision = path, fmt, device, precision
        self.meta, self.net, self._run = meta, net, run
        self._tiler: TransformerNet | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an [N, 3, H, W] tensor, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < 5:
            raise UserError(f"an image of {x.shape[-1]}x{x.shape[-2]} px is too small; both sides need >= 5 px")
        return self._run(x)

    def synchronize(self) -> None:
        synchronize(self.device)

    @property
    def style_name(self) -> str:
        return str(self.meta.get("style_name") or self.path.stem)

    def describe(self) -> str:
        net = self.meta.get("network") or {}
        return (f"{self.path} ({self.format}, style {self.style_name!r}, network {net}, "
                f"device {self.device}, {self.precision})")

    def tiled(self, x: torch.Tensor, tile: int, overlap: int, stats_size: int,
              post: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Stylize one [1, 3, H, W] image tile by tile; see :func:`stylize_tiled`."""
        if self.net is None:
            raise UserError(f"--tile needs the network's weights to share instance-norm statistics between tiles; "
                            f"a .{self.format} model cannot do that, so pass the training checkpoint (.ckpt) "
                            f"or use --max-size")
        if self._tiler is None:
            self._tiler = fixed_norm_copy(self.net)
        return stylize_tiled(self.net, self._tiler, x, tile=tile, overlap=overlap, stats_size=stats_size,
                             post=post)


class InferenceError(RuntimeError):
    """The model failed on one input (e.g. an onnxruntime runtime error): that image is reported and skipped."""


def network_runner(net: TransformerNet, device: torch.device, precision: str = "fp32", *,
                   channels_last: bool = False, compile: bool = False
                   ) -> tuple[TransformerNet, Callable[[torch.Tensor], torch.Tensor]]:
    """Move ``net`` to ``device`` and ``precision`` (in place) and return it with a function that runs it:
    [N, 3, H, W] float32 on any device -> float32 NCHW on the same device.

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
    fn: Callable[[torch.Tensor], torch.Tensor] = net
    if compile:
        fn = torch.compile(net, dynamic=None)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        y = fn(x.to(device=device, dtype=dtype).contiguous(memory_format=memory_format))
        return y.to(device=x.device, dtype=torch.float32).contiguous()

    return net, run


def _ckpt_model(path: Path, device: torch.device, precision: str, channels_last: bool = False,
                compile: bool = False) -> Model:
    check_precision(device, precision)
    net, meta = load_network(path)
    net, run = network_runner(net, device, precision, channels_last=channels_last, compile=compile)
    return Model(path, "ckpt", device, precision, run, meta, net)


def _ort_error_message(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def ort_session(path: str | os.PathLike[str], device: torch.device, threads: int | None = None) -> Any:
    """The onnxruntime session fastnst runs an .onnx model with (infer.py, export checks, the benchmark):
    all graph optimisations, errors-only logging, CUDA provider on ``cuda`` devices (then CPU), ``threads``
    intra-op threads (None: onnxruntime's default, one per physical core)."""
    import onnxruntime as ort

    path = Path(path)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("--device cuda needs onnxruntime-gpu for .onnx models (CUDAExecutionProvider is missing); "
                            "use --device cpu")
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    elif device.type == "mps":
        raise UserError("onnxruntime has no MPS backend; run .onnx models with --device cpu, or use the .ckpt on mps")
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no shape-inference chatter in the user's terminal
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise UserError(f"model {path} is not a valid ONNX model ({_ort_error_message(exc)[:160]})") from None


def _ort_failure(exc: Exception) -> RuntimeError:
    """An onnxruntime error as the exception the per-image handler of :func:`stylize_files` catches.
    onnxruntime's types (RuntimeException, Fail, InvalidArgument ...) derive from Exception only."""
    message = _ort_error_message(exc)
    if _out_of_memory(exc) or "bad_alloc" in str(exc) or "bad allocation" in str(exc).lower():
        return torch.OutOfMemoryError(f"onnxruntime ran out of memory ({message})")
    return InferenceError(f"onnxruntime failed ({type(exc).__name__}: {message})")


def _onnx_model(path: Path, device: torch.device, precision: str, threads: int | None = None) -> Model:
    if precision != "fp32":
        raise UserError(f"--precision {precision} does not apply to an .onnx model (its precision was fixed at "
                        f"export: python -m fastnst.export --fp16 writes a half-precision variant); use fp32")
    session = ort_session(path, device, threads)
    names = [i.name for i in session.get_inputs()]
    if len(names) != 1:
        raise UserError(f"model {path} has inputs {names}; a fastnst ONNX model has one input, {ONNX_INPUT!r}")
    custom = session.get_modelmeta().custom_metadata_map
    meta = json.loads(custom["fastnst"]) if "fastnst" in custom else {}

    def run(x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            (y,) = session.run(None, {names[0]: arr})
        except Exception as exc:  # noqa: BLE001 - translated: see _ort_failure
            raise _ort_failure(exc) from exc
        return torch.from_numpy(y).to(device=x.device, dtype=torch.float32)

    return Model(path, "onnx", device, precision, run, meta)


@contextlib.contextmanager
def _pickles_as_data_only() -> Iterator[None]:
    """``torch.export.load`` unpickles some archive members with ``weights_only=False`` (and plain
    ``pickle.loads`` for opaque objects); while active, every such call is restricted to plain data."""
    real_load, real_loads = torch.load, pickle.loads
    real_obj = getattr(torch._C, "_pickle_load_obj", None)

    def safe_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("weights_only: arbitrary Python objects are not allowed in a model file")

    torch.load, pickle.loads = safe_load, refuse  # type: ignore[assignment]
    if real_obj is not None:
        torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load, pickle.loads = real_load, real_loads  # type: ignore[assignment]
        if real_obj is not None:
            torch._C._pickle_load_obj = real_obj


def read_pt2(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load a .pt2 archive (a ``torch.export.ExportedProgram``) and its fastnst metadata, safely."""
    p = Path(path)
    if not zipfile.is_zipfile(p):
        raise UserError(f"model {p} is corrupt or not a torch.export .pt2 archive")
    extra = {PT2_META_FILE: ""}
    try:
        with _pickles_as_data_only():
            program = torch.export.load(p, extra_files=extra)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"model {p} was refused: it contains code or objects that are not plain data "
                        f"({first[:160]}); only load models you trust and that fastnst wrote") from None
    except Exception as exc:  # noqa: BLE001 - the deserialiser raises many types for a damaged archive
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {p} is corrupt or not a torch.export .pt2 archive ({first[:160]})") from None
    try:
        meta = json.loads(extra[PT2_META_FILE]) if extra[PT2_META_FILE] else {}
    except json.JSONDecodeError:
        meta = {}
    return program, meta


def _pt2_model(path: Path, device: torch.device, precision: str) -> Model:
    if precision != "fp32":
        raise UserError(f"--precision {precision} does not apply to a .pt2 model; use fp32, or the .ckpt")
    program, meta = read_pt2(path)
    module = program.module().to(device)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(device=device, dtype=torch.float32)).to(device=x.device, dtype=torch.float32)

    return Model(path, "pt2", device, precision, run, meta)


def load_model(path: str | os.PathLike[str], device: str | torch.device = "auto", precision: str = "fp32", *,
               channels_last: bool = False, compile: bool = False, threads: int | None = None) -> Model:
    """Rebuild a stylizer from a .ckpt, .onnx or .pt2 file alone (safely: a model file is data, never code).

    Returns a :class:`Model`: call it with [N, 3, H, W] float32 in [0, 1]; any H, W >= 5. ``channels_last``
    and ``compile`` apply to .ckpt models (see :func:`network_runner`); ``threads`` to .onnx models.
    """
    p = Path(path).expanduser()
    fmt = detect_model_format(p)
    if fmt != "ckpt" and (channels_last or compile):
        flags = " and ".join(f for f, on in (("--channels-last", channels_last), ("--compile", compile)) if on)
        raise UserError(f"{flags} apply to a training checkpoint (.ckpt); an .{fmt} model was optimised at export, "
                        f"so drop {flags} or pass the .ckpt")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if fmt == "ckpt":
        return _ckpt_model(p, dev, precision, channels_last, compile)
    if fmt == "onnx":
        return _onnx_model(p, dev, precision, threads)
    return _pt2_model(p, dev, precision)


# --------------------------------------------------------------------------------------------- tiling

def fixed_norm_copy(net: TransformerNet) -> TransformerNet:
    """A copy of ``net`` (sharing its weights) whose instance norms use statistics set by
    :func:`set_norm_stats` instead of each input's own."""
    tiler = copy.copy(net)  # shallow: parameters are shared, only the module tree is rebuilt
    tiler._modules = {}
    for name, child in net.named_children():
        tiler._modules[name] = _copy_tree(child)
    return tiler.eval()


def _copy_tree(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.InstanceNorm2d):
        return _FixedNorm(module).to(device=module.weight.device, dtype=module.weight.dtype)
    clone = copy.copy(module)
    clone._modules = {name: _copy_tree(child) for name, child in module.named_children()}
    return clone


def norm_stats(net: TransformerNet, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel (mean, biased variance) at the input of every instance norm of ``net`` for one image."""
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        var, mean = torch.var_mean(args[0].float(), dim=(0, 2, 3), unbiased=False)
        stats.append((mean, var))

    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    handles = [m.register_forward_pre_hook(record) for m in norms]
    try:
        with torch.inference_mode():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def set_norm_stats(tiler: TransformerNet, stats: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    fixed = [m for m in tiler.modules() if isinstance(m, _FixedNorm)]
    if len(fixed) != len(stats):
        raise RuntimeError(f"{len(stats)} statistics for {len(fixed)} norm layers")
    for m, (mean, var) in zip(fixed, stats):
        m.mean = mean.to(device=m.mean.device, dtype=m.norm.weight.dtype)
        m.var = var.to(device=m.var.device, dtype=m.norm.weight.dtype)


def tile_spans(length: int, tile: int, overlap: int, align: int = 4) -> list[tuple[int, int]]:
    """(start, end) of tiles about ``tile`` long covering ``length``, neighbours sharing >= ``overlap`` px.

    Starts are multiples of ``align`` (the network's total stride), so each tile's stride-2 convolutions
    sample the same pixels as they do on the whole image; the last tile may be up to ``align - 1`` longer.
    """
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - tile) / max(1, tile - overlap - align + 1)) + 1
    step = (length - tile) / (n - 1)
    starts = sorted({int(round(i * step)) // align * align for i in range(n)})
    return [(s, s + tile if i < len(starts) - 1 else length) for i, s in enumerate(starts)]


def _ramp(size: int, start: int, length: int, overlap: int) -> torch.Tensor:
    """1-D blending weight of a tile: rises linearly over ``overlap`` pixels at interior edges."""
    w = torch.ones(size)
    if overlap > 0:
        i = torch.arange(size, dtype=torch.float32)
        if start > 0:
            w = torch.minimum(w, (i + 0.5) / overlap)
        if start + size < length:
            w = torch.minimum(w, (size - i - 0.5) / overlap)
    return w


def stylize_tiled(net: TransformerNet, tiler: TransformerNet, x: torch.Tensor, *, tile: int, overlap: int,
                  stats_size: int, post: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                  ) -> torch.Tensor:
    """Stylize [1, 3, H, W] (float32, CPU) in overlapping ``tile`` x ``tile`` tiles with feathered blending.

    Instance norm would normalise each tile by its own statistics, so tiles would differ in colour and
    contrast. Instead every norm layer uses the statistics of the whole image, measured once on a copy whose
    longer side is at most ``stats_size`` (exact when the image is no larger). The network's memory is that
    of one tile (plus the stats pass); the full-size images are the float32 input and output, 24 bytes per
    pixel (the blending weights are separable: two vectors). ``post(stylized, content)`` is applied per tile
    (it must be pixel-wise). Returns [1, 3, H, W] float32 on the CPU.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError("stylize_tiled takes one image, [1, 3, H, W]")
    p = next(net.parameters())
    device, dtype = p.device, p.dtype
    _, _, h, w = x.shape
    scale = min(1.0, stats_size / max(h, w))
    small = x if scale == 1.0 else F.interpolate(
        x, size=(max(5, round(h * scale)), max(5, round(w * scale))), mode="bicubic", antialias=True,
        align_corners=False).clamp_(0, 1)
    set_norm_stats(tiler, norm_stats(net, small.to(device=device, dtype=dtype)))
    del small
    out = torch.zeros(1, 3, h, w)
    # A tile's weight is ramp_y (x) ramp_x and the tiles form a grid, so the sum of the weights at a pixel is
    # (sum of row ramps) * (sum of column ramps): two vectors instead of a full-size weight image.
    rows, cols = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    row_sum, col_sum = torch.zeros(h), torch.zeros(w)
    for y0, y1 in rows:
        row_sum[y0:y1] += _ramp(y1 - y0, y0, h, overlap)
    for x0, x1 in cols:
        col_sum[x0:x1] += _ramp(x1 - x0, x0, w, overlap)
    with torch.inference_mode():
        for y0, y1 in rows:
            wy = _ramp(y1 - y0, y0, h, overlap) / row_sum[y0:y1]
            for x0, x1 in cols:
                patch = x[:, :, y0:y1, x0:x1]
                y = tiler(patch.to(device=device, dtype=dtype)).to("cpu", torch.float32)
                if post is not None:
                    y = post(y, patch)
                wt = wy[:, None] * (_ramp(x1 - x0, x0, w, overlap) / col_sum[x0:x1])[None, :]
                out[:, :, y0:y1, x0:x1] += y * wt
    return out


# --------------------------------------------------------------------------------------------- colour

# YIQ, the colour space Gatys et al. 2016 ("Preserving Color in Neural Artistic Style Transfer") use for
# luminance-only transfer: Y is luminance, I and Q carry the chroma.
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                           [0.595716, -0.274453, -0.321263],
                           [0.211456, -0.522591, 0.311135]])
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB -> YIQ (Y in [0, 1])."""
    return torch.einsum("ij,njhw->nihw", RGB_TO_YIQ.to(x), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", YIQ_TO_RGB.to(x), x)


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the content's chroma (I, Q): the style changes texture and light, not
    colour. Both [N, 3, H, W] in [0, 1]; the result may leave [0, 1] slightly (clamped when saved)."""
    yiq = rgb_to_yiq(content)
    yiq[:, :1] = rgb_to_yiq(stylized)[:, :1]
    return yiq_to_rgb(yiq)


def blend(stylized: torch.Tensor, content: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength`` * stylized + (1 - ``strength``) * content; 0 gives the content back exactly."""
    if strength >= 1.0:
        return stylized
    if strength <= 0.0:
        return content.clone()
    return torch.lerp(content, stylized, strength)


@dataclass
class StylizeOptions:
    """How to stylize one batch: tiling, colour preservation and strength (all pixel-exact when off)."""

    tile: int | None = None
    tile_overlap: int | None = None  # None: min(96, tile // 3), enough for the paper network's receptive field
    tile_stats_size: int = 1024
    preserve_color: bool = False
    strength: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise UserError(f"--strength must be between 0 and 1, got {self.strength}")
        if self.tile is not None:
            if self.tile < 32:
                raise UserError(f"--tile must be at least 32 px, got {self.tile}")
            if not 0 <= self.overlap <= self.tile // 2:
                raise UserError(f"--tile-overlap must be between 0 and half the tile ({self.tile // 2}), "
                                f"got {self.overlap}")
        if self.tile_stats_size < 32:
            raise UserError(f"--tile-stats-size must be at least 32 px, got {self.tile_stats_size}")

    @property
    def overlap(self) -> int:
        if self.tile_overlap is not None:
            return self.tile_overlap
        return min(96, (self.tile or 0) // 3)

    def post(self, stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        if self.preserve_color:
            stylized = preserve_color(stylized, content)
        return blend(stylized, content, self.strength)


def stylize(model: Model, x: torch.Tensor, options: StylizeOptions | None = None) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> stylized [N, 3, H, W] float32 on x's device, with ``options`` applied."""
    opts = options or StylizeOptions()
    if opts.tile is not None and max(x.shape[-2:]) > opts.tile:
        outs = [model.tiled(x[i:i + 1].cpu(), opts.tile, opts.overlap, opts.tile_stats_size, opts.post)
                for i in range(x.shape[0])]
        # no concatenation for one image: a copy of a full-size float image is what tiling avoids
        return (outs[0] if len(outs) == 1 else torch.cat(outs)).to(x.device)
    return opts.post(model(x), x)


# --------------------------------------------------------------------------------------------- files

@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).expanduser().parts
    base: list[str] = []
    for part in parts:
        if _has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def find_inputs(inputs: Sequence[str], exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """(image file, path relative to the output folder) for every INPUT: files, folders searched
    recursively (hidden entries and the folder ``exclude`` skipped) and glob patterns. Several inputs
    keep each folder's name as a prefix so their files cannot collide."""
    if not inputs:
        raise UserError("no inputs given; pass image files, folders or glob patterns")
    pairs: list[tuple[Path, Path]] = []
    for arg in inputs:
        p = Path(arg).expanduser()
        prefix = Path(p.resolve().name) if len(inputs) > 1 else Path()
        if p.is_dir():
            files = image_files(p, exclude)
            if not files:
                raise UserError(f"input folder {p} contains no images (looked for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
            pairs.extend((f, prefix / f.relative_to(p)) for f in files)
        elif p.is_file():
            pairs.append((p, Path(p.name)))
        elif _has_magic(arg):
            base = _glob_base(arg)
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(arg), recursive=True))
            n = len(pairs)
            for m in matches:
                if m.is_dir():
                    pairs.extend((f, f.relative_to(base)) for f in image_files(m, exclude))
                elif m.is_file() and is_image_path(m) and not m.name.startswith("."):
                    pairs.append((m, m.relative_to(base)))
            if len(pairs) == n:
                raise UserError(f"no images match {arg!r}")
        else:
            raise UserError(f"input {p} does not exist")
    return pairs


def plan_jobs(inputs: Sequence[str], output: str | None = None, *, overwrite: bool = False,
              skip_existing: bool = False, ext: str | None = None) -> tuple[list[Job], int]:
    """Map INPUTs (files, folders searched recursively, glob patterns) to output files.

    One input file: ``output`` is a file (its extension picks the format) or a folder; default
    ``<stem>_stylized<ext>`` in the current folder. Otherwise ``output`` is a folder (default ``stylized``)
    and each folder input keeps its structure. Inputs are never overwritten; existing outputs only with
    ``overwrite`` (or are skipped with ``skip_existing``). Returns the jobs and the number skipped.
    """
    if not inputs:
        raise UserError("no inputs given; pass image files, folders or glob patterns")
    if ext is not None:
        ext = ext if ext.startswith(".") else f".{ext}"
        if ext.lower() not in IMAGE_EXTENSIONS:
            raise UserError(f"--ext {ext} is not an image format; use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    paths = [Path(a).expanduser() for a in inputs]
    single = len(inputs) == 1 and paths[0].is_file()
    out_file: Path | None = None
    out_dir: Path
    if single:
        src = paths[0]
        if output is None:
            out_file = Path(f"{src.stem}_stylized{ext or src.suffix}")
        else:
            o = Path(output).expanduser()
            if o.is_dir() or output.endswith(("/", os.sep)) or not o.suffix:
                out_file = o / (src.stem + (ext or src.suffix))
            elif is_image_path(o):
                out_file = o
            else:
                raise UserError(f"output {o} has an unknown image extension '{o.suffix}'; use one of "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))}, or a folder")
        out_dir = out_file.parent
    else:
        out_dir = Path(output).expanduser() if output is not None else Path("stylized")
    pairs = find_inputs(inputs, exclude=out_dir.resolve())
    if out_file is None and (out_dir.is_file() or (not out_dir.exists() and is_image_path(out_dir))):
        raise UserError(f"output {out_dir} is a file, but there are several inputs; give a folder with -o")

    jobs: list[Job] = []
    if out_file is not None:
        jobs.append(Job(pairs[0][0], out_file))
    else:
        for src, rel in pairs:
            jobs.append(Job(src, out_dir / (rel.with_suffix(ext) if ext else rel)))

    sources = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    for j in jobs:
        d = j.dst.resolve()
        if d in sources:
            raise UserError(f"output {j.dst} would overwrite the input {j.src}; inputs are never overwritten, "
                            f"choose another -o")
        if d in seen:
            raise UserError(f"inputs {seen[d]} and {j.src} would both be written to {j.dst}; "
                            f"stylize them into different -o folders")
        seen[d] = j.src
    existing = [j for j in jobs if j.dst.exists()]
    if existing and not overwrite:
        if not skip_existing:
            raise UserError(f"{len(existing)} output file(s) already exist, e.g. {existing[0].dst}; "
                            f"pass --overwrite to replace them or --skip-existing to keep them")
        jobs = [j for j in jobs if not j.dst.exists()]
    _check_writable(out_dir)
    return jobs, len(existing) if skip_existing and not overwrite else 0


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder} ({exc.strerror or exc}); "
                        f"choose another -o") from None
    probe = folder / f".fastnst-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"the output folder {folder} is not writable ({exc.strerror or exc}); "
                        f"choose another -o") from None


def save_atomic(t: torch.Tensor, path: Path) -> None:
    """Save [3, H, W] in [0, 1] atomically (:func:`fastnst.fileio.atomic_write`): an interrupted run never
    leaves a truncated image. ``t`` is clamped and scaled in place (no full-size float temporaries: a
    50-megapixel float image is 600 MB)."""
    arr = t.detach().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    img = Image.fromarray(arr, "RGB")
    atomic_write(path, lambda tmp: save_image(img, tmp))


# --------------------------------------------------------------------------------------------- runs

@dataclass
class RunReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped_existing: int = 0
    seconds: float = 0.0


def _out_of_memory(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in msg or "can't allocate memory" in msg \
        or "failed to allocate" in msg


def _load_content(job: Job, max_size: int | None) -> torch.Tensor:
    img = load_image(job.src, "image")
    if max_size:
        img = resize_longer(img, max_size)
    if min(img.size) < 5:
        raise UserError(f"image {job.src} is {img.size[0]}x{img.size[1]} px; both sides need at least 5 px")
    return pil_to_tensor(img).unsqueeze(0)


def _prefetch(fn: Callable[[Job], Any], jobs: Iterable[Job], depth: int) -> Iterator[tuple[Job, Future]]:
    """Decode the next ``depth`` images in background threads while the model runs (Pillow frees the GIL)."""
    if depth <= 0:
        for job in jobs:
            fut: Future = Future()
            try:
                fut.set_result(fn(job))
            except Exception as exc:  # noqa: BLE001 - handed to the caller, which reports it
                fut.set_exception(exc)
            yield job, fut
        return
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        queue: deque[tuple[Job, Future]] = deque()
        it = iter(jobs)
        for job in it:
            queue.append((job, pool.submit(fn, job)))
            if len(queue) >= depth:
                break
        while queue:
            item = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(fn, nxt)))
            yield item


def stylize_files(model: Model, jobs: Sequence[Job], options: StylizeOptions | None = None, *,
                  batch_size: int = 1, max_size: int | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> RunReport:
    """Stylize every job's image and write it; a bad image is reported through ``log`` and skipped."""
    opts = options or StylizeOptions()
    opts.validate()
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if max_size is not None and max_size < 5:
        raise UserError(f"--max-size must be at least 5 px, got {max_size}")
    from tqdm import tqdm

    report = RunReport()
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    say = log or (lambda msg: tqdm.write(msg, file=sys.stderr))

    def fail(job: Job, msg: str) -> None:
        report.failed.append((job.src, msg))
        say(f"fastnst: error: {msg}; skipped")
        bar.update(1)

    def run(batch: list[tuple[Job, torch.Tensor]]) -> None:
        x = batch[0][1] if len(batch) == 1 else torch.cat([t for _, t in batch])  # no full-size copy of one image
        try:
            y = stylize(model, x, opts).cpu()
        except UserError as exc:
            for job, _ in batch:
                fail(job, f"{job.src}: {exc}")
            return
        except InferenceError as exc:
            for job, _ in batch:
                fail(job, f"{job.src}: {exc}")
            return
        except RuntimeError as exc:
            if not _out_of_memory(exc):
                raise
            h, w = x.shape[-2:]
            for job, _ in batch:
                fail(job, f"ran out of memory stylizing {job.src} ({w}x{h} px, batch of {len(batch)}); "
                          f"use --tile 512, --max-size or a smaller --batch-size")
            return
        for i, (job, _) in enumerate(batch):
            try:
                save_atomic(y[i], job.dst)
            except (OSError, ValueError) as exc:
                fail(job, f"cannot write {job.dst} ({exc})")
                continue
            report.written.append(job.dst)
            bar.update(1)

    tiled = opts.tile is not None
    per_batch = 1 if tiled else batch_size
    buckets: dict[tuple[int, int], list[tuple[Job, torch.Tensor]]] = {}
    pending = 0
    try:
        for job, fut in _prefetch(lambda j: _load_content(j, max_size), jobs, 0 if tiled else 2 * per_batch):
            try:
                content = fut.result()
            except UserError as exc:
                fail(job, str(exc))
                continue
            key = (content.shape[-2], content.shape[-1])
            buckets.setdefault(key, []).append((job, content))
            pending += 1
            if len(buckets[key]) >= per_batch:
                pending -= len(buckets[key])
                run(buckets.pop(key))
            elif pending > 2 * per_batch:  # many sizes: bound the memory held in partial batches
                fullest = max(buckets, key=lambda k: len(buckets[k]))
                pending -= len(buckets[fullest])
                run(buckets.pop(fullest))
        for key in list(buckets):
            run(buckets.pop(key))
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class BenchmarkResult:
    device: str
    precision: str
    model_format: str
    size: tuple[int, int]  # (width, height)
    batch_size: int
    latencies_ms: list[float]  # per image, one entry per timed run

    @property
    def images_per_second(self) -> float:
        return 1000.0 / statistics.mean(self.latencies_ms)

    def summary(self) -> str:
        lat = sorted(self.latencies_ms)
        p90 = lat[min(len(lat) - 1, math.ceil(0.9 * len(lat)) - 1)]
        return (f"benchmark: {self.model_format} on {self.device} ({self.precision}), {self.size[0]}x{self.size[1]} px, "
                f"batch {self.batch_size}, {len(lat)} timed runs after warm-up: per-image latency "
                f"mean {statistics.mean(lat):.2f} ms, median {statistics.median(lat):.2f} ms, p90 {p90:.2f} ms; "
                f"{self.images_per_second:.2f} images/s")


def benchmark(model: Model, x: torch.Tensor, options: StylizeOptions | None = None, *, batch_size: int = 1,
              warmup: int = 3, runs: int = 10) -> BenchmarkResult:
    """Time ``stylize`` on a batch of copies of ``x`` [1, 3, H, W] after ``warmup`` untimed runs, with the
    device synchronised around each timed run; input and output stay on the model's device."""
    if runs < 1 or warmup < 0:
        raise UserError(f"benchmark needs at least 1 timed run and >= 0 warm-up runs, got {runs} and {warmup}")
    opts = options or StylizeOptions()
    opts.validate()
    tiled = opts.tile is not None and max(x.shape[-2:]) > opts.tile
    xb = x.expand(batch_size, -1, -1, -1).contiguous()
    xb = xb if tiled else xb.to(model.device)
    lat = []
    for i in range(warmup + runs):
        model.synchronize()
        t0 = time.perf_counter()
        stylize(model, xb, opts)
        model.synchronize()
        if i >= warmup:
            lat.append((time.perf_counter() - t0) * 1000.0 / batch_size)
    return BenchmarkResult(str(model.device), model.precision, model.format, (x.shape[-1], x.shape[-2]),
                           batch_size, lat)


def run_cli(args: Any) -> int:
    """Run ``infer.py`` with parsed arguments; returns the exit status (0 all written, 1 some failed)."""
    opts = StylizeOptions(tile=args.tile, tile_overlap=args.tile_overlap, tile_stats_size=args.tile_stats_size,
                          preserve_color=args.preserve_color, strength=args.strength)
    opts.validate()
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_size is not None and args.max_size < 5:
        raise UserError(f"--max-size must be at least 5 px, got {args.max_size}")
    if args.overwrite and args.skip_existing:
        raise UserError("--overwrite and --skip-existing contradict each other; pass one of them")
    model = load_model(args.model, args.device, args.precision, channels_last=getattr(args, "channels_last", False),
                       compile=getattr(args, "compile", False))
    if opts.tile is not None and model.net is None:
        model.tiled(torch.zeros(1, 3, 8, 8), opts.tile, opts.overlap, opts.tile_stats_size)  # raises
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))

    if args.benchmark:
        src = find_inputs(args.inputs)[0][0]
        x = _load_content(Job(src, src), args.max_size)
        say(f"fastnst: model {model.describe()}")
        print(benchmark(model, x, opts, batch_size=args.batch_size, warmup=args.warmup,
                        runs=args.benchmark_runs).summary())
        return 0

    jobs, skipped = plan_jobs(args.inputs, args.output, overwrite=args.overwrite, skip_existing=args.skip_existing,
                              ext=args.ext)
    say(f"fastnst: model {model.describe()}")
    if skipped:
        say(f"fastnst: {skipped} existing output(s) kept (--skip-existing)")
    report = stylize_files(model, jobs, opts, batch_size=args.batch_size, max_size=args.max_size,
                           progress=not args.quiet)
    report.skipped_existing = skipped
    where = report.written[0] if len(jobs) == 1 and report.written else \
        (jobs[0].dst.parent if len(jobs) == 1 else Path(args.output or "stylized"))
    if report.failed:
        print(f"fastnst: {len(report.failed)} of {len(jobs)} image(s) failed; {len(report.written)} written to "
              f"{where}", file=sys.stderr)
        return 1
    say(f"fastnst: wrote {len(report.written)} image(s) to {where} in {report.seconds:.1f} s")
    return 0
