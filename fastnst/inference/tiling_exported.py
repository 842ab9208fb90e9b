"""Tiles for exported models: their norms run with the whole image's statistics, as the eager network's do.

Every norm of a fastnst network is an instance norm (:class:`fastnst.models.StyleNorm`), which both exporters
write as an instance norm (ONNX ``InstanceNormalization``, ``aten.instance_norm``) or, with style weights, as a
batch norm over the [1, N*C, H, W] reshaped activations whose statistics come from the input itself (a
``BatchNormalization`` node fed by ``ReduceMean`` nodes, ``aten.batch_norm`` in training mode). For tiles, the graph is rewritten once so that those statistics
are measured on the downscaled whole image (a first pass that also returns them) and then fed to every tile
(the batch norms read them instead of computing their own). The model file's own graph and weights run: an
int8 or fp16 ``.onnx`` tiles as it stylizes.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastnst.errors import UserError
from fastnst.formats import ModelInfo
from fastnst.formats.deploy import IMAGE_INPUT, STYLE_INPUT, VECTOR_INPUT
from fastnst.formats.onnx import ort_session, read_onnx
from fastnst.inference.runners import _ort_failure
from fastnst.models import StyleNorm, create_model

STAT_PREFIX = "fastnst_norm"


def _norm_count(info: ModelInfo) -> int | None:
    """How many norms the recorded architecture has (None when it is not installed here)."""
    try:
        with torch.random.fork_rng(devices=[]):
            net = create_model(info.architecture, **info.config)
    except Exception:  # noqa: BLE001 - a plugin architecture missing here: the graph's own count is used
        return None
    return sum(isinstance(m, StyleNorm) for m in net.modules())


def _check_count(found: int, info: ModelInfo, path: os.PathLike[str] | str) -> None:
    expected = _norm_count(info)
    if found == 0 or (expected is not None and found != expected):
        raise UserError(f"--tile cannot share the norm statistics of {path} between tiles ({found} norms found in the "
                        f"graph, the {info.architecture} network has {expected}); tile its .ckpt, or use --max-size")


# --- ONNX ------------------------------------------------------------------------------------------

def _prune(graph: Any) -> None:
    """Drop the nodes (and initializers) that no graph output depends on any more (whatever the node order: a
    converted graph may list a node after its consumers)."""
    producer = {o: n for n in graph.node for o in n.output}
    needed, todo, keep = set(), [o.name for o in graph.output], set()
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            todo.extend(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs (If, Loop) read outer names too
                todo.extend(i for sub in [attr.g, *attr.graphs] for n in sub.node for i in n.input)
    kept = [n for n in graph.node if id(n) in keep]
    del graph.node[:]
    graph.node.extend(kept)
    used = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def _opset(proto: Any) -> int:
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)


def _stats_nodes(x: str, i: int, opset: int) -> tuple[list[Any], list[Any]]:
    """(nodes, initializers) computing the per-channel mean and biased variance of ``x`` [1, C, H, W] as
    ``fastnst_norm<i>_mean`` / ``_var`` [C] (ReduceMean takes its axes as an input from opset 18 on)."""
    from onnx import helper, numpy_helper

    p = f"{STAT_PREFIX}{i}"
    inits, axes_kw, axes_in = [], {}, []
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([0, 2, 3], dtype=np.int64), f"{p}_axes"))
        axes_in = [f"{p}_axes"]
    else:
        axes_kw = {"axes": [0, 2, 3]}
    nodes = [helper.make_node("ReduceMean", [x, *axes_in], [f"{p}_mean4"], keepdims=1, **axes_kw),
             helper.make_node("Sub", [x, f"{p}_mean4"], [f"{p}_dev"]),
             helper.make_node("Mul", [f"{p}_dev", f"{p}_dev"], [f"{p}_sq"]),
             helper.make_node("ReduceMean", [f"{p}_sq", *axes_in], [f"{p}_var"], keepdims=0, **axes_kw),
             helper.make_node("ReduceMean", [x, *axes_in], [f"{p}_mean"], keepdims=0, **axes_kw)]
    return nodes, inits


def shared_norm_graphs(proto: Any, info: ModelInfo, path: os.PathLike[str] | str) -> tuple[Any, Any, int]:
    """(stats graph, tile graph, number of norms) of a fastnst ONNX export. The stats graph also returns each norm's
    mean and variance (outputs ``fastnst_norm<i>_mean`` / ``_var``, [C]); the tile graph takes them as inputs of
    those names. A norm is an ``InstanceNormalization`` node (one style for the batch) or a ``BatchNormalization``
    node whose statistics the graph computes (the decomposed form); both become a batch norm with given
    statistics in the tile graph (tiles run one at a time, N = 1)."""
    import onnx
    from onnx import helper

    def norms_of(graph: Any) -> list[Any]:
        return [n for n in graph.node if n.op_type == "InstanceNormalization"
                or (n.op_type == "BatchNormalization" and len(n.input) == 5)]

    _check_count(len(norms_of(proto.graph)), info, path)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    except Exception:  # noqa: BLE001 - an unusual graph: statistics are float32 then
        types = {}
    opset = _opset(proto)
    stats, tiles = copy.deepcopy(proto), copy.deepcopy(proto)
    for i, (node, tile_node) in enumerate(zip(norms_of(stats.graph), norms_of(tiles.graph))):
        names = [f"{STAT_PREFIX}{i}_mean", f"{STAT_PREFIX}{i}_var"]
        elem = types.get(node.input[0], onnx.TensorProto.FLOAT)
        if node.op_type == "InstanceNormalization":
            nodes, inits = _stats_nodes(node.input[0], i, opset)
            stats.graph.node.extend(nodes)
            stats.graph.initializer.extend(inits)
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            replacement = helper.make_node("BatchNormalization", [*tile_node.input[:3], *names], list(tile_node.output),
                                           name=tile_node.name, epsilon=eps)
            tile_node.CopyFrom(replacement)
        else:
            stats.graph.node.extend(helper.make_node("Identity", [src], [dst]) for src, dst in zip(node.input[3:5], names))
            tile_node.input[3], tile_node.input[4] = names
        for name in names:
            stats.graph.output.append(helper.make_tensor_value_info(name, elem, None))
            tiles.graph.input.append(helper.make_tensor_value_info(name, elem, None))
    _prune(tiles.graph)
    return stats, tiles, len(norms_of(proto.graph))


class OnnxTiles:
    """:class:`fastnst.inference.tiling.TileModel` of an ONNX export, run in onnxruntime (two sessions: the
    statistics pass and the tiles)."""

    def __init__(self, path: os.PathLike[str] | str, info: ModelInfo, device: torch.device,
                 threads: int | None = None, optimization: str = "all") -> None:
        stats, tiles, self.count = shared_norm_graphs(read_onnx(path), info, path)
        self.image, self.style_input = IMAGE_INPUT, VECTOR_INPUT if info.takes_painting else STYLE_INPUT
        self.stats_session = ort_session(path, device, threads, optimization, graph=stats.SerializeToString())
        self.tile_session = ort_session(path, device, threads, optimization, graph=tiles.SerializeToString())
        self.names = [f"{STAT_PREFIX}{i}_{w}" for i in range(self.count) for w in ("mean", "var")]
        self.fixed: dict[str, np.ndarray] = {}

    def _feeds(self, x: torch.Tensor, style: torch.Tensor | None) -> dict[str, np.ndarray]:
        feeds = {self.image: np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())}
        if style is not None:
            feeds[self.style_input] = np.ascontiguousarray(style.reshape(-1).to("cpu", torch.float32).numpy())
        return feeds

    def fix_stats(self, small: torch.Tensor, style: torch.Tensor | None) -> None:
        values = self.stats_session.run(self.names, self._feeds(small, style))
        self.fixed = dict(zip(self.names, values))

    def run(self, tile: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        try:
            (y,) = self.tile_session.run(None, {**self._feeds(tile, style), **self.fixed})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types, translated as for whole images
            raise _ort_failure(exc) from exc
        return torch.from_numpy(y).to(torch.float32)


# --- torch.export ----------------------------------------------------------------------------------

class _SharedBatchNorm(nn.Module):
    """Stands in for one ``aten.instance_norm`` or ``aten.batch_norm`` call (training mode: the instance norm of
    [N, C, H, W] as the batch norm of [1, N*C, H, W]) of a program, with a tile of N = 1: measures its input's
    per-channel statistics, or normalises with the measured ones."""

    def __init__(self) -> None:
        super().__init__()
        self.measure = True
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, weight: Any, bias: Any, running_mean: Any, running_var: Any, training: Any,
                momentum: float, eps: float, cudnn_enabled: bool = True) -> torch.Tensor:
        if self.measure:
            self.var, self.mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=False)
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
        assert self.mean is not None and self.var is not None
        return F.batch_norm(x, self.mean.to(x.dtype), self.var.to(x.dtype), weight, bias, False, 0.0, eps)


class ProgramTiles:
    """:class:`fastnst.inference.tiling.TileModel` of a torch.export program: the program's graph, with its norms
    (instance norms, or batch norms in training mode) replaced by :class:`_SharedBatchNorm`."""

    def __init__(self, program: Any, info: ModelInfo, path: os.PathLike[str] | str, device: torch.device) -> None:
        module = program.module()
        norm_ops = (torch.ops.aten.batch_norm.default, torch.ops.aten.instance_norm.default)
        calls = [n for n in module.graph.nodes if n.op == "call_function" and n.target in norm_ops and _training(n)]
        _check_count(len(calls), info, path)
        self.norms: list[_SharedBatchNorm] = []
        for i, node in enumerate(calls):
            norm = _SharedBatchNorm()
            module.add_submodule(f"fastnst_norm{i}", norm)
            node.op, node.target = "call_module", f"fastnst_norm{i}"
            self.norms.append(norm)
        module.graph.lint()
        module.recompile()
        self.module, self.device = module.to(device), device

    def _call(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        xs = x.to(device=self.device, dtype=torch.float32)
        y = self.module(xs) if style is None else self.module(xs, style.reshape(-1).to(self.device, torch.float32))
        return y.to("cpu", torch.float32)

    @torch.inference_mode()
    def fix_stats(self, small: torch.Tensor, style: torch.Tensor | None) -> None:
        for norm in self.norms:
            norm.measure = True
        self._call(small, style)
        for norm in self.norms:
            norm.measure = False

    @torch.inference_mode()
    def run(self, tile: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self._call(tile, style)


def _training(node: Any) -> bool:
    """Whether an ``aten.batch_norm`` / ``aten.instance_norm`` node normalises with its input's own statistics
    (argument 5: ``training`` / ``use_input_stats``; both calls have the same argument order)."""
    flag = node.args[5] if len(node.args) > 5 else node.kwargs.get("training", node.kwargs.get("use_input_stats"))
    return bool(flag)
