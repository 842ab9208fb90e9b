"""Style transfer by optimisation (Gatys et al. 2016): the pixels of one image are optimised so that its
VGG19 Gram matrices match the style image's and its features match the content image's.

Slow, but it is the quality reference a feed-forward network tries to approach. It uses the very
same :class:`fastnst.losses.PerceptualLoss` (VGG trunk, ``gram_matrix``, loss functions) and the same
presets (``conf/loss/*.yaml``) as training.

Pixels stay in [0, 1]: Adam (the seed text's optimiser) takes projected steps (clamped after each
update); L-BFGS optimises ``z`` with pixels ``sigmoid(z)``, because clamping between the evaluations
of its line search would change the function under it.

    python -m fastnst.optimize --content photo.jpg --style painting.jpg -o out.png --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe, run_main
from fastnst.errors import UserError
from fastnst.fileio import check_output_file
from fastnst.inference.devices import resolve_device
from fastnst.losses import PerceptualLoss
from fastnst.losses.presets import describe_loss, load_preset, preset_names
from fastnst.losses.vgg import MIN_SIZE, RANDOM_VGG_NOTE
from fastnst.media.image import load_image, load_style_image, pil_to_tensor, resize_longer_to, save_image
from fastnst.media.limits import HELD_RESIZED, HELD_VGG_TRAIN, PixelBudget

DEFAULT_LR = {"adam": 0.02, "lbfgs": 1.0}
# L-BFGS works on logits: content pixels of exactly 0 or 1 are moved this far inside so their logits are finite.
_LOGIT_EPS = 1e-3


def load_resized(path: str | Path, size: int | None, what: str) -> torch.Tensor:
    """An image file as [1, 3, H, W] in [0, 1], its longer side resized to ``size`` (None keeps it). The image is
    then optimised through VGG19 at that size: refused before decoding when that cannot fit in memory."""
    budget = PixelBudget(HELD_RESIZED, doing="reading it")
    img = load_image(path, what, budget)
    img = resize_longer_to(img, size) if size else img
    PixelBudget(HELD_VGG_TRAIN, "a smaller --longer-side, or " + budget.raise_with, doing="optimizing it").check(
        *img.size, f"the image optimised from {what} {path}")
    return pil_to_tensor(img).unsqueeze(0)


# --- the optimisation ----------------------------------------------------------------------------

@dataclass
class OptimizeResult:
    """``image``: [1, 3, H, W] in [0, 1], on 8-bit levels (as saved). ``history``: loss terms (floats) at
    the start of optimiser steps, each with its ``step``. ``final``: the terms of ``image``."""

    image: torch.Tensor
    history: list[dict[str, float]]
    final: dict[str, float]
    steps: int
    seconds: float
    converged: bool = False
    saved: list[int] = field(default_factory=list)
    unchanged: bool = False  # the saved image equals the start image (8-bit)
    terms: list[str] = field(default_factory=list)  # the weighted terms of the loss (PerceptualLoss.term_names)


def _floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def _check_finite(terms: dict[str, float], step: int) -> None:
    if not math.isfinite(terms["total"]):
        raise UserError(f"the loss became {terms['total']} at step {step}; lower --lr or the loss weights")


def optimize_image(content: torch.Tensor, loss: PerceptualLoss, steps: int = 500, optimizer: str = "adam",
            init: str = "content", lr: float | None = None, seed: int = 0, save_every: int = 0,
            on_save: Callable[[int, torch.Tensor], None] | None = None, progress: bool = False,
            log_every: int = 0) -> OptimizeResult:
    """Optimise an image towards ``content`` ([1, 3, H, W] in [0, 1]) and the style set in ``loss``.

    ``optimizer`` is ``adam`` (steps = updates) or ``lbfgs`` (steps = L-BFGS iterations, each with a
    strong-Wolfe line search); ``init`` is ``content`` or ``noise`` (uniform, from ``seed``).
    ``on_save(step, image)`` is called every ``save_every`` steps with the current [1, 3, H, W] pixels.
    ``progress`` shows a bar with the loss terms; ``log_every`` prints them as plain lines instead (logs, pipes).
    """
    if optimizer not in DEFAULT_LR:
        raise UserError(f"--optimizer must be adam or lbfgs, got {optimizer!r}")
    if init not in ("content", "noise"):
        raise UserError(f"--init must be content or noise, got {init!r}")
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    if loss.num_styles != 1:
        raise ValueError("the loss needs exactly one style target; build it with style_images=[style]")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    if not lr > 0:
        raise UserError(f"--lr must be positive, got {lr}")
    from tqdm import tqdm

    device = loss.vgg.mean.device
    content = content.to(device, torch.float32)
    content_feats = loss.content_targets(content)
    if init == "content":
        start = content.contiguous().clone()  # L-BFGS flattens gradients with .view: strides must be plain
    else:
        gen = torch.Generator().manual_seed(seed)
        start = torch.rand(content.shape, generator=gen).to(device)

    history: list[dict[str, float]] = []
    saved: list[int] = []
    bar = tqdm(total=steps, disable=not progress, desc=optimizer, unit="step", dynamic_ncols=True,
               mininterval=0.5, file=sys.stderr)

    logged = [-1]

    def show(terms: dict[str, float]) -> None:
        shown = {k: f"{terms[k]:.4g}" for k in ("total", *loss.term_names)}
        bar.set_postfix(shown, refresh=False)
        if log_every and done // log_every > logged[0]:
            logged[0] = done // log_every
            print(f"step {done}/{steps}: " + " ".join(f"{k} {v}" for k, v in shown.items()), file=sys.stderr, flush=True)

    def maybe_save(step: int, pixels: torch.Tensor) -> None:
        if save_every and on_save is not None and step % save_every == 0 and step < steps:
            on_save(step, pixels.detach().clamp(0, 1))
            saved.append(step)

    t0 = time.perf_counter()
    done = 0
    converged = False
    try:
        if optimizer == "adam":
            x = start.clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for done in range(steps):
                opt.zero_grad(set_to_none=True)
                terms = loss(x, content_feats=content_feats)
                values = _floats(terms)
                _check_finite(values, done)
                history.append({"step": done, **values})
                terms["total"].backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)  # projected gradient descent: the box [0, 1] is the pixel contract
                show(values)
                bar.update(1)
                maybe_save(done + 1, x)
            done = steps
            result = x.detach()
        else:
            z = torch.logit(start.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)).requires_grad_(True)
            opt = torch.optim.LBFGS([z], lr=lr, max_iter=1, history_size=100, line_search_fn="strong_wolfe")
            group = opt.param_groups[0]
            first_eval = [False]
            # L-BFGS's tolerances (gradient 1e-7, change 1e-9) are absolute: on a loss of 1e-6 (random VGG
            # weights, small loss weights) it stopped before the first step and returned the content image.
            # Optimising loss / (its value at the start) makes them relative to the loss's own scale.
            with torch.no_grad():
                start_total = float(loss(torch.sigmoid(z), content_feats=content_feats)["total"])
            scale = abs(start_total) if math.isfinite(start_total) and start_total != 0 else 1.0

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                terms = loss(torch.sigmoid(z), content_feats=content_feats)
                values = _floats(terms)
                _check_finite(values, done)
                if first_eval[0]:  # step() evaluates the accepted point first: record that one
                    first_eval[0] = False
                    history.append({"step": done, **values})
                    show(values)
                scaled = terms["total"] / scale
                scaled.backward()
                return scaled

            while done < steps:
                # Chunks of iterations: each optimizer.step() starts with one extra evaluation, so not one per step.
                chunk = min(10, steps - done)
                if save_every:
                    chunk = min(chunk, save_every - done % save_every)
                group["max_iter"], group["max_eval"] = chunk, 25 * chunk  # iterations, not evaluations, are the budget
                before = opt.state[z].get("n_iter", 0) if z in opt.state else 0
                first_eval[0] = True
                opt.step(closure)
                advanced = opt.state[z]["n_iter"] - before
                done += advanced
                bar.update(advanced)
                maybe_save(done, torch.sigmoid(z))
                if advanced < chunk:  # L-BFGS stopped by itself: gradient or progress below tolerance
                    converged = True
                    break
            result = torch.sigmoid(z.detach())
    finally:
        bar.close()

    # What leaves the program is 8-bit: report the terms of exactly those pixels.
    image = result.clamp(0, 1).mul(255).round().div(255)
    with torch.no_grad():
        final = _floats(loss(image, content_feats=content_feats))
    history.append({"step": done, **final})
    unchanged = torch.equal(image, start.clamp(0, 1).mul(255).round().div(255))
    return OptimizeResult(image=image.cpu(), history=history, final=final, steps=done,
                          seconds=time.perf_counter() - t0, converged=converged, saved=saved, unchanged=unchanged,
                          terms=loss.term_names)


def describe_change(first: float, last: float) -> str:
    """``fell from A to B (Nx lower)``, ``rose from A to B (Nx higher)`` or ``did not change (A)``."""
    if last == first:
        return f"did not change ({first:.4g})"
    if last < first:
        return f"fell from {first:.4g} to {last:.4g} (" + (f"{first / last:.3g}x lower)" if last > 0 else "to zero)")
    return f"rose from {first:.4g} to {last:.4g} (" + (f"{last / first:.3g}x higher)" if first > 0 else "from zero)")


# --- command line --------------------------------------------------------------------------------

def check_output(path: Path) -> None:
    """Fail before minutes of optimisation if ``path`` cannot be written as an image."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"output {path} has no image extension Pillow can write; use .png or .jpg")
    check_output_file(path, "output", "stylized.png")


def side_path(out: Path, tag: str, suffix: str | None = None) -> Path:
    """A file next to the output: ``gatys.png`` -> ``gatys.<tag><suffix>``."""
    return out.with_name(f"{out.stem}.{tag}{out.suffix if suffix is None else suffix}")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=prog_name("fastnst-optimize"), description="Style transfer by optimisation (Gatys et al. 2016): the quality "
        "reference for the feed-forward networks, under the same loss code and presets as training.",
        examples=["--content photo.jpg --style starry_night.jpg -o photo_gatys.png",
                  "--content photo.jpg --style starry_night.jpg -o out.png --optimizer lbfgs --steps 300 --preset johnson"])
    p.add_argument("--content", required=True, help="content photo")
    p.add_argument("--style", required=True, help="style image (painting)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--steps", type=int, default=500, help="Adam updates or L-BFGS iterations (default 500)")
    p.add_argument("--longer-side", "--size", dest="size", type=int, default=512, metavar="PX",
                   help="longer side of the content and output in px (default 512; --size is the old name)")
    p.add_argument("--style-longer-side", "--style-size", dest="style_size", type=int, default=None, metavar="PX",
                   help="longer side of the style image (default: --longer-side)")
    p.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam", help="default adam (the seed text's)")
    p.add_argument("--init", choices=("content", "noise"), default="content", help="start image (default content)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.02 for adam, 1 for lbfgs)")
    p.add_argument("--preset", default="gatys",
                   help=f"loss preset: {', '.join(preset_names())} (conf/loss/NAME.yaml) or a .yaml path (default gatys)")
    p.add_argument("--content-weight", type=float, default=None, help="overrides the preset")
    p.add_argument("--style-weight", type=float, default=None, help="overrides the preset")
    p.add_argument("--tv-weight", type=float, default=None, help="overrides the preset")
    p.add_argument("--vgg-weights", default=None, help="imagenet, random (tests only) or a path; overrides the preset")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default auto)")
    p.add_argument("--save-every", type=int, default=0, metavar="K", help="also save the image every K steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise init (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Optimise as ``args`` say, save the image, intermediates and loss terms; returns the saved report."""
    if args.size < MIN_SIZE or (args.style_size is not None and args.style_size < MIN_SIZE):
        raise UserError(f"--longer-side and --style-longer-side must be at least {MIN_SIZE} px")
    if args.save_every < 0:
        raise UserError(f"--save-every must be 0 (off) or a number of steps, got {args.save_every}")
    out = Path(args.output).expanduser()
    check_output(out)
    settings = load_preset(args.preset)
    for key in ("content_weight", "style_weight", "tv_weight", "vgg_weights"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    device = resolve_device(args.device)
    content = load_resized(args.content, args.size, "content image")
    style = load_style_image(args.style, args.style_size or args.size)
    loss = PerceptualLoss(**settings, style_images=[style]).to(device)

    vgg = str(settings.get("vgg_weights", "imagenet"))
    _, _, h, w = content.shape
    print(f"fastnst-optimize: {args.optimizer}, {args.steps} steps, {w}x{h} px on {device}; preset {args.preset}: "
          f"{describe_loss(settings)}; VGG19 weights {vgg}", file=sys.stderr)
    if vgg == "random":
        print(f"fastnst-optimize: note: {RANDOM_VGG_NOTE}", file=sys.stderr)

    intermediates: list[str] = []

    def on_save(step: int, pixels: torch.Tensor) -> None:
        path = side_path(out, f"step{step:0{max(4, len(str(args.steps)))}d}")
        save_image(pixels, path)
        intermediates.append(str(path))

    tty = sys.stderr.isatty()
    result = optimize_image(content, loss, steps=args.steps, optimizer=args.optimizer, init=args.init, lr=args.lr,
                     seed=args.seed, save_every=args.save_every, on_save=on_save, progress=tty and not args.quiet,
                     log_every=0 if tty or args.quiet else max(1, args.steps // 10))
    save_image(result.image, out)
    report = {
        "output": str(out), "content": str(args.content), "style": str(args.style), "size": [w, h],
        "style_size": args.style_size or args.size, "optimizer": args.optimizer, "init": args.init,
        "lr": args.lr if args.lr is not None else DEFAULT_LR[args.optimizer], "seed": args.seed,
        "steps": result.steps, "converged": result.converged, "unchanged": result.unchanged, "seconds": round(result.seconds, 3),
        "device": str(device), "preset": args.preset, "loss": settings, "vgg_weights": vgg,
        "note": RANDOM_VGG_NOTE if vgg == "random" else None,
        "terms": result.terms, "final": result.final, "history": result.history, "intermediates": intermediates,
    }
    side = side_path(out, "losses", ".json")
    side.write_text(json.dumps(report, indent=2) + "\n")
    print(format_history(result), file=sys.stdout)
    first, last = result.history[0]["total"], result.final["total"]
    print(f"loss {describe_change(first, last)} in {result.steps} steps, {result.seconds:.1f} s"
          + (" (L-BFGS converged early)" if result.converged else ""))
    if result.unchanged:
        print(f"fastnst-optimize: warning: the saved image is the unchanged {args.init} image: the optimiser made no "
              f"change that survives 8-bit rounding; raise --steps or --lr, or the loss weights", file=sys.stderr)
    print(f"saved {out}; loss terms in {side}" + (f"; {len(intermediates)} intermediate images" if intermediates else ""))
    return report


def format_history(result: OptimizeResult, rows: int = 6) -> str:
    """A small table of the loss terms at a few steps, the last row being the saved image."""
    hist = result.history
    picks = sorted({round(i * (len(hist) - 1) / (rows - 1)) for i in range(rows)}) if len(hist) > 1 else [0]
    keys = ("total", *result.terms)
    lines = [f"{'step':>6}  " + "  ".join(f"{k:>11}" for k in keys)]
    for i in picks:
        row = hist[i]
        label = f"{int(row['step'])}" + ("*" if i == len(hist) - 1 else "")
        lines.append(f"{label:>6}  " + "  ".join(f"{row[k]:>11.4g}" for k in keys))
    lines.append("(* the saved 8-bit image)")
    return "\n".join(lines)


@quiet_on_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="VGG19 is RANDOMLY INITIALISED")  # the report says so itself
    return run_main(lambda: run(args) and None)


if __name__ == "__main__":
    sys.exit(main())
