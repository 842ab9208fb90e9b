"""infer.py's body: parse-free ``run_cli(args)`` (load, plan, stylize, report) and ``--benchmark``."""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastnst.errors import UserError
from fastnst.inference.jobs import Job, find_inputs, load_content, plan_jobs, stylize_files
from fastnst.inference.stylizer import StylizeOptions, Stylizer, load


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


def benchmark(model: Stylizer, x: torch.Tensor, options: StylizeOptions | None = None, *, batch_size: int = 1,
              warmup: int = 3, runs: int = 10, weights: torch.Tensor | None = None) -> BenchmarkResult:
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
        model.stylize_tensor(xb, weights, opts)
        model.synchronize()
        if i >= warmup:
            lat.append((time.perf_counter() - t0) * 1000.0 / batch_size)
    return BenchmarkResult(str(model.device), model.weights_precision, model.format, (x.shape[-1], x.shape[-2]),
                           batch_size, lat)


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
    if getattr(args, "fast", False):
        model = _load_fast(args, opts)
    else:
        model = load(args.model, args.device, args.precision, channels_last=args.channels_last, compile=args.compile)
    if opts.tile is not None and model.network is None:
        model.tiled(torch.zeros(1, 3, 8, 8), opts)  # raises: tiling needs the eager network
    weights = model.style_weights(args.style)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))

    if args.benchmark:
        src = find_inputs(args.inputs)[0][0]
        x = load_content(Job(src, src), args.max_size)
        say(f"fastnst: model {model.describe()}")
        print(benchmark(model, x, opts, batch_size=args.batch_size, warmup=args.warmup,
                        runs=args.benchmark_runs, weights=weights).summary())
        return 0

    jobs, skipped = plan_jobs(args.inputs, args.output, overwrite=args.overwrite, skip_existing=args.skip_existing,
                              ext=args.ext)
    say(f"fastnst: model {model.describe()}")
    if skipped:
        say(f"fastnst: {skipped} existing output(s) kept (--skip-existing)")
    report = stylize_files(model, jobs, opts, weights=weights, batch_size=args.batch_size, max_size=args.max_size,
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
