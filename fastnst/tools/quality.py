"""The quality of one style's outputs: stylize a folder of photos with a loaded model and measure the results
under a VGG19 loss (the body of ``fastnst.evaluate`` for one style; :mod:`.evaluate_styles` runs it for every
style of a multi-style model, :mod:`.evaluate` is the command).

For every image: every term of the loss (content, style per layer, total variation and any added term) and
their weighted total, exactly as training computes them (:class:`fastnst.losses.PerceptualLoss`), plus the SSIM
of the luminance against the content image and the stylization latency. A ``compare`` folder of other stylized
outputs of the same images (e.g. from ``fastnst.optimize``) is measured side by side.

Every image is resized so that its longer side is ``size``: content and TV losses are means and Gram matrices
are divided by the number of positions, so the numbers are comparable across images, and all images are
measured at one scale. Model outputs are measured on 8-bit levels, as they would be saved, so a model and a
folder of saved images are measured alike.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.fileio import check_writable_folder
from fastnst.formats import ModelInfo
from fastnst.inference.stylizer import Stylizer
from fastnst.losses import PerceptualLoss, term_weights, total_variation
from fastnst.losses.presets import describe_loss, load_preset
from fastnst.losses.presets import loss_settings as preset_settings
from fastnst.losses.vgg import MIN_SIZE, RANDOM_VGG_NOTE
from fastnst.media.image import (IMAGE_EXTENSIONS, find_images, load_image, load_style_image, pil_to_tensor,
                                 resize_longer_to, save_image)

HIGHER_IS_BETTER = frozenset({"ssim"})
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")
ASPECT_TOLERANCE = 0.03  # a compared image whose aspect ratio differs more is not of the same photo



# --- measuring -----------------------------------------------------------------------------------

def luminance(images: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] RGB in [0, 1] -> [H, W] float64 luma in [0, 1]."""
    w = torch.tensor(LUMA, dtype=torch.float64).view(3, 1, 1)
    return (images[0].detach().double().cpu() * w).sum(0).numpy()


def luminance_ssim(stylized: torch.Tensor, content: torch.Tensor) -> float:
    """SSIM (Wang et al. 2004, scikit-image) of the luminance of two [1, 3, H, W] images in [0, 1]."""
    from skimage.metrics import structural_similarity

    a, b = luminance(stylized), luminance(content)
    win = min(7, *a.shape)
    win -= 1 - win % 2  # odd, as SSIM's window must be
    if win < 3:
        raise UserError(f"images of {a.shape[1]}x{a.shape[0]} px are too small for SSIM; use a larger --longer-side")
    return float(structural_similarity(a, b, data_range=1.0, win_size=win))


@torch.no_grad()
def measure(stylized: torch.Tensor, content: torch.Tensor, loss: PerceptualLoss) -> dict[str, float]:
    """All numbers of one stylized image against its content image, both [1, 3, H, W] in [0, 1].

    ``total`` and every term of the loss (``content``, ``style``, ``tv``, ``temporal``, added terms) are
    weighted as in training; ``style/<layer>`` are the unweighted mean squared Gram differences (and an added
    term's ``<name>/...`` its own parts); ``tv_raw`` is the unweighted total variation; ``ssim`` is
    :func:`luminance_ssim`.
    """
    if stylized.shape != content.shape:
        raise ValueError(f"stylized {tuple(stylized.shape)} and content {tuple(content.shape)} differ in shape")
    device = loss.vgg.mean.device
    stylized, content = stylized.to(device, torch.float32), content.to(device, torch.float32)
    terms = {k: float(v) for k, v in loss(stylized, content).items()}
    terms["tv_raw"] = float(total_variation(stylized))  # informative even when the TV weight is 0
    terms["ssim"] = luminance_ssim(stylized, content)
    return terms


def summarise(rows: Sequence[dict[str, float]], names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Mean, median and worst of every metric over ``rows`` (worst = max for losses and latency, min for
    SSIM); ``worst_image`` names the row that gave it when ``names`` are given."""
    out: dict[str, dict[str, Any]] = {}
    for key in rows[0] if rows else []:
        values = [r[key] for r in rows]
        pick = min if key in HIGHER_IS_BETTER else max
        i = values.index(pick(values))
        out[key] = {"mean": statistics.fmean(values), "median": statistics.median(values), "worst": values[i]}
        if names is not None:
            out[key]["worst_image"] = names[i]
    return out


# --- models, images, settings --------------------------------------------------------------------

def loss_settings(info: ModelInfo, preset: str | None = None,
                  vgg_weights: str | None = None) -> tuple[dict[str, Any], str]:
    """The PerceptualLoss arguments to measure with and a phrase saying where they come from: the
    checkpoint's own training loss, or ``preset`` (its layers and weights; the VGG19 weights stay the checkpoint's,
    so that a preset never swaps the trunk the losses are measured with); ``vgg_weights`` overrides either."""
    trained = preset_settings(info.training.loss) if info.training is not None and info.training.loss else None
    if preset:
        settings, source = load_preset(preset), f"preset {preset}"
        if trained is not None and "vgg_weights" in trained and not vgg_weights:
            settings["vgg_weights"] = trained["vgg_weights"]
            source += f", VGG19 weights of the checkpoint ({trained['vgg_weights']})"
    elif trained is not None:
        settings, source = trained, "the checkpoint's training loss"
    else:
        raise UserError("the model carries no loss settings; pass --preset johnson or --preset gatys")
    if vgg_weights:
        settings["vgg_weights"] = vgg_weights
        source += f", VGG19 weights from --vgg-weights {vgg_weights}"
    settings.setdefault("vgg_weights", "imagenet")
    return settings, source


def counterparts(images: Sequence[Path], root: Path, other: Sequence[Path], other_root: Path) -> dict[Path, Path]:
    """Map each content image to the image of ``other`` with the same relative path minus extension
    (``a/b.jpg`` <-> ``a/b.png``), else the same file stem when that is unique in ``other``."""
    by_rel = {p.relative_to(other_root).with_suffix("").as_posix(): p for p in other}
    stems: dict[str, list[Path]] = {}
    for p in other:
        stems.setdefault(p.stem, []).append(p)
    out = {}
    for img in images:
        hit = by_rel.get(img.relative_to(root).with_suffix("").as_posix())
        if hit is None and len(stems.get(img.stem, [])) == 1:
            hit = stems[img.stem][0]
        if hit is not None:
            out[img] = hit
    return out


def load_like(path: Path, content: torch.Tensor) -> torch.Tensor:
    """A stylized image file resized to ``content``'s [1, 3, H, W]; UserError if it cannot be a
    stylization of that image (unreadable, other aspect ratio)."""
    img = load_image(path, "compared image")
    _, _, h, w = content.shape
    if abs((img.width / img.height) / (w / h) - 1) > ASPECT_TOLERANCE:
        raise UserError(f"compared image {path} is {img.width}x{img.height}, not the aspect ratio of its content "
                        f"image ({w}x{h}); it cannot be a stylization of it")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BICUBIC, reducing_gap=3.0)
    return pil_to_tensor(img).unsqueeze(0)


# --- the report ----------------------------------------------------------------------------------

def check_sizes(size: int, style_size: int | None) -> None:
    """The longer sides to measure at, checked before any work."""
    if size < MIN_SIZE:
        raise UserError(f"--longer-side must be at least {MIN_SIZE} px, got {size}")
    if style_size is not None and style_size < MIN_SIZE:
        raise UserError(f"--style-longer-side must be at least {MIN_SIZE} px, got {style_size}")


def evaluate_style(net: Stylizer, model: str | Path, style: str | Path | None, images: str | Path, size: int = 256,
                   style_size: int | None = None, compare: str | Path | None = None, preset: str | None = None,
                   vgg_weights: str | None = None, save_outputs: str | Path | None = None, progress: bool = False,
                   model_style: str | int | None = None) -> dict[str, Any]:
    """Stylize every image of ``images`` with the loaded model ``net`` (the file ``model``) in one style
    (``model_style``; the first by default), measure it (and its counterpart in ``compare``) against the painting
    ``style`` (see :func:`style_painting`), and return the report: settings, ``summary`` (per set: metric ->
    mean/median/worst), ``per_image`` and ``skipped`` (unreadable images, missing or mismatched counterparts)."""
    check_sizes(size, style_size)
    dev = net.device
    info = net.info
    if net.takes_painting and model_style is None:  # stylized with the very painting it is measured against
        if style is None:
            raise UserError(f"model {model} takes any painting: pass --style PAINTING, the painting to stylize with "
                            f"and to measure against")
        weights = net.encode_style(style)
    else:
        weights = net.style_weights(model_style)
    index = 0 if weights is None or net.takes_painting else int(weights.argmax())
    if not net.takes_painting:
        style = style_painting(info, index, style)
    root = Path(images).expanduser()
    files = [root] if root.is_file() else find_images(root, "--images")
    base = root.parent if root.is_file() else root
    style_size = style_size or (info.training.style_size if info.training else None) or size
    settings, source = loss_settings(info, preset, vgg_weights)
    loss = PerceptualLoss(**settings, style_images=[load_style_image(style, style_size)]).to(dev)

    skipped: list[dict[str, str]] = []
    pairs: dict[Path, Path] = {}
    if compare is not None:
        other_root = Path(compare).expanduser()
        pairs = counterparts(files, base, find_images(other_root, "--compare"), other_root)
        if not pairs:
            raise UserError(f"no image of {root} has a counterpart in {other_root}; name each stylized image like its "
                            "content image (photo.jpg -> photo.png)")
        skipped += [{"image": str(f.relative_to(base)), "reason": f"no counterpart in {other_root}"}
                    for f in files if f not in pairs]
        files = [f for f in files if f in pairs]
    out_dir = Path(save_outputs).expanduser() if save_outputs else None
    if out_dir is not None:
        check_writable_folder(out_dir, "--save-outputs")  # before the evaluation, not after it

    from tqdm import tqdm

    per_image: list[dict[str, Any]] = []
    warmed = False
    for path in tqdm(files, desc="evaluate", unit="img", disable=not progress, file=sys.stderr):
        name = str(path.relative_to(base))
        try:
            content = pil_to_tensor(resize_longer_to(load_image(path, "content image"), size)).unsqueeze(0)
            other = load_like(pairs[path], content) if compare is not None else None
        except UserError as exc:
            skipped.append({"image": name, "reason": str(exc)})
            continue
        x = content.to(dev)
        with torch.inference_mode():
            if not warmed:  # first-call costs (allocation, kernel selection) are not latency
                net(x, weights)
                warmed = True
            net.synchronize()
            t0 = time.perf_counter()
            y = net(x, weights)
            net.synchronize()
            latency = (time.perf_counter() - t0) * 1000
        stylized = y.float().clamp(0, 1).mul(255).round().div(255)  # as it would be saved
        if out_dir is not None:
            save_image(stylized.cpu(), (out_dir / name).with_suffix(".png"))
        row: dict[str, Any] = {"image": name, "size": [x.shape[-1], x.shape[-2]],
                               "model": {**measure(stylized, x, loss), "latency_ms": latency}}
        if other is not None:
            row["compare"] = measure(other, x, loss)
            row["compare_file"] = str(pairs[path])
        per_image.append(row)
    if not per_image:
        raise UserError(f"none of the {len(files)} images could be measured ({skipped[0]['reason']})"
                        if skipped else f"{root} holds no images")

    names = [r["image"] for r in per_image]
    summary = {"model": summarise([r["model"] for r in per_image], names)}
    if compare is not None:
        summary["compare"] = summarise([r["compare"] for r in per_image], names)
    vgg = str(settings["vgg_weights"])
    return {
        "model": str(model), "style": str(style), "images": str(root), "compare": str(compare) if compare else None,
        "size": size, "style_size": style_size, "device": str(dev), "count": len(per_image),
        "cpu_threads": torch.get_num_threads(),  # latency on a CPU depends on it (and on what else runs)
        "loss_source": source, "loss": settings, "vgg_weights": vgg,
        "note": RANDOM_VGG_NOTE if vgg == "random" else None,
        "metrics": f"{weighted_terms(settings)} weighted as in training; style/<layer> and tv_raw unweighted; ssim of the "
                   "luminance against the content image (higher is better); latency_ms of the model alone",
        "model_style": info.styles[index] if len(info.styles) > 1 else None,
        "summary": summary, "per_image": per_image, "skipped": skipped,
    }


def number(v: float) -> str:
    """A metric as a table cell: four decimals in the readable range, else scientific notation."""
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4f}" if 0.01 <= abs(v) < 1000 or v == 0 else f"{v:.3e}"


LAST_METRICS = ("tv_raw", "ssim", "latency_ms")  # what evaluate adds to the loss's own terms


def metric_order(terms: Iterable[str], metrics: Iterable[str]) -> list[str]:
    """The rows of a report: ``total``, each term of the loss followed by its parts (``style/<layer>``), any other
    metric, then :data:`LAST_METRICS`; only those in ``metrics``, each once."""
    present = list(dict.fromkeys(metrics))
    order = ["total"]
    for term in terms:
        order += [term] + sorted(m for m in present if m.startswith(f"{term}/"))
    order += sorted(m for m in present if m not in order and m not in LAST_METRICS) + list(LAST_METRICS)
    return [m for m in order if m in present]


def weighted_terms(settings: dict[str, Any]) -> str:
    """``total/content/style/tv/...``: the weighted numbers of a report under the loss ``settings``."""
    return "/".join(["total", *term_weights(settings)])


def format_style_report(report: dict[str, Any]) -> str:
    """A one-style report as a text table: one row per metric, mean/median/worst per measured set."""
    sets = list(report["summary"])
    metrics = metric_order(term_weights(report["loss"]), [m for s in sets for m in report["summary"][s]])
    stats = ("mean", "median", "worst")
    width = max(len(m) for m in metrics) + 2
    lines = [f"fastnst quality report: {report['count']} images of {report['images']} at {report['size']} px; "
             + (f"model style {report['model_style']}; " if report.get("model_style") else "")
             + f"style {report['style']} at {report['style_size']} px; device {report['device']}"
             + (f" ({report['cpu_threads']} threads)" if report["device"] == "cpu" else ""),
             f"model: {report['model']}" + (f"; compare: {report['compare']}" if report["compare"] else ""),
             f"loss: {report['loss_source']}: {describe_loss(report['loss'])}",
             f"VGG19 weights: {report['vgg_weights']}"]
    if report["note"]:
        lines.append(f"NOTE: {report['note']}")
    header = " " * width + " | ".join(f"{s:^36}  " for s in sets)
    sub = f"{'metric':<{width}}" + " | ".join("".join(f"{h:>12}" for h in stats) + "  " for s in sets)
    lines += ["", header, sub, "-" * len(sub)]
    for m in metrics:
        cells = []
        for s in sets:
            entry = report["summary"][s].get(m)
            cells.append("".join(f"{number(entry[h]) if entry else '-':>12}" for h in stats) + "  ")
        lines.append(f"{m:<{width}}" + " | ".join(cells))
    lines.append("")
    lines.append("losses: lower is better (worst = max); ssim: higher is better (worst = min); "
                 f"{weighted_terms(report['loss'])} weighted as in training, style/<layer> and tv_raw unweighted")
    for s in sets:
        lines.append(f"worst {s} image by total loss: {report['summary'][s]['total']['worst_image']}")
    skipped = report["skipped"]
    if skipped:
        lines.append(f"skipped {len(skipped)} image(s):")
        lines += [f"  {s['image']}: {s['reason']}" for s in skipped[:5]]
        if len(skipped) > 5:
            lines.append(f"  ... and {len(skipped) - 5} more (all in the JSON report)")
    return "\n".join(lines)


def style_painting(info: ModelInfo, index: int, style: str | Path | None) -> str:
    """The painting to measure style ``index`` against: ``style`` if it is a file; else the painting recorded
    in the model, found where it was recorded or, if ``style`` is a folder, in that folder by its file name
    (or the style's name with any image extension). One sentence when it is not found."""
    if style is not None and not Path(style).expanduser().is_dir():
        return str(style)
    name = info.styles[index]
    trained = info.training.style_images if info.training else []
    recorded = trained[index] if index < len(trained) else ""
    if style is None:
        if recorded and Path(recorded).is_file():
            return recorded
        raise UserError(f"--style is not given and the painting of style {name!r} the model was trained on "
                        f"({recorded or 'not recorded'}) is not here; pass --style /path/to/painting.jpg, or a "
                        f"folder holding it")
    folder = Path(style).expanduser()
    candidates = ([folder / Path(recorded).name] if recorded else []) + sorted(
        p for p in folder.iterdir() if p.stem == name and p.suffix.lower() in IMAGE_EXTENSIONS)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"--style folder {folder} holds no painting for style {name!r} (looked for "
                        f"{Path(recorded).name or name + '.*'})")
    return str(found)
