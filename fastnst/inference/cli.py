"""``fastnst stylize`` and ``python infer.py``: the parser, ``run_cli(args)`` (load, plan, stylize, report) and
``--benchmark``.

Exit status (:data:`EXIT_STATUS`, also in ``--help``): the same rule for images and videos, one input or many."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe, run_main
from fastnst.errors import UserError
from fastnst.inference.devices import PRECISIONS, resolve_device
from fastnst.inference.jobs import JobsReport, load_content, stylize_files
from fastnst.inference.planning import Job, find_inputs, plan_jobs
from fastnst.inference.known_failures import avoid_for_inference
from fastnst.inference.options import StylizeOptions, VideoOptions
from fastnst.inference.style_outputs import each_style
from fastnst.inference.loading import load
from fastnst.inference.stylizer import Stylizer
from fastnst.inference.tuning import load_fast
from fastnst.inference.video import first_frame
from fastnst.media.encoding import EncodeSettings, check_encoder
from fastnst.media.limits import set_max_pixels
from fastnst.media.video import is_video_path


EXAMPLES = [
    '--ckpt runs/x/checkpoints/last.ckpt photo.jpg -o photo_styled.png',
    '--ckpt model.onnx photos/ -o stylized/ --batch-size 8',
    '--ckpt last.ckpt huge.jpg --tile 512 -o huge_styled.jpg',
    '--ckpt last.ckpt photo.jpg --preserve-color --strength 0.7',
    '--ckpt multi.ckpt photo.jpg                          # photo_<style>.jpg for every style',
    '--ckpt multi.ckpt photo.jpg --style starry=0.7,scream=0.3',
    '--ckpt multi.ckpt photos/ --sheet -o sheets/         # every style side by side, labelled',
    '--ckpt any.ckpt photo.jpg --style-image starry.jpg   # a network that takes any painting',
    '--ckpt any.onnx photo.jpg --style-image a.jpg=0.6,b.jpg=0.4',
    '--ckpt last.ckpt photo.jpg --device cuda --precision fp16 --benchmark',
    '--ckpt last.ckpt photos/ --precision bf16 --channels-last --compile   # measure first: fastnst bench --tune',
    '--ckpt last.ckpt clip.mp4 -o clip_styled.mp4 --batch-size 4        # video: sound, timing kept',
    '--ckpt last.ckpt clip.mov -o out.mp4 --max-size 720 --crf 18 --temporal-blend 0.5',
]

EXIT_STATUS = ("exit status: 0 every output was written; 1 some inputs failed and the others were written; "
               "2 nothing was written (a bad model, option or path, or every input failed); 130 interrupted (the "
               "outputs written so far are complete)")


def build_parser(prog: str = "python infer.py") -> argparse.ArgumentParser:
    p = Parser(prog=prog_name(prog), description="Stylize images and videos with a trained fastnst network.",
               epilog=EXIT_STATUS, examples=EXAMPLES)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders (recursive) or glob patterns")
    p.add_argument("--ckpt", "--model", dest="model", required=True, metavar="MODEL",
                   help="training checkpoint (.ckpt), exported model (.onnx, .pt2) or pytorch/examples model (.pth)")
    p.add_argument("--style", metavar="STYLE",
                   help="for a multi-style model: a style name or index, or a blend such as a=0.7,b=0.3 "
                        "(weights >= 0, normalised to sum 1); without it, one image per style (NAME_<style>.EXT)")
    p.add_argument("--style-image", metavar="PAINTING",
                   help="for a network that takes any painting: the painting, or a blend such as a.jpg=0.6,b.jpg=0.4 "
                        "(each painting encoded once per run)")
    p.add_argument("--sheet", action="store_true",
                   help="for a multi-style model: one labelled image per input with the photo and every style "
                        "side by side (NAME_sheet.EXT)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input) or folder (default: NAME_stylized.EXT, or ./stylized/)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.add_argument("--skip-existing", action="store_true", help="keep existing output files and skip their inputs")
    p.add_argument("--ext", metavar="EXT", help="output format for folder runs, e.g. png (default: the input's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the model, PyTorch and onnxruntime alike (default: one per core); on a "
                        "machine other programs keep busy, 1 is often far faster than competing for every core")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="compute precision of a .ckpt model where the device supports it (default: fp32)")
    p.add_argument("--channels-last", action="store_true",
                   help="run a .ckpt model in channels-last memory format (faster convolutions on most CPUs and GPUs)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile a .ckpt model: slower first image (compilation), faster after; a new "
                        "image size or batch size recompiles once into a shape-generic graph, not once per size "
                        "(needs a C++ compiler on CPU; --tile runs uncompiled)")
    p.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"],
                   help="what runs an .onnx model: onnxruntime (default) or OpenVINO (optional: pip install "
                        "'fastnst[openvino]'; CPU, fp32)")
    p.add_argument("--fast", action="store_true",
                   help="on the CPU, run the path this machine measured fastest for this model near the size of the "
                        "first image (precision, channels-last, compile or onnxruntime; tune once with "
                        "python -m fastnst.bench --tune --ckpt MODEL --size WxH)")
    p.add_argument("--batch-size", type=int, default=1, help="images of the same size run together (default: 1)")
    p.add_argument("--max-size", type=int, metavar="N",
                   help="downscale so that the longer side is at most N px before stylizing (the output has "
                        "that size); strokes keep the size they had at the training resolution")
    p.add_argument("--tile", type=int, metavar="N",
                   help="stylize images larger than N px in overlapping N x N tiles (bounded memory; every model format: "
                        "the tiles share the whole image's norm statistics)")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="the largest image (width x height, per frame) to take in; default: what the memory available "
                        "now allows for this command (about 40 bytes a pixel; an image too large for the network alone "
                        "is tiled automatically)")
    p.add_argument("--tile-overlap", type=int, metavar="M",
                   help="tile overlap in px, blended with a linear ramp (default: min(96, N/3))")
    p.add_argument("--tile-stats-size", type=int, default=1024, metavar="S",
                   help="instance-norm statistics shared by all tiles come from the image downscaled to at most "
                        "S px (default: 1024; exact for images no larger)")
    p.add_argument("--preserve-color", action="store_true",
                   help="keep the content's colours; transfer only luminance (Gatys et al. 2016)")
    p.add_argument("--strength", type=float, default=1.0, metavar="A",
                   help="blend A * stylized + (1 - A) * content, A in [0, 1] (default: 1)")
    v = p.add_argument_group("video (inputs .mp4 .mov .mkv .webm .avi .ts .mpg ...; output: the input's container)")
    v.add_argument("--video-codec", metavar="NAME",
                   help="FFmpeg encoder, e.g. libx264, libx265, libvpx-vp9, libsvtav1, h264_nvenc (default: libx264 "
                        "where the container holds H.264, else the container's own, e.g. VP9 for .webm)")
    v.add_argument("--crf", type=float, metavar="Q",
                   help="constant-quality level of the encoder (libx264 default 23, lower is better; VP9 default 32)")
    v.add_argument("--pix-fmt", metavar="FMT",
                   help="encoded pixel format (default yuv420p, which plays everywhere; yuv444p for odd sizes "
                        "under H.264 unless --even-size)")
    v.add_argument("--even-size", action="store_true",
                   help="pad an odd width/height by one replicated pixel so H.264 yuv420p (plays everywhere) can code it")
    v.add_argument("--no-audio", action="store_true", help="write no audio (default: copy every audio stream)")
    v.add_argument("--temporal-blend", type=float, default=0.0, metavar="A",
                   help="less flicker: pull each frame towards the previous output by up to A (0..1) where the input "
                        "did not change; costs sharpness in slowly moving smooth regions (default: 0, off)")
    p.add_argument("--benchmark", action="store_true",
                   help="time the model on the first input after warm-up and print latency and images/s "
                        "(writes no images)")
    p.add_argument("--benchmark-runs", type=int, default=10, metavar="N", help="timed runs (default: 10)")
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed warm-up runs (default: 3)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    return p


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
        lat = self.latencies_ms
        p90 = statistics.quantiles(lat, n=10, method="inclusive")[-1] if len(lat) > 1 else lat[0]
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
    return load_fast(args.model, (w, h), threads=getattr(args, "threads", None), tiled=opts.tile is not None, say=say)


def run_cli(args: Any) -> int:
    """Run ``infer.py`` with parsed arguments; returns the exit status (0 all written, 1 some failed)."""
    opts = StylizeOptions(tile=args.tile, tile_overlap=args.tile_overlap, tile_stats_size=args.tile_stats_size,
                          preserve_color=args.preserve_color, strength=args.strength)
    opts.validate()
    video = VideoOptions(batch_size=args.batch_size, max_size=args.max_size, temporal_blend=args.temporal_blend,
                         encode=EncodeSettings(codec=args.video_codec, crf=args.crf, pix_fmt=args.pix_fmt,
                                               even_size=args.even_size, audio=not args.no_audio),
                         progress=not args.quiet)
    video.validate()
    if args.overwrite and args.skip_existing:
        raise UserError("--overwrite and --skip-existing contradict each other; pass one of them")
    if args.crf is not None and args.crf < 0:
        raise UserError(f"--crf must be >= 0, got {args.crf}")
    if args.video_codec:
        check_encoder(args.video_codec)
    set_max_pixels(getattr(args, "max_pixels", None))  # this command's limit (None: from memory)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if getattr(args, "fast", False):
        model = _load_fast(args, opts)
    else:
        args.channels_last, args.compile = avoid_for_inference(
            resolve_device(args.device).type, args.precision, args.channels_last, args.compile,
            say=lambda msg: print(msg, file=sys.stderr))
        model = load(args.model, args.device, args.precision, channels_last=args.channels_last, compile=args.compile,
                     threads=threads, runtime=args.runtime)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    model.log = say
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
                              default_suffix="_sheet" if sheet else "" if variants else "_stylized",
                              folder_suffix="_sheet" if sheet else "")
    say(f"fastnst: model {model.describe()}")
    if skipped:
        say(f"fastnst: {skipped} existing output(s) kept (--skip-existing)")
    if variants:
        say(f"fastnst: no --style: one output per style ({', '.join(variants)})")
    report = stylize_files(model, jobs, opts, styles=styles, sheet=model.styles if sheet else None,
                           batch_size=video.batch_size, max_size=video.max_size, progress=video.progress,
                           encode=video.encode, temporal_blend=video.temporal_blend)
    report.skipped_existing = skipped
    return _report(report, jobs, args.output, say)


def _report(report: JobsReport, jobs: list[Job], output: str | None, say: Any) -> int:
    """The run's last line and its exit status (:data:`EXIT_STATUS`): it names the output the user asked for."""
    where = jobs[0].dst if len(jobs) == 1 else Path(output) if output else \
        Path(os.path.commonpath([j.dst.parent for j in jobs])) if jobs else Path("stylized")
    frames = f" ({report.frames} video frames, {report.frames / max(report.seconds, 1e-9):.2f} frames/s)" \
        if report.frames else ""
    noun = "file(s)" if any(is_video_path(j.src) for j in jobs) else "image(s)"
    if not report.failed:
        say(f"fastnst: wrote {where if len(jobs) == 1 else f'{len(report.written)} {noun} to {where}'} in "
            f"{report.seconds:.1f} s{frames}")
        return 0
    if not report.written:
        if len(jobs) > 1:  # one input: its own error line (above) already says that its output was not written
            print(f"fastnst: error: all {len(jobs)} {noun} failed; nothing was written to {where}", file=sys.stderr)
        return 2
    print(f"fastnst: {len(report.failed)} of {len(jobs)} {noun} failed; {len(report.written)} written to "
          f"{where}{frames}", file=sys.stderr)
    return 1


@quiet_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """``fastnst stylize`` / ``python infer.py``: parse ``argv``, stylize, return the exit status."""
    args = build_parser().parse_args(argv)
    return run_main(lambda: run_cli(args), interrupted="files written so far are complete")
