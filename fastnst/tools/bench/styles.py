"""The cost of style conditioning: a network holding S styles against a one-style network of the same shape,
timed in turn in the same process. Inference runs one style for the image (infer.py's ``--style NAME``);
the training step draws a style per image (what a multi-style run does) against the one-style step."""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fastnst.inference.fast_paths import FastPath
from fastnst.inference.machine import describe_error, time_in_turn
from fastnst.inference.runners import network_runner
from fastnst.media.image import save_image
from fastnst.models import create_model
from fastnst.tools.bench.common import BenchConfig
from fastnst.tools.bench.tables import fmt, table


def conditional_copy(net: torch.nn.Module, num_styles: int) -> torch.nn.Module:
    """``net`` (one style) as a network of ``num_styles`` styles whose every style is ``net``'s: the same image
    for any one-hot style, so the two compute the same work on the same numbers."""
    cfg = {**net.config(), "num_styles": num_styles}
    out = create_model(net.architecture, **cfg)
    state = {k: v.expand(num_styles, *v.shape[1:]).clone() if v.dim() == 2 and k.endswith((".weight", ".bias"))
             and v.shape[0] == 1 else v for k, v in net.state_dict().items()}
    out.load_state_dict(state)
    return out


def _infer_rows(cfg: BenchConfig, variant: FastPath, log: Callable[[str], None]) -> list[dict[str, Any]]:
    dev = cfg.torch_device
    torch.manual_seed(0)
    one = create_model(**{"architecture": "johnson", **cfg.model}).eval()
    many = conditional_copy(one, cfg.styles)
    w, h = cfg.styles_infer_size
    x = torch.rand(cfg.infer_batch, 3, h, w, generator=torch.Generator().manual_seed(2)).to(dev)
    style = torch.zeros(1, cfg.styles, device=dev)
    style[0, cfg.styles - 1] = 1.0
    if variant.compile:
        torch._dynamo.reset()
    _, run1 = network_runner(copy.deepcopy(one), dev, variant.precision, channels_last=variant.channels_last,
                             compile=variant.compile)
    _, run_s = network_runner(many, dev, variant.precision, channels_last=variant.channels_last,
                              compile=variant.compile)
    diff = float((run1(x, None) - run_s(x, style)).abs().max())  # also the first (compiling) call
    warmup, repeats = cfg.infer_plan(w * h)
    log(f"styles: inference {variant.name} at {w}x{h}, 1 vs {cfg.styles} styles, {repeats} rounds ...")
    times, errors = time_in_turn({1: lambda r: run1(x, None), cfg.styles: lambda r: run_s(x, style)}, dev,
                                 warmup, max(repeats, 5))
    return _pair("inference", f"{w}x{h}", variant, cfg.styles, times, errors, cfg.infer_batch, diff)


def _train_rows(cfg: BenchConfig, variant: FastPath, log: Callable[[str], None]) -> list[dict[str, Any]]:
    from fastnst.tools.bench.training import _ModuleStepper

    dev = cfg.torch_device
    g = torch.Generator().manual_seed(3)
    images = torch.rand(cfg.batch * 4, 3, cfg.train_size, cfg.train_size, generator=g)
    batches = [images[i: i + cfg.batch].to(dev) for i in range(0, len(images), cfg.batch)]
    with tempfile.TemporaryDirectory(prefix="fastnst-bench-styles-") as tmp:
        paths = []
        for i in range(cfg.styles):
            paths.append(Path(tmp) / f"style{i}.png")
            save_image(torch.rand(3, cfg.style_size, cfg.style_size, generator=g), paths[-1])
        steppers = {1: _ModuleStepper(cfg, variant, paths[:1]), cfg.styles: _ModuleStepper(cfg, variant, paths)}
        log(f"styles: training step {variant.name}, {cfg.train_size}px, batch {cfg.batch}, 1 vs {cfg.styles} styles ...")
        times, errors = time_in_turn({n: (lambda r, s=s: s.step(batches[r % len(batches)])) for n, s in steppers.items()},
                                     dev, cfg.train_warmup, cfg.train_steps)
    return _pair("training step", f"{cfg.train_size}px", variant, cfg.styles, times, errors, cfg.batch)


def _pair(what: str, size: str, variant: FastPath, styles: int, times: dict[int, list[float]],
          errors: dict[int, str], batch: int, diff: float | None = None) -> list[dict[str, Any]]:
    """The 1-style and S-style rows; the S-style row's ``cost`` is the median over rounds of its time over the
    1-style time of the same round, minus 1 (paired: a round's two calls ran back to back, under the same load)."""
    rows = [_row(what, size, variant, n, times[n], errors.get(n), batch, diff if n > 1 else None) for n in (1, styles)]
    if "ms" in rows[0] and "ms" in rows[1] and len(times[1]) == len(times[styles]):
        ratios = [b / a for a, b in zip(times[1], times[styles])]
        rows[1].update(cost=statistics.median(ratios) - 1.0, cost_min=min(ratios) - 1.0, cost_max=max(ratios) - 1.0)
    return rows


def _row(what: str, size: str, variant: FastPath, styles: int, times: list[float], error: str | None, batch: int,
         diff: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"what": what, "size": size, "variant": variant.name, "styles": styles, "batch": batch}
    if error or not times:
        row["error"] = error or "no timed call"
    else:
        med = statistics.median(times)
        row.update(ms=med * 1e3, images_per_s=batch / med, repeats=len(times))
    if diff is not None:
        row["max_abs_diff"] = diff
    return row


def run_styles(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Rows of 1-style and S-style timings per variant, and the cost of conditioning (S-style time / 1-style
    time - 1, paired by round) for inference and the training step."""
    rows: list[dict[str, Any]] = []
    for text in cfg.styles_variants:
        variant = FastPath.parse(text)
        for part in (_infer_rows, _train_rows):
            try:
                rows += part(cfg, variant, log)
            except Exception as exc:  # one failing path (no C++ compiler for inductor ...) never ends the run
                rows.append({"what": part.__name__.strip("_").split("_")[0], "variant": variant.name,
                             "styles": cfg.styles, "error": describe_error(exc)})
    return {"num_styles": cfg.styles, "network": cfg.model, "results": rows}


def format_styles(st: dict[str, Any]) -> list[str]:
    """The CONDITIONING table of the report: a row per measurement, the cost in percent on the S-style rows."""
    rows = []
    for r in st["results"]:
        label = [r.get("what", ""), r.get("size", ""), r.get("variant", ""), str(r.get("styles", ""))]
        if "error" in r:
            rows.append([*label, "failed", "", r["error"][:60]])
        else:
            cost = (f"{100 * r['cost']:+.1f}% ({100 * r['cost_min']:+.0f}..{100 * r['cost_max']:+.0f})"
                    if "cost" in r else "")
            rows.append([*label, fmt(r["ms"]), fmt(r["images_per_s"], 2), cost])
    return [f"CONDITIONING  a {st['num_styles']}-style network against a 1-style network of the same shape, timed in "
            f"turn (inference: one style for the image; training: a style per image)",
            table(["what", "size", "variant", "styles", "ms", "images/s", "cost (range over rounds)"], rows),
            "cost: the median over rounds of the S-style time over the 1-style time of the same round, minus 1"]
