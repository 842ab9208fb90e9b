"""Peak memory of ``infer.py`` on a video does not grow with the clip's length: stylize a 10-second and a
1-minute clip (1080p by default) (30 fps, with audio, a pan over a synthetic photo) and print each run's peak resident
set size (max RSS of the infer.py process, from the kernel).

    python scripts/video_memory.py --out runs/video_memory [--size 1920x1080] [--model tiny|small|default]

The network is random (memory does not depend on its weights): ``tiny`` by default so that the one-minute
clip takes minutes, not hours, on a CPU; pass ``--model default`` for the 32-64-128 network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"tiny": {"channels": [8, 16, 16], "num_residual": 1}, "small": {"channels": [16, 32, 64], "num_residual": 3},
          "default": {"channels": [32, 64, 128], "num_residual": 5}}


def checkpoint(path: Path, model: str) -> Path:
    from fastnst.formats import ModelInfo
    from fastnst.formats.checkpoint import write_info
    from fastnst.models import create_model

    torch.manual_seed(0)
    net = create_model("johnson", **MODELS[model])
    ckpt = {"state_dict": {f"network.{k}": v for k, v in net.state_dict().items()}}
    write_info(ckpt, ModelInfo(architecture="johnson", config=net.config(), styles=["random"]))
    torch.save(ckpt, path)
    return path


def clip(path: Path, seconds: int, size: tuple[int, int]) -> Path:
    from fastnst.media.clips import iter_clip, motion_windows, write_clip

    if path.exists():
        return path
    g = np.random.default_rng(0)
    pw, ph = int(size[0] * 1.5), int(size[1] * 1.5)
    yy, xx = np.mgrid[0:ph, 0:pw] / pw
    photo = np.clip(127 + 90 * np.stack([np.sin(7 * xx + c) * np.cos(5 * yy - c) for c in (0, 1.3, 2.6)], -1)
                    + g.normal(0, 10, (ph, pw, 3)), 0, 255).astype(np.uint8)
    n = 30 * seconds
    frames = iter_clip(photo, motion_windows("pan", n, (pw, ph), size, speed=0.15), size)
    return write_clip(path, frames, 30, crf=23, audio_seconds=seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/video_memory")
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the clips")
    args = p.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(out / f"{args.model}.ckpt", args.model)
    size = tuple(int(v) for v in args.size.split("x"))
    rows = []
    for seconds in (10, 60):
        src = clip(out / f"clip_{seconds}s_{args.size}.mp4", seconds, size)
        cmd = [sys.executable, str(ROOT / "infer.py"), "--ckpt", str(ckpt), str(src), "-o",
               str(out / f"out_{seconds}s.mp4"), "--overwrite", "--batch-size", str(args.batch_size), "-q"]
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        if status:
            raise SystemExit(f"infer.py failed with status {status}")
        rows.append((seconds, usage.ru_maxrss / 1024, time.time() - t0))  # ru_maxrss is KiB on Linux
    print(f"\n| clip ({args.size}, 30 fps, audio) | frames | peak RSS (MiB) | wall time (s) |\n|---|---:|---:|---:|")
    for seconds, mib, wall in rows:
        print(f"| {seconds} s | {30 * seconds} | {mib:.0f} | {wall:.0f} |")
    print(f"\nratio 60 s / 10 s: {rows[1][1] / rows[0][1]:.3f} (goal: within 10%)")


if __name__ == "__main__":
    main()
