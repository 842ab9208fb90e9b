"""fastnst.prepare: the pre-resized uint8 dataset, its resumability, and training on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fastnst.errors import UserError
from fastnst.tools.prepare import main
from fastnst.training.data import ImageFolderDataset, ResumableSampler, StyleDataModule, find_images
from fastnst.training.prepared import MANIFEST, PreparedDataset, is_prepared, prepare, read_index, read_manifest

from .conftest import make_photo, tiny_config


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    for i in range(10):
        # mixed orientations and sizes, one in a sub-folder, one PNG
        size = (90 + 7 * i, 64 + 3 * (i % 4)) if i % 3 else (60 + 2 * i, 96)
        target = d / "sub" if i == 4 else d
        make_photo(i, size).save(target / f"p{i:02d}.{'png' if i == 7 else 'jpg'}", quality=90)
    return d


def test_prepare_writes_the_pixels_the_folder_pipeline_decodes(photos: Path, tmp_path: Path) -> None:
    dst = tmp_path / "prepared"
    stats = prepare(photos, dst, size=40, workers=1, progress=False)
    assert (stats.total, stats.written, stats.skipped, stats.complete) == (10, 10, 0, True)
    assert is_prepared(dst) and not is_prepared(photos)
    manifest = read_manifest(dst)
    assert manifest["count"] == 10 and manifest["size"] == 40 and manifest["complete"]
    index = read_index(dst)
    assert min(index[:, 1].min(), 40) == 40 and np.minimum(index[:, 1], index[:, 2]).tolist() == [40] * 10
    assert (dst / "images.u8").stat().st_size == int((index[:, 1] * index[:, 2] * 3).sum()) == stats.bytes

    # Same keys -> the same crops as the JPEG folder, train (random) and validation (centre) alike.
    files = find_images(photos)
    folder = ImageFolderDataset(files, 40, train=True)
    prepared = PreparedDataset(dst, None, 40, train=True)
    sampler = ResumableSampler(len(files), 2, seed=3)
    sampler.set_epoch(1)
    for key in list(sampler):
        a, skipped_a = folder[key]
        b, skipped_b = prepared[key]
        assert a.shape == b.shape == (3, 40, 40) and b.dtype == torch.float32
        assert torch.equal(a, b) and skipped_a == skipped_b == 0
    for i in range(3):
        assert torch.equal(ImageFolderDataset(files, 40, train=False)[i][0], PreparedDataset(dst, None, 40, train=False)[i][0])
    # Smaller crops resize from the stored pixels; larger ones than prepared are refused in one sentence.
    assert PreparedDataset(dst, None, 32)[0][0].shape == (3, 32, 32)
    with pytest.raises(UserError, match="prepare it again with --shorter-side 64"):
        PreparedDataset(dst, None, 64)


def test_prepare_resumes_without_redoing_or_corrupting(photos: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    prepare(photos, whole, size=32, workers=1, progress=False)
    dst = tmp_path / "resumed"
    first = prepare(photos, dst, size=32, workers=1, limit=4, progress=False)
    assert (first.written, first.complete, read_manifest(dst)["done"]) == (4, False, 4)
    # A crash after the commit: garbage appended to the data file, a stray temp file.
    with open(dst / "images.u8", "ab") as f:
        f.write(b"\x7f" * 1000)
    (dst / "manifest.json.tmp").write_text("{")
    with pytest.warns(UserWarning, match="incomplete prepared dataset"):
        dm = StyleDataModule(str(dst), image_size=32, batch_size=2, num_workers=0, val_count=0)
        dm.scan()
    assert dm.train_files == [0, 1, 2, 3]
    rest = prepare(photos, dst, size=32, workers=1, progress=False)
    assert (rest.resumed_at, rest.written, rest.total, rest.complete) == (4, 6, 10, True)
    assert not (dst / "manifest.json.tmp").exists()  # the stray temp file was cleaned up
    assert (dst / "images.u8").read_bytes() == (whole / "images.u8").read_bytes()
    assert np.array_equal(read_index(dst), read_index(whole))
    again = prepare(photos, dst, size=32, workers=1, progress=False)  # nothing left: nothing redone
    assert (again.written, again.total) == (0, 10)
    with pytest.raises(UserError, match=r"was prepared at --shorter-side 32, not 48; use --shorter-side 32 to resume"):
        prepare(photos, dst, size=48, workers=1, progress=False)
    prepare(photos, dst, size=48, workers=1, progress=False, overwrite=True)
    assert read_manifest(dst)["size"] == 48


def test_prepare_skips_unreadable_files_and_counts_them(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    data = (photos / "p03.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(data[: len(data) // 3])
    dst = tmp_path / "prepared"
    assert main([str(photos), str(dst), "--size", "32", "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "10 images" in out and "2 unreadable file(s) skipped" in out
    manifest = json.loads((dst / MANIFEST).read_text())
    assert manifest["count"] == 10 and manifest["done"] == 12
    assert sorted(s["file"] for s in manifest["skipped"]) == ["broken.jpg", "truncated.jpg"]


def test_prepare_errors_are_one_sentence(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main([str(photos), str(busy), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([str(photos), str(photos / "inside"), "--no-progress"]) == 2
    assert "inside SRC" in capsys.readouterr().err


def test_data_module_reads_a_prepared_dataset(photos: Path, tmp_path: Path) -> None:
    dst = tmp_path / "prepared"
    prepare(photos, dst, size=32, workers=2, progress=False)
    batches = {}
    for name, root in (("folder", photos), ("prepared", dst)):
        dm = StyleDataModule(str(root), image_size=32, batch_size=4, num_workers=1, val_count=2, seed=5)
        dm.scan()
        assert len(dm.train_files) == 8 and len(dm.val_files) == 2
        images, skipped = next(iter(dm.train_dataloader()))
        val, _ = next(iter(dm.val_dataloader()))
        batches[name] = (images, skipped, val, dm.preview_batch(2))
    (a, sa, va, pa), (b, sb, vb, pb) = batches["folder"], batches["prepared"]
    assert a.shape == b.shape == (4, 3, 32, 32) and sa == sb == 0
    assert torch.equal(a, b) and torch.equal(va, vb) and torch.equal(pa, pb)


def test_training_runs_on_a_prepared_dataset(photo_dir: Path, style_path: Path, tmp_path: Path) -> None:
    from fastnst.formats.checkpoint import read_checkpoint
    from fastnst.training import fit

    dst = tmp_path / "prepared"
    prepare(photo_dir, dst, size=32, workers=1, progress=False)
    cfg = tiny_config(dst, style_path)
    cfg["trainer"]["max_steps"] = 2
    result = fit(cfg, tmp_path / "run")
    assert result.global_step == 2 and result.last_checkpoint is not None
    assert read_checkpoint(result.last_checkpoint)["fastnst"]["training"]["image_size"] == 32
    shutil.rmtree(dst)
