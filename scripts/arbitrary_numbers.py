"""The numbers of docs/any-painting.md: a network that takes any painting against per-painting networks trained
for the same number of steps, fine-tuning from its prediction, and the cost of the encoder and of the vector.

    python scripts/arbitrary_numbers.py --data ../shared/data --out /tmp/arbitrary_numbers --steps 300

Everything is measured under one seeded random VGG19 written to OUT/vgg19_seed0.pth (no ImageNet weights here):
the losses compare networks with each other, they are not a measure of real stylization quality. The held-out
paintings (DATA/heldout/styles) are never trained on by the arbitrary network; its training paintings are
DATA/styles; the photos evaluated are DATA/heldout/content, never trained on. Prints a Markdown table per measurement and writes OUT/numbers.json.

The arbitrary network's painting crop (--painting-crop, style.crop) and learning rate (--arbitrary-lr) were chosen
on its two validation paintings (style.val_count=2 of DATA/styles: composition_vii and night_cafe, against
per-painting networks of the same steps), never on the held-out paintings; docs/any-painting.md gives that
comparison; the fine-tuned networks' learning rate (--finetune-lr) was chosen the same way. The per-painting
networks keep the defaults (Adam, lr 1e-3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def seeded_vgg(path: Path) -> Path:
    """torchvision's VGG19 features with seed-0 random weights, saved once (the fixed loss network of every run)."""
    if not path.exists():
        from torchvision.models import vgg19

        torch.manual_seed(0)
        torch.save(vgg19(weights=None).features.state_dict(), path)
    return path


def train(out: Path, overrides: list[str], args: argparse.Namespace) -> Path:
    ckpt = out / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        return ckpt
    cmd = [sys.executable, str(ROOT / "train.py"), f"data.root={args.data / 'content'}", f"model={args.model}",
           f"data.image_size={args.crop}", f"data.batch_size={args.batch}", "data.num_workers=1", "data.val_count=4",
           f"loss.vgg_weights={args.vgg}", "logger=csv", "trainer.enable_progress_bar=false",
           "trainer.val_check_interval=100000", "trainer.num_sanity_val_steps=0", "checkpoint.every_n_steps=0",
           "preview.every_n_steps=0", f"hydra.run.dir={out}", *overrides]
    print("+", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return ckpt


def evaluate(ckpt: Path, painting: Path, args: argparse.Namespace) -> dict[str, float]:
    from fastnst.tools.evaluate import evaluate as run

    report = run(ckpt, painting, args.data / "heldout" / "content", size=args.eval_size, style_size=args.style_size,
                 vgg_weights=str(args.vgg), device="cpu")
    s = report["summary"]["model"]
    return {k: s[k]["mean"] for k in ("total", "content", "style")}


def timings(net: torch.nn.Module, architecture: str, rounds: int = 30) -> dict[str, float]:
    """Median ms: the encoder on a 256-px painting; the transformer at 256x256 with a style vector against the same
    layers holding one trained style (norm rows as parameters), timed in turn, batch 1, torch's default threads."""
    from fastnst.training.arbitrary import from_prediction

    net = net.eval()
    painting = torch.rand(1, 3, 256, 256)
    one = from_prediction(net, architecture, painting).eval()
    x = torch.rand(1, 3, 256, 256)
    times: dict[str, list[float]] = {"encode_256": [], "vector": [], "trained": []}
    with torch.inference_mode():
        v = net.encoder(painting)
        runs = {"encode_256": lambda: net.encoder(painting), "vector": lambda: net(x, v), "trained": lambda: one(x)}
        for f in runs.values():
            f(), f()
        for r in range(rounds):
            for name in (list(runs)[r % 3:] + list(runs)[: r % 3]):
                t0 = time.perf_counter()
                runs[name]()
                times[name].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(t) for k, t in times.items()}


def all_timings(arb: Path | None, label: str = "") -> dict[str, dict[str, float]]:
    """:func:`timings` of the trained arbitrary network (``arb``) and of untrained ``johnson`` and ``mobile``
    networks that take a painting (speed does not depend on the weights)."""
    import fastnst
    from fastnst.models import create_model

    out = {}
    if arb is not None:
        model = fastnst.load(arb, "cpu")
        out[f"{label or model.info.architecture} (trained above)"] = timings(model.network, model.info.architecture)
    for arch in ("johnson", "mobile"):
        torch.manual_seed(0)
        out[arch] = timings(create_model(arch, style_dim=100), arch)
    return out


def print_timings(t: dict[str, dict[str, float]]) -> None:
    print(f"\nCPU {_cpu()}, torch {torch.__version__}, {torch.get_num_threads()} threads, medians of 30 rounds in turn:\n")
    print("| network | encoder, 256-px painting | transformer 256x256, style vector | same, trained style | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, m in t.items():
        print(f"| `{name}` | {m['encode_256']:.1f} ms | {m['vector']:.1f} ms | {m['trained']:.1f} ms | "
              f"{m['vector'] / m['trained']:.3f}x |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=Path("/tmp/arbitrary_numbers"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--model", default="small")
    p.add_argument("--crop", type=int, default=64, help="photo crop (data.image_size)")
    p.add_argument("--style-size", type=int, default=96, help="painting size in training and evaluation")
    p.add_argument("--eval-size", type=int, default=96, help="longer side of the evaluated photos")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--painting-crop", type=int, default=64, help="the arbitrary network's style.crop (px)")
    p.add_argument("--arbitrary-lr", type=float, default=5e-4, help="the arbitrary network's optim.lr")
    p.add_argument("--finetune-lr", type=float, default=2.5e-4, help="optim.lr of the networks fine-tuned from "
                   "the arbitrary network's prediction")
    p.add_argument("--timings-only", action="store_true", help="only the encoder and vector timings (no training)")
    args = p.parse_args()
    if args.timings_only:
        print_timings(all_timings(None))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.vgg = seeded_vgg(args.out / "vgg19_seed0.pth")
    heldout = sorted(q for q in (args.data / "heldout" / "styles").iterdir() if q.suffix.lower() in (".jpg", ".png"))
    n = args.steps
    arb = train(args.out / "arbitrary", [f"style.images={args.data / 'styles'}", "style.arbitrary=true",
                                         f"style.size={args.style_size}", "style.val_count=2",
                                         f"style.crop={args.painting_crop}", f"optim.lr={args.arbitrary_lr}",
                                         f"trainer.max_steps={n}"], args)
    rows = []
    for h in heldout:
        single = train(args.out / f"single_{h.stem}", [f"style.image={h}", f"style.size={args.style_size}",
                                                       f"trainer.max_steps={n}"], args)
        tuned = train(args.out / f"tuned_{h.stem}", [f"style.image={h}", f"style.size={args.style_size}",
                                                     f"init_from={arb}", f"optim.lr={args.finetune_lr}",
                                                     f"trainer.max_steps={n // 4}"], args)
        rows.append({"painting": h.name, "arbitrary": evaluate(arb, h, args), "single": evaluate(single, h, args),
                     "tuned": evaluate(tuned, h, args)})
    t = all_timings(arb, f"model={args.model}")
    result = {"steps": n, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "timings_ms": t,
              "cpu": _cpu()}
    (args.out / "numbers.json").write_text(json.dumps(result, indent=2))
    print(f"\n| held-out painting | style: arbitrary / per-painting ({n} steps each) | content: arbitrary / per-painting "
          f"| total: fine-tuned {n // 4} steps / per-painting {n} steps |")
    print("|---|---|---|---|")
    for r in rows:
        a, s, f = r["arbitrary"], r["single"], r["tuned"]
        print(f"| {r['painting']} | {a['style']:.4g} / {s['style']:.4g} = **{a['style'] / s['style']:.2f}x** | "
              f"{a['content']:.4g} / {s['content']:.4g} = **{a['content'] / s['content']:.2f}x** | "
              f"{f['total']:.4g} / {s['total']:.4g} = **{f['total'] / s['total']:.2f}x** |")
    print_timings(t)
    return 0


def _cpu() -> str:
    from fastnst.inference.machine import cpu_summary

    return cpu_summary()


if __name__ == "__main__":
    sys.exit(main())
