"""Flicker with known motion: ``fastnst.evaluate --video`` and the Python API.

For consecutive frames t-1, t of a clip whose motion is known (:mod:`fastnst.media.clips`: a crop window
panning or zooming over a photo, or standing still over sensor noise), the previous frame is warped onto the
current one and the mean absolute difference is taken over the pixels both show. Flicker is that difference
for the stylized clip over the same difference for the input clip, summed over the clip:

    flicker = sum_t |S_t - warp(S_{t-1})| / sum_t |I_t - warp(I_{t-1})|

1 means the stylization changes from frame to frame no more than the input does (after motion); a
per-frame network that reacts to resampling and noise is well above 1. ``sharpness`` (mean absolute
gradient of the stylized frames) shows what smoothing in time costs.

    python -m fastnst.evaluate --ckpt last.ckpt --video --images ../shared/data/large --temporal-blend 0,0.5
"""

from __future__ import annotations

import statistics
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.inference import load
from fastnst.inference.options import StylizeOptions, VideoOptions
from fastnst.inference.stylizer import Stylizer
from fastnst.inference.video import FrameLoop, TemporalBlend
from fastnst.media.clips import MOTIONS, Window, motion_windows, render_clip, warp_previous
from fastnst.media.image import find_images, load_image

SENSOR_NOISE = 0.02  # standard deviation of the static clip's noise, pixels in [0, 1] (about 5 levels)


def _frames_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).double() / 255
    return frames.double()


def motion_change(frames: np.ndarray | torch.Tensor, windows: Sequence[Window]) -> list[float]:
    """Per consecutive pair, the mean absolute difference (in 0..255 levels) between frame t and frame t-1
    warped by the known motion, over the pixels both frames show. ``frames``: uint8 [T, H, W, 3] or float
    [T, 3, H, W] in [0, 1]."""
    x = _frames_tensor(frames)
    out = []
    for t in range(1, x.shape[0]):
        warped, mask = warp_previous(x[t - 1:t], windows[t - 1], windows[t])
        out.append(float(((x[t:t + 1] - warped).abs() * mask).sum() / (mask.sum() * 3)) * 255)
    return out


def sharpness(frames: np.ndarray | torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels (0..255 levels): lower is blurrier."""
    x = _frames_tensor(frames)
    return float(((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()) / 2) * 255


def flicker(stylized: np.ndarray | torch.Tensor, content: np.ndarray | torch.Tensor,
            windows: Sequence[Window]) -> dict[str, float]:
    """Flicker of ``stylized`` frames of the clip ``content`` with crop ``windows`` (see the module docstring):
    ``flicker`` (the ratio), ``stylized_change`` and ``input_change`` (mean levels per pair), ``pairs``."""
    if len(stylized) != len(content) or len(content) != len(windows) or len(windows) < 2:
        raise ValueError("flicker needs as many stylized frames as input frames and windows, at least 2")
    s, c = motion_change(stylized, windows), motion_change(content, windows)
    return {"flicker": sum(s) / max(sum(c), 1e-12), "stylized_change": statistics.fmean(s),
            "input_change": statistics.fmean(c), "pairs": len(s)}


def stylize_frames(model: Stylizer, frames: np.ndarray, weights: torch.Tensor | None = None,
                   options: StylizeOptions | None = None, temporal_blend: float = 0.0,
                   batch_size: int = 4) -> np.ndarray:
    """Stylize uint8 frames [T, H, W, 3] in order as infer.py does a video (its frame loop,
    :class:`fastnst.inference.video.FrameLoop`, ``temporal_blend`` included), returning uint8 frames as they
    would be encoded."""
    video = VideoOptions(batch_size=batch_size, temporal_blend=temporal_blend)
    video.validate()
    return FrameLoop(model, weights, options, video).clip(frames)


def make_clip(photo: Path, motion: str, frames: int, size: tuple[int, int]) -> tuple[np.ndarray, list[Window]]:
    """A clip of ``motion`` over ``photo``, first scaled so that a frame shows about half its width."""
    img = load_image(photo, "photo")
    scale = min(1.0, 2 * size[0] / img.width, 2 * size[1] / img.height)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(img)
    windows = motion_windows(motion, frames, (arr.shape[1], arr.shape[0]), size)
    noise = SENSOR_NOISE if motion == "static" else 0.0
    return render_clip(arr, windows, size, noise=noise, seed=zlib.crc32(photo.name.encode())), windows


def video_report(model: str | Path, photos: str | Path, motions: Sequence[str] = MOTIONS, frames: int = 16,
                 size: tuple[int, int] = (256, 144), blends: Sequence[float] = (0.0,), device: str = "auto",
                 style: str | int | None = None) -> dict[str, Any]:
    """Flicker and sharpness of ``model`` on clips of every ``motion`` over every photo of ``photos`` (a file
    or a folder), for every ``--temporal-blend`` level in ``blends``; per clip and averaged per motion."""
    for m in motions:
        if m not in MOTIONS:
            raise UserError(f"--motions: unknown motion {m!r}; use {', '.join(MOTIONS)}")
    if frames < 2:
        raise UserError(f"--frames must be at least 2, got {frames}")
    for b in blends:
        TemporalBlend(b)
    root = Path(photos).expanduser()
    files = [root] if root.is_file() else find_images(root, "--images")
    net = load(model, device)
    weights = net.style_weights(style)
    rows: list[dict[str, Any]] = []
    for photo in files:
        for motion in motions:
            clip, windows = make_clip(photo, motion, frames, size)
            base: float | None = None
            for b in blends:
                out = stylize_frames(net, clip, weights, temporal_blend=b)
                row = {"photo": photo.name, "motion": motion, "temporal_blend": b, **flicker(out, clip, windows),
                       "sharpness": sharpness(out)}
                base = row["sharpness"] if base is None else base
                row["sharpness_vs_first"] = row["sharpness"] / base
                rows.append(row)
    summary = []
    for motion in motions:
        for b in blends:
            group = [r for r in rows if r["motion"] == motion and r["temporal_blend"] == b]
            summary.append({"motion": motion, "temporal_blend": b, "clips": len(group),
                            **{k: statistics.fmean(r[k] for r in group)
                               for k in ("flicker", "stylized_change", "input_change", "sharpness",
                                         "sharpness_vs_first")}})
    return {"model": str(model), "photos": str(root), "frames": frames, "size": list(size), "device": str(net.device),
            "style": net.describe_style(weights), "sensor_noise": SENSOR_NOISE, "summary": summary, "clips": rows}


def format_video_report(report: dict[str, Any]) -> str:
    w, h = report["size"]
    lines = [f"fastnst flicker report: {report['model']} on {report['photos']}; {report['frames']} frames of "
             f"{w}x{h} px per clip; static clips carry sensor noise of sigma {report['sensor_noise']}",
             "flicker = stylized change / input change after the known motion (1 = as steady as the input); "
             "changes in 0..255 levels; sharpness = mean neighbour difference", "",
             f"{'motion':<8}{'blend':>6}{'clips':>6}{'flicker':>9}{'stylized':>10}{'input':>8}{'sharpness':>11}"
             f"{'vs blend 0':>12}"]
    for r in report["summary"]:
        lines.append(f"{r['motion']:<8}{r['temporal_blend']:>6.2f}{r['clips']:>6}{r['flicker']:>9.3f}"
                     f"{r['stylized_change']:>10.2f}{r['input_change']:>8.2f}{r['sharpness']:>11.2f}"
                     f"{r['sharpness_vs_first']:>12.3f}")
    return "\n".join(lines)
