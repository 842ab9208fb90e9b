"""Quality of one conditional network against one network per style (issue 11, item 5).

Trains, under one fixed VGG19 weights file, one network holding STYLES and one single-style network per
style, for the same number of steps per style (the multi-style run takes len(STYLES) x as many steps, so
every style sees as many training images), with the same network, crop size, batch and seed; then measures
every style with ``fastnst.evaluate`` on held-out photos under the checkpoints' own training loss, and
prints a Markdown table: per style, the style and content losses of both and their ratio.

    python scripts/multistyle_quality.py --out runs/multistyle_quality          # ~1-2 h on 2 CPU cores

Re-running resumes: finished runs are kept, interrupted ones continue from their last checkpoint
(``ckpt_path=last``), evaluations already written are reused. No ImageNet weights are needed: the VGG19
file is a seeded random VGG19 saved once (``--vgg``), so the numbers compare networks, not artistic quality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STYLES = ("starry_night", "the_scream", "great_wave", "mondrian_composition_vii")


def save_random_vgg(path: Path, seed: int = 0) -> None:
    import torch
    from torchvision.models import vgg19

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vgg19(weights=None).features.state_dict(), path)


def train(run: Path, styles: list[Path], steps: int, args: argparse.Namespace) -> Path:
    last = run / "checkpoints" / "last.ckpt"
    style = f"style.image={styles[0]}" if len(styles) == 1 else f"style.images=[{','.join(map(str, styles))}]"
    cmd = [sys.executable, str(ROOT / "train.py"), f"data.root={args.data / 'content'}", style,
           f"loss.vgg_weights={args.vgg}", f"model={args.model}", f"data.image_size={args.size}",
           f"data.batch_size={args.batch}", f"data.num_workers={args.workers}", f"style.size={args.style_size}",
           f"trainer.max_steps={steps}", "trainer.accelerator=cpu", "trainer.limit_val_batches=0",
           "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=10", "logger=csv", "callbacks.preview=null",
           f"checkpoint.every_n_steps={max(50, steps // 4)}", f"seed={args.seed}", "ckpt_path=last",
           f"hydra.run.dir={run}"]
    if last.is_file():
        from fastnst.formats.checkpoint import read_checkpoint

        if read_checkpoint(last)["global_step"] >= steps:
            return last
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    return last


def evaluate(ckpt: Path, style: str | None, out: Path, args: argparse.Namespace) -> dict:
    """The summary of ``fastnst.evaluate`` (``style``: which style of a multi-style network)."""
    if not out.is_file():
        cmd = [sys.executable, "-m", "fastnst.evaluate", "--ckpt", str(ckpt), "--images",
               str(args.data / "heldout" / "content"), "--longer-side", str(args.eval_size), "--device", "cpu", "-q",
               "--json", str(out)]
        if style is not None:
            cmd += ["--model-style", style]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["summary"]["model"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                   help="folder with content/, styles/ and heldout/content/")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "multistyle_quality")
    p.add_argument("--styles", default=",".join(DEFAULT_STYLES), help="style file stems in DATA/styles")
    p.add_argument("--steps-per-style", type=int, default=200)
    p.add_argument("--model", default="small")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--style-size", type=int, default=256)
    p.add_argument("--eval-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("multi", "singles"),
                   help="train only these runs and stop (to train both kinds in two processes at once)")
    p.add_argument("--vgg", type=Path, default=None, help="VGG19 weights file (default: OUT/vgg19_random_seed0.pth)")
    args = p.parse_args()
    args.vgg = args.vgg or args.out / "vgg19_random_seed0.pth"
    if not args.vgg.is_file():
        save_random_vgg(args.vgg)
    names = [s.strip() for s in args.styles.split(",") if s.strip()]
    paintings = []
    for n in names:
        found = sorted((args.data / "styles").glob(f"{n}.*"))
        if not found:
            sys.exit(f"multistyle_quality: error: no painting {n}.* in {args.data / 'styles'}")
        paintings.append(found[0])

    if args.only != "singles":
        multi = train(args.out / "multi", paintings, args.steps_per_style * len(names), args)
    if args.only != "multi":
        singles = [train(args.out / f"single_{n}", [p], args.steps_per_style, args) for n, p in zip(names, paintings)]
    if args.only:
        return
    rows = []
    for name, single in zip(names, singles):
        s = evaluate(single, None, args.out / f"eval_single_{name}.json", args)
        m = evaluate(multi, name, args.out / f"eval_multi_{name}.json", args)
        rows.append({"style": name, "single": {k: s[k]["mean"] for k in ("style", "content", "total")},
                     "multi": {k: m[k]["mean"] for k in ("style", "content", "total")}})
    (args.out / "table.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                      "rows": rows}, indent=2))
    print(f"\n{len(names)}-style network vs one network per style; {args.steps_per_style} steps per style, "
          f"model={args.model}, {args.size} px crops, batch {args.batch}; mean over the held-out photos at "
          f"{args.eval_size} px (weighted as in training)\n")
    print("| style | style loss, single | style loss, multi | ratio | content loss, single | content loss, multi "
          "| ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s, m = r["single"], r["multi"]
        print(f"| {r['style']} | {s['style']:.4g} | {m['style']:.4g} | {m['style'] / s['style']:.2f}x | "
              f"{s['content']:.4g} | {m['content']:.4g} | {m['content'] / s['content']:.2f}x |")


if __name__ == "__main__":
    main()
