"""fastnst.formats: typed metadata in every format, files written by fastnst 0.1 (format 1), pytorch/examples
``fast_neural_style`` models, and ``fastnst.info`` on all of them (hostile files included)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastnst.errors import UserError
from fastnst.formats import ModelInfo, TrainingInfo
from fastnst.formats.metadata import FORMAT_VERSION

from .conftest import ROOT, make_photo

FIXTURE = ROOT / "tests" / "fixtures" / "v1"


# --- typed metadata ------------------------------------------------------------------------------

def test_model_info_round_trips_and_refuses_what_it_cannot_read() -> None:
    info = ModelInfo(architecture="johnson", config={"channels": [8, 16, 16], "num_styles": 2}, styles=["a", "b"],
                     training=TrainingInfo(style_images=["a.jpg", "b.jpg"], style_size=256, image_size=128,
                                           global_step=7, loss={"vgg_weights": "random"}))
    again = ModelInfo.from_json(info.to_json())
    assert again == info and again.num_styles == 2 and again.training.vgg_weights == "random"
    assert again.format_version == FORMAT_VERSION
    with pytest.raises(UserError, match="written by a newer fastnst"):
        ModelInfo.from_dict({**info.to_dict(), "format_version": FORMAT_VERSION + 1})
    with pytest.raises(UserError, match="incomplete fastnst metadata"):
        ModelInfo.from_dict({"format_version": FORMAT_VERSION, "architecture": "johnson"})
    with pytest.raises(UserError, match="not valid JSON"):
        ModelInfo.from_json("{nope")


# --- a checkpoint written by fastnst 0.1 -----------------------------------------------------------

def _fixture_input() -> torch.Tensor:
    from fastnst.media.image import pil_to_tensor

    return pil_to_tensor(Image.open(FIXTURE / "input.png").convert("RGB")).unsqueeze(0)


def test_format_1_checkpoint_loads_and_stylizes_identically() -> None:
    import fastnst

    model = fastnst.load(FIXTURE / "tiny.ckpt", "cpu")
    info = model.info
    assert info.format_version == 1 and info.architecture == "johnson" and info.styles == ["stripes"]
    assert info.config == {"channels": [8, 16, 16], "num_residual": 1, "upsample": "nearest", "num_styles": 1}
    assert info.training.global_step == 2 and info.training.loss["gram_norm"] == "hw"
    expected = torch.from_numpy(np.load(FIXTURE / "expected.npy"))
    # what 0.1 computed, to float rounding: the upsampling is now computed in its sub-pixel form (same arithmetic)
    assert (model(_fixture_input()) - expected).abs().max() < 1e-6


def test_format_1_checkpoint_exports_and_describes(tmp_path: Path) -> None:
    from fastnst.tools.export import export_checkpoint
    from fastnst.tools.info import describe_model

    out = export_checkpoint(FIXTURE / "tiny.ckpt", tmp_path / "old.onnx", log=lambda s: None)
    import fastnst

    exported = fastnst.load(out, "cpu")
    assert exported.info.format_version == FORMAT_VERSION and exported.info.exported_from == "tiny.ckpt"
    expected = torch.from_numpy(np.load(FIXTURE / "expected.npy"))
    assert (exported(_fixture_input()) - expected).abs().max() < 1e-4
    d = describe_model(FIXTURE / "tiny.ckpt")
    assert d["format"] == "ckpt" and d["model"]["format_version"] == 1 and d["resumable"]


def test_format_1_checkpoint_resumes(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    """A run of fastnst 0.1 continues under today's code: style targets, norm shapes and Adam's moments are
    upgraded on load, and the step count goes on."""
    from fastnst.formats.checkpoint import load_network, read_checkpoint
    from fastnst.training import fit

    from .conftest import tiny_config

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE / "tiny.ckpt", run / "checkpoints" / "last.ckpt")
    cfg = tiny_config(photo_dir, style_path, ckpt_path="last", **{"trainer.max_steps": 4})
    result = fit(cfg, run)
    assert result.global_step == 4
    ckpt = read_checkpoint(result.last_checkpoint)
    assert ckpt["fastnst"]["format_version"] == FORMAT_VERSION
    net, info = load_network(result.last_checkpoint)
    assert info.training.global_step == 4 and info.styles == ["stripes"]
    assert all(torch.isfinite(p).all() for p in net.parameters())


# --- pytorch/examples fast_neural_style ------------------------------------------------------------
# Its network, written here to that project's key layout and forward (pixels 0-255 in, 0-255 out).

class _ExConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class _ExUpConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class _ExResidual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.in1 = _ExConv(c, c, 3, 1), nn.InstanceNorm2d(c, affine=True)
        self.conv2, self.in2 = _ExConv(c, c, 3, 1), nn.InstanceNorm2d(c, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.in2(self.conv2(self.relu(self.in1(self.conv1(x))))) + x


class ExamplesNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.in1 = _ExConv(3, 32, 9, 1), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = _ExConv(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = _ExConv(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (_ExResidual(128) for _ in range(5))
        self.deconv1, self.in4 = _ExUpConv(128, 64, 3, 1, 2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = _ExUpConv(64, 32, 3, 1, 2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = _ExConv(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


@pytest.fixture(scope="module")
def examples_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model saved the way pytorch/examples saves one (``torch.save(model.state_dict(), path)``), with
    trained-looking norms, plus the running statistics that older files (candy, mosaic ...) carry."""
    torch.manual_seed(3)
    net = ExamplesNet().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2.0)
        net.deconv3.conv2d.weight.mul_(40.0)  # outputs spread over 0-255, as a trained model's do
        net.deconv3.conv2d.bias.fill_(127.0)
    state = net.state_dict()
    for i in range(1, 6):  # what old InstanceNorm2d saved; pytorch/examples deletes these keys before loading
        state[f"in{i}.running_mean"] = torch.zeros(state[f"in{i}.weight"].shape)
        state[f"in{i}.running_var"] = torch.ones(state[f"in{i}.weight"].shape)
    path = tmp_path_factory.mktemp("pth") / "mosaic.pth"
    torch.save(state, path)
    return path


def _examples_eval(pth: Path, photo: Path) -> np.ndarray:
    """pytorch/examples' ``stylize``: ToTensor * 255, the network, clamp(0, 255), astype uint8."""
    state = torch.load(pth, weights_only=True)
    for k in list(state):
        if re.search(r"in\d+\.running_(mean|var)$", k):
            del state[k]
    net = ExamplesNet().eval()
    net.load_state_dict(state)
    x = torch.from_numpy(np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)
    return y[0].clamp(0, 255).numpy().transpose(1, 2, 0).astype("uint8")


def test_pytorch_examples_model_matches_its_own_eval_in_infer_load_export_info(examples_pth: Path,
                                                                                tmp_path: Path) -> None:
    import fastnst
    from fastnst.tools.export import export_checkpoint
    from fastnst.tools.info import describe_model

    from .test_infer import infer_main

    photo = tmp_path / "photo.png"
    make_photo(11, (96, 72)).save(photo)
    theirs = _examples_eval(examples_pth, photo).astype(np.int16)
    assert theirs.std() > 20  # a real image, not a clamped flat one: the comparison means something

    assert infer_main("--ckpt", examples_pth, photo, "-o", tmp_path / "ours.png", "-q") == 0
    ours = np.asarray(Image.open(tmp_path / "ours.png"), dtype=np.int16)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1

    model = fastnst.load(examples_pth, "cpu")
    assert model.info.architecture == "pytorch_examples" and model.styles == ["mosaic"]
    api = np.asarray(model.stylize(Image.open(photo)), dtype=np.int16)
    assert np.abs(api - theirs).max() <= 1

    for fmt in ("onnx", "pt2"):
        out = export_checkpoint(examples_pth, tmp_path / f"mosaic.{fmt}", log=lambda s: None)
        assert infer_main("--ckpt", out, photo, "-o", tmp_path / f"{fmt}.png", "-q") == 0
        exported = np.asarray(Image.open(tmp_path / f"{fmt}.png"), dtype=np.int16)
        assert np.abs(exported - theirs).max() <= 1, fmt
    d = describe_model(examples_pth)
    assert d["format"] == "pth" and d["model"]["architecture"] == "pytorch_examples"
    assert d["parameters"] == sum(p.numel() for p in ExamplesNet().parameters())


def test_pytorch_examples_model_is_evaluated(examples_pth: Path, tmp_path: Path, style_path: Path,
                                             photo_dir: Path) -> None:
    from fastnst.tools.evaluate import evaluate

    report = evaluate(examples_pth, style_path, photo_dir, size=48, preset="johnson", vgg_weights="random",
                      device="cpu")
    assert report["count"] == len(list(photo_dir.glob("*.jpg"))) and report["summary"]["model"]["style"]["mean"] > 0


def test_unknown_bare_state_dict_is_one_sentence(tmp_path: Path) -> None:
    import fastnst

    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UserError, match="bare state dict of an unknown network"):
        fastnst.load(path, "cpu")


# --- fastnst.info ----------------------------------------------------------------------------------

def test_info_cli_on_every_format(trained_ckpt: Path, tmp_path: Path, capsys) -> None:
    from fastnst.tools.export import export_checkpoint
    from fastnst.tools.info import main

    onnx_path = export_checkpoint(trained_ckpt, tmp_path / "m.onnx", log=lambda s: None)
    assert main([str(trained_ckpt)]) == 0
    text = capsys.readouterr().out
    for expected in ("fastnst training checkpoint", "architecture   johnson", "styles         1: stripes",
                     "on 32 px crops", "VGG19 weights  random", "parameters", "resumable      yes"):
        assert expected in text, text
    assert main([str(onnx_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "onnx" and d["precision"] == "fp32" and d["opset"]["ai.onnx"] >= 17
    assert d["inputs"] == [{"name": "image", "type": "float", "shape": ["batch", 3, "height", "width"]}]
    assert d["model"]["styles"] == ["stripes"] and d["model"]["exported_from"] == trained_ckpt.name
    assert d["bytes"] == onnx_path.stat().st_size


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("name, content, expect", [
    ("empty.ckpt", b"", "is empty"),
    ("junk.onnx", b"\x08\x01junk" * 50, "not a valid ONNX model"),
    ("junk.pt2", b"PK\x03\x04 not really a zip", "corrupt or not a torch.export"),
    ("image.png", b"\x89PNG", "unknown file type"),
])
def test_info_on_hostile_and_broken_files_is_one_sentence(name: str, content: bytes, expect: str, tmp_path: Path,
                                                          capsys) -> None:
    from fastnst.tools.info import main

    path = tmp_path / name
    path.write_bytes(content)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1


def test_info_never_runs_code_in_a_model_file(tmp_path: Path, capsys) -> None:
    from fastnst.tools.info import main

    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "fastnst": {"network": {}}, "payload": _Evil(marker)}, path)
    assert main([str(path)]) == 2
    assert "was refused" in capsys.readouterr().err and not marker.exists()


def _foreign_onnx(path: Path, inputs: list[str], output: str) -> Path:
    """An ONNX model fastnst did not write: a bare Relu of its first input (no fastnst metadata)."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 3, "height", "width"]
    graph = helper.make_graph([helper.make_node("Relu", [inputs[0]], [output])], "foreign",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in inputs],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("inputs, output", [(["x"], "y"), (["image"], "stylized")])
def test_a_foreign_onnx_model_is_refused_when_loaded(inputs: list[str], output: str, tmp_path: Path) -> None:
    """A bare Relu (named like anything, or exactly like fastnst's contract) is not a style network: refused by
    load() in one sentence, not per image later (issue 21.6); fastnst info still describes it."""
    from fastnst import load
    from fastnst.tools.info import describe_model

    path = _foreign_onnx(tmp_path / "foreign.onnx", inputs, output)
    with pytest.raises(UserError) as err:
        load(path, "cpu")
    message = str(err.value)
    assert message.startswith(f"model {path} has no fastnst metadata") and "fastnst export" in message
    assert f"'{inputs[0]}'" in message and "\n" not in message
    assert describe_model(path)["inputs"][0]["name"] == inputs[0]


def test_an_onnx_model_whose_inputs_contradict_its_metadata_is_refused(trained_ckpt: Path, tmp_path: Path) -> None:
    import onnx

    from fastnst import load
    from fastnst.formats.checkpoint import load_network
    from fastnst.formats.onnx import export_onnx, metadata_props

    net, info = load_network(trained_ckpt)
    path = _foreign_onnx(tmp_path / "renamed.onnx", ["x"], "y")
    proto = onnx.load(str(path))
    for key, value in metadata_props(info).items():  # fastnst's metadata on a graph with another interface
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    with pytest.raises(UserError, match=r"has inputs \['x'\] and outputs \['y'\]; a fastnst ONNX model of its kind "
                                        r"has \['image'\] and \['stylized'\]"):
        load(path, "cpu")
    good = export_onnx(net, tmp_path / "good.onnx", info)
    assert load(good, "cpu")(torch.rand(1, 3, 20, 24)).shape == (1, 3, 20, 24)


def test_a_torch_export_program_without_fastnst_metadata_is_refused(tmp_path: Path) -> None:
    from fastnst import load

    class Clamp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clamp(0, 1)

    path = tmp_path / "foreign.pt2"
    torch.export.save(torch.export.export(Clamp(), (torch.rand(1, 3, 8, 8),)), path)
    with pytest.raises(UserError, match=r"^model \S+foreign.pt2 has no fastnst metadata"):
        load(path, "cpu")


def test_refused_pickles_are_one_whole_sentence(trained_ckpt: Path, tmp_path: Path, capsys) -> None:
    """A .pt2 with a pickle payload: the sentence is whole, naming what it would run (issue 21.10); a plain-pickle
    .ckpt: no torch warning lines before it."""
    import io
    import pickle
    import subprocess
    import sys
    import zipfile

    from fastnst.formats.checkpoint import load_network
    from fastnst.formats.pt2 import export_pt2, read_pt2

    marker = tmp_path / "pwned.txt"
    net, info = load_network(trained_ckpt)
    good = export_pt2(net, tmp_path / "good.pt2", info)
    payload = io.BytesIO()
    torch.save(_Evil(marker), payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, payload.getvalue() if n.endswith("sample_inputs/model.pt") else zin.read(n))
    with pytest.raises(UserError) as err:
        read_pt2(evil)
    assert re.fullmatch(rf"model {re.escape(str(evil))} was refused: it would run code or build objects \([\w.]+\) "
                        r"instead of holding plain data; only load models you trust and that fastnst wrote", str(err.value))
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}, protocol=4))
    proc = subprocess.run([sys.executable, "-m", "fastnst", "info", str(plain)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"fastnst: error: model {plain} was refused: it would run code or build objects (a pickle instruction) "
        f"instead of holding plain data; only load files that hold weights"]
    assert not marker.exists()


def test_info_counts_the_same_parameters_in_every_format(tmp_path: Path) -> None:
    """One network, one parameter count: .ckpt-like, .onnx, int8 .onnx and .pt2 of a mobile network agree, and it is
    the network's learnable parameters (issue 21.13); int8 scales and folded constants are not parameters."""
    from fastnst.formats.onnx import export_onnx, quantize_int8
    from fastnst.formats.pt2 import export_pt2
    from fastnst.models import create_model
    from fastnst.tools.info import describe_model, format_description

    net = create_model("mobile", channels=[8, 16], num_residual=1).eval()
    expected = sum(p.numel() for p in net.parameters())
    info = ModelInfo(net.architecture, net.config(), ["s"])
    onnx_path = export_onnx(net, tmp_path / "m.onnx", info)
    int8 = quantize_int8(onnx_path, tmp_path / "m.int8.onnx", [np.random.rand(1, 3, 32, 32).astype(np.float32)])
    pt2 = export_pt2(net, tmp_path / "m.pt2", info)
    import onnx

    stored = sum(int(np.prod(t.dims)) for t in onnx.load(str(int8)).graph.initializer)
    assert stored != expected  # what a naive count of the int8 file would say
    for path in (onnx_path, int8, pt2):
        d = describe_model(path)
        assert (d["parameters"], d["parameters_counted"]) == (expected, "network"), path
        assert f"parameters     {expected:,}\n" in format_description(d) + "\n"
