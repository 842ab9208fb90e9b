"""What a model file is: ``python -m fastnst.info MODEL [--json]`` (also ``fastnst-info``).

Format, architecture, styles, how it was trained (image size, steps, loss settings, VGG19 weights), size on
disk and parameter count, and for exported files the opset, precision, inputs and outputs. Reads the file as
data only (torch pickles with ``weights_only=True``, ONNX as protobuf, ``.pt2`` from its zip directory and
with every pickle restricted to plain data): safe on hostile files, and nothing is run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe, run_main
from fastnst.errors import UserError
from fastnst.formats import ModelInfo, detect_format, pytorch_examples
from fastnst.formats.checkpoint import network_state, read_info, read_torch_file
from fastnst.formats.onnx import onnx_info, onnx_macs_per_pixel, onnx_precision, read_onnx
from fastnst.formats.pt2 import read_pt2
from fastnst.losses.presets import describe_loss
from fastnst.models import create_model
from fastnst.models.cost import macs_per_pixel


def _tensor_count(state: dict[str, Any]) -> int:
    return sum(int(v.numel()) for k, v in state.items()
               if isinstance(v, torch.Tensor) and not k.endswith((".running_mean", ".running_var", ".num_batches_tracked")))


def _torch_file(path: Path) -> dict[str, Any]:
    obj = read_torch_file(path, "model")
    if pytorch_examples.is_examples_state(obj):
        info = pytorch_examples.info_for(path)
        return {"format": "pth", "format_name": "pytorch/examples fast_neural_style state dict", "info": info,
                "parameters": _tensor_count(obj)}
    if not isinstance(obj, dict):
        raise UserError(f"model {path} does not hold a dict of tensors")
    info = read_info(obj, f"model {path}")
    out: dict[str, Any] = {"format": "ckpt", "format_name": f"fastnst training checkpoint (model format "
                                                            f"{info.format_version})", "info": info,
                           "parameters": _tensor_count(network_state(obj.get("state_dict", {})))}
    loops = obj.get("loops")
    if isinstance(obj.get("epoch"), int):
        out["epoch"] = obj["epoch"]
    out["resumable"] = bool(obj.get("optimizer_states")) and loops is not None
    return out


def _dims(value_info: Any) -> list[Any]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _onnx_file(path: Path) -> dict[str, Any]:
    import onnx

    proto = read_onnx(path)
    names = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in names]
    io = lambda vs: [{"name": v.name, "type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),  # noqa: E731
                      "shape": _dims(v)} for v in vs]
    params = 0
    for t in proto.graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        params += n
    return {"format": "onnx", "format_name": "ONNX model", "info": onnx_info(proto, path), "parameters": params,
            "precision": onnx_precision(proto),
            "opset": {(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "inputs": io(inputs), "outputs": io(proto.graph.output)}


def _pt2_file(path: Path) -> dict[str, Any]:
    program, info = read_pt2(path)
    params = sum(int(v.numel()) for v in program.state_dict.values())
    spec = program.graph_signature
    inputs = [{"name": s.arg.name, "kind": s.kind.name.lower()} for s in spec.input_specs
              if s.kind.name == "USER_INPUT"]
    return {"format": "pt2", "format_name": "torch.export program", "info": info, "parameters": params,
            "inputs": inputs, "precision": "fp32"}


def describe_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything :mod:`fastnst.tools.info` reports about a model file, as plain data (the ``--json`` output)."""
    p = Path(path).expanduser()
    fmt = detect_format(p)
    facts = {"ckpt": _torch_file, "onnx": _onnx_file, "pt2": _pt2_file}[fmt](p)
    info: ModelInfo | None = facts.pop("info")
    out: dict[str, Any] = {"path": str(p), "bytes": p.stat().st_size, **facts}
    if info is not None:
        out["model"] = {**info.to_dict(), "format_version": info.format_version}  # as the file has it
    # One count for one network in every format: its learnable parameters. What a file stores besides them (an
    # exported graph's folded constants, int8 scales and zero points) is not a parameter of the network.
    learnable = _network_parameters(info)
    out["parameters_counted"] = "network" if learnable is not None else "stored tensors"
    if learnable is not None:
        out["parameters"] = learnable
    out["macs_per_pixel"] = _macs_per_pixel(p, fmt, info)
    return out


def _network_parameters(info: ModelInfo | None) -> int | None:
    """The learnable parameters of the network a file records (built from the registry with random weights: the count
    does not depend on them); None when the file records none, or its architecture is not installed here."""
    if info is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]):
            net = create_model(info.architecture, **info.config)
    except Exception:  # noqa: BLE001 - a plugin architecture that is not installed here
        return None
    return sum(p.numel() for p in net.parameters())


def _macs_per_pixel(path: Path, fmt: str, info: ModelInfo | None) -> float | None:
    """Multiply-adds per output pixel at 256x256: of the ONNX graph itself, or of the architecture the file
    records (built with random weights: the count does not depend on them); None if neither can be had."""
    if fmt == "onnx":
        try:
            return onnx_macs_per_pixel(path)
        except Exception:  # noqa: BLE001 - a file onnxruntime cannot run still gets its other facts
            return None
    if info is None:
        return None

    try:
        return macs_per_pixel(create_model(info.architecture, **info.config))
    except Exception:  # noqa: BLE001 - an architecture that is not installed here (a plugin)
        return None


def _settings(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def format_description(d: dict[str, Any]) -> str:
    """The report of :func:`describe_model` as aligned lines."""
    rows: list[tuple[str, str]] = [("file", f"{d['path']} ({d['bytes'] / 1e6:.2f} MB)"), ("format", d["format_name"])]
    m = d.get("model")
    if m is None:
        rows.append(("fastnst", "no fastnst metadata: not written by fastnst (its inputs are listed below)"))
    else:
        rows.append(("architecture", f"{m['architecture']} ({_settings(m['config'])})"))
        styles = m["styles"]
        if m["config"].get("style_dim") is not None:
            enc = m["config"].get("encoder") or {}
            rows.append(("styles", f"any painting: a {m['config']['style_dim']}-d style vector from its encoder (paintings "
                                   f"at {enc.get('painting_size', 256)} px on the longer side)"))
            rows.append(("saved styles", f"{len(styles)}" + (f": {', '.join(styles)}" if styles else "")))
        else:
            rows.append(("styles", f"{len(styles)}: {', '.join(styles)}"))
        rows.append(("source", m["source"] + (f", exported from {m['exported_from']}" if m.get("exported_from") else "")))
        t = m.get("training")
        if t:
            rows.append(("trained", f"{t['global_step']} steps" + (f" on {t['image_size']} px crops" if t.get("image_size") else "")
                         + (f"; {t['skipped_images']} unreadable image reads skipped" if t.get("skipped_images") else "")))
            if t.get("init_from") and t.get("trained_styles"):
                rows.append(("added styles", f"{', '.join(t.get('trained_styles') or [])} (norm parameters only) to "
                                             f"the network of {t['init_from']}"))
            elif t.get("init_from"):
                rows.append(("started from", f"the prediction of {t['init_from']} (a network that takes any painting) "
                                             f"for its painting"))
            if t.get("paintings"):
                pt = t["paintings"]
                rows.append(("paintings", f"{pt.get('train')} for training from {pt.get('source')}; "
                                          f"{len(pt.get('val') or [])} held out: "
                                          + ", ".join(Path(v).name for v in pt.get("val") or [])))
            if t.get("style_images"):
                size = f" (longer side {t['style_size']} px)" if t.get("style_size") else ""
                rows.append(("style images", ", ".join(t["style_images"]) + size))
            loss = t.get("loss") or {}
            if loss:
                rows.append(("loss", describe_loss(loss)))
                rows.append(("VGG19 weights", f"{loss.get('vgg_weights', 'imagenet')} ({loss.get('vgg_pooling', 'max')} pooling)"))
    rows.append(("parameters", f"{d['parameters']:,}" + ("" if d.get("parameters_counted") == "network" else
                                                          " values stored (the network is unknown here)")))
    if d.get("macs_per_pixel") is not None:
        rows.append(("multiply-adds", f"{d['macs_per_pixel'] / 1e3:,.1f}k per output pixel (at 256x256)"))
    if "precision" in d:
        rows.append(("precision", d["precision"]))
    if "resumable" in d:
        rows.append(("resumable", "yes (optimizer and loop state)" if d["resumable"] else "no (weights only)"))
    if "opset" in d:
        rows.append(("opset", ", ".join(f"{k} {v}" for k, v in d["opset"].items())))
    for key in ("inputs", "outputs"):
        if key in d:
            rows.append((key, "; ".join(f"{v['name']}" + (f" {v['type']} {v['shape']}" if "shape" in v else "")
                                        for v in d[key])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("fastnst-info"), description="Say what a model file is: format, architecture, styles, training "
               "settings, size and parameters, and for exported files the opset and inputs. Nothing in it is run.",
               examples=["runs/starry/checkpoints/last.ckpt", "starry.onnx --json"])
    p.add_argument("model", metavar="MODEL", help=".ckpt, .onnx, .pt2 or pytorch/examples .pth file")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    return p


@quiet_on_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> None:
        d = describe_model(args.model)
        print(json.dumps(d, indent=2) if args.json else format_description(d))

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
