"""The two exact forms of fastnst's upsampling (nearest x2 + reflection pad + 3x3 conv), timed in turn at the
default network's upsampling shapes: the sub-pixel form (2x2 conv to 4x the channels + pixel_shuffle) and the
stride-2 transposed convolution, with the literal form (what pytorch/examples computes) as the baseline.

    python scripts/upsampling_forms.py            # PyTorch fp32 and bf16 (inference; training forward+backward)
    python scripts/upsampling_forms.py --onnx     # also onnxruntime, the two forms exported to ONNX

fastnst.models.layers.upsample_conv uses the sub-pixel form in PyTorch and the transposed form in ONNX exports,
as this measured on the CPU named in the comment there; rerun it on yours. Prints the CPU and Markdown tables.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastnst.inference.machine import cpu_summary
from fastnst.models.layers import replicate_pad1, upsample_conv_weight, upsample_phase_weight

# (Cin, Cout, low-resolution H, W) of the default network's two upsampling layers at 512x512 and 1920x1080
SHAPES = [(128, 64, 128, 128), (64, 32, 256, 256), (128, 64, 270, 480), (64, 32, 540, 960)]


def literal(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect"), w, b)


def transposed(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.conv_transpose2d(replicate_pad1(x), upsample_conv_weight(w), b, stride=2, padding=3, output_padding=1)


def sub_pixel(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    y = F.conv2d(replicate_pad1(x), upsample_phase_weight(w), b.repeat_interleave(4))
    return F.pixel_shuffle(y, 2)[..., 1:, 1:]


# every form with the conv's bias, as in the network (oneDNN's bf16 transposed convolution is much slower with one)
FORMS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "literal": literal, "transposed": transposed, "sub-pixel": sub_pixel}


def in_turn(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median ms of each run, the runs taking turns (rotated order), after two warm-up calls each."""
    for f in runs.values():
        f(), f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runs[k]()
            times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def check_exact() -> float:
    """Largest difference of the two fast forms from the literal one, float64, odd sizes."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 5, 7, 6, dtype=torch.float64), torch.randn(3, 5, 3, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    ref = literal(x, w, b)
    return max((f(x, w, b)[..., : ref.shape[-2], : ref.shape[-1]] - ref).abs().max().item()
               for f in (transposed, sub_pixel))


def torch_rows(rounds: int) -> None:
    print("| shape (Cin→Cout, low-res) | precision | mode | literal ms | transposed ms | sub-pixel ms | sub-pixel vs transposed |")
    print("|---|---|---|---:|---:|---:|---:|")
    for cin, cout, h, w_ in SHAPES:
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16 (channels-last)")):
            torch.manual_seed(0)
            x = torch.rand(1, cin, h, w_, dtype=dtype)
            if dtype == torch.bfloat16:
                x = x.contiguous(memory_format=torch.channels_last)
            weight, bias = (torch.randn(cout, cin, 3, 3) * 0.05).to(dtype), (torch.randn(cout) * 0.1).to(dtype)
            with torch.inference_mode():
                t = in_turn({k: (lambda f=f: f(x, weight, bias)) for k, f in FORMS.items()}, rounds)
            print(f"| {cin}→{cout}, {h}x{w_} | {name} | inference | {t['literal']:.1f} | {t['transposed']:.1f} | "
                  f"{t['sub-pixel']:.1f} | {t['transposed'] / t['sub-pixel']:.2f}x |", flush=True)
            if h > 256:
                continue  # training runs at crop sizes: the two smaller shapes are enough

            xs = x.float().detach().requires_grad_()
            ws = (torch.randn(cout, cin, 3, 3) * 0.05).requires_grad_()
            bs = (torch.randn(cout) * 0.1).requires_grad_()

            def step(f: Callable, bf16: bool = dtype == torch.bfloat16) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    f(xs, ws, bs).float().square().mean().backward()

            t = in_turn({k: (lambda f=f: step(f)) for k, f in FORMS.items()}, max(3, rounds // 2))
            print(f"| {cin}→{cout}, {h}x{w_} | {'bf16 autocast' if dtype == torch.bfloat16 else 'fp32'} | "
                  f"training | {t['literal']:.1f} | {t['transposed']:.1f} | {t['sub-pixel']:.1f} | "
                  f"{t['transposed'] / t['sub-pixel']:.2f}x |", flush=True)


def onnx_rows(rounds: int) -> None:
    import onnxruntime as ort

    class Form(torch.nn.Module):
        def __init__(self, f: Callable, weight: torch.Tensor, bias: torch.Tensor) -> None:
            super().__init__()
            self.f, self.weight, self.bias = f, torch.nn.Parameter(weight), torch.nn.Parameter(bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.f(x, self.weight, self.bias)

    print("\n| shape (Cin→Cout, low-res) | onnxruntime fp32: transposed ms | sub-pixel ms | transposed vs sub-pixel |")
    print("|---|---:|---:|---:|")
    for cin, cout, h, w_ in SHAPES:
        torch.manual_seed(0)
        x, weight, bias = torch.rand(1, cin, h, w_), torch.randn(cout, cin, 3, 3) * 0.05, torch.randn(cout) * 0.1
        sessions = {}
        for name in ("transposed", "sub-pixel"):
            buf = io.BytesIO()
            torch.onnx.export(Form(FORMS[name], weight, bias), (x,), buf, input_names=["x"], dynamo=True)
            sessions[name] = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        t = in_turn({k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}, rounds)
        print(f"| {cin}→{cout}, {h}x{w_} | {t['transposed']:.1f} | {t['sub-pixel']:.1f} | "
              f"{t['sub-pixel'] / t['transposed']:.2f}x |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="timed calls per form (medians)")
    p.add_argument("--onnx", action="store_true", help="also time the two forms in onnxruntime")
    args = p.parse_args()
    print(f"CPU {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"largest difference from the literal form (float64): {check_exact():.1e}\n")
    torch_rows(args.rounds)
    if args.onnx:
        onnx_rows(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
