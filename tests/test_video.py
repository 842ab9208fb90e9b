"""Video through infer.py and the API: the written file is decoded with PyAV and checked for frame count,
timestamps (variable frame rate), size (odd too), rotation, pixel aspect, colours and byte-identical audio;
bad inputs end in one sentence with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

import fastnst  # noqa: E402
from fastnst.media.clips import motion_windows, render_clip, write_clip  # noqa: E402

from .conftest import ROOT, make_photo  # noqa: E402
from .test_infer import infer_main  # noqa: E402

VFR_PTS = [0, 20, 60, 130, 150, 190, 260, 280, 320, 390, 410, 450]  # ms: irregular frame durations


def clip_frames(n: int = 12, size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    photo = np.asarray(make_photo(seed, (4 * size[0], 4 * size[1])))
    return render_clip(photo, motion_windows("pan", n, (photo.shape[1], photo.shape[0]), size), size)


def decoded(path: Path) -> dict:
    """Everything the tests compare, read back from the file with PyAV."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        out = {"codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt, "sar": v.sample_aspect_ratio,
               "times": [float(f.pts * f.time_base) for f in frames], "size": (frames[0].width, frames[0].height),
               "rotation": frames[0].rotation, "count": len(frames),
               "rgb": np.stack([f.to_ndarray(format="rgb24", src_color_range=f.color_range or None) for f in frames])}
    with av.open(str(path)) as c:
        out["audio"] = [[(p.pts, bytes(p)) for p in c.demux(a) if p.size] for a in c.streams.audio]
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    return write_clip(folder / "vfr.mp4", clip_frames(12), pts=VFR_PTS, time_base=Fraction(1, 1000), rotation=90,
                      sample_aspect_ratio=Fraction(4, 3), audio_seconds=0.5)


def test_output_keeps_frames_timing_rotation_aspect_and_audio(trained_ckpt: Path, vfr_clip: Path,
                                                              tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.mp4"
    assert infer_main("--ckpt", trained_ckpt, vfr_clip, "-o", out, "--batch-size", "5") == 0
    assert "frame/s" in capsys.readouterr().err  # the progress bar counts frames
    a, b = decoded(vfr_clip), decoded(out)
    assert b["count"] == a["count"] == len(VFR_PTS)
    assert b["times"] == pytest.approx(a["times"], abs=1e-3) and a["times"] == pytest.approx(
        [t / 1000 for t in VFR_PTS], abs=1e-3)
    assert b["size"] == a["size"] == (64, 48)
    assert b["rotation"] == a["rotation"] == 90
    assert b["sar"] == a["sar"] == Fraction(4, 3)
    assert b["codec"] == "h264" and b["pix_fmt"] == "yuv420p"
    assert len(b["audio"]) == 1 and len(b["audio"][0]) > 10
    assert b["audio"] == a["audio"]  # copied packet by packet, byte for byte, same timestamps
    assert np.abs(b["rgb"].astype(int) - a["rgb"].astype(int)).mean() > 10  # and the pictures were stylized
    assert leftovers(tmp_path) == []


def test_frames_are_stylized_upright_and_stored_back(trained_ckpt: Path, tmp_path: Path) -> None:
    """A rotated clip gives the stylization of its upright picture, stored in the source's orientation."""
    frames = clip_frames(3)
    model = fastnst.load(trained_ckpt, "cpu")
    results = {}
    for name, arr, rotation in (("upright", np.rot90(frames, k=1, axes=(1, 2)), 0), ("rotated", frames, 90),
                                ("naive", frames, 0)):
        src = write_clip(tmp_path / f"{name}.mp4", np.ascontiguousarray(arr), rotation=rotation, crf=0)
        results[name] = decoded(Path(model.stylize_video(src, tmp_path / f"{name}_out.mkv", crf=0).path))
    assert results["rotated"]["size"] == (64, 48) and results["rotated"]["rotation"] == 90
    upright = results["upright"]["rgb"].astype(int)
    shown = np.rot90(results["rotated"]["rgb"].astype(int), k=1, axes=(1, 2))  # as a player shows it
    naive = np.rot90(results["naive"]["rgb"].astype(int), k=1, axes=(1, 2))  # stylized in stored orientation
    error = np.abs(shown - upright).mean()
    # chroma subsampling of the turned picture costs ~2 levels; stylizing it sideways costs ~10x that
    assert error < 4.0 and np.abs(naive - upright).mean() > 4 * error


def test_strength_zero_gives_the_clip_back_with_its_colours(trained_ckpt: Path, tmp_path: Path) -> None:
    """BT.709-tagged input: decoding and encoding use the same matrix and range, so colours do not shift."""
    photo = np.zeros((96, 256, 3), np.uint8)
    photo[:, :80], photo[:, 80:160], photo[:, 160:] = [230, 20, 20], [20, 200, 40], [30, 40, 220]
    frames = render_clip(photo, motion_windows("pan", 6, (256, 96), (64, 48)), (64, 48))
    src = write_clip(tmp_path / "709.mp4", frames, color_tags=True, crf=0)
    out = tmp_path / "out.mp4"
    assert infer_main("--ckpt", trained_ckpt, src, "-o", out, "--strength", "0", "--crf", "0", "-q") == 0
    a, b = decoded(src)["rgb"].astype(int), decoded(out)["rgb"].astype(int)
    diff = np.abs(a - b)
    # swscale's BT.709 round trip is biased by one level; a BT.601/709 mix-up would shift these colours by ~9
    assert diff.mean() <= 1.1 and np.percentile(diff, 99) <= 2
    with av.open(str(src)) as c:
        wrong = np.stack([f.to_ndarray(format="rgb24", src_colorspace="ITU601", src_color_range=1)
                          for f in c.decode(video=0)]).astype(int)
    assert np.abs(wrong - a).mean() > 4


@pytest.mark.parametrize("case", ["exact", "even", "webm"])
def test_odd_sizes(case: str, trained_ckpt: Path, tmp_path: Path) -> None:
    src = write_clip(tmp_path / "odd.mp4", clip_frames(4, (63, 47)), pix_fmt="yuv444p", crf=None)
    out = tmp_path / ("out.webm" if case == "webm" else "out.mp4")
    extra = ["--even-size"] if case == "even" else []
    assert infer_main("--ckpt", trained_ckpt, src, "-o", out, "-q", *extra) == 0
    b = decoded(out)
    expect = {"exact": ((63, 47), "yuv444p", "h264"), "even": ((64, 48), "yuv420p", "h264"),
              "webm": ((63, 47), "yuv420p", "vp9")}[case]
    assert (b["size"], b["pix_fmt"], b["codec"]) == expect
    assert b["count"] == 4


def test_folder_of_photos_and_videos(trained_ckpt: Path, vfr_clip: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    make_photo(1).save(src / "photo.jpg")
    write_clip(src / "sub" / "clip.mkv", clip_frames(5), audio_seconds=0.3)
    write_clip(src / "vp9.webm", clip_frames(4), codec="libvpx-vp9", crf=None)
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom but not really a video")
    out = tmp_path / "out"
    assert infer_main("--ckpt", trained_ckpt, src, "-o", out, "--batch-size", "2", "-q") == 1
    err = capsys.readouterr().err
    assert "broken.mp4 is not a readable video" in err and "1 of 4 file(s) failed" in err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        ["photo.jpg", "sub/clip.mkv", "vp9.webm"]
    assert decoded(out / "sub" / "clip.mkv")["count"] == 5 and decoded(out / "vp9.webm")["codec"] == "vp9"
    assert len(decoded(out / "sub" / "clip.mkv")["audio"][0]) > 3


@pytest.fixture(scope="module")
def exported(trained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fastnst.tools.export import export_checkpoint

    folder = tmp_path_factory.mktemp("video_models")
    return {"onnx": export_checkpoint(trained_ckpt, folder / "m.onnx", log=lambda s: None),
            "pt2": export_checkpoint(trained_ckpt, folder / "m.pt2", log=lambda s: None)}


@pytest.mark.slow  # exporting (with its parity checks) takes half a minute on 2 cores
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_exported_models_stylize_video_like_the_checkpoint(fmt: str, exported: dict[str, Path], trained_ckpt: Path,
                                                           vfr_clip: Path, tmp_path: Path) -> None:
    ref = fastnst.load(trained_ckpt, "cpu").stylize_video(vfr_clip, tmp_path / "ref.mkv", crf=0, batch_size=4)
    got = fastnst.load(exported[fmt], "cpu").stylize_video(vfr_clip, tmp_path / "got.mkv", crf=0, batch_size=4)
    assert ref.frames == got.frames == len(VFR_PTS)
    diff = np.abs(decoded(tmp_path / "ref.mkv")["rgb"].astype(int) - decoded(tmp_path / "got.mkv")["rgb"].astype(int))
    assert diff.mean() < 1.0


@pytest.fixture(scope="module")
def two_style_ckpt(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastnst.training import fit

    from .conftest import make_painting, tiny_config

    folder = tmp_path_factory.mktemp("two_styles")
    make_painting().save(folder / "stripes.png")
    make_photo(7, (96, 96)).save(folder / "blobs.png")
    cfg = tiny_config(photo_dir, folder / "stripes.png", **{"trainer.max_steps": 2})
    cfg["style"] = {"images": [str(folder / "stripes.png"), str(folder / "blobs.png")], "size": 64}
    return fit(cfg, folder / "run").last_checkpoint


def test_style_choice_on_video(two_style_ckpt: Path, vfr_clip: Path, tmp_path: Path) -> None:
    outs = {}
    for style in ("stripes", "blobs", "stripes=0.5,blobs=0.5"):
        out = tmp_path / f"{style.replace('=', '').replace(',', '_')}.mkv"
        assert infer_main("--ckpt", two_style_ckpt, vfr_clip, "-o", out, "--style", style, "--crf", "0", "-q") == 0
        outs[style] = decoded(out)["rgb"].astype(int)
    assert np.abs(outs["stripes"] - outs["blobs"]).mean() > 0.5
    mid = outs["stripes=0.5,blobs=0.5"]
    assert np.abs(mid - outs["stripes"]).mean() > 0.1 and np.abs(mid - outs["blobs"]).mean() > 0.1


def test_every_style_gets_its_own_video_and_a_sheet_refuses_videos(two_style_ckpt: Path, vfr_clip: Path,
                                                                    tmp_path: Path, capsys) -> None:
    """A multi-style model without --style: one video per style, each equal to its --style run."""
    assert infer_main("--ckpt", two_style_ckpt, vfr_clip, "-o", tmp_path / "all" / "v.mkv", "--crf", "0", "-q") == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["v_blobs.mkv", "v_stripes.mkv"]
    assert infer_main("--ckpt", two_style_ckpt, vfr_clip, "-o", tmp_path / "one.mkv", "--style", "blobs",
                      "--crf", "0", "-q") == 0
    each, one = decoded(tmp_path / "all" / "v_blobs.mkv"), decoded(tmp_path / "one.mkv")
    assert each["count"] == one["count"] == 12 and np.array_equal(each["rgb"], one["rgb"])
    assert each["audio"] == one["audio"] and each["times"] == one["times"]
    assert infer_main("--ckpt", two_style_ckpt, vfr_clip, "--sheet", "-o", tmp_path / "s.png", "-q") == 2
    assert "is a video and --sheet makes one still image" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_image_options_apply_to_every_frame(trained_ckpt: Path, vfr_clip: Path, tmp_path: Path) -> None:
    """--max-size scales, --tile / --preserve-color / --precision stylize each frame as they do a photo."""
    big = write_clip(tmp_path / "big.mp4", clip_frames(3, (160, 120)), crf=0)
    model = fastnst.load(trained_ckpt, "cpu")
    small = decoded(Path(model.stylize_video(big, tmp_path / "small.mkv", max_size=80).path))
    assert small["size"] == (80, 60) and small["count"] == 3
    whole = decoded(Path(model.stylize_video(big, tmp_path / "whole.mkv", crf=0).path))["rgb"].astype(int)
    tiled = decoded(Path(model.stylize_video(big, tmp_path / "tiled.mkv", crf=0, tile=64).path))["rgb"].astype(int)
    assert np.abs(tiled - whole).mean() < 3.0
    bf16 = decoded(Path(fastnst.load(trained_ckpt, "cpu", precision="bf16").stylize_video(
        big, tmp_path / "bf16.mkv", crf=0).path))["rgb"].astype(int)
    assert np.abs(bf16 - whole).mean() < 8
    kept = decoded(Path(model.stylize_video(big, tmp_path / "color.mkv", crf=0, preserve_color=True).path))["rgb"]
    source = decoded(big)["rgb"].astype(float)

    def chroma(rgb: np.ndarray) -> np.ndarray:
        return rgb.astype(float) @ np.array([[0.596, 0.211], [-0.274, -0.523], [-0.322, 0.312]])

    assert np.abs(chroma(kept) - chroma(source)).mean() < np.abs(chroma(whole) - chroma(source)).mean() / 2


def test_temporal_blend_lowers_flicker_on_a_still_noisy_clip(trained_ckpt: Path, tmp_path: Path) -> None:
    photo = np.asarray(make_photo(3, (256, 192)))
    frames = render_clip(photo, motion_windows("static", 8, (256, 192), (64, 48)), (64, 48), noise=0.03)
    src = write_clip(tmp_path / "still.mp4", frames, crf=0)
    model = fastnst.load(trained_ckpt, "cpu")
    change = {}
    for blend in (0.0, 0.8):
        report = model.stylize_video(src, tmp_path / f"b{blend}.mkv", crf=0, temporal_blend=blend)
        rgb = decoded(Path(report.path))["rgb"].astype(float)
        change[blend] = np.abs(np.diff(rgb, axis=0)).mean()
    assert change[0.8] < 0.5 * change[0.0]


# ------------------------------------------------------------------------------------------- bad input

def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(s.encode(frame))
        out.mux(s.encode(None))
    return path


def _zero_frames(path: Path) -> Path:
    """What a recorder writes when it stops before the first frame: an MP4 whose track has no samples."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
        out.mux(s.encode(None))
    return path


def _truncated(path: Path) -> Path:
    """An MP4 with its index first (faststart) cut before the frames: a video stream, nothing to decode."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i, arr in enumerate(clip_frames(3)):
            f = av.VideoFrame.from_ndarray(arr)
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"mdat") + 4])
    return path


def _unknown_codec(path: Path) -> Path:
    """An AVI whose fourcc no FFmpeg decoder knows (as a proprietary codec would be)."""
    write_clip(path, clip_frames(3), codec="mpeg4", crf=None)
    path.write_bytes(path.read_bytes().replace(b"FMP4", b"QQZ9"))
    return path


def _size_change(path: Path) -> Path:
    """An MPEG-TS stream whose frames are 64x48, then 48x32 (two encoders into one stream)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 25)
        other = av.CodecContext.create("libx264", "w")
        other.width, other.height, other.pix_fmt, other.time_base = 48, 32, "yuv420p", Fraction(1, 25)
        pts = 0
        for ctx, (w, h) in ((s.codec_context, (64, 48)), (other, (48, 32))):
            for _ in range(4):
                f = av.VideoFrame.from_ndarray(np.full((h, w, 3), 60 * (pts % 4), np.uint8))
                f.pts, f.time_base = pts, Fraction(1, 25)
                pts += 1
                for p in ctx.encode(f):
                    p.stream = s
                    out.mux(p)
            for p in ctx.encode(None):
                p.stream = s
                out.mux(p)
    return path


@pytest.mark.parametrize("case", ["not_video", "audio_only", "zero_frames", "truncated", "unknown_codec", "size_change",
                                  "container", "encoder", "crf", "blend", "image_ext"])
def test_bad_video_input_is_one_sentence_and_leaves_nothing(case: str, trained_ckpt: Path, vfr_clip: Path,
                                                            tmp_path: Path, capsys) -> None:
    src, out, extra = vfr_clip, tmp_path / "out.mp4", []
    if case == "not_video":
        src = tmp_path / "notes.mp4"
        src.write_text("these are my notes, not a movie")
        expect = "is not a readable video"
    elif case == "audio_only":
        src, expect = _audio_only(tmp_path / "song.m4v"), "has no video stream (it holds audio)"
    elif case == "zero_frames":
        src, expect = _zero_frames(tmp_path / "empty.mp4"), "holds no streams at all (a recording of zero frames?)"
    elif case == "truncated":
        src, expect = _truncated(tmp_path / "cut.mp4"), "has a video stream but no frame of it could be decoded"
    elif case == "unknown_codec":
        src, expect = _unknown_codec(tmp_path / "odd.avi"), "cannot be decoded by the FFmpeg that PyAV bundles"
    elif case == "size_change":
        src, expect = _size_change(tmp_path / "sizes.ts"), "frame 4 is 48x32 px but the clip started at 64x48"
    elif case == "container":
        out, extra = tmp_path / "out.webm", ["--video-codec", "libx264"]
        expect = "the .webm container cannot hold h264 video; use --video-codec libvpx-vp9"
    elif case == "encoder":
        extra, expect = ["--video-codec", "h266_magic"], "has no such encoder; use one of libx264"
    elif case == "crf":
        extra, expect = ["--video-codec", "mpeg4", "--crf", "20"], "--crf does not apply to the encoder mpeg4"
    elif case == "blend":
        extra, expect = ["--temporal-blend", "1.5"], "--temporal-blend must be in [0, 1)"
    else:
        out, expect = tmp_path / "out.png", "a video is written to a video container"
    code = infer_main("--ckpt", trained_ckpt, src, "-o", out, "-q", *extra)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fastnst: error: ") and expect in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_failure_mid_clip_leaves_no_file(trained_ckpt: Path, vfr_clip: Path, tmp_path: Path) -> None:
    """An interrupt while frames are in flight: threads stop, the temporary file goes, the old output stays."""
    model = fastnst.load(trained_ckpt, "cpu")
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older result")
    calls = {"n": 0}
    real = model.stylize_tensor

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    model.stylize_tensor = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        model.stylize_video(vfr_clip, out, batch_size=2)
    assert out.read_bytes() == b"an older result" and leftovers(tmp_path) == []
    assert calls["n"] == 3


@pytest.mark.slow
def test_ctrl_c_in_a_subprocess_leaves_no_output(trained_ckpt: Path, tmp_path: Path) -> None:
    src = write_clip(tmp_path / "long.mp4", clip_frames(120, (160, 120)), audio_seconds=4.0)
    out = tmp_path / "o" / "long_out.mp4"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "--ckpt", str(trained_ckpt), str(src), "-o",
                             str(out), "--tile", "48"], stderr=subprocess.PIPE, text=True, env=env,
                            # Ctrl-C as in a terminal, even when these tests run as a background job (which ignores it)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".") for p in out.parent.glob("*")
                                             if out.parent.exists()):
        time.sleep(0.05)
    time.sleep(1.0)  # frames are being stylized and encoded into the temporary file
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_video_first_frame_feeds_the_benchmark(trained_ckpt: Path, vfr_clip: Path, capsys) -> None:
    assert infer_main("--ckpt", trained_ckpt, vfr_clip, "--benchmark", "--benchmark-runs", "2", "--warmup", "1") == 0
    assert "benchmark: ckpt on cpu (fp32), 48x64 px" in capsys.readouterr().out  # upright: rotated 90 degrees


def test_compiled_model_pads_the_last_batch(trained_ckpt: Path, vfr_clip: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """12 frames in batches of 5: a compiled model sees only batches of 5 (no recompilation for the last 2)."""
    model = fastnst.load(trained_ckpt, "cpu")
    model.compiled = True
    shapes = []
    real = model.stylize_tensor
    monkeypatch.setattr(model, "stylize_tensor", lambda x, *a, **k: (shapes.append(x.shape[0]), real(x, *a, **k))[1])
    report = model.stylize_video(vfr_clip, tmp_path / "o.mp4", batch_size=5)
    assert shapes == [5, 5, 5] and report.frames == 12 and decoded(tmp_path / "o.mp4")["count"] == 12


def test_video_bench_row_wiring() -> None:
    """The benchmark's video part runs every path and reports ratios (speed itself is never asserted)."""
    from fastnst.tools.bench.common import TINY_NET, BenchConfig
    from fastnst.tools.bench.video import OPENCV_NOTE, run_video

    cfg = BenchConfig(device="cpu", parts=("video",), model=TINY_NET, video_sizes=[(48, 32)], video_frames=[4],
                      video_rounds=1, video_variants=["fp32"])
    report = run_video(cfg, log=lambda s: None)
    rows = {r["path"]: r for r in report["results"]}
    e2e, net = rows["fastnst fp32 end to end"], rows["fastnst fp32 network only"]
    assert e2e["fps"] > 0 and net["fps"] > 0 and e2e["vs_network_only"] == pytest.approx(e2e["fps"] / net["fps"])
    try:
        import cv2  # noqa: F401
    except ImportError:
        assert report["note"] == OPENCV_NOTE and rows["reference loop"]["error"] == OPENCV_NOTE
    else:
        ref = rows["reference loop (OpenCV, fp32, frame by frame)"]
        assert ref["fps"] > 0 and ref["vs_reference"] == 1.0
