"""``fastnst.evaluate`` on a multi-style model: every style against its own painting (recorded in the model,
or found by file name in a folder), and the per-style table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastnst.errors import UserError
from fastnst.inference.stylizer import Stylizer
from fastnst.losses import term_weights
from fastnst.losses.presets import describe_loss
from fastnst.tools.quality import evaluate_style, number, style_painting, weighted_terms


def evaluate_each_style(net: Stylizer, model: str | Path, style: str | Path | None, images: str | Path, *,
                        save_outputs: str | Path | None = None, **kw: Any) -> dict[str, Any]:
    """Every style of the loaded multi-style model ``net`` (the file ``model``) against its own painting:
    ``{"per_style": {name: report of :func:`fastnst.tools.quality.evaluate_style`}, "styles": [...], and the
    settings all share}``. ``kw``: :func:`~fastnst.tools.quality.evaluate_style`'s other arguments."""
    info = net.info
    if style is not None and not Path(style).expanduser().is_dir():
        raise UserError(f"--style {style} is one painting, but the model holds {len(info.styles)} styles; pass "
                        f"--model-style NAME with it, a folder of the paintings, or no --style (the recorded ones)")
    if kw.get("compare") is not None:
        raise UserError("--compare measures one set of outputs; with a multi-style model pass --model-style NAME")
    paintings = [style_painting(info, i, style) for i in range(len(info.styles))]  # all found before any work
    out_dir = Path(save_outputs).expanduser() if save_outputs else None
    per_style = {name: evaluate_style(net, model, painting, images, model_style=name,
                                      save_outputs=out_dir / name if out_dir else None, **kw)
                 for name, painting in zip(info.styles, paintings)}
    first = next(iter(per_style.values()))
    return {**{k: first[k] for k in ("model", "images", "size", "device", "cpu_threads", "loss_source", "loss",
                                     "vgg_weights", "note", "metrics")},
            "styles": list(info.styles), "per_style": per_style}


def format_styles_report(report: dict[str, Any]) -> str:
    """A multi-style report as a text table: one row per style, the mean of each metric and the worst image."""
    per = report["per_style"]
    first = next(iter(per.values()))
    lines = [f"fastnst quality report: {first['count']} images of {report['images']} at {report['size']} px, every "
             f"style of {report['model']} against its own painting; device {report['device']}",
             f"loss: {report['loss_source']}: {describe_loss(report['loss'])}", f"VGG19 weights: {report['vgg_weights']}"]
    if report["note"]:
        lines.append(f"NOTE: {report['note']}")
    cols = {m: max(12, len(m) + 2) for m in ["total", *term_weights(report["loss"]), "ssim"]}  # every term a column
    width = max(len("style"), *(len(n) for n in per)) + 2
    lines += ["", f"{'style':<{width}}" + "".join(f"{m:>{w}}" for m, w in cols.items()) + "  worst image (total)  painting",
              "-" * (width + sum(cols.values()) + 32)]
    for name, r in per.items():
        summ = r["summary"]["model"]
        cells = "".join(f"{number(summ[m]['mean']) if m in summ else '-':>{w}}" for m, w in cols.items())
        lines.append(f"{name:<{width}}{cells}  {summ['total']['worst_image']}  {r['style']}")
    lines += ["", f"means over the images; losses: lower is better; ssim: higher is better; {weighted_terms(report['loss'])} "
                  "weighted as in training (the JSON report holds every metric, per style and per image)"]
    return "\n".join(lines)
