"""Does loss.temporal_weight lower flicker? Train the same network twice, with and without the stability term
(same seed, data, steps and one fixed random-VGG19 weights file), then measure both on held-out data:
flicker on pan / zoom / static clips (``fastnst.evaluate --video``) and the style and content losses on
held-out photos (``fastnst.evaluate``), and print the README table.

    python scripts/flicker_experiment.py --data ../shared/data --steps 160 --temporal-weights 5e4,2e5 --out runs/flicker

Every step it runs is a command printed before it starts; a finished run or report is reused when the
script is run again, and a stopped run resumes (exactly) from its last checkpoint (delete the folder to
start over).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def steps_done(ckpt: Path) -> int:
    from fastnst.formats.checkpoint import read_checkpoint

    return int(read_checkpoint(ckpt)["global_step"])


def random_vgg(path: Path, seed: int = 0) -> Path:
    """One seeded random VGG19 ``features`` state dict, shared by every run of the comparison."""
    if not path.exists():
        import torch
        from torchvision.models import vgg19

        torch.manual_seed(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(vgg19(weights=None).features.state_dict(), path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the shared data folder")
    p.add_argument("--style", default="starry_night.jpg", help="a painting in DATA/styles")
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--temporal-weights", default="5e4,2e5", help="comma-separated loss.temporal_weight values to compare with 0")
    p.add_argument("--size", type=int, default=96, help="training crop size")
    p.add_argument("--precision", default="bf16-mixed", help="trainer.precision of both runs")
    p.add_argument("--out", default="runs/flicker")
    args = p.parse_args()
    data, out = Path(args.data), ROOT / args.out
    vgg = random_vgg(out / "vgg19_random_seed0.pth")
    py = sys.executable
    common = [f"data.root={data / 'content'}", f"style.image={data / 'styles' / args.style}", "model=small",
              f"data.image_size={args.size}", "data.batch_size=4", "data.num_workers=1", f"loss.vgg_weights={vgg}",
              f"trainer.max_steps={args.steps}", f"trainer.precision={args.precision}", "channels_last=true", "seed=0",
              "logger=csv", "callbacks.preview=null",
              "checkpoint.every_n_steps=100000"]
    weights = [0.0] + [float(w) for w in args.temporal_weights.split(",")]
    rows = {}
    for weight in weights:
        name, extra = f"{weight:g}", [f"loss.temporal_weight={weight:g}"] if weight else []
        folder = out / f"w{weight:g}"
        ckpt = folder / "checkpoints" / "last.ckpt"
        if not ckpt.exists() or steps_done(ckpt) < args.steps:  # a stopped run resumes exactly where it stopped
            run([py, "train.py", *common, *extra, f"hydra.run.dir={folder}", "ckpt_path=last"])
        flick, images = folder / "flicker.json", folder / "images.json"
        if not flick.exists():
            run([py, "-m", "fastnst.evaluate", "--ckpt", str(ckpt), "--video", "--images",
                 str(data / "heldout" / "large"), "--frames", "16", "--video-size", "256x144", "--json", str(flick),
                 "--device", "cpu", "-q"])
        if not images.exists():
            run([py, "-m", "fastnst.evaluate", "--ckpt", str(ckpt), "--images", str(data / "heldout" / "content"),
                 "--size", "256", "--vgg-weights", str(vgg), "--json", str(images), "--device", "cpu", "-q"])
        f, i = json.loads(flick.read_text()), json.loads(images.read_text())
        rows[name] = {**{s["motion"]: s["flicker"] for s in f["summary"]},
                      "style": i["summary"]["model"]["style"]["mean"], "content": i["summary"]["model"]["content"]["mean"],
                      "sharpness": next(s["sharpness"] for s in f["summary"] if s["motion"] == "pan")}
    a = rows["0"]
    print("\n| loss.temporal_weight | flicker pan | flicker zoom | flicker static | style loss | content loss | "
          "sharpness (pan) |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        change = "" if name == "0" else " ({:+.0%}, {:+.0%}, {:+.0%}, {:+.0%}, {:+.0%}, {:+.0%})".format(
            *(r[k] / a[k] - 1 for k in ("pan", "zoom", "static", "style", "content", "sharpness")))
        print(f"| {name} | {r['pan']:.3f} | {r['zoom']:.3f} | {r['static']:.3f} | {r['style']:.4g} | {r['content']:.4g} | "
              f"{r['sharpness']:.2f} |{change}")
    for name, r in rows.items():
        if name != "0":
            met = r["pan"] <= 0.7 * a["pan"] and r["style"] <= 1.1 * a["style"]
            print(f"goal at weight {name} (pan flicker >= 30% lower at <= 10% higher style loss): "
                  f"{'met' if met else 'NOT met'}")
    (out / "table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
