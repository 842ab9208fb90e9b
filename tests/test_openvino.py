"""OpenVINO as a second runtime for exported .onnx models (issue 20.2): parity with eager and with onnxruntime,
the one-sentence failures, a multi-style model. Skipped where the optional package is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastnst.formats.checkpoint import load_network
from fastnst.formats.openvino import check_openvino
from fastnst.tools.export import export_checkpoint

from .conftest import make_photo
from .test_infer import infer_main

pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'fastnst[openvino]'")


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_openvino_runs_an_export_like_onnxruntime(trained_ckpt: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    lines: list[str] = []
    onnx = export_checkpoint(trained_ckpt, tmp_path / "m.onnx", log=lines.append)
    assert any(line.startswith("fastnst: OpenVINO parity vs PyTorch eager") for line in lines), lines
    net, _ = load_network(trained_ckpt)
    results = check_openvino(onnx, net)
    assert results and all(d < 1e-4 for _, d in results)  # fp32: float rounding only, never bf16's 1e-2
    photo = tmp_path / "p.png"
    make_photo(2, (52, 44)).save(photo)
    assert infer_main("--ckpt", onnx, photo, "-o", tmp_path / "ort.png") == 0
    assert infer_main("--ckpt", onnx, photo, "-o", tmp_path / "ov.png", "--runtime", "openvino") == 0
    assert np.abs(_pixels(tmp_path / "ort.png") - _pixels(tmp_path / "ov.png")).max() <= 1
    capsys.readouterr()
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "x.png", "--runtime", "openvino") == 2
    err = capsys.readouterr().err
    assert "--runtime openvino runs .onnx models; export" in err and not (tmp_path / "x.png").exists()


def test_openvino_runs_every_style_of_a_multi_style_export(multi_ckpt: Path, tmp_path: Path) -> None:
    onnx = export_checkpoint(multi_ckpt, tmp_path / "multi.onnx", log=lambda s: None)
    net, info = load_network(multi_ckpt)
    assert all(d < 1e-4 for _, d in check_openvino(onnx, net, info.num_styles))
    photo = tmp_path / "p.png"
    make_photo(4, (40, 36)).save(photo)
    for runtime in ("onnxruntime", "openvino"):
        assert infer_main("--ckpt", onnx, photo, "-o", tmp_path / runtime, "--runtime", runtime, "--style",
                          f"{info.styles[0]}=0.5,{info.styles[1]}=0.5") == 0
    a, b = (_pixels(next((tmp_path / r).glob("*.png"))) for r in ("onnxruntime", "openvino"))
    assert np.abs(a - b).max() <= 1
