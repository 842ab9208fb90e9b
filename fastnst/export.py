"""Export a trained network for deployment and check it against PyTorch eager.

``python -m fastnst.export --ckpt CKPT --format onnx -o model.onnx [--fp16] [--int8]`` (or ``fastnst-export``).

ONNX: dynamic batch, height and width; input ``image`` float32 RGB NCHW in [0, 1], output ``stylized`` of the
same size, clamped to [0, 1]; the style name and training settings are in the model's metadata. After export
the file passes the onnx checker and onnxruntime must match eager within 1e-3 on two sizes (one not a
multiple of 4). ``.pt2`` is a ``torch.export`` program with the same contract.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastnst.cli import Parser, run_main
from fastnst.errors import UserError
from fastnst.fileio import atomic_write
from fastnst.inference import ONNX_INPUT, ONNX_OUTPUT, PT2_META_FILE, ort_session, read_pt2
from fastnst.network import TransformerNet

CHECK_SHAPES = ((1, 3, 96, 128), (2, 3, 75, 101))  # the second is not a multiple of 4 and has batch 2
TOLERANCE = 1e-3


class ExportCheckError(UserError):
    """The exported model does not reproduce PyTorch eager within the tolerance."""


class Deployable(nn.Module):
    """The network with the pixel contract of deployed models: output clamped to [0, 1]."""

    def __init__(self, net: TransformerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image).clamp(0.0, 1.0)


def _dynamic_shapes(batch_min: int = 1) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    return {"image": {0: Dim("batch", min=batch_min, max=4096), 2: Dim("height", min=5, max=65536),
                      3: Dim("width", min=5, max=65536)}}


def _metadata_props(net: TransformerNet, metadata: dict[str, Any] | None) -> dict[str, str]:
    meta = dict(metadata or {})
    meta.setdefault("network", net.config())
    props = {"fastnst": json.dumps(meta, sort_keys=True, default=str),
             "network": json.dumps(meta["network"], sort_keys=True),
             "pixel_contract": "input 'image' float32 RGB NCHW in [0, 1]; output 'stylized' same shape, clamped"}
    if meta.get("style_name"):
        props["style_name"] = str(meta["style_name"])
    training = {k: meta[k] for k in ("style_image", "style_size", "image_size", "global_step", "loss") if k in meta}
    if training:
        props["training"] = json.dumps(training, sort_keys=True, default=str)
    return props


def export_onnx(net: TransformerNet, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None,
                opset: int | None = None) -> Path:
    """Write ``net`` as a single-file ONNX model with dynamic batch, height and width.

    Input ``image``: float32 [N, 3, H, W] in [0, 1], H, W >= 5; output ``stylized``: same shape, clamped.
    ``metadata`` (style name, training settings) is stored as JSON in the model's metadata_props.
    """
    import onnx

    path = Path(path)
    model = Deployable(net).eval().to("cpu", torch.float32)
    example = torch.rand(2, 3, 64, 80)
    kwargs: dict[str, Any] = {"opset_version": opset} if opset is not None else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[ONNX_INPUT],
                                    output_names=[ONNX_OUTPUT], dynamic_shapes=_dynamic_shapes(),
                                    verbose=False, **kwargs)
    proto = program.model_proto
    # The output has the input's shape by construction; say so instead of the exporter's symbolic
    # expressions (e.g. Min(height, 2*...) from the transposed-conv crop), which runtimes warn about.
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, name in zip(out_dims, ("batch", None, "height", "width")):
        if name is not None:
            dim.ClearField("dim_value")
            dim.dim_param = name
    del proto.metadata_props[:]
    for key, value in _metadata_props(net, metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "fastnst"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path


def export_pt2(net: TransformerNet, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``net`` as a ``torch.export`` program (.pt2) with dynamic batch, height and width.

    Only ``upsample="nearest"`` networks: the crop after a transposed convolution makes torch.export
    specialise on the image size modulo 4 (ONNX export handles both modes).
    """
    if net.config()["upsample"] != "nearest":
        raise UserError("the .pt2 format needs a network with upsample=nearest (torch.export cannot keep H and W "
                        "dynamic through the transposed-conv crop); export this checkpoint with --format onnx")
    path = Path(path)
    model = Deployable(net).eval().to("cpu", torch.float32)
    with torch.no_grad():
        # The upsampling crops need "h1 <= 2*h2" for symbolic sizes, true for every size but beyond what
        # torch.export proves by itself: kept as a runtime assertion instead of an export error.
        program = torch.export.export(model, (torch.rand(2, 3, 64, 80),), dynamic_shapes=_dynamic_shapes(),
                                      prefer_deferred_runtime_asserts_over_guards=True)
    meta = dict(metadata or {})
    meta.setdefault("network", net.config())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={PT2_META_FILE: json.dumps(meta, sort_keys=True, default=str)})
    return path


def check_inputs(shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES, seed: int = 0) -> list[torch.Tensor]:
    """Photo-like test inputs: smooth random colour fields plus fine noise, float32 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, c, h, w in shapes:
        coarse = torch.rand(n, c, 4, 5, generator=g)
        smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        out.append((smooth + 0.05 * torch.randn(n, c, h, w, generator=g)).clamp(0, 1))
    return out


def _diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((d ** 2).mean())
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "psnr_db": float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)}


def check_onnx(path: str | os.PathLike[str], net: TransformerNet, *, tolerance: float = TOLERANCE,
               shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES) -> list[tuple[tuple[int, ...], float]]:
    """onnx checker, then onnxruntime vs eager on ``shapes``; returns (shape, max abs diff) per shape and
    raises :class:`ExportCheckError` if any exceeds ``tolerance``."""
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportCheckError(f"{path} fails the ONNX checker ({str(exc).splitlines()[0][:200]})") from None
    session = ort_session(path, torch.device("cpu"))
    model = Deployable(net).eval().to("cpu", torch.float32)
    results = []
    for x in check_inputs(shapes):
        with torch.no_grad():
            ref = model(x).numpy()
        (y,) = session.run(None, {ONNX_INPUT: x.numpy()})
        if y.shape != ref.shape:
            raise ExportCheckError(f"{path} returned shape {y.shape} for input {tuple(x.shape)}; expected {ref.shape}")
        results.append((tuple(x.shape), _diff(y, ref)["max_abs"]))
    _raise_if_above(path, results, tolerance)
    return results


def check_pt2(path: str | os.PathLike[str], net: TransformerNet, *, tolerance: float = TOLERANCE,
              shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES) -> list[tuple[tuple[int, ...], float]]:
    """Reload the .pt2 the way inference does and compare it with eager on ``shapes``."""
    program, _ = read_pt2(path)
    loaded = program.module()
    model = Deployable(net).eval().to("cpu", torch.float32)
    results = []
    for x in check_inputs(shapes):
        with torch.no_grad():
            ref, y = model(x), loaded(x)
        results.append((tuple(x.shape), float((y - ref).abs().max())))
    _raise_if_above(Path(path), results, tolerance)
    return results


def _raise_if_above(path: Path, results: list[tuple[tuple[int, ...], float]], tolerance: float) -> None:
    worst = max(results, key=lambda r: r[1])
    if not worst[1] <= tolerance:  # also catches NaN
        raise ExportCheckError(f"{path} differs from PyTorch eager by {worst[1]:.3g} at input shape {worst[0]} "
                               f"(tolerance {tolerance:g}); the export is not trustworthy")


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """An ONNX variant with fp16 weights and compute; inputs and outputs stay float32 [0, 1]."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save_model(model, str(dst))
    return Path(dst)


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """An ONNX variant with int8 weights (onnxruntime dynamic quantisation; activations quantised on the fly)."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the original instead
            pre = Path(src)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QUInt8)
    return Path(dst)


def compare_onnx(reference: str | os.PathLike[str], variant: str | os.PathLike[str],
                 shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES) -> dict[str, float]:
    """Worst max/mean abs difference and PSNR of ``variant`` against ``reference`` over ``shapes``."""
    ref_s, var_s = (ort_session(p, torch.device("cpu")) for p in (reference, variant))
    worst = {"max_abs": 0.0, "mean_abs": 0.0, "psnr_db": float("inf")}
    for x in check_inputs(shapes, seed=1):
        (a,) = ref_s.run(None, {ONNX_INPUT: x.numpy()})
        (b,) = var_s.run(None, {ONNX_INPUT: x.numpy()})
        d = _diff(b, a)
        worst = {"max_abs": max(worst["max_abs"], d["max_abs"]), "mean_abs": max(worst["mean_abs"], d["mean_abs"]),
                 "psnr_db": min(worst["psnr_db"], d["psnr_db"])}
    return worst


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def _variant_path(path: Path, tag: str) -> Path:
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def export_checkpoint(ckpt: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                      fmt: str | None = None, opset: int | None = None, fp16: bool = False, int8: bool = False,
                      check: bool = True, overwrite: bool = False, tolerance: float = TOLERANCE,
                      log: Any = print) -> Path:
    """Load a training checkpoint, export it, check it against eager and write the optional variants.

    The file appears at ``output`` only after its check passed (it is written to a temporary name first).
    """
    from fastnst.checkpoint import load_network

    ckpt = Path(ckpt).expanduser()
    if ckpt.suffix.lower() in (".onnx", ".pt2"):
        raise UserError(f"{ckpt} is already an exported model; export needs the training checkpoint (.ckpt)")
    out = Path(output).expanduser() if output is not None else None
    suffix_fmt = {".onnx": "onnx", ".pt2": "pt2"}.get(out.suffix.lower()) if out is not None else None
    if out is not None and out.suffix and suffix_fmt is None:
        raise UserError(f"output {out} must end in .onnx or .pt2")
    fmt = fmt or suffix_fmt or "onnx"
    if fmt not in ("onnx", "pt2"):
        raise UserError(f"unknown --format {fmt!r}; use onnx or pt2")
    if suffix_fmt is not None and suffix_fmt != fmt:
        raise UserError(f"--format {fmt} does not match the output name {out}; use a .{fmt} file name")
    if (fp16 or int8) and fmt != "onnx":
        raise UserError("--fp16 and --int8 variants are made with onnxruntime; use --format onnx")
    net, meta = load_network(ckpt)
    if out is None:
        out = Path(f"{meta.get('style_name') or ckpt.stem}.{fmt}")
    targets = [out] + ([_variant_path(out, "fp16")] if fp16 else []) + ([_variant_path(out, "int8")] if int8 else [])
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists; pass --overwrite to replace it or choose another -o")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out.parent} ({exc.strerror or exc})") from None
    meta = {k: v for k, v in meta.items() if k != "version"}
    meta["source_checkpoint"] = ckpt.name

    def write(tmp: Path) -> None:
        try:
            if fmt == "onnx":
                export_onnx(net, tmp, metadata=meta, opset=opset)
            else:
                export_pt2(net, tmp, metadata=meta)
        except PermissionError as exc:
            raise UserError(f"cannot write {out} ({exc.strerror or exc})") from None
        if check:  # before the rename: a model that fails its check never replaces a good one
            results = (check_onnx if fmt == "onnx" else check_pt2)(tmp, net, tolerance=tolerance)
            shown = ", ".join(f"{'x'.join(map(str, s))}: {d:.2e}" for s, d in results)
            log(f"fastnst: parity vs PyTorch eager (max abs diff, limit {tolerance:g}): {shown}")

    atomic_write(out, write)
    log(f"fastnst: wrote {out} ({_size(out)}; style {meta.get('style_name')!r}, network {net.config()})")
    for tag, make in (("fp16", convert_fp16), ("int8", quantize_int8)):
        if (tag == "fp16" and fp16) or (tag == "int8" and int8):
            dst = _variant_path(out, tag)
            atomic_write(dst, lambda tmp: make(out, tmp))
            d = compare_onnx(out, dst)
            log(f"fastnst: wrote {dst} ({_size(dst)}); vs fp32: max abs diff {d['max_abs']:.4f}, mean abs diff "
                f"{d['mean_abs']:.5f}, PSNR {d['psnr_db']:.1f} dB (pixel values in [0, 1])")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fastnst-export", description="Export a trained fastnst network for deployment "
                                "(ONNX or torch.export .pt2), checked against PyTorch eager.")
    p.add_argument("--ckpt", required=True, help="training checkpoint (.ckpt)")
    p.add_argument("--format", choices=["onnx", "pt2"], help="default: from the -o extension, else onnx")
    p.add_argument("-o", "--output", help="output file (default: STYLE.onnx in the current folder)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--fp16", action="store_true", help="also write NAME.fp16.onnx (half-precision weights)")
    p.add_argument("--int8", action="store_true", help="also write NAME.int8.onnx (int8 dynamic quantisation)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="max abs diff allowed vs eager (default 1e-3)")
    p.add_argument("--no-check", action="store_true", help="skip the checker and the parity check")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: export_checkpoint(args.ckpt, args.output, fmt=args.format, opset=args.opset,
                                              fp16=args.fp16, int8=args.int8, check=not args.no_check,
                                              overwrite=args.overwrite, tolerance=args.tolerance) and None)


if __name__ == "__main__":
    sys.exit(main())
