"""Export a trained network for deployment and check it against PyTorch eager.

``python -m fastnst.export --ckpt MODEL --format onnx -o model.onnx [--fp16] [--int8 --calibration DIR]``
(or ``fastnst-export``); ``--format web -o DIR`` writes a static web folder instead (:mod:`fastnst.web`).
MODEL is a training checkpoint (.ckpt) or a pytorch/examples model (.pth), loaded with :func:`fastnst.load`;
the formats themselves (writers, readers, parity checks) are in :mod:`fastnst.formats`.

ONNX: dynamic batch, height and width; input ``image`` float32 RGB NCHW in [0, 1] (and ``style_weights``
float32 [S] for a multi-style network), output ``stylized`` of the same size, clamped to [0, 1]; the model's
:class:`fastnst.ModelInfo` is in its metadata. After export the file passes the onnx checker and onnxruntime
must match eager within 1e-3 on two sizes (one not a multiple of 4, and pure styles and a blend for a
multi-style network). ``.pt2`` is a ``torch.export`` program with the same contract.

``--int8`` quantises statically (QDQ, per-channel int8 weights, activation ranges calibrated on the user's
photos in ``--calibration DIR``), then times int8 against fp32 in turn on one of those photos and measures its
PSNR against fp32 on all of them, and says plainly when int8 is slower than fp32 on this CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe, run_main
from fastnst.errors import UserError
from fastnst.fileio import atomic_write, check_writable_folder
from fastnst.formats.deploy import TOLERANCE, VECTOR_INPUT, check_styles, encoder_path
from fastnst.formats.onnx import (check_encoder_onnx, check_onnx, compare_on_images, compare_onnx, convert_fp16,
                                  export_encoder_onnx, export_onnx, onnx_info, ort_session, quantize_int8, read_onnx,
                                  run_session)
from fastnst.formats.openvino import check_openvino, openvino_available
from fastnst.formats.pt2 import check_encoder_pt2, check_pt2, export_encoder_pt2, export_pt2
from fastnst.inference import load
from fastnst.inference.machine import OtherLoad, cpu_summary, time_in_turn
from fastnst.media.image import find_images, load_image, pil_to_tensor, resize_longer_to, tensor_to_pil
from fastnst.web.runtime import CDN_BASE, find_runtime
from fastnst.web.site import write_site


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def _variant_path(path: Path, tag: str) -> Path:
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


CALIBRATION_COUNT = 32  # photos used for calibration: activation ranges settle after a few dozen
CALIBRATION_SIZE = 384  # their longer side: instance norms make the ranges nearly independent of the size
SPEED_SIZE = 512  # longer side of the photo int8 and fp32 are timed on
SPEED_ROUNDS = 5


def calibration_photos(folder: str | os.PathLike[str], count: int = CALIBRATION_COUNT,
                       size: int = CALIBRATION_SIZE) -> list[np.ndarray]:
    """Up to ``count`` photos of ``folder`` (sorted, recursive) as float32 [1, 3, H, W] in [0, 1], longer side
    ``size``; unreadable files are skipped, none readable is a UserError."""
    out = []
    for path in find_images(folder, "--calibration")[: max(count, 1) * 2]:
        if len(out) == count:
            break
        try:
            img = load_image(path)
        except UserError:
            continue
        out.append(pil_to_tensor(resize_longer_to(img, size)).unsqueeze(0).numpy())
    if not out:
        raise UserError(f"--calibration {folder} holds no readable image")
    return out


def int8_verdict(speedup: float) -> str:
    """One plain sentence on an int8 model whose speed is ``speedup`` x fp32's: never an improvement when slower."""
    if speedup < 1.0:
        return (f"the int8 model is SLOWER than fp32 on this CPU ({speedup:.2f}x): it is smaller, not faster; it is "
                f"not an improvement here, so deploy the fp32 model where speed matters")
    if speedup < 1.05:
        return f"the int8 model is no faster than fp32 on this CPU ({speedup:.2f}x, within timing noise): smaller, not faster"
    return f"the int8 model is {speedup:.2f}x as fast as fp32 on this CPU"


def report_int8(fp32: Path, int8: Path, photos: list[np.ndarray], num_styles: int, log: Any = print,
                speed_size: int = SPEED_SIZE, style_dim: int | None = None) -> dict[str, Any]:
    """Time int8 against fp32 in turn on the first photo (longer side ``speed_size``) and measure the PSNR of int8
    against fp32 on every photo; say plainly whether int8 is an improvement in speed on this CPU."""
    import torch.nn.functional as F

    x = torch.from_numpy(photos[0])
    h, w = x.shape[-2:]
    scale = speed_size / max(h, w)
    x = F.interpolate(x, size=(max(5, round(h * scale)), max(5, round(w * scale))), mode="bilinear",
                      antialias=scale < 1, align_corners=False).clamp(0, 1).numpy()
    cpu = torch.device("cpu")
    sessions = {"fp32": ort_session(fp32, cpu), "int8": ort_session(int8, cpu)}
    weights = None if num_styles <= 1 else np.full(num_styles, 1.0 / num_styles, np.float32)
    name = None
    if style_dim is not None:  # a network that takes a painting: one style vector
        weights, name = check_styles(1, style_dim)[0].numpy(), VECTOR_INPUT  # type: ignore[union-attr]
    with OtherLoad() as load:  # one warm-up run each, then the two timed in turn
        times, errors = time_in_turn({k: (lambda r, s=s: run_session(s, x, weights, name)) for k, s in sessions.items()},
                                     cpu, 1, SPEED_ROUNDS)
    if errors:
        raise UserError(f"onnxruntime failed to run the {' and '.join(errors)} model ({next(iter(errors.values()))})")
    t_fp32, t_int8 = statistics.median(times["fp32"]), statistics.median(times["int8"])
    d = compare_on_images(fp32, int8, photos, num_styles, style_dim)
    speedup = t_fp32 / t_int8
    size = f"{x.shape[-1]}x{x.shape[-2]}"
    log(f"fastnst: int8 vs fp32 on {len(photos)} calibration photo(s): PSNR {d['psnr_db']:.1f} dB (worst), max abs diff "
        f"{d['max_abs']:.3f}, mean abs diff {d['mean_abs']:.4f} (pixel values in [0, 1])")
    log(f"fastnst: int8 vs fp32 speed at {size} in onnxruntime, timed in turn ({SPEED_ROUNDS} rounds; CPU: {cpu_summary()}): "
        f"int8 {t_int8 * 1e3:.1f} ms, fp32 {t_fp32 * 1e3:.1f} ms = {speedup:.2f}x"
        + (f" (other processes used {load.fraction:.0%} of the CPUs meanwhile: timings are bent by load)" if load.busy else ""))
    log(f"fastnst: {int8_verdict(speedup)}")
    return {"int8_ms": t_int8 * 1e3, "fp32_ms": t_fp32 * 1e3, "speedup": speedup, "size": size, **d,
            "busy": load.busy}


def export_checkpoint(ckpt: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                      fmt: str | None = None, opset: int | None = None, fp16: bool = False, int8: bool = False,
                      calibration: str | os.PathLike[str] | None = None, calibration_count: int = CALIBRATION_COUNT,
                      calibration_size: int = CALIBRATION_SIZE, speed_size: int = SPEED_SIZE, check: bool = True,
                      overwrite: bool = False, tolerance: float = TOLERANCE, log: Any = print) -> Path:
    """Load a training checkpoint, export it, check it against eager and write the optional variants.

    The file appears at ``output`` only after its check passed (it is written to a temporary name first).
    ``int8`` needs ``calibration``, a folder of photos (static quantisation; see :func:`report_int8`).
    """
    if fmt == "web":
        raise UserError("--format web writes a folder: use export_web (python -m fastnst.export --format web -o DIR)")
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
    if calibration is not None and not int8:
        raise UserError("--calibration is for --int8; add --int8 or drop --calibration")
    if int8 and calibration is None:
        raise UserError("--int8 needs --calibration DIR: a folder of photos like the ones the model will stylize "
                        "(a few dozen), on which the activation ranges of the int8 model are measured")
    if calibration_count < 1 or calibration_size < 32:
        raise UserError("--calibration-count must be at least 1 and --calibration-size at least 32 px")
    photos = calibration_photos(calibration, calibration_count, calibration_size) if int8 else []  # fail before exporting
    model = load(ckpt, "cpu")
    net, info = model.network, model.info
    if net is None:  # detect_format accepted only .ckpt/.pt/.pth above
        raise UserError(f"{ckpt} holds no eager network to export")
    if out is None:
        out = Path(f"{model.style_name if len(model.styles) == 1 else ckpt.stem}.{fmt}")
    targets = [out] + ([_variant_path(out, "fp16")] if fp16 else []) + ([_variant_path(out, "int8")] if int8 else [])
    style_dim = info.config.get("style_dim")
    if style_dim is not None:  # a network that takes a painting: its encoder beside every file
        targets += [encoder_path(t) for t in targets]
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
                export_pt2(net, tmp, info, archive_name=out.stem)  # the archive's folder: not the temporary name
        except PermissionError as exc:
            raise UserError(f"cannot write {out} ({exc.strerror or exc})") from None
        if check:  # before the rename: a model that fails its check never replaces a good one
            results = (check_onnx if fmt == "onnx" else check_pt2)(tmp, net, styles, tolerance=tolerance,
                                                                    style_dim=style_dim)
            shown = ", ".join(f"{case}: {d:.2e}" for case, d in results)
            log(f"fastnst: parity vs PyTorch eager (max abs diff, limit {tolerance:g}): {shown}")
            if fmt == "onnx" and style_dim is None and openvino_available():  # the optional second runtime
                results = check_openvino(tmp, net, styles, tolerance=tolerance)
                shown = ", ".join(f"{case}: {d:.2e}" for case, d in results)
                log(f"fastnst: OpenVINO parity vs PyTorch eager (max abs diff, limit {tolerance:g}): {shown}")

    def write_encoder(tmp: Path) -> None:
        if fmt == "onnx":
            export_encoder_onnx(net.encoder, tmp, info)
        else:
            export_encoder_pt2(net.encoder, tmp, info, archive_name=encoder_path(out).stem)
        if check:
            results = (check_encoder_onnx if fmt == "onnx" else check_encoder_pt2)(tmp, net.encoder, tolerance=tolerance)
            shown = ", ".join(f"{case}: {d:.2e}" for case, d in results)
            log(f"fastnst: encoder parity vs PyTorch eager (max abs diff of the style vector): {shown}")

    if style_dim is not None:
        atomic_write(encoder_path(out), write_encoder)
    atomic_write(out, write)
    what = (f"any painting, {style_dim}-d style vector from {encoder_path(out).name}, {len(info.styles)} saved style(s)"
            if style_dim is not None else f"styles {', '.join(info.styles)}")
    log(f"fastnst: wrote {out} ({_size(out)}; {what}; {info.architecture} {info.config})")

    def copy_encoder(variant: Path) -> None:  # the encoder stays fp32: it runs once per painting
        if style_dim is not None:
            atomic_write(encoder_path(variant), lambda tmp: shutil.copyfile(encoder_path(out), tmp))
    if fp16:
        dst = _variant_path(out, "fp16")
        atomic_write(dst, lambda tmp: convert_fp16(out, tmp))
        copy_encoder(dst)
        d = compare_onnx(out, dst, styles, style_dim=style_dim)
        log(f"fastnst: wrote {dst} ({_size(dst)}); vs fp32: max abs diff {d['max_abs']:.4f}, mean abs diff "
            f"{d['mean_abs']:.5f}, PSNR {d['psnr_db']:.1f} dB (pixel values in [0, 1])")
    if int8:
        dst = _variant_path(out, "int8")
        log(f"fastnst: calibrating int8 on {len(photos)} photo(s) of {calibration} ...")
        vectors = None
        if style_dim is not None:  # calibrated with the style vectors of real pictures (the photos as paintings)
            vectors = [model.encode_style(tensor_to_pil(torch.from_numpy(p[0]))).numpy() for p in photos]
        atomic_write(dst, lambda tmp: quantize_int8(out, tmp, photos, styles, vectors))
        copy_encoder(dst)
        log(f"fastnst: wrote {dst} ({_size(dst)}; static int8, QDQ, per-channel weights)")
        report_int8(out, dst, photos, styles, log, speed_size, style_dim)
    return out


def export_web(model: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
               int8: bool = False, calibration: str | os.PathLike[str] | None = None,
               calibration_count: int = CALIBRATION_COUNT, calibration_size: int = CALIBRATION_SIZE,
               runtime_dir: str | os.PathLike[str] | None = None, runtime_cdn: str | None = None,
               backends: tuple[str, ...] = ("wasm", "webgpu"), max_side: int = 1024, opset: int | None = None,
               check: bool = True, overwrite: bool = False, tolerance: float = TOLERANCE, log: Any = print) -> Path:
    """Write the static web folder of ``model``: a training checkpoint (exported to ONNX and checked here) or an
    ONNX model fastnst exported (an arbitrary-style one with its ``.encoder.onnx`` beside it). The runtime is found
    before anything is exported (see :func:`fastnst.web.runtime.find_runtime`); ``int8`` adds the static int8
    model, calibrated on ``calibration``, which the page offers as an option."""
    import tempfile

    src = Path(model).expanduser()
    runtime = find_runtime(runtime_dir, runtime_cdn, backends)  # one sentence before any work when it is missing
    if calibration is not None and not int8:
        raise UserError("--calibration is for --int8; add --int8 or drop --calibration")
    if int8 and calibration is None:
        raise UserError("--int8 needs --calibration DIR: a folder of photos like the ones the model will stylize")
    if src.suffix.lower() == ".pt2":
        raise UserError(f"{src} is a .pt2 program; a web folder needs the training checkpoint (.ckpt) or an .onnx export")
    with tempfile.TemporaryDirectory(prefix="fastnst-web-") as tmp:
        if src.suffix.lower() == ".onnx":
            if not src.is_file():
                raise UserError(f"model {src} does not exist; pass a training checkpoint (.ckpt) or an exported .onnx")
            onnx_path = src
            info = onnx_info(read_onnx(src), src)
            if info is None:
                raise UserError(f"{src} has no fastnst metadata; export the model with fastnst first")
            name = info.styles[0] if info.num_styles == 1 else src.stem
            if int8:
                inputs = {i.name for i in read_onnx(src).graph.input}
                if "style_vector" in inputs:
                    raise UserError(f"--int8 of a network that takes a painting is calibrated with its encoder: pass "
                                    f"the training checkpoint (.ckpt) instead of {src.name}, or drop --int8")
                photos = calibration_photos(calibration, calibration_count, calibration_size)
        else:
            onnx_path = export_checkpoint(src, Path(tmp) / "model.onnx", fmt="onnx", opset=opset, int8=int8,
                                          calibration=calibration, calibration_count=calibration_count,
                                          calibration_size=calibration_size, check=check, tolerance=tolerance, log=log)
            info = onnx_info(read_onnx(onnx_path), onnx_path)
            name = (info.styles[0] if info is not None and info.num_styles == 1 else src.stem)
            photos = None
        int8_path = None
        if int8:
            int8_path = Path(tmp) / "model.int8.onnx"
            if photos is not None:  # from an .onnx input; export_checkpoint wrote its own above
                log(f"fastnst: calibrating int8 on {len(photos)} photo(s) of {calibration} ...")
                quantize_int8(onnx_path, int8_path, photos, info.num_styles if info else 1)
        out = Path(output).expanduser() if output is not None else Path(f"{name}-web")
        return write_site(out, onnx_path, runtime, int8=int8_path, max_side=max_side, overwrite=overwrite, log=log)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("fastnst-export"), description="Export a trained fastnst network for deployment "
                                "(ONNX or torch.export .pt2, checked against PyTorch eager) or as a static web page.",
               examples=["--ckpt runs/starry/checkpoints/last.ckpt -o starry.onnx",
                         "--ckpt last.ckpt -o starry.pt2",
                         "--ckpt last.ckpt -o starry.onnx --int8 --calibration photos/",
                         "--ckpt last.ckpt -o starry.onnx --fp16 --overwrite",
                         "--ckpt last.ckpt --format web -o starry-web"])
    p.add_argument("--ckpt", required=True, help="training checkpoint (.ckpt) or pytorch/examples model (.pth)")
    p.add_argument("--format", choices=["onnx", "pt2", "web"], help="default: from the -o extension, else onnx; web: a "
                   "static web folder (page, model, sidecar, onnxruntime-web) for fastnst web serve or any static host")
    p.add_argument("-o", "--output", help="output file, a folder for --format web (default: STYLE.onnx, STYLE-web/)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--fp16", action="store_true", help="also write NAME.fp16.onnx (half-precision weights)")
    p.add_argument("--int8", action="store_true", help="also write NAME.int8.onnx (static int8 quantisation, calibrated on "
                   "--calibration DIR), and report its speed and PSNR against fp32")
    p.add_argument("--calibration", metavar="DIR", help="photos to calibrate --int8 on (a few dozen like the ones you "
                   "will stylize)")
    p.add_argument("--calibration-count", type=int, default=CALIBRATION_COUNT, metavar="N",
                   help=f"photos of DIR used (default {CALIBRATION_COUNT})")
    p.add_argument("--calibration-size", type=int, default=CALIBRATION_SIZE, metavar="PX",
                   help=f"longer side the calibration photos are resized to (default {CALIBRATION_SIZE})")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="max abs diff allowed vs eager (default 1e-3)")
    p.add_argument("--no-check", action="store_true", help="skip the checker and the parity check")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (a web folder only if it "
                   "is one fastnst wrote)")
    g = p.add_argument_group("--format web")
    g.add_argument("--runtime-dir", metavar="DIR", help="a local copy of the pinned onnxruntime-web package (its folder, "
                   "dist/ or .tgz); default: the cache filled by python -m fastnst.web runtime")
    g.add_argument("--runtime-cdn", nargs="?", const=CDN_BASE, metavar="URL", help="load onnxruntime-web from a CDN, "
                   f"each file checked by its integrity hash, instead of shipping it (default URL {CDN_BASE})")
    g.add_argument("--web-backends", default="wasm,webgpu", help="runtime builds to ship: wasm (CPU, SIMD, threads), "
                   "webgpu, or both (default; the page picks WebGPU where the browser has it)")
    g.add_argument("--web-max-side", type=int, default=1024, metavar="PX", help="the page's default cap on the longer "
                   "side it stylizes at (the user can change it; default 1024)")
    return p


def _refuse(message: str) -> None:
    raise UserError(message)


@quiet_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.format == "web":
        if args.fp16:
            return run_main(lambda: _refuse("--fp16 is not offered for --format web (the page runs fp32, or int8 with "
                                            "--int8); drop --fp16"))
        backends = tuple(b.strip() for b in args.web_backends.split(",") if b.strip())
        return run_main(lambda: export_web(args.ckpt, args.output, int8=args.int8, calibration=args.calibration,
                                           calibration_count=args.calibration_count,
                                           calibration_size=args.calibration_size, runtime_dir=args.runtime_dir,
                                           runtime_cdn=args.runtime_cdn, backends=backends,
                                           max_side=args.web_max_side, opset=args.opset, check=not args.no_check,
                                           overwrite=args.overwrite, tolerance=args.tolerance) and None)
    if args.runtime_dir or args.runtime_cdn:
        return run_main(lambda: _refuse("--runtime-dir and --runtime-cdn are for --format web; add --format web -o DIR"))
    return run_main(lambda: export_checkpoint(args.ckpt, args.output, fmt=args.format, opset=args.opset,
                                              fp16=args.fp16, int8=args.int8, calibration=args.calibration,
                                              calibration_count=args.calibration_count,
                                              calibration_size=args.calibration_size, check=not args.no_check,
                                              overwrite=args.overwrite, tolerance=args.tolerance) and None)


if __name__ == "__main__":
    sys.exit(main())
