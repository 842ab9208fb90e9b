"""A quality report: stylize a folder of photos with a model and measure the results under a VGG19 loss.

For every image: content loss, style loss (total and per layer), total variation and their weighted
total, exactly as training computes them (:class:`fastnst.losses.PerceptualLoss`), plus the SSIM of the
luminance against the content image and the stylization latency. ``--compare DIR`` measures another
set of stylized outputs of the same images (e.g. from ``fastnst.optimize``) side by side.

Every image is resized so that its longer side is ``--longer-side``: content and TV losses are means and
Gram matrices are divided by the number of positions, so the numbers are comparable across images,
and all images are measured at one scale. Model outputs are measured on 8-bit levels, as they would
be saved, so a model and a folder of saved images are measured alike.

    python -m fastnst.evaluate --ckpt runs/x/checkpoints/last.ckpt --style starry_night.jpg \\
        --images photos/ --longer-side 256 --json report.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe, run_main
from fastnst.errors import UserError
from fastnst.fileio import check_output_file
from fastnst.inference import load
from fastnst.inference.devices import resolve_device
from fastnst.tools.evaluate_styles import evaluate_each_style, format_styles_report
from fastnst.tools.flicker import format_video_report, video_report
from fastnst.tools.quality import (check_sizes, evaluate_style, format_style_report, luminance_ssim, measure,
                                   summarise)


def evaluate(model: str | Path, style: str | Path | None, images: str | Path, size: int = 256,
             style_size: int | None = None, compare: str | Path | None = None, preset: str | None = None,
             vgg_weights: str | None = None, device: str = "auto", save_outputs: str | Path | None = None,
             progress: bool = False, model_style: str | int | None = None) -> dict[str, Any]:
    """Stylize every image of ``images`` with ``model``, measure it (and its counterpart in ``compare``),
    and return the report: settings, ``summary`` (per set: metric -> mean/median/worst), ``per_image``
    and ``skipped`` (unreadable images, missing or mismatched counterparts). A multi-style model without
    ``model_style`` is measured in every style, each against its own painting (``per_style``); a network that
    takes any painting is stylized with the painting ``style`` it is measured against."""
    check_sizes(size, style_size)
    net = load(model, resolve_device(device))
    kw: dict[str, Any] = {"size": size, "style_size": style_size, "compare": compare, "preset": preset,
                          "vgg_weights": vgg_weights, "save_outputs": save_outputs, "progress": progress}
    if len(net.styles) > 1 and model_style is None and not net.takes_painting:
        return evaluate_each_style(net, model, style, images, **kw)
    return evaluate_style(net, model, style, images, model_style=model_style, **kw)


def format_report(report: dict[str, Any]) -> str:
    """The report as a text table: one row per metric and mean/median/worst per measured set, or for a
    multi-style report one row per style."""
    return format_styles_report(report) if "per_style" in report else format_style_report(report)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=prog_name("fastnst-evaluate"), description="Stylize a folder of images with a model and report content/style/TV "
        "losses, luminance SSIM and latency (mean, median, worst), optionally side by side with another set of outputs.",
        examples=["--ckpt runs/starry/checkpoints/last.ckpt --images heldout/ --json report.json",
                  "--ckpt starry.onnx --images heldout/ --compare gatys_outputs/",
                  "--ckpt multi.ckpt --images heldout/ --model-style starry_night",
                  "--ckpt last.ckpt --images heldout/ --video --temporal-blend 0,0.5"])
    p.add_argument("--ckpt", required=True, metavar="MODEL",
                   help="model: a training checkpoint (.ckpt), an exported .onnx / .pt2 file or a pytorch/examples .pth")
    p.add_argument("--model-style", default=None, metavar="NAME",
                   help="which style of a multi-style model to evaluate (name or index; default: every style, each "
                        "against its own painting)")
    p.add_argument("--style", default=None,
                   help="style image (default: the one the model was trained on, if present); for every style of a "
                        "multi-style model, a folder holding the paintings (matched by file name)")
    p.add_argument("--images", required=True, help="folder of content images (searched recursively) or one image")
    p.add_argument("--longer-side", "--size", dest="size", type=int, default=256, metavar="PX",
                   help="every image is resized so that its longer side is PX (default 256; --size is the old name)")
    p.add_argument("--style-longer-side", "--style-size", dest="style_size", type=int, default=None, metavar="PX",
                   help="longer side of the style image (default: the model's training style size, else --longer-side)")
    p.add_argument("--compare", default=None, metavar="DIR2",
                   help="folder of other stylized outputs of the same images, matched by name (photo.jpg <-> photo.png)")
    p.add_argument("--preset", default=None, help="measure under this loss preset's layers and weights (conf/loss/NAME.yaml "
                   "or a .yaml path) instead of the checkpoint's own training loss; the VGG19 weights stay the "
                   "checkpoint's (see --vgg-weights)")
    p.add_argument("--vgg-weights", default=None, help="imagenet, random (tests only) or a path; overrides the loss's")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full report (per image too) as JSON")
    p.add_argument("--save-outputs", default=None, metavar="DIR", help="also save the model's stylized images as PNG")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v = p.add_argument_group("video: flicker with known motion (--video; --images are the photos the clips pan over)")
    v.add_argument("--video", action="store_true",
                   help="measure flicker and sharpness on pan, zoom and static (noisy) clips made from --images "
                        "instead of image losses")
    v.add_argument("--motions", default="pan,zoom,static", help="comma-separated subset of pan,zoom,static")
    v.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    v.add_argument("--video-size", default="256x144", metavar="WxH", help="frame size (default 256x144)")
    v.add_argument("--temporal-blend", default="0", metavar="A[,A...]",
                   help="infer.py --temporal-blend levels to measure, e.g. 0,0.5,0.8 (default 0)")
    return p


@quiet_on_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="VGG19 is RANDOMLY INITIALISED")  # the report says so itself
    return run_main(lambda: run(args))


def _video_args(args: argparse.Namespace) -> dict[str, Any]:
    try:
        w, h = (int(v) for v in args.video_size.lower().split("x"))
        blends = [float(v) for v in args.temporal_blend.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--video-size {args.video_size!r} must be WIDTHxHEIGHT and --temporal-blend "
                        f"{args.temporal_blend!r} comma-separated numbers") from None
    if min(w, h) < 16:
        raise UserError(f"--video-size must be at least 16x16, got {w}x{h}")
    return {"motions": [m.strip() for m in args.motions.split(",") if m.strip()], "frames": args.frames,
            "size": (w, h), "blends": blends or [0.0]}


def run(args: argparse.Namespace) -> None:
    """Evaluate as ``args`` say, print the report and write ``--json``."""
    json_path = Path(args.json).expanduser() if args.json else None
    if json_path is not None:  # fail before the evaluation, not after it
        check_output_file(json_path, "--json", "report.json")
    if args.video:
        report = video_report(args.ckpt, args.images, device=args.device, style=args.model_style, **_video_args(args))
        text = format_video_report(report)
    else:
        report = _image_report(args)
        text = format_report(report)
    print(text)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise UserError(f"cannot write --json {json_path} ({exc.strerror}); choose another path") from None
        print(f"wrote {json_path}")


def _image_report(args: argparse.Namespace) -> dict[str, Any]:
    return evaluate(args.ckpt, args.style, args.images, size=args.size, style_size=args.style_size,
                    compare=args.compare, preset=args.preset, vgg_weights=args.vgg_weights, device=args.device,
                    save_outputs=args.save_outputs, progress=sys.stderr.isatty() and not args.quiet,
                    model_style=args.model_style)


__all__ = ["evaluate", "format_report", "luminance_ssim", "main", "measure", "run", "summarise"]


if __name__ == "__main__":
    sys.exit(main())
