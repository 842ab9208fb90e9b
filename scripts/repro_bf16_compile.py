"""Does bf16 + torch.compile train on this CPU? A minimal reproducer of issue 20, in one command:

    python scripts/repro_bf16_compile.py                 # default network, 64 px, 4 steps, loss=gatys
    python scripts/repro_bf16_compile.py --loss johnson --channels-last
    python scripts/repro_bf16_compile.py --bisect        # which compiled region fails, and inductor switches

It builds fastnst's training step (the network, the VGG19 perceptual loss with random weights, a random painting)
and runs it for ``--steps`` Adam steps on the same seeded batches twice: eager fp32 (the baseline) and bf16 autocast
with torch.compile (the fast path), exactly as ``fastnst train trainer.precision=bf16-mixed compile=true`` and the
benchmark step it (autocast around the step, backward and Adam outside). It prints both losses per step, whether
the gradients stayed finite, the largest relative difference, and the machine (CPU, ISA, torch, the vector ISA
inductor compiles for). Exit status: 0 the fast path follows fp32 within ``--tolerance`` (10%); 1 it diverged or
became non-finite (the issue reproduces); 2 bad options.

``--bisect`` adds rows that compile only the network or only the loss network, and rows with inductor settings
that change what the compiled code does on such CPUs (``emulate_precision_casts``: keep eager's bf16 rounding
between fused ops; ``layout_optimization=False``: no forced channels-last; ``cpp.simdlen=256``: AVX2-width code,
no AVX512/AMX code paths), so one run on an affected machine says where the NaN comes from. ``--inductor KEY=VALUE``
sets any ``torch._inductor.config`` key for the fast-path row. Needs no data, no weights, no network access.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch


TINY = {"architecture": "johnson", "channels": [8, 16, 16], "num_residual": 1}  # every stage, compiles fast


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def machine() -> str:
    from fastnst.inference.devices import cpu_half_support
    from fastnst.inference.machine import cpu_summary

    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        isa = str(pick_vec_isa()) or "none"
    except Exception as exc:  # noqa: BLE001 - a report line, never fatal
        isa = f"unknown ({type(exc).__name__})"
    half = cpu_half_support()
    return (f"CPU: {cpu_summary()}\ntorch {torch.__version__}, {torch.get_num_threads()} threads; oneDNN bf16: "
            f"{half['bf16']}; AMX tiles usable: {torch.cpu._is_amx_tile_supported()}; inductor compiles for: {isa}")


def run(style: Path, model: dict[str, Any], loss: dict[str, Any], batches: list[torch.Tensor], precision: str,
        compile_what: str, channels_last: bool, inductor: dict[str, Any]) -> dict[str, Any]:
    """Step fastnst's training module; returns losses per step, whether gradients were finite, and any error."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    from fastnst.training.module import StyleTransferModule

    torch._dynamo.reset()
    torch.manual_seed(0)
    module = StyleTransferModule(style_images=[str(style)], style_size=None, network=copy.deepcopy(model),
                                 loss=copy.deepcopy(loss), channels_last=channels_last, compile=False)
    module.setup("fit")
    if compile_what in ("both", "network"):
        object.__setattr__(module, "_net_fn", torch.compile(module.network))
    if compile_what in ("both", "loss"):
        object.__setattr__(module, "_loss_call", torch.compile(module.loss_fn))
    module.train()
    optimizer = torch.optim.Adam(module.network.parameters(), lr=1e-3)
    out: dict[str, Any] = {"losses": [], "grads_finite": [], "error": None}
    with inductor_config.patch(inductor):
        for i, x in enumerate(batches):
            optimizer.zero_grad(set_to_none=True)
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    terms = module._terms(module._prepare(x), None)
                total = terms["total"]
                out["losses"].append(float(total))
                total.backward()
            except Exception as exc:  # noqa: BLE001 - reported as the row's result
                out["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
                break
            out["grads_finite"].append(all(bool(torch.isfinite(p.grad).all()) for p in module.network.parameters()
                                           if p.grad is not None))
            optimizer.step()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="Adam steps per run (default 4; the issue's NaN came at step 1)")
    p.add_argument("--size", type=int, default=64, help="training crop in px (default 64)")
    p.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    p.add_argument("--model", default="johnson", help="a conf/model preset (johnson, small, mobile) or tiny (default johnson)")
    p.add_argument("--loss", default="gatys", help="a conf/loss preset: gatys or johnson (default gatys)")
    p.add_argument("--channels-last", action="store_true", help="channels_last=true for both runs")
    p.add_argument("--tolerance", type=float, default=0.10, help="largest allowed relative loss difference (default 0.10)")
    p.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                   help="a torch._inductor.config setting for the fast-path row (repeatable)")
    p.add_argument("--bisect", action="store_true", help="also compile only the network / only the loss, and try "
                   "inductor switches")
    args = p.parse_args(argv)
    if args.steps < 2 or args.size < 32 or args.batch < 1:
        p.error("--steps must be >= 2, --size >= 32 and --batch >= 1")
    inductor: dict[str, Any] = {}
    for item in args.inductor:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--inductor {item!r} is not KEY=VALUE")
        inductor[key.strip()] = _value(value.strip())

    warnings.filterwarnings("ignore")
    from fastnst.media.image import save_image
    from fastnst.presets import read_preset

    try:
        model = dict(TINY) if args.model == "tiny" else {"architecture": args.model, **read_preset("model", args.model)}
        loss = {**read_preset("loss", args.loss), "vgg_weights": "random"}
    except Exception as exc:  # noqa: BLE001 - a bad preset name is a bad option
        print(f"repro: {exc}", file=sys.stderr)
        return 2
    print(machine())
    print(f"network {args.model}, loss {args.loss}, {args.size} px, batch {args.batch}, {args.steps} steps, "
          f"channels_last={args.channels_last}")
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(args.batch, 3, args.size, args.size, generator=g) for _ in range(args.steps)]
    rows: list[tuple[str, str, str, dict[str, Any]]] = [("fp32 eager (baseline)", "fp32", "none", {}),
                                                         ("bf16 + compile (the fast path)", "bf16", "both", inductor)]
    if args.bisect:
        rows += [("bf16, compile the network only", "bf16", "network", inductor),
                 ("bf16, compile the loss network only", "bf16", "loss", inductor),
                 ("bf16 eager", "bf16", "none", {}),
                 ("fp32 + compile", "fp32", "both", inductor),
                 ("bf16 + compile, emulate_precision_casts", "bf16", "both", {**inductor, "emulate_precision_casts": True}),
                 ("bf16 + compile, layout_optimization off", "bf16", "both", {**inductor, "layout_optimization": False}),
                 ("bf16 + compile, cpp.simdlen=256", "bf16", "both", {**inductor, "cpp.simdlen": 256})]
    with tempfile.TemporaryDirectory(prefix="fastnst-repro-") as tmp:
        style = Path(tmp) / "style.png"
        save_image(torch.rand(3, 96, 96, generator=g), style)
        results = []
        for name, precision, compile_what, settings in rows:
            t0 = time.perf_counter()
            result = run(style, model, loss, batches, precision, compile_what, args.channels_last, settings)
            result["seconds"] = time.perf_counter() - t0
            results.append((name, result))
            print(f"  ran {name} in {result['seconds']:.0f} s", flush=True)
    base = results[0][1]["losses"]
    if len(base) < args.steps or not all(math.isfinite(v) for v in base):
        print(f"the fp32 baseline itself failed ({results[0][1]['error'] or base}); nothing to compare", file=sys.stderr)
        return 1
    print(f"\n{'run':<44} " + " ".join(f"{f'step {i}':>10}" for i in range(args.steps)) + "  max rel diff  gradients")
    failed_fast_path = False
    for n, (name, result) in enumerate(results):
        losses = result["losses"]
        cells = [f"{v:10.4g}" for v in losses] + [f"{'-':>10}"] * (args.steps - len(losses))
        rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, base)]
        worst = max(rel) if rel and all(math.isfinite(v) for v in losses) else float("inf")
        bad = result["error"] is not None or len(losses) < args.steps or worst > args.tolerance \
            or not all(result["grads_finite"])
        grads = "finite" if all(result["grads_finite"]) else \
            f"non-finite at step {result['grads_finite'].index(False)}"
        verdict = "" if n == 0 else ("  DIVERGED" if bad else "  ok")
        print(f"{name:<44} " + " ".join(cells) + f"  {worst:12.3%}  {grads}{verdict}")
        if result["error"]:
            print(f"{'':<44} error: {result['error']}")
        if n == 1:
            failed_fast_path = bad
    if failed_fast_path:
        print(f"\nREPRODUCED: bf16 + compile does not follow fp32 within {args.tolerance:.0%} on this machine "
              f"(issue 20). Please attach this output to the issue.")
        return 1
    print(f"\nnot reproduced: bf16 + compile follows fp32 within {args.tolerance:.0%} here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
