"""Export a trained network for deployment and check it against PyTorch eager.

``python -m fastnst.export --ckpt MODEL --format onnx -o model.onnx [--fp16] [--int8]`` (or ``fastnst-export``).
MODEL is a training checkpoint (.ckpt) or a pytorch/examples model (.pth), loaded with :func:`fastnst.load`;
the formats themselves (writers, readers, parity checks) are in :mod:`fastnst.formats`.

ONNX: dynamic batch, height and width; input ``image`` float32 RGB NCHW in [0, 1] (and ``style_weights``
float32 [S] for a multi-style network), output ``stylized`` of the same size, clamped to [0, 1]; the model's
:class:`fastnst.ModelInfo` is in its metadata. After export the file passes the onnx checker and onnxruntime
must match eager within 1e-3 on two sizes (one not a multiple of 4, and pure styles and a blend for a
multi-style network). ``.pt2`` is a ``torch.export`` program with the same contract.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from fastnst.cli import Parser, run_main
from fastnst.errors import UserError
from fastnst.fileio import atomic_write, check_writable_folder
from fastnst.formats.deploy import TOLERANCE
from fastnst.formats.onnx import check_onnx, compare_onnx, convert_fp16, export_onnx, quantize_int8
from fastnst.formats.pt2 import check_pt2, export_pt2
from fastnst.inference import load


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
    model = load(ckpt, "cpu")
    net, info = model.network, model.info
    if net is None:  # detect_format accepted only .ckpt/.pt/.pth above
        raise UserError(f"{ckpt} holds no eager network to export")
    if out is None:
        out = Path(f"{model.style_name if len(model.styles) == 1 else ckpt.stem}.{fmt}")
    targets = [out] + ([_variant_path(out, "fp16")] if fp16 else []) + ([_variant_path(out, "int8")] if int8 else [])
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists; pass --overwrite to replace it or choose another -o")
    check_writable_folder(out.parent, "-o")
    info = info.replace(exported_from=ckpt.name)
    styles = info.num_styles

    def write(tmp: Path) -> None:
        try:
            if fmt == "onnx":
                export_onnx(net, tmp, info, opset=opset)
            else:
                export_pt2(net, tmp, info)
        except PermissionError as exc:
            raise UserError(f"cannot write {out} ({exc.strerror or exc})") from None
        if check:  # before the rename: a model that fails its check never replaces a good one
            results = (check_onnx if fmt == "onnx" else check_pt2)(tmp, net, styles, tolerance=tolerance)
            shown = ", ".join(f"{case}: {d:.2e}" for case, d in results)
            log(f"fastnst: parity vs PyTorch eager (max abs diff, limit {tolerance:g}): {shown}")

    atomic_write(out, write)
    log(f"fastnst: wrote {out} ({_size(out)}; styles {', '.join(info.styles)}; {info.architecture} {info.config})")
    for tag, make in (("fp16", convert_fp16), ("int8", quantize_int8)):
        if (tag == "fp16" and fp16) or (tag == "int8" and int8):
            dst = _variant_path(out, tag)
            atomic_write(dst, lambda tmp: make(out, tmp))
            d = compare_onnx(out, dst, styles)
            log(f"fastnst: wrote {dst} ({_size(dst)}); vs fp32: max abs diff {d['max_abs']:.4f}, mean abs diff "
                f"{d['mean_abs']:.5f}, PSNR {d['psnr_db']:.1f} dB (pixel values in [0, 1])")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fastnst-export", description="Export a trained fastnst network for deployment "
                                "(ONNX or torch.export .pt2), checked against PyTorch eager.")
    p.add_argument("--ckpt", required=True, help="training checkpoint (.ckpt) or pytorch/examples model (.pth)")
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
