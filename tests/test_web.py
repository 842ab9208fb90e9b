"""The web export without a browser: the folder and its sidecar, the runtime's sources (cache, a local copy, a
CDN with integrity hashes) and their refusals, the serve command's headers (the wheel's page files: tests/test_packaging.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fastnst.errors import UserError
from fastnst.tools.export import export_web
from fastnst.tools.export import main as export_main
from fastnst.web import serving
from fastnst.web.runtime import CDN_BASE, INTEGRITY, ORT_WEB_VERSION, Runtime, find_runtime, runtime_files, sri
from fastnst.web.site import PAGE_FILES, describe_model, write_site
from tests.web_helpers import arbitrary_pair, painting_checkpoint, styles_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return styles_model(tmp_path_factory.mktemp("m") / "three.onnx")


def fake_runtime(folder: Path, change: str | None = None) -> Path:
    """A folder that looks like the package but whose files are not the pinned ones (``change``: one file only)."""
    dist = folder / "dist"
    dist.mkdir(parents=True)
    for name in runtime_files():
        (dist / name).write_bytes(b"not the runtime")
    (folder / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": "1.20.0"}))
    return folder


def test_cdn_export_writes_page_sidecar_and_integrity(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    assert export_main(["--ckpt", str(model), "--format", "web", "-o", str(out), "--runtime-cdn"]) == 0
    for name in PAGE_FILES + ("model.onnx", "model.json"):
        assert (out / name).is_file(), name
    assert not (out / "ort").exists()
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "styles" and meta["styles"] == ["ink", "sun", "sea"] and meta["style_input"] == "style_weights"
    assert meta["architecture"] == "johnson" and meta["models"][0] == {"file": "model.onnx", "precision": "fp32",
                                                                       "bytes": (out / "model.onnx").stat().st_size}
    rt = meta["runtime"]
    assert rt["source"] == "cdn" and rt["base"] == CDN_BASE and rt["version"] == ORT_WEB_VERSION
    assert ORT_WEB_VERSION in CDN_BASE
    assert set(rt["backends"]) == {"wasm", "webgpu"}
    for files in rt["backends"].values():
        for f in files.values():
            assert f["integrity"] == INTEGRITY[f["file"]] and f["integrity"].startswith("sha384-")
    assert "__FASTNST_CACHE_VERSION__" not in (out / "sw.js").read_text()
    assert (out.stat().st_mode & 0o055) == 0o055  # readable by a web server's user
    # the page fetches nothing from elsewhere: no http(s) URL in its files
    for name in PAGE_FILES:
        text = (out / name).read_text()
        assert "http://" not in text and "https://" not in text, name


def test_runtime_missing_is_one_sentence(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FASTNST_CACHE", str(tmp_path / "empty-cache"))
    assert export_main(["--ckpt", str(model), "--format", "web", "-o", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fastnst web runtime" in err and "--runtime-cdn" in err
    assert not (tmp_path / "site").exists()


def test_runtime_of_another_version_is_refused(model: Path, tmp_path: Path) -> None:
    fake = fake_runtime(tmp_path / "copy")
    with pytest.raises(UserError, match=r"is not the file of onnxruntime-web 1\.31\.1 \(that copy is version 1\.20\.0\)"):
        find_runtime(fake, None, ("wasm",))
    with pytest.raises(UserError, match="exclude each other"):
        find_runtime(fake, CDN_BASE, ("wasm",))
    with pytest.raises(UserError, match="must be an https"):
        find_runtime(None, "http://example.com/ort/", ("wasm",))
    with pytest.raises(UserError, match="unknown web backend"):
        find_runtime(None, CDN_BASE, ("webgl",))


def test_sri_is_the_browsers_format(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"alert('hi')")
    # printf "alert('hi')" | openssl dgst -sha384 -binary | base64
    assert sri(f) == "sha384-pkiGrqohYBfZ7sU8ryUF95tftmZPtmw2Uaz8EO/sHrYMwUO4YFyF2AXTqs/ziYdP"


def test_refusals_keep_other_files(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    args = ["--ckpt", str(model), "--format", "web", "--runtime-cdn", "-o", str(mine)]
    assert export_main(args) == 2 and "already exists" in capsys.readouterr().err
    assert export_main(args + ["--overwrite"]) == 2 and "not a fastnst web export" in capsys.readouterr().err
    assert (mine / "thesis.txt").read_text() == "precious"
    site = tmp_path / "site"
    assert export_main(["--ckpt", str(model), "--format", "web", "--runtime-cdn", "-o", str(site)]) == 0
    assert export_main(["--ckpt", str(model), "--format", "web", "--runtime-cdn", "-o", str(site), "--overwrite"]) == 0
    assert export_main(["--ckpt", str(model), "--format", "web", "--runtime-cdn", "--fp16", "-o", str(site)]) == 2
    assert export_main(["--ckpt", str(model), "--runtime-cdn", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--format web" in capsys.readouterr().err


def test_a_foreign_onnx_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "foreign.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    with pytest.raises(UserError, match="no fastnst metadata"):
        write_site(tmp_path / "site", path, Runtime(("wasm",), cdn=CDN_BASE))
    assert not (tmp_path / "site").exists()


def test_any_painting_sidecar(tmp_path: Path) -> None:
    model, saved = arbitrary_pair(tmp_path)
    desc, _ = describe_model(model)
    assert desc["kind"] == "arbitrary" and desc["style_input"] == "style_vector" and desc["style_dim"] == 6
    assert [s["name"] for s in desc["saved_styles"]] == list(saved)
    assert desc["encoder"]["painting_size"] == 64 and desc["encoder"]["painting_shape"] == [64, 64]
    assert desc["encoder"]["input"] == "painting"
    (tmp_path / "any.encoder.onnx").unlink()
    with pytest.raises(UserError, match="needs its painting encoder beside it"):
        describe_model(model)


def test_any_painting_export_from_a_checkpoint(tmp_path: Path) -> None:
    """The real export of a network that takes a painting: the encoder beside the model, the saved styles with
    their vectors and the painting's longer side in the sidecar; --int8 of its .onnx is refused in one sentence."""
    import fastnst

    ckpt, names = painting_checkpoint(tmp_path / "any.ckpt", painting_size=96)
    out = tmp_path / "site"
    assert export_main(["--ckpt", str(ckpt), "--format", "web", "--runtime-cdn", "-o", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    info = fastnst.load(ckpt, "cpu").info
    assert meta["kind"] == "arbitrary" and meta["style_input"] == "style_vector" and meta["style_dim"] == 6
    assert [s["name"] for s in meta["saved_styles"]] == names
    assert [s["vector"] for s in meta["saved_styles"]] == info.style_vectors
    assert meta["encoder"]["painting_size"] == 96 and meta["encoder"]["painting_shape"] is None
    assert (out / "model.encoder.onnx").is_file()
    with pytest.raises(UserError, match="calibrated with its encoder"):
        export_web(out / "model.onnx", tmp_path / "again", int8=True, calibration=tmp_path, runtime_cdn=CDN_BASE)


def test_serve_sends_isolation_headers_and_types(model: Path, tmp_path: Path) -> None:
    out = write_site(tmp_path / "site", model, Runtime(("wasm",), cdn=CDN_BASE), log=lambda m: None)
    (out / "x.wasm").write_bytes(b"\0asm")
    with serving(out) as url:
        for name, ctype in (("index.html", "text/html"), ("js/app.js", "text/javascript"), ("x.wasm", "application/wasm"),
                            ("model.json", "application/json")):
            with urllib.request.urlopen(url + name) as r:
                assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
                assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
                assert r.headers["Content-Type"].startswith(ctype), name
    done = subprocess.run([sys.executable, "-m", "fastnst.web", "serve", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not a folder" in done.stderr and "Traceback" not in done.stderr


def test_export_from_a_checkpoint(trained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "site"
    assert export_main(["--ckpt", str(trained_ckpt), "--format", "web", "--runtime-cdn", "-o", str(out)]) == 0
    log = capsys.readouterr().out
    assert "parity vs PyTorch eager" in log and "fastnst web serve" in log
    meta = json.loads((out / "model.json").read_text())
    assert meta["exported_from"] == trained_ckpt.name and len(meta["styles"]) == 1 and meta["style_input"] is None


def test_local_runtime_is_copied(model: Path, tmp_path: Path) -> None:
    try:
        runtime = find_runtime(None, None, ("wasm",))
    except UserError:
        pytest.skip("the onnxruntime-web cache is empty (make browser fills it); the browser tests cover it too")
    out = write_site(tmp_path / "site", model, runtime, log=lambda m: None)
    for name in runtime_files(("wasm",)):
        assert sri(out / "ort" / name) == INTEGRITY[name]
    assert not (out / "ort" / "ort.webgpu.min.mjs").exists()
    meta: dict[str, Any] = json.loads((out / "model.json").read_text())
    assert meta["runtime"]["source"] == "local" and meta["runtime"]["base"] == "ort/"
