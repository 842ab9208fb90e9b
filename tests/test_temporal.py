"""The stability term (loss.temporal_weight) and the flicker metric with known motion."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastnst.errors import UserError
from fastnst.losses import LossInputs, PerceptualLoss
from fastnst.losses.temporal import TemporalTerm
from fastnst.media.clips import motion_windows, render_clip, warp_previous
from fastnst.training import fit

from .conftest import make_photo, tiny_config
from .test_training import LossRecorder


def term_value(stylize, seed: int = 3, **kw) -> float:
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    inputs = LossInputs(output=stylize(x), content=x, features={}, content_features={}, stylize=stylize, seed=seed)
    return float(TemporalTerm(**kw)(inputs))


def test_temporal_term_is_zero_for_a_network_that_moves_with_its_input() -> None:
    assert term_value(lambda z: z, noise=0.0) == pytest.approx(0.0, abs=1e-10)  # identity commutes with motion
    assert term_value(lambda z: 1 - z, noise=0.0) == pytest.approx(0.0, abs=1e-10)  # so does any pixel-wise map
    blur = lambda z: F.avg_pool2d(z, 3, 1, 1, count_include_pad=False)  # noqa: E731 - nearly equivariant
    pattern = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    stuck = lambda z: 0.5 * z + 0.5 * pattern  # noqa: E731 - a texture fixed to the frame flickers under motion
    assert term_value(stuck, noise=0.0) > 20 * term_value(blur, noise=0.0)
    noisy = term_value(lambda z: z, noise=0.05)  # the identity passes noise through: penalised
    assert noisy == pytest.approx(0.05**2, rel=0.2)


def test_temporal_term_draws_from_the_step_seed_only() -> None:
    pattern = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    stuck = lambda z: 0.5 * z + 0.5 * pattern  # noqa: E731
    torch.manual_seed(123)
    a = term_value(stuck, seed=7)
    torch.manual_seed(456)  # the global RNG plays no part
    assert term_value(stuck, seed=7) == a and term_value(stuck, seed=8) != a


def test_temporal_weight_adds_a_named_term_recorded_in_settings() -> None:
    loss = PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random", temporal_weight=2.0, temporal_shift=1.0,
                          style_images=[torch.rand(1, 3, 32, 32)])
    assert loss.term_names == ["content", "style", "tv", "temporal"] and loss.needs_network
    assert loss.settings()["temporal_weight"] == 2.0 and loss.settings()["temporal_shift"] == 1.0
    x = torch.rand(1, 3, 32, 32)
    pattern = torch.rand(1, 3, 32, 32)
    terms = loss(x * 0.5 + pattern * 0.5, x, stylize=lambda z: z * 0.5 + pattern * 0.5, seed=1)
    assert terms["temporal"] > 0
    assert float(loss(x, x)["temporal"]) == 0.0  # measured in training only (no network given)
    off = PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random")
    assert "temporal" not in off.term_names and "temporal_weight" not in off.settings()
    with pytest.raises(UserError, match="loss.temporal_weight must be >= 0"):
        PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random", temporal_weight=-1.0)
    with pytest.raises(UserError, match="temporal shift, zoom and noise must be >= 0"):
        PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random", temporal_weight=1.0, temporal_zoom=0.9)


@pytest.mark.usefixtures("one_thread")
def test_training_with_the_temporal_term_resumes_exactly(tmp_path: Path, photo_dir: Path, style_path: Path) -> None:
    def cfg(steps: int, **extra):
        c = tiny_config(photo_dir, style_path, **{"trainer.max_steps": steps, "checkpoint.every_n_steps": 4}, **extra)
        c["loss"]["temporal_weight"] = 50.0
        return c

    straight = LossRecorder()
    fit(cfg(6), tmp_path / "a", callbacks=[straight])
    fit(cfg(4), tmp_path / "b")
    resumed = LossRecorder()
    fit(cfg(6, ckpt_path="last"), tmp_path / "b", callbacks=[resumed])
    assert sorted(resumed.losses) == [5, 6]
    for step in (5, 6):
        assert math.isclose(resumed.losses[step], straight.losses[step], rel_tol=1e-5, abs_tol=1e-6)
    plain = LossRecorder()
    fit(tiny_config(photo_dir, style_path, **{"trainer.max_steps": 2}), tmp_path / "c", callbacks=[plain])
    assert straight.losses[1] > plain.losses[1]  # the term is in the total


# ------------------------------------------------------------------------------------------ motion, flicker

def test_warp_previous_maps_a_rendered_frame_onto_the_next() -> None:
    photo = np.asarray(make_photo(2, (400, 300)))
    for kind in ("pan", "zoom"):
        wins = motion_windows(kind, 4, (400, 300), (96, 64), speed=2.5)
        frames = torch.from_numpy(render_clip(photo, wins, (96, 64))).permute(0, 3, 1, 2).float() / 255
        warped, mask = warp_previous(frames[:-1], wins[0], wins[1])
        moved = ((frames[1:2] - frames[0:1]).abs() * mask).sum() / mask.sum()
        aligned = ((frames[1:2] - warped[:1]).abs() * mask).sum() / mask.sum()
        assert aligned < 0.25 * moved, kind  # what is left is resampling, not motion
        assert 0.8 < float(mask.mean()) < 1.0


def test_flicker_metric(trained_ckpt: Path) -> None:
    import fastnst
    from fastnst.tools.flicker import flicker, stylize_frames

    photo = np.asarray(make_photo(2, (400, 300)))
    wins = motion_windows("pan", 6, (400, 300), (96, 64))
    frames = render_clip(photo, wins, (96, 64))
    same = flicker(frames, frames, wins)
    assert same["flicker"] == pytest.approx(1.0)  # the input against itself
    rng = np.random.default_rng(0)
    jitter = np.clip(frames.astype(int) + rng.integers(-20, 21, frames.shape), 0, 255).astype(np.uint8)
    assert flicker(jitter, frames, wins)["flicker"] > 3  # independent noise per frame is flicker
    model = fastnst.load(trained_ckpt, "cpu")
    out = stylize_frames(model, frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    report = flicker(out, frames, wins)
    assert report["flicker"] > 0 and report["pairs"] == 5


def test_evaluate_video_report(trained_ckpt: Path, tmp_path: Path, capsys) -> None:
    from fastnst.tools.evaluate import main

    make_photo(5, (300, 200)).save(tmp_path / "wide.jpg")
    out = tmp_path / "flicker.json"
    assert main(["--ckpt", str(trained_ckpt), "--video", "--images", str(tmp_path / "wide.jpg"), "--frames", "4",
                 "--video-size", "64x36", "--temporal-blend", "0,0.8", "--json", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "fastnst flicker report" in printed and "static" in printed
    import json

    report = json.loads(out.read_text())
    rows = {(r["motion"], r["temporal_blend"]): r for r in report["summary"]}
    assert set(rows) == {(m, b) for m in ("pan", "zoom", "static") for b in (0.0, 0.8)}
    assert rows[("static", 0.8)]["flicker"] < rows[("static", 0.0)]["flicker"]  # blending steadies a still clip
    assert rows[("pan", 0.0)]["sharpness_vs_first"] == 1.0
    for bad, expect in ((["--motions", "shake"], "unknown motion 'shake'"),
                        (["--video-size", "8x8"], "--video-size must be at least 16x16"),
                        (["--temporal-blend", "1"], "--temporal-blend must be in [0, 1)")):
        code = main(["--ckpt", str(trained_ckpt), "--video", "--images", str(tmp_path / "wide.jpg"), *bad])
        err = capsys.readouterr().err
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
