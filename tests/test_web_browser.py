"""The web page in a real Chromium (Debian's chromium driven by Playwright): its pixels against Python
onnxruntime on the same model, styles, strength and colour, the webcam on Chromium's fake camera, bad input,
offline use, an any-painting model, the CDN runtime with integrity hashes. Skipped, with the reason, only where
there is no chromium (``make browser`` installs it and fills the runtime cache)."""

from __future__ import annotations

import functools
import http.server
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import fastnst
from fastnst.errors import UserError
from fastnst.web import serving
from fastnst.web.browser import chromium, find_chromium
from fastnst.web.runtime import BACKEND_FILES, cache_dir, fill_cache, find_runtime
from fastnst.web.site import write_site
from tests.web_helpers import PAINTING, arbitrary_pair, painting_checkpoint, photo, styles_model

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="no chromium on this machine (make browser installs "
                                "Debian's chromium; it could not be installed here)")
TOL = 3  # of 255: the page against Python onnxruntime


@pytest.fixture(scope="module")
def runtime() -> Any:
    try:
        return find_runtime(None, None, ("wasm",))
    except UserError:
        try:
            fill_cache()
        except UserError as exc:
            pytest.fail(f"the onnxruntime-web cache {cache_dir()} is empty and npm could not fill it ({exc}); run make browser")
        return find_runtime(None, None, ("wasm",))


@pytest.fixture(scope="module")
def browser() -> Any:
    with chromium() as context:
        yield context


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, runtime: Any) -> Path:
    src = tmp_path_factory.mktemp("model")
    model = styles_model(src / "three.onnx")
    both = find_runtime(runtime.folder, None, ("wasm", "webgpu"))  # the default export: the page picks the backend
    out = write_site(tmp_path_factory.mktemp("sites") / "three", model, both, log=lambda m: None)
    photo(out / "photo.png")
    photo(out / "other.png", (72, 100), seed=3)
    return out


def open_page(browser: Any, url: str, states: tuple[str, ...] = ("done", "error")) -> Any:
    page = browser.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    wait_state(page, states)
    return page


def wait_state(page: Any, states: tuple[str, ...], timeout: float = 60_000) -> str:
    page.wait_for_function(f"{list(states)!r}.includes(document.body.dataset.state)", timeout=timeout)
    return page.evaluate("document.body.dataset.state")


def canvas(page: Any) -> np.ndarray:
    w, h, data = page.evaluate("""() => { const c = document.getElementById('result');
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }""")
    return np.array(data, dtype=np.uint8).reshape(h, w, 4)[..., :3]


def python_result(model: Path, image: Path, **options: Any) -> np.ndarray:
    return np.asarray(fastnst.load(model, "cpu").stylize(Image.open(image).convert("RGB"), **options))


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_page_matches_python_and_styles_differ(browser: Any, site: Path) -> None:
    with serving(site) as url:
        requests: list[str] = []

        def record(request: Any) -> None:
            requests.append(request.url)

        browser.on("request", record)
        page = open_page(browser, url + "index.html?image=photo.png&style=sun")
        assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#message")
        sun = canvas(page)
        assert sun.shape == (96, 128, 3)
        assert max_diff(sun, python_result(site / "model.onnx", site / "photo.png", style="sun")) <= TOL
        # no WebGPU adapter in this headless Chromium: the default export falls back to the wasm build
        assert "WebAssembly" in page.inner_text("#backend") and "2 threads" in page.inner_text("#backend")
        # the download is the canvas, as a PNG
        page.wait_for_function("document.getElementById('download').getAttribute('aria-disabled') === 'false'")
        png = page.evaluate("""async () => { const a = document.getElementById('download');
            const b = new Uint8Array(await (await fetch(a.href)).arrayBuffer()); return [a.download, Array.from(b)]; }""")
        assert png[0] == "photo-sun.png"
        assert max_diff(np.asarray(Image.open(io.BytesIO(bytes(png[1]))).convert("RGB")), sun) == 0
        # the page fetched nothing but its own folder
        browser.remove_listener("request", record)
        assert requests and all(u.startswith(url) or u.startswith("blob:") for u in requests), requests
        page.close()
        page = open_page(browser, url + "index.html?image=photo.png&backend=webgpu")
        assert page.evaluate("document.body.dataset.state") == "error"
        assert "no WebGPU adapter; use backend=wasm" in page.inner_text("#message")
        page.close()
        page = open_page(browser, url + "index.html?image=photo.png&style=sea")
        sea = canvas(page)
        assert max_diff(sea, python_result(site / "model.onnx", site / "photo.png", style="sea")) <= TOL
        assert np.abs(sea.astype(int) - sun.astype(int)).mean() > 10  # another style changes the pixels
        # a blend from the URL and from the sliders' parser, as infer.py --style a=0.7,b=0.3
        page.close()
        page = open_page(browser, url + "index.html?image=photo.png&style=ink%3D0.7%2Csea%3D0.3")
        blend = python_result(site / "model.onnx", site / "photo.png", style="ink=0.7,sea=0.3")
        assert max_diff(canvas(page), blend) <= TOL
        # the blend sliders: ink and sea at the same weight, sun at 0
        page.click("#blend summary")
        page.evaluate("""() => { const s = document.querySelectorAll('#blend-sliders input');
            [0.8, 0, 0.8].forEach((v, i) => { s[i].value = v; }); s[2].dispatchEvent(new Event('change')); }""")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Done: ink+sea')")
        half = python_result(site / "model.onnx", site / "photo.png", style="ink=0.5,sea=0.5")
        assert max_diff(canvas(page), half) <= TOL
        assert page.errors == []
        page.close()


def test_strength_and_preserve_colour_match_python(browser: Any, site: Path) -> None:
    with serving(site) as url:
        page = open_page(browser, url + "index.html?image=other.png&style=ink&strength=0.6&preserve=1")
        want = python_result(site / "model.onnx", site / "other.png", style="ink", strength=0.6, preserve_color=True)
        got = canvas(page)
        assert max_diff(got, want) <= TOL
        plain = python_result(site / "model.onnx", site / "other.png", style="ink")
        assert np.abs(got.astype(int) - plain.astype(int)).mean() > 5  # the options did something
        # the sliders re-compose without a new run: strength 0 gives the photo back
        page.evaluate("() => { const s = document.getElementById('strength'); s.value = 0; s.dispatchEvent(new Event('input')); }")
        assert max_diff(canvas(page), np.asarray(Image.open(site / "other.png").convert("RGB"))) <= 1
        page.close()


def test_mobile_network_matches_python(browser: Any, tmp_path: Path, runtime: Any) -> None:
    model = styles_model(tmp_path / "mobile.onnx", arch="mobile", styles=("mono",), seed=1)
    out = write_site(tmp_path / "mobile", model, runtime, log=lambda m: None)
    photo(out / "p.png", (100, 76), seed=5)
    with serving(out) as url:
        page = open_page(browser, url + "index.html?image=p.png")
        assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#message")
        assert max_diff(canvas(page), python_result(model, out / "p.png")) <= TOL
        assert page.is_hidden("#styles-group")  # one style: no picker
        page.close()


def test_large_photo_is_capped_with_a_note_at_the_photos_size(browser: Any, site: Path) -> None:
    photo(site / "big.png", (640, 480), seed=2)
    with serving(site) as url:
        page = open_page(browser, url + "index.html?image=big.png&style=ink&max=512")
        assert page.evaluate("document.body.dataset.state") == "done"
        assert canvas(page).shape == (480, 640, 3)
        assert "512×384" in page.inner_text("#note") and "640×480" in page.inner_text("#note")
        page.close()


def test_webcam_produces_frames_and_screenshot_is_not_blank(browser: Any, site: Path, tmp_path: Path) -> None:
    with serving(site) as url:
        page = open_page(browser, url + "index.html", ("ready", "error"))
        page.click("#webcam")
        page.wait_for_function("Number(document.body.dataset.frames || 0) >= 3", timeout=60_000)
        assert page.evaluate("document.body.dataset.state") == "webcam"
        frame = canvas(page)
        assert frame.shape[1] == 256 and frame.std() > 5
        assert "fps" in page.inner_text("#fps") and float(page.evaluate("document.body.dataset.fps")) > 0
        page.click("#webcam")
        shot = tmp_path / "shot.png"
        page.screenshot(path=str(shot))
        arr = np.asarray(Image.open(shot).convert("RGB")).astype(float)
        assert arr.std() > 20 and len(np.unique(arr.reshape(-1, 3)[::50], axis=0)) > 100
        page.close()


def test_bad_input_gives_a_message_and_the_page_keeps_working(browser: Any, site: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    fake_png = tmp_path / "broken.png"
    fake_png.write_bytes(b"\x89PNG not really")
    huge = tmp_path / "huge.png"
    Image.new("RGB", (9000, 5000), (120, 90, 60)).save(huge, compress_level=1)
    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save_model(helper.make_model(graph), str(foreign))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 10)
    cases = [("#photo-file", text, "is not an image"), ("#photo-file", fake_png, "not an image this browser can read"),
             ("#photo-file", huge, "too large"), ("#model-file", foreign, "not fastnst's"),
             ("#model-file", garbage, "not an ONNX model")]
    with serving(site) as url:
        page = open_page(browser, url + "index.html", ("ready", "error"))
        for selector, path, words in cases:
            page.set_input_files(selector, str(path))
            assert wait_state(page, ("error",)) == "error"
            assert words in page.inner_text("#message"), (path.name, page.inner_text("#message"))
            page.set_input_files("#photo-file", str(site / "photo.png"))  # and it still works
            assert wait_state(page, ("done",)) == "done"
            assert page.is_hidden("#message")
        assert max_diff(canvas(page), python_result(site / "model.onnx", site / "photo.png", style="ink")) <= TOL
        # a photo dropped on the drop zone, as a person drags one from their files
        page.evaluate("""async () => { const blob = await (await fetch('other.png')).blob();
            const dt = new DataTransfer(); dt.items.add(new File([blob], 'other.png', { type: 'image/png' }));
            document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true })); }""")
        page.wait_for_function("document.getElementById('result').height === 100 && document.body.dataset.state === 'done'")
        assert max_diff(canvas(page), python_result(site / "model.onnx", site / "other.png", style="ink")) <= TOL
        page.close()


def test_works_offline_once_loaded(browser: Any, site: Path) -> None:
    with serving(site) as url:
        page = open_page(browser, url + "index.html?image=photo.png&style=ink")
        assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")  # installed and active
        page.reload()  # under the service worker's control now, everything fetched again (and cached)
        wait_state(page, ("done", "error"))
        assert page.evaluate("navigator.serviceWorker.controller !== null")
        before = canvas(page)
        browser.set_offline(True)
        try:
            page.reload()
            assert wait_state(page, ("done", "error")) == "done", page.inner_text("#message")
            assert max_diff(canvas(page), before) == 0
        finally:
            browser.set_offline(False)
        page.close()


def test_any_painting_model(browser: Any, tmp_path: Path, runtime: Any) -> None:
    model, saved = arbitrary_pair(tmp_path)
    out = write_site(tmp_path / "any", model, runtime, log=lambda m: None)
    photo(out / "p.png", (90, 70), seed=7)
    painting = photo(out / "painting.png", (PAINTING, PAINTING), seed=8)  # the encoder's size: no resampling
    net, enc = ort.InferenceSession(str(model)), ort.InferenceSession(str(tmp_path / "any.encoder.onnx"))
    x = np.asarray(Image.open(out / "p.png"), np.float32).transpose(2, 0, 1)[None] / 255

    def expected(vector: np.ndarray) -> np.ndarray:
        y = net.run(None, {"image": x, "style_vector": vector.astype(np.float32)})[0][0]
        return (y.clip(0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)

    with serving(out) as url:
        page = open_page(browser, url + "index.html?image=p.png&style=waves")
        assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#message")
        assert max_diff(canvas(page), expected(np.array(saved["waves"]))) <= TOL
        assert page.is_visible("#painting-drop")
        page.set_input_files("#painting-file", str(painting))
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Done: painting')")
        p = np.asarray(Image.open(painting), np.float32).transpose(2, 0, 1)[None] / 255
        vector = enc.run(None, {"painting": p})[0]
        got = canvas(page)
        assert max_diff(got, expected(vector)) <= TOL
        assert np.abs(got.astype(int) - expected(np.array(saved["waves"])).astype(int)).mean() > 1
        page.close()


def test_any_painting_model_exported_by_fastnst(browser: Any, tmp_path: Path, runtime: Any) -> None:
    """A network that takes any painting (issue 17), exported by `fastnst export --format web` from its checkpoint:
    a saved style and a painting chosen on the page match fastnst's Python API on the exported model."""
    from fastnst.tools.export import main as export_main

    ckpt, names = painting_checkpoint(tmp_path / "any.ckpt")
    out = tmp_path / "site"
    assert export_main(["--ckpt", str(ckpt), "--format", "web", "-o", str(out), "--runtime-dir", str(runtime.folder),
                        "--web-backends", "wasm"]) == 0
    assert (out / "model.encoder.onnx").is_file()
    photo(out / "p.png", (88, 66), seed=11)
    painting = photo(out / "painting.png", (64, 40), seed=12)  # longer side = the encoder's painting size: no resampling
    model = fastnst.load(out / "model.onnx", "cpu")
    with serving(out) as url:
        page = open_page(browser, url + f"index.html?image=p.png&style={names[1]}")
        assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#message")
        saved = canvas(page)
        assert max_diff(saved, np.asarray(model.stylize(Image.open(out / "p.png"), style=names[1]))) <= TOL
        assert [c.inner_text() for c in page.query_selector_all("#style-chips .chip")] == names
        page.set_input_files("#painting-file", str(painting))
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Done: painting')")
        got = canvas(page)
        assert max_diff(got, np.asarray(model.stylize(Image.open(out / "p.png"), style_image=painting))) <= TOL
        assert np.abs(got.astype(int) - saved.astype(int)).mean() > 1  # the painting's vector is another style
        assert page.errors == []
        page.close()


class CorsHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_cdn_runtime_is_checked_by_integrity(browser: Any, tmp_path: Path, runtime: Any) -> None:
    """A CDN export loads the runtime from another origin (a local stand-in for the CDN) with its integrity hashes;
    a changed file there is refused with a message on the page."""
    cdn_root = tmp_path / "cdn"
    cdn_root.mkdir()
    for name in BACKEND_FILES["wasm"].values():
        (cdn_root / name).write_bytes((runtime.folder / name).read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CorsHandler, directory=str(cdn_root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cdn = f"http://127.0.0.1:{server.server_address[1]}/"
        model = styles_model(tmp_path / "m.onnx", styles=("one",))
        out = write_site(tmp_path / "cdnsite", model, find_runtime(None, cdn, ("wasm",)), log=lambda m: None)
        assert not (out / "ort").exists()
        photo(out / "p.png", (64, 48))
        with serving(out) as url:
            page = open_page(browser, url + "index.html?image=p.png")
            assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#message")
            assert max_diff(canvas(page), python_result(model, out / "p.png")) <= TOL
            page.close()
            loader = cdn_root / BACKEND_FILES["wasm"]["loader"]
            loader.write_bytes(loader.read_bytes() + b"\n// changed\n")
            page = open_page(browser, url + "index.html?image=p.png&nosw=1")
            assert page.evaluate("document.body.dataset.state") == "error"
            assert "integrity" in page.inner_text("#message")
            page.close()
    finally:
        server.shutdown()
        server.server_close()


def test_int8_option(browser: Any, tmp_path: Path, runtime: Any) -> None:
    """--int8 puts the static int8 model beside fp32; ?precision=int8 (the page's Model menu) runs it, and it
    matches Python onnxruntime's int8 run of the same file."""
    from fastnst.formats.onnx import quantize_int8

    model = styles_model(tmp_path / "m.onnx", styles=("ink", "sun"))
    calibration = [np.asarray(Image.open(photo(tmp_path / f"c{i}.png", (64, 48), seed=i)), np.float32)
                   .transpose(2, 0, 1)[None] / 255 for i in range(4)]
    int8 = quantize_int8(model, tmp_path / "m.int8.onnx", calibration, num_styles=2)
    out = write_site(tmp_path / "site", model, runtime, int8=int8, log=lambda m: None)
    photo(out / "p.png", (80, 60), seed=9)
    with serving(out) as url:
        page = open_page(browser, url + "index.html?image=p.png&style=sun&precision=int8")
        assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#message")
        assert "int8" in page.inner_text("#model-name") and page.is_visible("#precision")
        got = canvas(page)
        want = python_result(out / "model.int8.onnx", out / "p.png", style="sun")
        assert max_diff(got, want) <= TOL
        assert np.abs(got.astype(int) - python_result(model, out / "p.png", style="sun").astype(int)).mean() > 0
        page.close()


@pytest.mark.slow
def test_webgpu_backend_matches_python(tmp_path: Path, runtime: Any) -> None:
    """The default export on a browser with a WebGPU adapter (Chromium's software one, SwiftShader) picks the WebGPU
    build and says so; its pixels match Python onnxruntime too."""
    model = styles_model(tmp_path / "m.onnx", styles=("ink", "sun"))
    out = write_site(tmp_path / "site", model, find_runtime(runtime.folder, None, ("wasm", "webgpu")), log=lambda m: None)
    photo(out / "p.png", (48, 32), seed=4)
    with chromium(webgpu=True) as gpu_browser, serving(out) as url:
        page = gpu_browser.new_page()
        page.goto(url + "style.css")  # a secure context (navigator.gpu exists only there), without the page's work
        if not page.evaluate("async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())"):
            pytest.skip("this chromium offers no software WebGPU adapter (SwiftShader)")
        page.goto(url + "index.html?image=p.png&style=sun&nosw=1")
        assert wait_state(page, ("done", "error"), timeout=300_000) == "done", page.inner_text("#message")
        assert page.inner_text("#backend") == "WebGPU"  # the page's check against the CPU passed
        assert page.evaluate("window.fastnst.state.model.gpuCheck") <= 2 / 255
        assert max_diff(canvas(page), python_result(model, out / "p.png", style="sun")) <= TOL
