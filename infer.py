"""Stylize images and videos: ``python infer.py --ckpt MODEL INPUT... [-o OUT]``.

MODEL is a training checkpoint (.ckpt), an exported model (.onnx, .pt2) or a pytorch/examples model (.pth);
INPUT is image or video files, folders (searched recursively) or glob patterns. fastnst.inference does the work.
Exit status: 0 all written, 1 some files failed (the others were written), 2 nothing done (bad model, options
or paths).
"""

from __future__ import annotations

import argparse
import sys

from fastnst.cli import Parser, run_main

EPILOG = """examples:
  python infer.py --ckpt runs/x/checkpoints/last.ckpt photo.jpg -o photo_styled.png
  python infer.py --ckpt model.onnx photos/ -o stylized/ --batch-size 8
  python infer.py --ckpt last.ckpt huge.jpg --tile 512 -o huge_styled.jpg
  python infer.py --ckpt last.ckpt photo.jpg --preserve-color --strength 0.7
  python infer.py --ckpt multi.ckpt photo.jpg                          # photo_<style>.jpg for every style
  python infer.py --ckpt multi.ckpt photo.jpg --style starry=0.7,scream=0.3
  python infer.py --ckpt multi.ckpt photos/ --sheet -o sheets/         # every style side by side, labelled
  python infer.py --ckpt any.ckpt photo.jpg --style-image starry.jpg   # a network that takes any painting
  python infer.py --ckpt any.onnx photo.jpg --style-image a.jpg=0.6,b.jpg=0.4
  python infer.py --ckpt last.ckpt photo.jpg --device cuda --precision fp16 --benchmark
  python infer.py --ckpt last.ckpt photos/ --precision bf16 --channels-last --compile   # fastest on CPUs with bf16
  python infer.py --ckpt last.ckpt clip.mp4 -o clip_styled.mp4 --batch-size 4        # video: sound, timing kept
  python infer.py --ckpt last.ckpt clip.mov -o out.mp4 --max-size 720 --crf 18 --temporal-blend 0.5
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="infer.py", description="Stylize images and videos with a trained fastnst network.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="compute precision of a .ckpt model where the device supports it (default: fp32)")
    p.add_argument("--channels-last", action="store_true",
                   help="run a .ckpt model in channels-last memory format (faster convolutions on most CPUs and GPUs)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile a .ckpt model: slower first image (compilation), faster after; a new "
                        "image size or batch size recompiles once into a shape-generic graph, not once per size "
                        "(needs a C++ compiler on CPU; --tile runs uncompiled)")
    p.add_argument("--fast", action="store_true",
                   help="on the CPU, run the path this machine measured fastest for this model near the size of the "
                        "first image (precision, channels-last, compile or onnxruntime; tune once with "
                        "python -m fastnst.bench --tune --ckpt MODEL --size WxH)")
    p.add_argument("--batch-size", type=int, default=1, help="images of the same size run together (default: 1)")
    p.add_argument("--max-size", type=int, metavar="N",
                   help="downscale so that the longer side is at most N px before stylizing (the output has "
                        "that size); strokes keep the size they had at the training resolution")
    p.add_argument("--tile", type=int, metavar="N",
                   help="stylize images larger than N px in overlapping N x N tiles (bounded memory; .ckpt only)")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fastnst.inference.cli import run_cli

    return run_main(lambda: run_cli(args), interrupted="files written so far are complete")


if __name__ == "__main__":
    sys.exit(main())
