"""Helpers of the web tests: tiny fastnst ONNX models with random weights (made in seconds through the registry),
a hand-made any-painting pair that follows the agreed contract, and the page driven in a real Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fastnst import ModelInfo, create_model
from fastnst.formats.onnx import export_onnx
from fastnst.models import StyleNorm


def styles_model(path: Path, arch: str = "johnson", styles: tuple[str, ...] = ("ink", "sun", "sea"), seed: int = 0) -> Path:
    """A tiny fastnst ONNX model of ``arch`` whose per-style norm parameters are random, so each style differs."""
    torch.manual_seed(seed)
    config: dict[str, Any] = ({"channels": [8, 16, 32], "num_residual": 1, "upsample": "nearest"} if arch == "johnson"
                              else {"channels": [8, 16], "num_residual": 1})
    config["num_styles"] = len(styles)
    net = create_model(arch, **config).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, StyleNorm):
                m.weight.normal_(1.0, 0.5)
                m.bias.normal_(0.0, 0.5)
    return export_onnx(net, path, ModelInfo(architecture=arch, config=config, styles=list(styles)))


def photo(path: Path, size: tuple[int, int] = (128, 96), seed: int = 0) -> Path:
    """A photo-like PNG: smooth colour fields plus a little noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = Image.fromarray((rng.random((4, 5, 3)) * 255).astype("uint8")).resize((w, h), Image.BICUBIC)
    arr = np.asarray(coarse).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    Image.fromarray(arr.clip(0, 255).astype("uint8")).save(path)
    return path


# --- a hand-made any-painting pair (issue 17's contract) ---------------------------------------------------------
PAINTING = 64
DIM = 6


class Transformer(nn.Module):
    """image [1, 3, H, W] + style_vector [D] -> stylized, clamped."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.film = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1), nn.Linear(DIM, 16)

    def forward(self, image: torch.Tensor, style_vector: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(style_vector).reshape(2, 1, 8, 1, 1)
        return torch.sigmoid(self.conv2(torch.relu(self.conv1(image) * (1 + scale) + shift))).clamp(0, 1)


class Encoder(nn.Module):
    """painting [1, 3, 64, 64] -> style_vector [D]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, DIM, 5, stride=2)

    def forward(self, painting: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(painting).mean(dim=(0, 2, 3)) * 3)


def _save(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], output: str,
          dynamic: Any, props: dict[str, str]) -> None:
    import onnx

    with torch.no_grad():
        program = torch.onnx.export(model.eval(), args, dynamo=True, input_names=inputs, output_names=[output],
                                    dynamic_shapes=dynamic, verbose=False)
    proto = program.model_proto
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))


def arbitrary_pair(folder: Path, seed: int = 0) -> tuple[Path, dict[str, list[float]]]:
    """``folder/any.onnx`` and ``folder/any.encoder.onnx`` with two saved styles; returns the model and the styles."""
    from torch.export import Dim

    torch.manual_seed(seed)
    saved = {"dots": torch.randn(DIM).tolist(), "waves": torch.randn(DIM).tolist()}
    info = ModelInfo(architecture="handmade-any", config={}, styles=list(saved))
    model = folder / "any.onnx"
    _save(Transformer(), (torch.rand(1, 3, 40, 48), torch.randn(DIM)), model, ["image", "style_vector"], "stylized",
          ({2: Dim("height", min=5, max=4096), 3: Dim("width", min=5, max=4096)}, {}),
          {"fastnst": info.to_json(), "style_vectors": json.dumps(saved)})
    _save(Encoder(), (torch.rand(1, 3, PAINTING, PAINTING),), folder / "any.encoder.onnx", ["painting"], "style_vector",
          None, {"painting_size": str(PAINTING)})
    return model, saved


def painting_checkpoint(path: Path, seed: int = 0, painting_size: int = 64) -> tuple[Path, list[str]]:
    """A checkpoint of a tiny network that takes any painting (issue 17's johnson + style encoder, random weights)
    with two saved styles, written as training writes checkpoints; returns it and the saved style names."""
    from fastnst.formats.checkpoint import NETWORK_PREFIX, write_info

    torch.manual_seed(seed)
    net = create_model("johnson", channels=[8, 16, 32], num_residual=1, upsample="nearest", style_dim=DIM,
                       encoder={"channels": [8, 16], "hidden": 16, "painting_size": painting_size}).eval()
    with torch.no_grad():  # a livelier style map than the initial one, so that vectors visibly matter
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    names = ["dots", "waves"]
    info = ModelInfo(architecture="johnson", config=net.config(), styles=names,
                     style_vectors=[torch.randn(DIM).tolist() for _ in names])
    checkpoint: dict[str, Any] = {"state_dict": {NETWORK_PREFIX + k: v for k, v in net.state_dict().items()}}
    write_info(checkpoint, info)
    torch.save(checkpoint, path)
    return path, names
