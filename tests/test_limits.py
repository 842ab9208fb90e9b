"""Images larger than memory allows (issue 21.2): refused in one sentence before they are decoded, on every path
that reads images; what fits is processed with bounded memory (stylizing tiles a large image by itself).

The limit comes from the memory available (fastnst.media.limits): the tests set it by an address-space limit in a
subprocess (``ulimit -v``, as a user or a batch system would), or by replacing ``available_bytes``.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastnst.media.limits as limits
from fastnst.errors import UserError
from fastnst.media.image import load_style_image
from fastnst.media.limits import ImageTooLarge, PixelBudget

from .conftest import ROOT, make_photo


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A greyscale PNG of one grey, written row by row (never the whole picture in memory): a few hundred KB that
    decode to width x height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width  # filter byte "none", then the row's pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png")
    assert path.stat().st_size < 1_000_000
    with Image.open(path) as img:
        assert img.size == (20000, 20000) and img.mode == "L"
    return path


# A subprocess with an address-space limit (`ulimit -v`) of what it has mapped after importing torch plus 2.5 GB.
LIMITED = ("import resource, sys, psutil, torch; import fastnst.commands as c; "
           "resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + 2_500_000_000, "
           "resource.RLIM_INFINITY)); sys.exit(c.main(sys.argv[1:]))")


def run_limited(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LIMITED, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_a_decompression_bomb_is_refused_in_one_sentence(bomb: Path, trained_ckpt: Path, tmp_path: Path) -> None:
    """A 20000x20000 greyscale PNG of 0.4 MB under a 2.5 GB memory limit: one sentence naming the limit and the flag
    that raises it, exit 2, and it was never decoded (no MemoryError, no OOM)."""
    out = tmp_path / "x.png"
    r = run_limited("stylize", "--ckpt", trained_ckpt, bomb, "-o", out, "-q", "--threads", "1")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr[-3000:]
    assert lines[0].startswith(f"fastnst: error: image {bomb} is 20000x20000 px (400 MP): stylizing it needs about "
                               f"16.4 GB and ")
    assert "MP can be taken in here; downscale it, free memory, or raise the limit with --max-pixels N or " \
           "FASTNST_MAX_PIXELS=N, at the risk of running out of memory" in lines[0]
    assert lines[0].endswith(f"{out} was not written") and not out.exists()


@pytest.mark.slow
def test_a_large_image_that_fits_is_tiled_by_itself_within_the_limit(trained_ckpt: Path, tmp_path: Path) -> None:
    """3000x3000 under the same 2.5 GB limit: stylized whole the network would need more (the estimate says so and
    tiles are chosen), in tiles it fits; the output is written, as a --tile run would write it."""
    src = tmp_path / "big.png"
    Image.fromarray((np.add.outer(np.arange(3000), np.arange(3000)) % 256).astype(np.uint8), "L").save(src)
    r = run_limited("stylize", "--ckpt", trained_ckpt, src, "-o", tmp_path / "out.png", "--threads", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3000x3000 px would need about" in r.stderr and "stylizing in" in r.stderr and "px tiles" in r.stderr
    tile = int(r.stderr.split("stylizing in ")[1].split(" px tiles")[0])
    assert 128 <= tile < 3000
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == (3000, 3000)


@pytest.fixture
def little_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process has 1 GB available (whatever the machine has)."""
    monkeypatch.setattr(limits, "available_bytes", lambda: 1_000_000_000)
    monkeypatch.delenv(limits.ENV, raising=False)


def test_training_data_skips_an_image_too_large_with_a_warning(bomb: Path, photo_dir: Path, little_memory,
                                                                tmp_path: Path) -> None:
    from fastnst.training.data import ImageFolderDataset, Sample

    files = [bomb, *sorted(photo_dir.glob("*.jpg"))[:2]]
    ds = ImageFolderDataset(files, 32)
    with pytest.warns(UserWarning, match=r"skipping unreadable image \S+bomb.png: ImageTooLarge: image \S+bomb.png "
                                         r"is 20000x20000 px \(400 MP\): reading it needs about 3.6 GB .* raise the "
                                         r"limit with the environment variable FASTNST_MAX_PIXELS=N"):
        image, skipped = ds[Sample(0, (0,))]
    assert image.shape == (3, 32, 32) and skipped == 1  # the next readable photo stands in, counted


def test_a_painting_too_large_is_one_sentence(bomb: Path, little_memory, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"style image \S+bomb.png is 20000x20000 px \(400 MP\): taking its style "
                                        r"needs about 3.6 GB .* FASTNST_MAX_PIXELS=N"):
        load_style_image(bomb, 256)
    # kept at its own size, a painting goes through VGG19 whole: a 1500x1500 one is too much for 1 GB
    painting = tmp_path / "p.png"
    make_photo(1, (1500, 1500)).save(painting)
    with pytest.raises(ImageTooLarge, match="taking its style needs about 2.7 GB"):
        load_style_image(painting, None)
    assert load_style_image(painting, 256).shape == (1, 3, 256, 256)


def test_evaluate_and_optimize_refuse_it(bomb: Path, trained_ckpt: Path, style_path: Path, photo_dir: Path,
                                         little_memory, tmp_path: Path, capsys) -> None:
    from fastnst.tools.evaluate import evaluate
    from fastnst.tools.optimize import main as optimize_main

    images = tmp_path / "images"
    images.mkdir()
    (images / "bomb.png").write_bytes(bomb.read_bytes())
    Image.open(photo_dir / "img_00.jpg").save(images / "ok.png")
    report = evaluate(trained_ckpt, style_path, images, size=64, device="cpu")
    assert report["count"] == 1 and "bomb.png is 20000x20000 px" in report["skipped"][0]["reason"]
    code = optimize_main(["--content", str(bomb), "--style", str(style_path), "-o", str(tmp_path / "o.png"),
                          "--vgg-weights", "random", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "content image" in err and "is 20000x20000 px (400 MP)" in err
    assert len(err.strip().splitlines()) == 1
    # the optimised image itself counts: a photo optimised at 2000 px does not fit in 1 GB either
    code = optimize_main(["--content", str(photo_dir / "img_00.jpg"), "--style", str(style_path), "-o",
                          str(tmp_path / "o.png"), "--vgg-weights", "random", "--steps", "1", "--longer-side", "2000"])
    err = capsys.readouterr().err
    assert code == 2 and "optimizing it needs about" in err and "a smaller --longer-side" in err


def test_video_frames_too_large_are_refused_before_decoding(trained_ckpt: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from fastnst.inference import load
    from fastnst.inference.options import VideoOptions
    from fastnst.inference.video import stylize_video

    from .test_video import clip_frames, write_clip

    src = write_clip(tmp_path / "clip.mp4", clip_frames(3))  # 64x48 frames
    monkeypatch.setattr(limits, "available_bytes", lambda: 500_000)  # room for a few frames, not a batch of 8
    model = load(trained_ckpt, "cpu")
    with pytest.raises(ImageTooLarge, match=r"video \S+clip.mp4 is 64x48 px .*stylizing its frames needs about"):
        stylize_video(model, src, tmp_path / "out.mp4", None, VideoOptions(batch_size=8, progress=False))
    assert not (tmp_path / "out.mp4").exists()
    assert stylize_video(model, src, tmp_path / "one.mp4", None, VideoOptions(batch_size=1, progress=False)).frames == 3


def test_the_limit_can_be_raised_or_set(bomb: Path, little_memory, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = PixelBudget(limits.HELD_STYLIZED)
    assert budget.limit("L")[0] == int(1e9 * limits.SHARE / (5 + limits.HELD_STYLIZED))
    monkeypatch.setenv(limits.ENV, "500_000_000")
    assert budget.limit("L") == (500_000_000, None)
    budget.check(20000, 20000, "image bomb.png", "L")  # raised: accepted
    monkeypatch.setenv(limits.ENV, "1e6")
    with pytest.raises(ImageTooLarge, match="the limit set by --max-pixels or FASTNST_MAX_PIXELS is 1.0 MP"):
        budget.check(2000, 1000, "image x.png", "RGB")
    monkeypatch.setenv(limits.ENV, "lots")
    with pytest.raises(UserError, match="FASTNST_MAX_PIXELS='lots' is not a number of pixels"):
        budget.check(10, 10, "image x.png")


def test_stylizing_tiles_by_itself_when_the_network_would_not_fit(trained_ckpt: Path, little_memory,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice in-process: with 20 MB available a 300x240 image is stylized in tiles, and the result is the
    tiles' (the same as asking for them), not a crash; the note says so once."""
    from fastnst.inference import StylizeOptions, load

    import fastnst.inference.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 20_000_000)
    model = load(trained_ckpt, "cpu")
    notes: list[str] = []
    model.log = notes.append
    x = torch.rand(1, 3, 240, 300)
    chosen = model.fit_in_memory(x, StylizeOptions())
    assert chosen.tile is not None and 128 <= chosen.tile < 300
    y = model.stylize_tensor(x)
    assert torch.allclose(y, model.stylize_tensor(x, None, StylizeOptions(tile=chosen.tile)))
    assert len(notes) == 1 and "300x240 px would need about" in notes[0]
    monkeypatch.setattr(memory, "available_bytes", lambda: 10_000_000_000)
    assert model.fit_in_memory(x, StylizeOptions()).tile is None  # plenty of memory: whole, as before


def test_an_image_handed_to_the_python_api_is_checked(little_memory) -> None:
    """fastnst.load(...).stylize(image) with a decoded image too large for its float copies: one sentence."""
    from fastnst.inference.stylizer import _image_tensor

    with pytest.raises(ImageTooLarge, match=r"the image is 6000x6000 px \(36 MP\): stylizing it needs about 1.5 GB"):
        _image_tensor(np.zeros((6000, 6000), np.uint8), None)
    assert _image_tensor(np.zeros((6000, 6000), np.uint8), 100)[0].shape == (1, 3, 100, 100)  # --max-size first
