"""ONNX models (``.onnx``): export, metadata, the onnxruntime session fastnst runs them with, the parity
check against eager, and the fp16 / int8 variants, side by side.

Export contract: dynamic batch, height and width; input ``image`` float32 RGB NCHW in [0, 1] (and
``style_weights`` float32 [S] for a multi-style network, ``style_vector`` float32 [D] for a network that takes a
painting); output ``stylized`` of the input's shape, clamped to [0, 1]; :class:`ModelInfo` as JSON in
``metadata_props["fastnst"]``. A network that takes a painting has its style encoder in a second file beside it,
``<stem>.encoder.onnx``: ``painting`` float32 RGB [1, 3, H, W] in [0, 1] (longer side ``painting_size``) ->
``style_vector`` [D]; the metadata gives D, the painting size and the saved styles with their vectors.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.formats.deploy import (
    CHECK_SHAPES,
    IMAGE_INPUT,
    OUTPUT,
    STYLE_INPUT,
    TOLERANCE,
    PAINTING_INPUT,
    VECTOR_INPUT,
    Deployable,
    EncoderDeployable,
    ExportCheckError,
    check_inputs,
    check_runtime,
    check_styles,
    diff,
    dynamic_shapes,
    encoder_check_inputs,
    encoder_dynamic_shapes,
    encoder_path,
    raise_if_above,
)
from fastnst.formats.metadata import META_KEY, ModelInfo


def metadata_props(info: ModelInfo) -> dict[str, str]:
    """The strings stored in an exported model: the whole :class:`ModelInfo` under ``fastnst``, plus a few
    keys readable by any ONNX tool."""
    props = {META_KEY: info.to_json(), "architecture": info.architecture,
             "network": json.dumps(info.config, sort_keys=True), "styles": json.dumps(info.styles),
             "pixel_contract": f"input '{IMAGE_INPUT}' float32 RGB NCHW in [0, 1]"
                               + (f" and '{VECTOR_INPUT}' float32 [{info.style_dim}] (from the encoder "
                                  f"{encoder_path('X.onnx').name.replace('X', '<stem>')}, or 'style_vectors')"
                                  if info.takes_painting else
                                  f" and '{STYLE_INPUT}' float32 [{info.num_styles}] (style order: 'styles')"
                                  if info.num_styles > 1 else "")
                               + f"; output '{OUTPUT}' same shape, clamped"}
    if info.takes_painting:
        props["style_dim"] = str(info.style_dim)
        props["painting_size"] = str(info.painting_size)
        props["encoder"] = (f"'{encoder_path('X.onnx').name.replace('X', '<stem>')}': input '{PAINTING_INPUT}' float32 "
                            f"RGB [1, 3, H, W] in [0, 1], longer side {info.painting_size}; output '{VECTOR_INPUT}' [D]")
        props["style_vectors"] = json.dumps(dict(zip(info.styles, info.style_vectors or [])))
    if info.training is not None:
        props["training"] = json.dumps(dict(info.to_dict()["training"]), sort_keys=True)
    return props


def export_onnx(net: nn.Module, path: str | os.PathLike[str], info: ModelInfo, *, opset: int | None = None) -> Path:
    """Write ``net`` as a single-file ONNX model with dynamic batch, height and width."""
    import onnx

    path = Path(path)
    model = Deployable(net, info.num_styles, info.config.get("style_dim")).eval().to("cpu", torch.float32)
    example = model.example_inputs(torch.rand(2, 3, 64, 80))
    names = model.input_names
    kwargs: dict[str, Any] = {"opset_version": opset} if opset is not None else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, example, dynamo=True, input_names=names, output_names=[OUTPUT],
                                    dynamic_shapes=dynamic_shapes(model.style_size or 1), verbose=False, **kwargs)
    proto = program.model_proto
    # The output has the input's shape by construction; say so instead of the exporter's symbolic
    # expressions (e.g. Min(height, 2*...) from the transposed-conv crop), which runtimes warn about.
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, name in zip(out_dims, ("batch", None, "height", "width")):
        if name is not None:
            dim.ClearField("dim_value")
            dim.dim_param = name
    del proto.metadata_props[:]
    for key, value in metadata_props(info).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "fastnst"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path


def export_encoder_onnx(encoder: nn.Module, path: str | os.PathLike[str], info: ModelInfo, *,
                        opset: int | None = None) -> Path:
    """Write the style encoder of a network that takes a painting (see :class:`EncoderDeployable`), with dynamic
    height and width; the same metadata as the network beside it."""
    import onnx

    path = Path(path)
    model = EncoderDeployable(encoder).eval().to("cpu", torch.float32)
    kwargs: dict[str, Any] = {"opset_version": opset} if opset is not None else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.rand(1, 3, 64, 48),), dynamo=True, input_names=[PAINTING_INPUT],
                                    output_names=[VECTOR_INPUT], dynamic_shapes=encoder_dynamic_shapes(), verbose=False,
                                    **kwargs)
    proto = program.model_proto
    dim = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dim) == 1:
        dim[0].ClearField("dim_param")
        dim[0].dim_value = info.style_dim
    del proto.metadata_props[:]
    for key, value in metadata_props(info).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "fastnst"
    onnx.save_model(proto, str(path))
    return path


def _checked_session(path: Path) -> Any:
    """The onnx checker on ``path`` (one sentence when it fails), then a CPU onnxruntime session of it."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportCheckError(f"{path} fails the ONNX checker ({str(exc).splitlines()[0][:200]})") from None
    return ort_session(path, torch.device("cpu"))


def check_encoder_onnx(path: str | os.PathLike[str], encoder: nn.Module, *, tolerance: float = TOLERANCE
                       ) -> list[tuple[str, float]]:
    """onnx checker, then onnxruntime vs eager on two paintings; returns (case, max abs diff of the vector)."""
    path = Path(path)
    session = _checked_session(path)
    model = EncoderDeployable(encoder).eval().to("cpu", torch.float32)
    results = []
    for x in encoder_check_inputs():
        with torch.no_grad():
            ref = model(x).numpy()
        (y,) = session.run(None, {PAINTING_INPUT: x.numpy()})
        results.append((f"painting {'x'.join(map(str, x.shape))}", diff(np.asarray(y).reshape(-1), ref)["max_abs"]))
    raise_if_above(path, results, tolerance)
    return results


def read_onnx(path: str | os.PathLike[str]) -> Any:
    """The ONNX ModelProto of ``path`` (protobuf only: no code runs), or a UserError naming the file."""
    import onnx

    p = Path(path)
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - DecodeError and friends: a damaged or foreign file
        raise UserError(f"model {p} is not a valid ONNX model ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None


def onnx_info(proto: Any, path: str | os.PathLike[str]) -> ModelInfo | None:
    """The :class:`ModelInfo` stored in an ONNX model, None for an ONNX file fastnst did not write."""
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        return None
    return ModelInfo.from_json(props[META_KEY], f"model {path}")


def onnx_precision(proto: Any) -> str:
    """``fp16`` if the weights are half precision, ``int8`` if quantised, else ``fp32``."""
    import onnx

    ops = {n.op_type for n in proto.graph.node}
    if ops & {"QLinearConv", "ConvInteger", "DequantizeLinear", "DynamicQuantizeLinear"}:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "fp16"
    return "fp32"


def ort_error_message(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


GRAPH_LEVELS = ("all", "extended", "basic", "none")


def ort_session(path: str | os.PathLike[str], device: torch.device, threads: int | None = None,
                optimization: str = "all", graph: bytes | None = None) -> Any:
    """The onnxruntime session fastnst runs an .onnx model with (inference, export checks, the benchmark, tiles;
    ``graph``: a serialised graph derived from the file at ``path``, run instead of the file itself):
    graph optimisations ``optimization`` (all, the default, includes the CPU layout transformations; ``extended``
    or ``basic`` leave them out, which some CPUs run faster: ``fastnst.bench --tune`` measures it), errors-only
    logging, CUDA provider on ``cuda`` devices (then CPU), ``threads`` intra-op threads (None: onnxruntime's
    default, one per physical core)."""
    import onnxruntime as ort

    if optimization not in GRAPH_LEVELS:
        raise UserError(f"unknown onnxruntime optimisation level {optimization!r}; use one of {', '.join(GRAPH_LEVELS)}")

    path = Path(path)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("--device cuda needs onnxruntime-gpu for .onnx models (CUDAExecutionProvider is missing); "
                            "use --device cpu")
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    elif device.type == "mps":
        raise UserError("onnxruntime has no MPS backend; run .onnx models with --device cpu, or use the .ckpt on mps")
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no shape-inference chatter in the user's terminal
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(graph if graph is not None else str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise UserError(f"model {path} is not a valid ONNX model ({ort_error_message(exc)[:160]})") from None


def run_session(session: Any, image: Any, style_weights: Any = None, style_name: str | None = None) -> Any:
    """One onnxruntime run: [N, 3, H, W] float32 numpy (and the [D] style vector: ``style_weights`` of trained
    styles or ``style_vector`` of a network that takes a painting, ``style_name`` the input) -> the stylized array."""
    feeds = {IMAGE_INPUT: image}
    if style_weights is not None:
        feeds[style_name or STYLE_INPUT] = style_weights
    (y,) = session.run(None, feeds)
    return y


def check_onnx(path: str | os.PathLike[str], net: nn.Module, num_styles: int = 1, *, tolerance: float = TOLERANCE,
               shapes: Any = CHECK_SHAPES, style_dim: int | None = None) -> list[tuple[str, float]]:
    """onnx checker, then onnxruntime vs eager on ``shapes`` (and, for a multi-style network, pure styles and
    a blend); returns (case, max abs diff) per case and raises :class:`ExportCheckError` above ``tolerance``."""
    path = Path(path)
    session = _checked_session(path)
    return check_runtime(path, net, lambda image, style, name: run_session(session, image, style, name), num_styles,
                         tolerance=tolerance, shapes=shapes, style_dim=style_dim, runtime="onnxruntime")


def onnx_macs_per_pixel(path: str | os.PathLike[str], size: tuple[int, int] = (256, 256)) -> float:
    """Multiply-adds of the convolutions of any image-to-image ONNX model per output pixel, measured by running
    it once on a [1, 3, H, W] image (``size`` = (H, W)) with every convolution's tensors exposed: their real
    shapes, whatever computes the padding (a peer's model, an int8 model whose weights are dequantised)."""
    import onnx
    import onnxruntime as ort

    proto = read_onnx(path)
    dims = {t.name: list(t.dims) for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    wanted = {name for n in convs for name in (n.input[0], n.input[1], n.output[0]) if name not in dims}
    known = {o.name for o in proto.graph.output}
    for name in sorted(wanted - known):
        proto.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the convolutions as written
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    h, w = size
    feeds = {}
    for inp in session.get_inputs():
        if len(inp.shape) == 4:
            feeds[inp.name] = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        else:  # style weights: an even blend
            n = int(inp.shape[-1])
            feeds[inp.name] = np.full([d if isinstance(d, int) else 1 for d in inp.shape], 1.0 / n, np.float32)
    names = [o.name for o in session.get_outputs()]
    shapes = {**dims, **dict(zip(names, (list(v.shape) for v in session.run(names, feeds))))}
    total = 0.0
    for n in convs:
        weight = shapes[n.input[1]]
        # the weight shape holds the group division: Conv [Cout, Cin/g, kh, kw], ConvTranspose [Cin, Cout/g, kh, kw]
        if n.op_type == "Conv":  # per output element: Cin/g * kh * kw
            total += float(np.prod(shapes[n.output[0]])) * float(np.prod(weight[1:]))
        else:  # per input element: Cout/g * kh * kw
            total += float(np.prod(shapes[n.input[0]])) * float(np.prod(weight[1:]))
    return total / (h * w)


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """An ONNX variant with fp16 weights and compute; inputs and outputs stay float32 [0, 1]."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save_model(model, str(dst))
    return Path(dst)


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: Sequence[np.ndarray],
                  num_styles: int = 1, style_vectors: Sequence[np.ndarray] | None = None) -> Path:
    """An int8 variant by static quantisation (onnxruntime, QDQ format): weights int8 per output channel,
    activations uint8 with ranges measured on ``calibration`` (photos, float32 [1, 3, H, W] in [0, 1], the kind
    of image the model will see). Only convolutions are quantised: the instance norms, which hold the styles,
    stay float. A multi-style model is calibrated with every style in turn; a network that takes a painting with
    ``style_vectors`` (the [D] vectors of real paintings) in turn."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    if not calibration:
        raise UserError("int8 quantisation needs calibration photos (--calibration DIR)")

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            feeds = []
            for i, x in enumerate(calibration):
                feed = {IMAGE_INPUT: x}
                if style_vectors:
                    feed[VECTOR_INPUT] = np.asarray(style_vectors[i % len(style_vectors)], np.float32).reshape(-1)
                elif num_styles > 1:  # every style's scale and shift gives other activation ranges
                    w = np.zeros(num_styles, np.float32)
                    w[i % num_styles] = 1.0
                    feed[STYLE_INPUT] = w
                feeds.append(feed)
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the original instead
            pre = Path(src)
        quantize_static(str(pre), str(dst), Photos(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True})
    return Path(dst)


def compare_on_images(reference: str | os.PathLike[str], variant: str | os.PathLike[str], images: Sequence[np.ndarray],
                      num_styles: int = 1, style_dim: int | None = None) -> dict[str, float]:
    """Worst max/mean abs difference and PSNR of ``variant`` against ``reference`` on real ``images``."""
    ref_s, var_s = (ort_session(p, torch.device("cpu")) for p in (reference, variant))
    worst = {"max_abs": 0.0, "mean_abs": 0.0, "psnr_db": float("inf")}
    for x in images:
        for style in check_styles(num_styles, style_dim):
            s = None if style is None else style.numpy()
            name = VECTOR_INPUT if style_dim is not None else None
            d = diff(run_session(var_s, x, s, name), run_session(ref_s, x, s, name))
            worst = {"max_abs": max(worst["max_abs"], d["max_abs"]), "mean_abs": max(worst["mean_abs"], d["mean_abs"]),
                     "psnr_db": min(worst["psnr_db"], d["psnr_db"])}
    return worst


def compare_onnx(reference: str | os.PathLike[str], variant: str | os.PathLike[str], num_styles: int = 1,
                 shapes: Any = CHECK_SHAPES, style_dim: int | None = None) -> dict[str, float]:
    """Worst max/mean abs difference and PSNR of ``variant`` against ``reference`` over ``shapes``."""
    return compare_on_images(reference, variant, [x.numpy() for x in check_inputs(shapes, seed=1)], num_styles,
                             style_dim)


__all__ = ["ExportCheckError", "check_encoder_onnx", "check_onnx", "export_encoder_onnx", "compare_onnx", "convert_fp16", "export_onnx", "onnx_info",
           "onnx_macs_per_pixel", "onnx_precision", "ort_session", "quantize_int8", "read_onnx", "run_session",
           "compare_on_images"]
