"""The Python API: ``fastnst.load(path)`` returns a :class:`Stylizer`; ``stylizer.stylize(image)`` stylizes a
PIL image or a uint8 numpy array. infer.py, ``fastnst.evaluate`` and ``fastnst.export`` are built on it.

Pixel contract inside: float32 RGB NCHW in [0, 1]; clamping happens only where pixels leave (the image
returned by :meth:`Stylizer.stylize`, files written by the jobs). Imports torch, onnxruntime, Pillow and the
network registry; never Hydra, the data module, VGG or Lightning.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from fastnst.errors import UserError
from fastnst.formats import ModelFormat, ModelInfo, detect_format
from fastnst.inference.color import blend, preserve_color
from fastnst.inference.devices import check_precision, resolve_device, synchronize
from fastnst.inference.runners import Runner, network_runner, onnx_runner, program_runner
from fastnst.inference.styles import StyleChoice, describe_style, style_weights
from fastnst.inference.tiling import EagerTiles, TileModel, stylize_tiled
from fastnst.media.image import pil_to_tensor, resize_longer, tensor_to_pil, to_rgb
from fastnst.media.limits import HELD_STYLIZED, SHARE, PixelBudget, available_bytes

if TYPE_CHECKING:
    from fastnst.inference.video import VideoReport

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray)
MIN_SIDE = 5
MIN_AUTO_TILE, MAX_AUTO_TILE = 128, 2048  # tile sides chosen for memory (a larger tile only saves blending)
UNKNOWN_NETWORK_BYTES = 1400.0  # an architecture not installed here: about the default network's estimate


def device_memory(device: torch.device) -> int:
    """Bytes still free on ``device``: the GPU's free memory, else what this process can allocate."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_bytes()


@dataclass
class StylizeOptions:
    """How to stylize: tiling, colour preservation and strength (all pixel-exact when off)."""

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


class Stylizer:
    """A model loaded from a file (:func:`load`).

    ``stylizer(x, style)`` maps [N, 3, H, W] float32 in [0, 1] on any device to the stylized [N, 3, H, W]
    float32 on the same device; :meth:`stylize` does the same for a PIL image or a uint8 array, with the
    options of infer.py. ``info`` says what the file holds (architecture, styles, training settings);
    ``network`` is the eager network of ``.ckpt`` / ``.pth`` files (tiling needs it), None for exported ones.
    """

    def __init__(self, path: Path, fmt: ModelFormat, device: torch.device, precision: str, run: Runner,
                 info: ModelInfo, network: nn.Module | None = None, weights_precision: str | None = None,
                 compiled: bool = False, tiles: Callable[[], TileModel] | None = None) -> None:
        self.path, self.format, self.device, self.precision = path, fmt, device, precision
        self.compiled = compiled  # torch.compile: a new input shape costs a compilation
        self.info, self.network, self._run = info, network, run
        self.weights_precision = weights_precision or precision  # an fp16 .onnx runs in fp16 whatever --precision
        # Built on the first tiled image: the eager network's fixed-norm copy, or an exported graph rewritten to take
        # the whole image's norm statistics (fastnst.inference.tiling_exported).
        self._make_tiles = tiles or (lambda: EagerTiles(self._eager_network()))
        self._tiles: TileModel | None = None
        self._network_bytes: float | None = None
        self._tiling_noted: set[tuple[int, ...]] = set()
        # Where notes go (tiling chosen for memory); the commands send them to stderr, the Python API warns.
        self.log: Callable[[str], None] = lambda message: warnings.warn(message, stacklevel=3)

    # --- what the model is ---------------------------------------------------------------------------
    @property
    def styles(self) -> list[str]:
        """Style names, in the order of the network's style weights."""
        return list(self.info.styles)

    @property
    def style_name(self) -> str:
        return self.styles[0] if len(self.styles) == 1 else ",".join(self.styles)

    def describe(self) -> str:
        styles = f"style {self.styles[0]!r}" if len(self.styles) == 1 else f"{len(self.styles)} styles"
        return (f"{self.path} ({self.format}, {self.info.architecture} {self.info.config}, {styles}, "
                f"device {self.device}, {self.weights_precision})")

    def style_weights(self, style: StyleChoice) -> torch.Tensor | None:
        """[S] weights for a style choice (name, index, blend), None for a one-style model; see
        :func:`fastnst.inference.styles.style_weights`."""
        return style_weights(style, self.styles)

    def describe_style(self, weights: torch.Tensor | None) -> str:
        return describe_style(weights, self.styles)

    def synchronize(self) -> None:
        synchronize(self.device)

    # --- tensors -------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, style: StyleChoice = None) -> torch.Tensor:
        """Stylize [N, 3, H, W] float32 in [0, 1] with one style choice for the batch (or [N, S] weights per
        image, or [1, S] for all)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an [N, 3, H, W] tensor, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIDE:
            raise UserError(f"an image of {x.shape[-1]}x{x.shape[-2]} px is too small; both sides need >= {MIN_SIDE} px")
        return self._run(x, self._batch_weights(style, x.shape[0]))

    def _batch_weights(self, style: StyleChoice, n: int) -> torch.Tensor | None:
        """[n, S] per-image weights as given, or [1, S] for one choice for the whole batch (the network's fast
        path: one scale and shift for all images), None for a one-style model."""
        if isinstance(style, torch.Tensor) and style.dim() == 2:
            if style.shape[0] not in (1, n) or style.shape[1] != len(self.styles):
                raise ValueError(f"style weights of shape {tuple(style.shape)} for {n} image(s) and {len(self.styles)} styles")
            return None if len(self.styles) == 1 else style
        w = self.style_weights(style)
        return None if w is None else w.reshape(1, -1)

    def _eager_network(self) -> nn.Module:
        if self.network is None:
            raise UserError(f"--tile cannot run {self.path}: it holds no network fastnst can tile; use --max-size")
        return self.network

    def tiled(self, x: torch.Tensor, options: StylizeOptions, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Stylize one [1, 3, H, W] image tile by tile, every format alike; see
        :func:`fastnst.inference.tiling.stylize_tiled`."""
        if self._tiles is None:
            self._tiles = self._make_tiles()
        style = None if weights is None else weights.reshape(1, -1)
        return stylize_tiled(self._tiles, x, tile=options.tile or 0, overlap=options.overlap,
                             stats_size=options.tile_stats_size, style=style, post=options.post)

    def stylize_tensor(self, x: torch.Tensor, weights: torch.Tensor | None = None,
                       options: StylizeOptions | None = None) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> stylized [N, 3, H, W] float32 on x's device, with ``options`` applied;
        ``weights``: [S] style weights for the whole batch (None for a one-style model)."""
        opts = self.fit_in_memory(x, options or StylizeOptions())
        if opts.tile is not None and max(x.shape[-2:]) > opts.tile:
            outs = [self.tiled(x[i:i + 1].cpu(), opts, weights) for i in range(x.shape[0])]
            # no concatenation for one image: a copy of a full-size float image is what tiling avoids
            return (outs[0] if len(outs) == 1 else torch.cat(outs)).to(x.device)
        batch = None if weights is None else weights.reshape(1, -1)
        return opts.post(self(x, batch), x)

    def fit_in_memory(self, x: torch.Tensor, opts: StylizeOptions) -> StylizeOptions:
        """``opts``, with tiles when ``x`` [N, 3, H, W] stylized whole would need more memory than the model's device
        has available (and no tile size was asked for): the network then holds one tile's activations, sized to a
        quarter of that memory (between 128 and 2048 px), and the image its float input and output."""
        if opts.tile is not None or max(x.shape[-2:]) <= MIN_AUTO_TILE:
            return opts
        per_pixel = self.network_bytes_per_pixel() + HELD_STYLIZED
        free = device_memory(self.device) * SHARE
        if x.shape[0] * x.shape[-2] * x.shape[-1] * per_pixel <= free:
            return opts
        side = int(math.sqrt(max(free / 4, 0) / self.network_bytes_per_pixel())) // 32 * 32
        tile = max(MIN_AUTO_TILE, min(MAX_AUTO_TILE, side))
        if max(x.shape[-2:]) <= tile:
            return opts
        key = tuple(x.shape)
        if key not in self._tiling_noted:
            self._tiling_noted.add(key)
            self.log(f"fastnst: {x.shape[-1]}x{x.shape[-2]} px{f' (batch of {x.shape[0]})' if x.shape[0] > 1 else ''}"
                     f" would need about {x.shape[0] * x.shape[-2] * x.shape[-1] * per_pixel / 1e9:.1f} GB stylized "
                     f"whole and {free / SHARE / 1e9:.1f} GB is available: stylizing in {tile} px tiles (--tile)")
        return replace(opts, tile=tile)

    def network_bytes_per_pixel(self) -> float:
        """The estimated working memory of the network per pixel of its input (see
        :func:`fastnst.models.cost.activation_bytes_per_pixel`); onnxruntime's arena counts half as much again."""
        if self._network_bytes is None:
            from fastnst.models import create_model
            from fastnst.models.cost import activation_bytes_per_pixel

            try:
                if self.network is not None:
                    estimate = activation_bytes_per_pixel(self.network)
                else:
                    with torch.random.fork_rng(devices=[]):
                        estimate = activation_bytes_per_pixel(create_model(self.info.architecture,
                                                                           **self.info.config).eval())
            except Exception:  # noqa: BLE001 - an architecture not installed here: the default network's figure
                estimate = UNKNOWN_NETWORK_BYTES
            self._network_bytes = estimate * (1.5 if self.format == "onnx" else 1.0)
        return self._network_bytes

    # --- images --------------------------------------------------------------------------------------
    def stylize(self, image: ImageLike, style: StyleChoice = None, *, tile: int | None = None,
                tile_overlap: int | None = None, tile_stats_size: int = 1024, preserve_color: bool = False,
                strength: float = 1.0, max_size: int | None = None) -> ImageLike:
        """Stylize a PIL image (any mode; RGB out) or a uint8 array (H, W, 3), (H, W) or (H, W, 4); the
        result has the same type and size (or the longer side ``max_size``, if given and smaller), RGB.

        ``style``: a name, an index or a blend (``{"a": 0.7, "b": 0.3}`` or ``"a=0.7,b=0.3"``, normalised to
        sum 1) for a multi-style model (every style at once: :meth:`stylize_each`, :meth:`style_sheet`);
        ``tile`` stylizes large images in tiles of that many pixels; ``preserve_color`` keeps the photo's
        colours; ``strength`` in [0, 1] blends with the photo.
        """
        opts = StylizeOptions(tile=tile, tile_overlap=tile_overlap, tile_stats_size=tile_stats_size,
                              preserve_color=preserve_color, strength=strength)
        opts.validate()
        weights = self.style_weights(style)
        x, is_array = _image_tensor(image, max_size)
        return _as_input_type(tensor_to_pil(self.stylize_tensor(x, weights, opts)), is_array)

    def stylize_each(self, image: ImageLike, **options: Any) -> dict[str, ImageLike]:
        """``{style name: stylized image}`` for every style of the model (one entry for a one-style model);
        ``options`` are :meth:`stylize`'s keyword arguments."""
        opts, max_size = _options(options)
        x, is_array = _image_tensor(image, max_size)
        return {name: _as_input_type(tensor_to_pil(self.stylize_tensor(x, self.style_weights(i), opts)), is_array)
                for i, name in enumerate(self.styles)}

    def style_sheet(self, image: ImageLike, **options: Any) -> ImageLike:
        """One labelled image: the photo and its stylization in every style of a multi-style model, side by
        side (panels at most 1024 px); ``options`` are :meth:`stylize`'s keyword arguments."""
        from fastnst.inference.style_outputs import compose_sheet, each_style

        weights = each_style(self.styles, None, sheet=True) or []
        opts, max_size = _options(options)
        x, is_array = _image_tensor(image, max_size)
        outs = [self.stylize_tensor(x, w, opts)[0] for w in weights]
        return _as_input_type(compose_sheet(x[0], outs, self.styles), is_array)

    def stylize_video(self, src: str | os.PathLike[str], dst: str | os.PathLike[str], style: StyleChoice = None, *,
                      batch_size: int = 1, max_size: int | None = None, temporal_blend: float = 0.0,
                      codec: str | None = None, crf: float | None = None, audio: bool = True,
                      progress: bool = False, **options: Any) -> VideoReport:
        """Stylize the video file ``src`` into ``dst`` (container from its extension) with infer.py's guarantees:
        every frame with its timestamp, size, rotation, pixel aspect and the audio kept; written atomically.
        ``options`` are :meth:`stylize`'s (``tile``, ``preserve_color``, ``strength`` ...). Returns the report
        (frames, seconds, fps, the encoding used)."""
        from fastnst.inference.video import stylize_video
        from fastnst.media.encoding import EncodeSettings

        opts, _ = _options(options)
        return stylize_video(self, src, dst, opts, weights=self.style_weights(style),
                             encode=EncodeSettings(codec=codec, crf=crf, audio=audio), batch_size=batch_size,
                             max_size=max_size, temporal_blend=temporal_blend, progress=progress,
                             pad_batches=self.compiled)


def _options(options: dict[str, Any]) -> tuple[StylizeOptions, int | None]:
    """:meth:`Stylizer.stylize`'s keyword arguments as options and ``max_size``; unknown ones are one sentence."""
    known = {"tile", "tile_overlap", "tile_stats_size", "preserve_color", "strength"}
    unknown = sorted(set(options) - known - {"max_size"})
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)}; stylize takes {', '.join(sorted(known | {'max_size'}))}")
    opts = StylizeOptions(**{k: v for k, v in options.items() if k in known})
    opts.validate()
    return opts, options.get("max_size")


def _image_tensor(image: Any, max_size: int | None) -> tuple[torch.Tensor, bool]:
    """A PIL image or uint8 array as [1, 3, H, W] float32 in [0, 1] (longer side at most ``max_size``), and
    whether it was an array."""
    is_array = isinstance(image, np.ndarray)
    if is_array:
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise UserError(f"stylize takes a uint8 array of shape (H, W, 3), (H, W, 4) or (H, W); got "
                            f"{image.dtype} {image.shape}")
        pil = Image.fromarray(image)
    elif isinstance(image, Image.Image):
        pil = image
    else:
        raise UserError(f"stylize takes a PIL image or a uint8 numpy array, got {type(image).__name__}")
    if max_size is None:  # stylized at this size: its float copies must fit (the network tiles itself if needed)
        PixelBudget(HELD_STYLIZED, "fastnst.media.limits.set_max_pixels(N)", doing="stylizing it").check(
            *pil.size, "the image", pil.mode)
    pil = to_rgb(pil)
    if max_size is not None:
        if max_size < MIN_SIDE:
            raise UserError(f"max_size must be at least {MIN_SIDE} px, got {max_size}")
        pil = resize_longer(pil, max_size)
    return pil_to_tensor(pil).unsqueeze(0), is_array


def _as_input_type(image: Image.Image, is_array: bool) -> Any:
    return np.asarray(image) if is_array else image


def _foreign(path: Path, kind: str, inputs: list[str]) -> UserError:
    """A model file fastnst did not write: refused at load time, before any image is read."""
    shown = ", ".join(repr(n) for n in inputs) or "none"
    return UserError(f"model {path} has no fastnst metadata, so it is not a style network fastnst exported ({kind} "
                     f"graph with inputs {shown}); stylize with the .ckpt, or a file written by fastnst export from it")


def load(path: str | os.PathLike[str], device: str | torch.device = "auto", precision: str = "fp32", *,
         channels_last: bool = False, compile: bool = False, threads: int | None = None,
         onnx_optimization: str = "all") -> Stylizer:
    """Load a model file for stylizing: a training checkpoint (``.ckpt``), a pytorch/examples model
    (``.pth``), an ONNX model (``.onnx``, run with onnxruntime) or a torch.export program (``.pt2``).
    Safely: a model file is data, never code.

    ``device``: auto, cpu, cuda, cuda:N, mps. ``precision`` (fp32, bf16, fp16), ``channels_last`` and
    ``compile`` apply to eager networks (``.ckpt``, ``.pth``); ``threads`` and ``onnx_optimization`` (onnxruntime's
    graph optimisation level: all, extended, basic, none) to ``.onnx`` models.
    """
    p = Path(path).expanduser()
    fmt = detect_format(p)
    if fmt != "ckpt" and (channels_last or compile):
        flags = " and ".join(f for f, on in (("--channels-last", channels_last), ("--compile", compile)) if on)
        raise UserError(f"{flags} apply to a training checkpoint (.ckpt); an .{fmt} model was optimised at export, "
                        f"so drop {flags} or pass the .ckpt")
    dev = resolve_device(device)
    if fmt == "ckpt":
        from fastnst.formats.checkpoint import load_network

        check_precision(dev, precision)
        net, info = load_network(p)
        net, run = network_runner(net, dev, precision, channels_last=channels_last, compile=compile)
        return Stylizer(p, fmt, dev, precision, run, info, net, compiled=compile)
    if fmt == "onnx":
        from fastnst.formats.deploy import IMAGE_INPUT, OUTPUT, STYLE_INPUT
        from fastnst.formats.onnx import onnx_info, onnx_precision, ort_session, read_onnx

        if precision != "fp32":
            raise UserError(f"--precision {precision} does not apply to an .onnx model (its precision was fixed at "
                            f"export: python -m fastnst.export --fp16 writes a half-precision variant); use fp32")
        proto = read_onnx(p)
        info = onnx_info(proto, p)
        initializers = {t.name for t in proto.graph.initializer}
        names = [i.name for i in proto.graph.input if i.name not in initializers]
        outputs = [o.name for o in proto.graph.output]
        if info is None:
            raise _foreign(p, "an ONNX", names)
        expected = [IMAGE_INPUT] + ([STYLE_INPUT] if info.num_styles > 1 else [])
        if names != expected or outputs != [OUTPUT]:
            raise UserError(f"model {p} has inputs {names} and outputs {outputs}; a fastnst ONNX model of "
                            f"{info.num_styles} style(s) has {expected} and ['{OUTPUT}'], so its metadata does not "
                            f"describe it: export it again with fastnst export")
        file_precision = onnx_precision(proto)
        del proto
        session = ort_session(p, dev, threads, onnx_optimization)
        from fastnst.inference.tiling_exported import OnnxTiles

        return Stylizer(p, fmt, dev, precision, onnx_runner(session), info, weights_precision=file_precision,
                        tiles=lambda: OnnxTiles(p, info, dev, threads, onnx_optimization))
    from fastnst.formats.pt2 import read_pt2

    if precision != "fp32":
        raise UserError(f"--precision {precision} does not apply to a .pt2 model; use fp32, or the .ckpt")
    program, info = read_pt2(p)
    if info is None:
        raise _foreign(p, "a torch.export", [s.arg.name for s in program.graph_signature.input_specs
                                            if s.kind.name == "USER_INPUT"])
    from fastnst.inference.tiling_exported import ProgramTiles

    return Stylizer(p, fmt, dev, precision, program_runner(program.module(), dev), info,
                    tiles=lambda: ProgramTiles(program, info, p, dev))


__all__ = ["StylizeOptions", "Stylizer", "load"]
