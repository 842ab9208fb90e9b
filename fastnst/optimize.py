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
import inspect
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

from fastnst.cli import Parser, run_main
from fastnst.errors import UserError
from fastnst.fileio import check_output_file
from fastnst.image import load_image, load_style_image, pil_to_tensor
from fastnst.inference import resolve_device
from fastnst.losses import PerceptualLoss



def _preset_dir(module_file: str | Path = __file__) -> Path:
    """conf/loss of the source checkout (what train.py's Hydra reads), else the copy a regular install ships
    as the package data ``fastnst.conf`` (pyproject.toml). Found through the package's ``__path__``, not
    ``importlib.resources.files``: on Python 3.11 that fails for namespace packages of editable installs."""
    repo = Path(module_file).resolve().parents[1] / "conf" / "loss"
    if repo.is_dir():
        return repo
    try:
        import fastnst.conf
    except ImportError:
        return repo  # nothing installed either: load_preset says where it looked
    return next((Path(d) / "loss" for d in fastnst.conf.__path__ if (Path(d) / "loss").is_dir()), repo)


PRESET_DIR = _preset_dir()
LOSS_KEYS = tuple(p for p in inspect.signature(PerceptualLoss).parameters if p != "style_image")
DEFAULT_LR = {"adam": 0.02, "lbfgs": 1.0}
MIN_SIZE = 16  # VGG19's deepest blocks need a few pixels left after four poolings
RANDOM_VGG_NOTE = ("VGG19 weights are RANDOM: these numbers and images are only for tests and smoke runs, "
                   "not a measure of style transfer quality")
# L-BFGS works on logits: content pixels of exactly 0 or 1 are moved this far inside so their logits are finite.
_LOGIT_EPS = 1e-3


# --- settings shared with fastnst.evaluate --------------------------------------------------------

def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The loss settings of ``conf/loss/<name>.yaml`` (or of a YAML file path) as PerceptualLoss arguments.

    Read with OmegaConf, as Hydra reads them for training (``1.0e5`` is a float there, a string in PyYAML).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    is_file = name.endswith((".yaml", ".yml")) or "/" in name
    path = Path(name).expanduser() if is_file else PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"loss preset {name!r} does not exist; choose one of {', '.join(preset_names())} "
                        f"(files in {PRESET_DIR}) or pass the path of a .yaml file")
    try:
        settings = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, YAMLError, OmegaConfBaseException) as exc:
        raise UserError(f"loss preset {path} is not readable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(settings, dict) or not settings:
        raise UserError(f"loss preset {path} must be a mapping of loss settings such as content_layers: [relu4_2]")
    unknown = sorted(set(settings) - set(LOSS_KEYS))
    if unknown:
        raise UserError(f"loss preset {path} has unknown key {unknown[0]!r}; valid keys are {', '.join(LOSS_KEYS)}")
    return settings


def resize_to(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the longer side is exactly ``size`` (up or down), as the style image is."""
    w, h = img.size
    if max(w, h) == size:
        return img
    scale = size / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC, reducing_gap=3.0)


def load_resized(path: str | Path, size: int | None, what: str) -> torch.Tensor:
    """An image file as [1, 3, H, W] in [0, 1], its longer side resized to ``size`` (None keeps it)."""
    img = load_image(path, what)
    return pil_to_tensor(resize_to(img, size) if size else img).unsqueeze(0)


def describe_loss(settings: dict[str, Any]) -> str:
    """One line naming the layers, Gram normalisation and weights of a loss configuration."""
    def names(layers: Any) -> str:
        return ", ".join(layers)

    return (f"content {names(settings.get('content_layers', []))}; style {names(settings.get('style_layers', []))}; "
            f"gram /{settings.get('gram_norm', 'hw')}; weights content {settings.get('content_weight', 1.0):g}, "
            f"style {settings.get('style_weight', 1.0):g}, tv {settings.get('tv_weight', 0.0):g}")


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


def _floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def _check_finite(terms: dict[str, float], step: int) -> None:
    if not math.isfinite(terms["total"]):
        raise UserError(f"the loss became {terms['total']} at step {step}; lower --lr or the loss weights")


def stylize(content: torch.Tensor, loss: PerceptualLoss, steps: int = 500, optimizer: str = "adam",
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
    if any(t.numel() == 0 for t in loss.style_targets().values()):
        raise ValueError("the loss has no style targets; call loss.set_style(style_image) first")
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
        shown = {k: f"{terms[k]:.4g}" for k in ("total", "content", "style", "tv")}
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

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                terms = loss(torch.sigmoid(z), content_feats=content_feats)
                values = _floats(terms)
                _check_finite(values, done)
                if first_eval[0]:  # step() evaluates the accepted point first: record that one
                    first_eval[0] = False
                    history.append({"step": done, **values})
                    show(values)
                terms["total"].backward()
                return terms["total"]

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
    return OptimizeResult(image=image.cpu(), history=history, final=final, steps=done,
                          seconds=time.perf_counter() - t0, converged=converged, saved=saved)


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
        prog="fastnst-optimize", description="Style transfer by optimisation (Gatys et al. 2016): the quality "
        "reference for the feed-forward networks, under the same loss code and presets as training.")
    p.add_argument("--content", required=True, help="content photo")
    p.add_argument("--style", required=True, help="style image (painting)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--steps", type=int, default=500, help="Adam updates or L-BFGS iterations (default 500)")
    p.add_argument("--size", type=int, default=512, help="longer side of the content and output in px (default 512)")
    p.add_argument("--style-size", type=int, default=None, help="longer side of the style image (default: --size)")
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
        raise UserError(f"--size and --style-size must be at least {MIN_SIZE} px")
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
    loss = PerceptualLoss(**settings, style_image=style).to(device)

    vgg = str(settings.get("vgg_weights", "imagenet"))
    _, _, h, w = content.shape
    print(f"fastnst-optimize: {args.optimizer}, {args.steps} steps, {w}x{h} px on {device}; preset {args.preset}: "
          f"{describe_loss(settings)}; VGG19 weights {vgg}", file=sys.stderr)
    if vgg == "random":
        print(f"fastnst-optimize: note: {RANDOM_VGG_NOTE}", file=sys.stderr)

    intermediates: list[str] = []

    def on_save(step: int, pixels: torch.Tensor) -> None:
        path = side_path(out, f"step{step:0{max(4, len(str(args.steps)))}d}")
        from fastnst.image import save_image

        save_image(pixels, path)
        intermediates.append(str(path))

    tty = sys.stderr.isatty()
    result = stylize(content, loss, steps=args.steps, optimizer=args.optimizer, init=args.init, lr=args.lr,
                     seed=args.seed, save_every=args.save_every, on_save=on_save, progress=tty and not args.quiet,
                     log_every=0 if tty or args.quiet else max(1, args.steps // 10))
    from fastnst.image import save_image

    save_image(result.image, out)
    report = {
        "output": str(out), "content": str(args.content), "style": str(args.style), "size": [w, h],
        "style_size": args.style_size or args.size, "optimizer": args.optimizer, "init": args.init,
        "lr": args.lr if args.lr is not None else DEFAULT_LR[args.optimizer], "seed": args.seed,
        "steps": result.steps, "converged": result.converged, "seconds": round(result.seconds, 3),
        "device": str(device), "preset": args.preset, "loss": settings, "vgg_weights": vgg,
        "note": RANDOM_VGG_NOTE if vgg == "random" else None,
        "final": result.final, "history": result.history, "intermediates": intermediates,
    }
    side = side_path(out, "losses", ".json")
    side.write_text(json.dumps(report, indent=2) + "\n")
    print(format_history(result), file=sys.stdout)
    first, last = result.history[0]["total"], result.final["total"]
    ratio = f"{first / last:.3g}x lower" if last > 0 else "to zero"
    print(f"loss fell from {first:.4g} to {last:.4g} ({ratio}) in {result.steps} steps, {result.seconds:.1f} s"
          + (" (L-BFGS converged early)" if result.converged else ""))
    print(f"saved {out}; loss terms in {side}" + (f"; {len(intermediates)} intermediate images" if intermediates else ""))
    return report


def format_history(result: OptimizeResult, rows: int = 6) -> str:
    """A small table of the loss terms at a few steps, the last row being the saved image."""
    hist = result.history
    picks = sorted({round(i * (len(hist) - 1) / (rows - 1)) for i in range(rows)}) if len(hist) > 1 else [0]
    keys = ("total", "content", "style", "tv")
    lines = [f"{'step':>6}  " + "  ".join(f"{k:>11}" for k in keys)]
    for i in picks:
        row = hist[i]
        label = f"{int(row['step'])}" + ("*" if i == len(hist) - 1 else "")
        lines.append(f"{label:>6}  " + "  ".join(f"{row[k]:>11.4g}" for k in keys))
    lines.append("(* the saved 8-bit image)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="VGG19 is RANDOMLY INITIALISED")  # the report says so itself
    return run_main(lambda: run(args) and None)


if __name__ == "__main__":
    sys.exit(main())
