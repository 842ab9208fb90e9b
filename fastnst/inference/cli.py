"""infer.py's body: parse-free ``run_cli(args)`` (load, plan, stylize, report) and ``--benchmark``."""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastnst.errors import UserError
from fastnst.inference.jobs import Job, find_inputs, load_content, plan_jobs, stylize_files
from fastnst.inference.style_outputs import each_style
from fastnst.inference.stylizer import StylizeOptions, Stylizer, load
from fastnst.inference.video import TemporalBlend, first_frame, stylize_video
from fastnst.media.encoding import EncodeSettings, check_encoder
from fastnst.media.video import is_video_path


@dataclass
class BenchmarkResult:
    device: str
    precision: str
    model_format: str
    size: tuple[int, int]  # (width, height)
    batch_size: int
    latencies_ms: list[float]  # per output image (an image in one style), one entry per timed run
    styles: int = 1  # style choices each image was stylized in

    @property
    def images_per_second(self) -> float:
        return 1000.0 / statistics.mean(self.latencies_ms)

    def summary(self) -> str:
        lat = sorted(self.latencies_ms)
        p90 = lat[min(len(lat) - 1, math.ceil(0.9 * len(lat)) - 1)]
        each = f", {self.styles} styles each" if self.styles > 1 else ""
        return (f"benchmark: {self.model_format} on {self.device} ({self.precision}), {self.size[0]}x{self.size[1]} px, "
                f"batch {self.batch_size}{each}, {len(lat)} timed runs after warm-up: per-image latency "
                f"mean {statistics.mean(lat):.2f} ms, median {statistics.median(lat):.2f} ms, p90 {p90:.2f} ms; "
                f"{self.images_per_second:.2f} images/s")


def benchmark(model: Stylizer, x: torch.Tensor, options: StylizeOptions | None = None, *, batch_size: int = 1,
              warmup: int = 3, runs: int = 10, weights: torch.Tensor | None = None,
              styles: list[torch.Tensor | None] | None = None) -> BenchmarkResult:
    """Time ``stylize`` on a batch of copies of ``x`` [1, 3, H, W] after ``warmup`` untimed runs, with the
    device synchronised around each timed run; input and output stay on the model's device. A run stylizes
    the batch in each of ``styles`` (default ``[weights]``); latency is per image and style."""
    if runs < 1 or warmup < 0:
        raise UserError(f"benchmark needs at least 1 timed run and >= 0 warm-up runs, got {runs} and {warmup}")
    opts = options or StylizeOptions()
    opts.validate()
    tiled = opts.tile is not None and max(x.shape[-2:]) > opts.tile
    xb = x.expand(batch_size, -1, -1, -1).contiguous()
    xb = xb if tiled else xb.to(model.device)
    choices = styles if styles is not None else [weights]
    lat = []
    for i in range(warmup + runs):
        model.synchronize()
        t0 = time.perf_counter()
        for w in choices:
            model.stylize_tensor(xb, w, opts)
        model.synchronize()
        if i >= warmup:
            lat.append((time.perf_counter() - t0) * 1000.0 / (batch_size * len(choices)))
    return BenchmarkResult(str(model.device), model.weights_precision, model.format, (x.shape[-1], x.shape[-2]),
                           batch_size, lat, len(choices))


def _load_fast(args: Any, opts: StylizeOptions) -> Stylizer:
    """``--fast``: the model with the path tuned for this machine at the size of the first input image."""
    from PIL import Image

    from fastnst.inference.devices import resolve_device
    from fastnst.inference.tuning import load_fast

    chosen = [f for f, on in (("--precision " + args.precision, args.precision != "fp32"),
                               ("--channels-last", args.channels_last), ("--compile", args.compile)) if on]
    if chosen:
        raise UserError(f"--fast chooses the precision and fast paths itself; drop {' and '.join(chosen)}")
    if resolve_device(args.device).type != "cpu":
        raise UserError("--fast picks among CPU paths measured by fastnst.bench --tune; on a GPU use "
                        "--precision fp16 (or bf16) --channels-last --compile, or --device cpu")
    src = find_inputs(args.inputs)[0][0]
    try:
        with Image.open(src) as im:
            w, h = im.size
    except OSError:
        w, h = 512, 512  # an unreadable first image is reported by the job itself; any size will do here
    if args.max_size and max(w, h) > args.max_size:
        scale = args.max_size / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    return load_fast(args.model, (w, h), tiled=opts.tile is not None, say=say)


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
    TemporalBlend(args.temporal_blend)  # checks the range
    if args.crf is not None and args.crf < 0:
        raise UserError(f"--crf must be >= 0, got {args.crf}")
    encode = EncodeSettings(codec=args.video_codec, crf=args.crf, pix_fmt=args.pix_fmt, even_size=args.even_size,
                            audio=not args.no_audio)
    if args.video_codec:
        check_encoder(args.video_codec)
    if getattr(args, "fast", False):
        model = _load_fast(args, opts)
    else:
        model = load(args.model, args.device, args.precision, channels_last=args.channels_last, compile=args.compile)
    if opts.tile is not None and model.network is None:
        model.tiled(torch.zeros(1, 3, 8, 8), opts)  # raises: tiling needs the eager network
    sheet = bool(getattr(args, "sheet", False))
    painting = getattr(args, "style_image", None)
    if painting is not None and not model.takes_painting:
        raise UserError(f"model {args.model} holds trained styles ({', '.join(model.styles)}) and cannot take a "
                        f"painting; drop --style-image and choose a style with --style, or use a network trained with "
                        f"style.arbitrary=true")
    each = each_style(model.space, args.style, sheet, painting is not None)  # every style: one output each, or a sheet
    # Every painting is encoded here, once for the whole run.
    styles = each if each is not None else [model.style_vector(args.style, painting)]
    variants = model.styles if each is not None and not sheet else None
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))

    if args.benchmark:
        src = find_inputs(args.inputs)[0][0]
        x = first_frame(src, args.max_size) if is_video_path(src) else load_content(Job(src, src), args.max_size)
        say(f"fastnst: model {model.describe()}")
        print(benchmark(model, x, opts, batch_size=args.batch_size, warmup=args.warmup,
                        runs=args.benchmark_runs, styles=styles).summary())
        return 0

    if sheet:
        found = find_inputs(args.inputs)
        videos = [src for src, _ in found if is_video_path(src)]
        if videos and len(videos) == len(found):
            raise UserError(f"{videos[0]} is a video and --sheet makes one still image; stylize it without --sheet")
    jobs, skipped = plan_jobs(args.inputs, args.output, overwrite=args.overwrite, skip_existing=args.skip_existing,
                              ext=args.ext, variants=variants,
                              default_suffix="_sheet" if sheet else "" if variants else "_stylized")
    say(f"fastnst: model {model.describe()}")
    if len(jobs) == 1 and is_video_path(jobs[0].src) and not sheet:  # one video: what goes wrong is status 2
        done = stylize_video(model, jobs[0].src, jobs[0].dst, opts, weights=styles[jobs[0].style], encode=encode,
                             batch_size=args.batch_size, max_size=args.max_size, temporal_blend=args.temporal_blend,
                             progress=not args.quiet, log=say, pad_batches=model.compiled)
        say(f"fastnst: wrote {done.path} in {done.seconds:.1f} s ({done.frames} frames, {done.fps:.2f} frames/s)")
        return 0
    if skipped:
        say(f"fastnst: {skipped} existing output(s) kept (--skip-existing)")
    if variants:
        say(f"fastnst: no --style: one output per style ({', '.join(variants)})")
    report = stylize_files(model, jobs, opts, styles=styles, sheet=model.styles if sheet else None,
                           batch_size=args.batch_size, max_size=args.max_size, progress=not args.quiet,
                           encode=encode, temporal_blend=args.temporal_blend)
    report.skipped_existing = skipped
    where = report.written[0] if len(report.written) == 1 else Path(os.path.commonpath([j.dst.parent for j in jobs])) \
        if jobs else Path(args.output or "stylized")
    frames = f" ({report.frames} video frames, {report.frames / max(report.seconds, 1e-9):.2f} frames/s)" \
        if report.frames else ""
    noun = "file(s)" if any(is_video_path(j.src) for j in jobs) else "image(s)"
    if report.failed:
        print(f"fastnst: {len(report.failed)} of {len(jobs)} {noun} failed; {len(report.written)} written to "
              f"{where}{frames}", file=sys.stderr)
        return 1
    say(f"fastnst: wrote {len(report.written)} {noun} to {where} in {report.seconds:.1f} s{frames}")
    return 0
