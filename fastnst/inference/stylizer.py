"""The Python API: ``fastnst.load(path)`` returns a :class:`Stylizer`; ``stylizer.stylize(image)`` stylizes a
PIL image or a uint8 numpy array. infer.py, ``fastnst.evaluate`` and ``fastnst.export`` are built on it.

Pixel contract inside: float32 RGB NCHW in [0, 1]; clamping happens only where pixels leave (the image
returned by :meth:`Stylizer.stylize`, files written by the jobs). Imports torch, onnxruntime, Pillow and the
network registry; never Hydra, the data module, VGG or Lightning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from fastnst.errors import UserError
from fastnst.formats import ModelFormat, ModelInfo
from fastnst.formats.styles import save_styles
from fastnst.inference.devices import synchronize
from fastnst.inference.memory import fit_in_memory, network_bytes_per_pixel
from fastnst.inference.options import StylizeOptions, VideoOptions
from fastnst.inference.runners import Runner
from fastnst.inference.style_outputs import compose_sheet, each_style
from fastnst.inference.styles import (Painting, PaintingChoice, StyleChoice, StyleSpace, describe_style, encode_paintings,
                                      style_vector)
from fastnst.inference.tiling import EagerTiles, TileModel, stylize_tiled
from fastnst.inference.video import VideoReport, stylize_video
from fastnst.media.encoding import EncodeSettings
from fastnst.media.image import pil_to_tensor, resize_longer, tensor_to_pil, to_rgb
from fastnst.media.limits import HELD_STYLIZED, PixelBudget

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray)
Encoder = Callable[[torch.Tensor], torch.Tensor]  # painting [1, 3, H, W] in [0, 1] -> style vector [D] or [1, D]
MIN_SIDE = 5


class Stylizer:
    """A model loaded from a file (:func:`load`).

    ``stylizer(x, style)`` maps [N, 3, H, W] float32 in [0, 1] on any device to the stylized [N, 3, H, W]
    float32 on the same device; :meth:`stylize` does the same for a PIL image or a uint8 array, with the
    options of infer.py. ``info`` says what the file holds (architecture, styles, training settings);
    ``network`` is the eager network of ``.ckpt`` / ``.pth`` files (tiling needs it), None for exported ones.
    """

    def __init__(self, path: Path, fmt: ModelFormat, device: torch.device, precision: str, run: Runner,
                 info: ModelInfo, network: nn.Module | None = None, weights_precision: str | None = None,
                 compiled: bool = False, encode: Encoder | None = None,
                 tiles: Callable[[], TileModel] | None = None) -> None:
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
        if info.takes_painting and encode is None:
            raise UserError(f"model {path} takes a painting but its style encoder was not found")
        vectors = torch.tensor(info.style_vectors or [], dtype=torch.float32).reshape(-1, info.style_dim) \
            if info.takes_painting else None
        self.space = StyleSpace(list(info.styles), vectors, info.style_dim, encode, info.painting_size or 256,
                                f"model {path.name}")

    # --- what the model is ---------------------------------------------------------------------------
    @property
    def styles(self) -> list[str]:
        """Style names, in the order of the network's style weights (saved styles of a network that takes a
        painting)."""
        return list(self.space.names)

    @property
    def takes_painting(self) -> bool:
        """Whether the model stylizes with any painting (``style_image=``, ``--style-image``)."""
        return self.space.takes_painting

    @property
    def style_dim(self) -> int:
        """Length D of the style vector the network takes."""
        return self.space.dim

    @property
    def style_name(self) -> str:
        return self.styles[0] if len(self.styles) == 1 else ",".join(self.styles) or self.path.stem

    def describe(self) -> str:
        if self.takes_painting:
            styles = f"any painting ({self.style_dim}-d style vector, {len(self.styles)} saved style(s))"
        else:
            styles = f"style {self.styles[0]!r}" if len(self.styles) == 1 else f"{len(self.styles)} styles"
        return (f"{self.path} ({self.format}, {self.info.architecture} {self.info.config}, {styles}, "
                f"device {self.device}, {self.weights_precision})")

    def style_vector(self, style: StyleChoice = None, style_image: PaintingChoice = None) -> torch.Tensor | None:
        """The [D] style vector of a style choice (name, index, blend, vector) or of a painting / blend of paintings
        (each painting encoded once per call), None for a one-style model; see
        :func:`fastnst.inference.styles.style_vector`."""
        return style_vector(style, self.space, style_image)

    def style_weights(self, style: StyleChoice) -> torch.Tensor | None:
        """The style vector of a style choice: [S] weights for a model of trained styles (see :meth:`style_vector`)."""
        return style_vector(style, self.space)

    def encode_style(self, painting: Painting) -> torch.Tensor:
        """The [D] style vector of ``painting`` (a PIL image or a file path), float32 on the CPU: keep it, blend it,
        pass it as ``style=`` or save it under a name (:meth:`save_style`)."""
        return encode_paintings(painting, self.space)

    def save_style(self, name: str, style: StyleChoice = None, style_image: PaintingChoice = None) -> torch.Tensor:
        """Save a style vector (of ``style_image``, or a ``style`` choice such as a vector or a blend) under ``name``
        in the model file itself, so that ``--style NAME`` and ``fastnst.info`` find it; returns the vector."""
        if not self.takes_painting:
            raise UserError(f"model {self.path} holds trained styles; only a network that takes a painting saves "
                            f"style vectors")
        vector = self.style_vector(style, style_image)
        assert vector is not None
        names = [n for n in self.styles if n != name] + [name]
        rows = [self.space.vectors[self.styles.index(n)] for n in names[:-1]] + [vector]  # type: ignore[index]
        self.info = save_styles(self.path, names, [r.tolist() for r in rows])
        self.space.names, self.space.vectors = names, torch.stack(rows)
        return vector

    def describe_style(self, weights: torch.Tensor | None) -> str:
        if self.takes_painting:
            return "the given painting" if weights is None else "a style vector"
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
            if style.shape[0] not in (1, n) or style.shape[1] != self.style_dim:
                raise ValueError(f"style vectors of shape {tuple(style.shape)} for {n} image(s) and a {self.style_dim}-d "
                                 f"style")
            return None if self.style_dim == 1 and not self.takes_painting else style
        w = self.style_vector(style)
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
        """``opts``, with tiles when ``x`` would not fit through the network whole in the memory available (see
        :func:`fastnst.inference.memory.fit_in_memory`); said once per image shape through :attr:`log`."""
        if self._network_bytes is None:
            self._network_bytes = network_bytes_per_pixel(self.network, self.info, self.format == "onnx")
        key = tuple(x.shape)

        def note(message: str) -> None:
            if key not in self._tiling_noted:
                self._tiling_noted.add(key)
                self.log(message)

        return fit_in_memory(x, opts, self._network_bytes, self.device, note)

    # --- images --------------------------------------------------------------------------------------
    def stylize(self, image: ImageLike, style: StyleChoice = None, *, style_image: PaintingChoice = None,
                tile: int | None = None, tile_overlap: int | None = None, tile_stats_size: int = 1024,
                preserve_color: bool = False, strength: float = 1.0, max_size: int | None = None) -> ImageLike:
        """Stylize a PIL image (any mode; RGB out) or a uint8 array (H, W, 3), (H, W) or (H, W, 4); the
        result has the same type and size (or the longer side ``max_size``, if given and smaller), RGB.

        ``style``: a name, an index or a blend (``{"a": 0.7, "b": 0.3}`` or ``"a=0.7,b=0.3"``, normalised to
        sum 1) for a multi-style model (every style at once: :meth:`stylize_each`, :meth:`style_sheet`), or a
        style vector; ``style_image``: for a network that takes any painting, a painting (PIL image or path) or a
        blend ``{painting: weight}``;
        ``tile`` stylizes large images in tiles of that many pixels; ``preserve_color`` keeps the photo's
        colours; ``strength`` in [0, 1] blends with the photo.
        """
        opts = StylizeOptions(tile=tile, tile_overlap=tile_overlap, tile_stats_size=tile_stats_size,
                              preserve_color=preserve_color, strength=strength)
        opts.validate()
        weights = self.style_vector(style, style_image)
        x, is_array = _image_tensor(image, max_size)
        return _as_input_type(tensor_to_pil(self.stylize_tensor(x, weights, opts)), is_array)

    def stylize_each(self, image: ImageLike, **options: Any) -> dict[str, ImageLike]:
        """``{style name: stylized image}`` for every style of the model (one entry for a one-style model);
        ``options`` are :meth:`stylize`'s keyword arguments."""
        opts, max_size = _options(options)
        x, is_array = _image_tensor(image, max_size)
        if not self.styles:
            raise UserError(f"model {self.path} has no saved styles to stylize with; pass style_image= to stylize()")
        return {name: _as_input_type(tensor_to_pil(self.stylize_tensor(x, self.style_vector(i), opts)), is_array)
                for i, name in enumerate(self.styles)}

    def style_sheet(self, image: ImageLike, **options: Any) -> ImageLike:
        """One labelled image: the photo and its stylization in every style of a multi-style model, side by
        side (panels at most 1024 px); ``options`` are :meth:`stylize`'s keyword arguments."""
        weights = each_style(self.space, None, sheet=True) or []
        opts, max_size = _options(options)
        x, is_array = _image_tensor(image, max_size)
        outs = [self.stylize_tensor(x, w, opts)[0] for w in weights]
        return _as_input_type(compose_sheet(x[0], outs, self.styles), is_array)

    def stylize_video(self, src: str | os.PathLike[str], dst: str | os.PathLike[str], style: StyleChoice = None, *,
                      style_image: PaintingChoice = None, batch_size: int = 1, max_size: int | None = None, temporal_blend: float = 0.0,
                      codec: str | None = None, crf: float | None = None, audio: bool = True,
                      progress: bool = False, **options: Any) -> VideoReport:
        """Stylize the video file ``src`` into ``dst`` (container from its extension) with infer.py's guarantees:
        every frame with its timestamp, size, rotation, pixel aspect and the audio kept; written atomically.
        ``options`` are :meth:`stylize`'s (``tile``, ``preserve_color``, ``strength`` ...). Returns the report
        (frames, seconds, fps, the encoding used)."""
        opts, _ = _options(options)
        video = VideoOptions(batch_size=batch_size, max_size=max_size, temporal_blend=temporal_blend,
                             encode=EncodeSettings(codec=codec, crf=crf, audio=audio), progress=progress)
        return stylize_video(self, src, dst, opts, video, weights=self.style_vector(style, style_image))


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


__all__ = ["StylizeOptions", "Stylizer"]
