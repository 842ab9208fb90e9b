"""Shared fixtures: tiny synthetic photos and paintings made in tmp dirs, a tiny trained checkpoint.

Everything is hermetic: random VGG weights, no downloads, 32-64 px images, CPU only.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("WANDB_MODE", "disabled")
warnings.filterwarnings("ignore", message="VGG19 is RANDOMLY INITIALISED")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# The smallest network that still has every stage: fast enough for many CPU steps.
TINY_MODEL = {"channels": [8, 16, 16], "num_residual": 1, "upsample": "nearest"}
TINY_LOSS = {"content_layers": ["relu2_1"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"],
             "content_weight": 1.0, "style_weight": 1.0e3, "tv_weight": 1.0, "gram_norm": "hw",
             "vgg_weights": "random", "vgg_pooling": "max"}


def make_photo(seed: int, size: tuple[int, int] = (80, 64)) -> Image.Image:
    """A smooth random 'photo': low-frequency colour fields plus a few edges."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    img += 40 * np.sin(xx / (3 + seed % 5))[..., None] * (yy > h // 3)[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_painting(size: int = 96) -> Image.Image:
    """A high-contrast striped pattern: a style very different from the photos."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = 127 + 127 * np.sin(xx / 2.0)
    g = 127 + 127 * np.sin((xx + yy) / 3.0)
    b = 127 + 127 * np.cos(yy / 1.5)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8), "RGB")


def make_pattern(kind: str, size: int = 64) -> Image.Image:
    """Paintings that differ from each other: ``checker`` (blocks), ``dots`` (a dot grid), ``waves``
    (diagonal colour bands), anything else a seeded noise pattern."""
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "checker":
        on = ((xx // 8 + yy // 8) % 2).astype(np.float64)
        img = np.stack([255 * on, 40 + 0 * on, 255 * (1 - on)], -1)
    elif kind == "dots":
        on = (((xx % 6) - 3) ** 2 + ((yy % 6) - 3) ** 2 < 4).astype(np.float64)
        img = np.stack([250 - 200 * on, 230 - 200 * on, 60 + 0 * on], -1)
    elif kind == "waves":
        img = np.stack([127 + 127 * np.sin((xx + yy) / 4.0), 127 + 127 * np.cos(xx / 5.0), 90 + 0 * xx], -1)
    else:
        rng = np.random.default_rng(sum(map(ord, kind)))
        img = rng.uniform(0, 255, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


MULTI_STYLES = ("checker", "dots", "waves")


@pytest.fixture(scope="session")
def style_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three paintings (the styles of a multi-style network, in file-name order)."""
    d = tmp_path_factory.mktemp("paintings")
    for name in MULTI_STYLES:
        make_pattern(name).save(d / f"{name}.png")
    return d


def multi_config(photo_dir: Path, style_dir: Path | list[Path], **overrides: Any) -> dict[str, Any]:
    """:func:`tiny_config` for a network of the paintings of ``style_dir`` (a folder or a list)."""
    images = str(style_dir) if isinstance(style_dir, Path) else [str(p) for p in style_dir]
    cfg = tiny_config(photo_dir, Path("unused"), **overrides)
    cfg["style"] = {"images": images, "size": 64, **(overrides.get("style") or {})}
    return cfg


@pytest.fixture(scope="session")
def multi_ckpt(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path, style_dir: Path) -> Path:
    """A checkpoint of the tiny network trained for a few steps on the three paintings of ``style_dir``."""
    from fastnst.training import fit

    run = tmp_path_factory.mktemp("multi_run")
    result = fit(multi_config(photo_dir, style_dir, **{"trainer.max_steps": 6}), run)
    assert result.last_checkpoint is not None
    return result.last_checkpoint


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for i in range(12):
        make_photo(i, (72 + 4 * (i % 3), 64 + 2 * (i % 4))).save(d / f"img_{i:02d}.jpg", quality=90)
    return d


@pytest.fixture(scope="session")
def style_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("style") / "stripes.png"
    make_painting().save(p)
    return p


def tiny_config(photo_dir: Path, style_path: Path, **overrides: Any) -> dict[str, Any]:
    """A plain config for fastnst.training.fit: 32 px crops, batch 2, the tiny network, no logger."""
    cfg: dict[str, Any] = {
        "data": {"_target_": "fastnst.training.data.StyleDataModule", "root": str(photo_dir), "image_size": 32,
                 "batch_size": 2, "num_workers": 0, "val_count": 2, "seed": 0},
        "model": dict(TINY_MODEL),
        "loss": copy.deepcopy(TINY_LOSS),
        "optim": {"lr": 3e-3},
        "style": {"image": str(style_path), "size": 64, "name": None},
        "trainer": {"max_steps": 4, "accelerator": "cpu", "devices": 1, "enable_model_summary": False,
                    "enable_progress_bar": False, "val_check_interval": 1000, "check_val_every_n_epoch": None,
                    "num_sanity_val_steps": 0, "log_every_n_steps": 1},
        "logger": None,
        "seed": 0,
        "ckpt_path": None,
        "checkpoint": {"dir": "checkpoints", "every_n_steps": 2},
        "preview": {"every_n_steps": 0, "num_images": 2},
    }
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path, style_path: Path) -> Path:
    """A checkpoint of the tiny network after a few training steps (for inference/export tests)."""
    from fastnst.training import fit

    run = tmp_path_factory.mktemp("run")
    result = fit(tiny_config(photo_dir, style_path), run)
    assert result.last_checkpoint is not None
    return result.last_checkpoint


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
