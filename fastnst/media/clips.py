"""Synthetic clips with known motion, and a plain clip writer.

A clip is a crop window moving over a large photo (pan, zoom) or standing still with sensor-like noise; as
the window of every frame is known, so is the motion between frames: :func:`warp_previous` maps frame
t-1 onto frame t exactly, which is what a flicker measurement needs (no optical-flow model). Windows are
``(x, y, w, h)`` in the photo's pixels; frames are uint8 RGB [T, H, W, 3].

:func:`write_clip` encodes frames with given timestamps, audio, rotation and pixel aspect, for tests, the
benchmark and the scripts.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

Window = tuple[float, float, float, float]  # x, y, width, height in the photo's pixels
MOTIONS = ("pan", "zoom", "static")


def motion_windows(kind: str, frames: int, photo_size: tuple[int, int], out_size: tuple[int, int],
                   speed: float = 1.5) -> list[Window]:
    """Crop windows of a ``kind`` clip (pan, zoom, static) over a photo of ``photo_size`` (w, h) for frames of
    ``out_size`` (w, h): the window starts at the largest scale-1 crop, centred; ``pan`` moves right and
    slightly down by ``speed`` output pixels a frame (sub-pixel steps); ``zoom`` shrinks it by ``speed``
    output pixels of width a frame about its centre (a zoom-in)."""
    if kind not in MOTIONS:
        raise ValueError(f"motion must be one of {', '.join(MOTIONS)}, got {kind!r}")
    pw, ph = photo_size
    ow, oh = out_size
    scale = min(1.0, 0.7 * pw / ow, 0.7 * ph / oh)  # the window covers at most 70% of the photo: room to move
    w, h = ow / scale, oh / scale
    travel = speed / scale * (frames - 1)
    x0 = (pw - w - (travel if kind == "pan" else 0)) / 2
    y0 = (ph - h - (0.3 * travel if kind == "pan" else 0)) / 2
    out: list[Window] = []
    for t in range(frames):
        if kind == "pan":
            out.append((x0 + t * speed / scale, y0 + 0.3 * t * speed / scale, w, h))
        elif kind == "zoom":
            k = 1 - t * speed / ow
            out.append((x0 + w * (1 - k) / 2, y0 + h * (1 - k) / 2, w * k, h * k))
        else:
            out.append((x0, y0, w, h))
    return out


def _affine_grid(windows: Sequence[Window], photo_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """grid_sample grids [T, H, W, 2] that read each window from the photo (align_corners=False)."""
    pw, ph = photo_size
    ow, oh = out_size
    thetas = []
    for x, y, w, h in windows:
        # output pixel centre u in [-1, 1] -> photo x = x + (u + 1) / 2 * w -> normalised photo coordinate
        thetas.append([[w / pw, 0.0, (2 * x + w) / pw - 1], [0.0, h / ph, (2 * y + h) / ph - 1]])
    theta = torch.tensor(thetas, dtype=torch.float32)
    return F.affine_grid(theta, [len(windows), 3, oh, ow], align_corners=False)


def iter_clip(photo: np.ndarray, windows: Sequence[Window], out_size: tuple[int, int], noise: float = 0.0,
              seed: int = 0) -> Iterator[np.ndarray]:
    """The frames of :func:`render_clip` one by one (uint8 [H, W, 3]), for clips too long to hold."""
    img = torch.from_numpy(np.array(photo, dtype=np.uint8)).permute(2, 0, 1)[None].float().div_(255)
    size = (photo.shape[1], photo.shape[0])
    g = torch.Generator().manual_seed(seed)
    for i in range(0, len(windows), 16):
        grid = _affine_grid(windows[i:i + 16], size, out_size)
        y = F.grid_sample(img.expand(grid.shape[0], -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                          align_corners=False)
        if noise:
            y = y + noise * torch.randn(y.shape, generator=g)
        yield from y.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def render_clip(photo: np.ndarray, windows: Sequence[Window], out_size: tuple[int, int], noise: float = 0.0,
                seed: int = 0) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of the ``windows`` of ``photo`` [H, W, 3] uint8, bilinear (the windows are
    about one photo pixel per output pixel, so no anti-aliasing is needed); ``noise`` adds Gaussian noise of
    that standard deviation (in [0, 1] units) per frame, as a camera sensor does."""
    return np.stack(list(iter_clip(photo, windows, out_size, noise, seed)))


def warp_previous(prev: torch.Tensor, win_prev: Window, win_cur: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame t-1 [N, C, H, W] resampled onto frame t's pixels (the photo point each pixel of frame t shows, read
    from frame t-1), and a [1, 1, H, W] mask of the pixels whose point frame t-1 also shows (1 px margin)."""
    _, _, oh, ow = prev.shape
    (xp, yp, wp, hp), (xc, yc, wc, hc) = win_prev, win_cur
    # pixel centre u of frame t -> photo x = xc + (u + 0.5) wc / ow -> frame t-1 pixel (x - xp) ow / wp - 0.5
    u = (torch.arange(ow, dtype=torch.float64) + 0.5) * wc / ow + xc
    v = (torch.arange(oh, dtype=torch.float64) + 0.5) * hc / oh + yc
    up, vp = (u - xp) * ow / wp - 0.5, (v - yp) * oh / hp - 0.5
    gx, gy = (2 * up + 1) / ow - 1, (2 * vp + 1) / oh - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).float()[None]
    warped = F.grid_sample(prev, grid.expand(prev.shape[0], -1, -1, -1).to(prev.device, prev.dtype), mode="bilinear",
                           padding_mode="border", align_corners=False)
    inside = ((up >= 1) & (up <= ow - 2))[None, :] & ((vp >= 1) & (vp <= oh - 2))[:, None]
    return warped, inside[None, None].to(prev.dtype)


def write_clip(path: str | os.PathLike[str], frames: np.ndarray | Iterable[np.ndarray], fps: float = 25, *, pts: Sequence[int] | None = None,
               time_base: Fraction | None = None, codec: str = "libx264", pix_fmt: str = "yuv420p",
               crf: int | None = 18, audio_seconds: float | None = None, rotation: int = 0,
               sample_aspect_ratio: Fraction | None = None, color_tags: bool = False) -> Path:
    """Encode frames [T, H, W, 3] uint8 (an array, or an iterable of [H, W, 3] frames) to ``path`` (container
    from its extension).

    ``pts`` in ``time_base`` (default: frame i at i / fps) gives a variable frame rate; ``audio_seconds`` adds
    a stereo 440 Hz tone that long (AAC in mp4/mov/mkv, Opus in webm); ``rotation`` writes a display matrix
    (degrees counter-clockwise); ``color_tags`` tags BT.709 limited range."""
    import av

    path = Path(path)
    tb = time_base or Fraction(1, 1000 * round(fps))
    it = iter(frames)
    first = next(it)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001),
                                options={"crf": str(crf)} if crf is not None and codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], pix_fmt
        stream.codec_context.time_base = tb
        if sample_aspect_ratio:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        if rotation:
            stream.set_display_rotation(rotation)
        if color_tags:
            for key in ("colorspace", "color_primaries", "color_trc"):
                setattr(stream.codec_context, key, 1)  # BT.709
            stream.codec_context.color_range = 1  # limited ("tv")
        sound = None
        if audio_seconds:
            sound = out.add_stream("libopus" if path.suffix.lower() == ".webm" else "aac", rate=48000)
            sound.layout = "stereo"
        convert = {"dst_colorspace": "ITU709", "dst_color_range": "MPEG"} if color_tags else {}
        for i, arr in enumerate(itertools.chain([first], it)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24").reformat(format=pix_fmt,
                                                                                                    **convert)
            frame.pts, frame.time_base = int(pts[i]) if pts is not None else round(i / fps / tb), tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            n = int(48000 * audio_seconds)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
            for start in range(0, n, 960):
                chunk = tone[start:start + 960]
                frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path
