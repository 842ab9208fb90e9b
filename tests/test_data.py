"""The data module: folders of any shape, every image mode, bad files skipped and counted."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.media.image import open_image, to_rgb
from fastnst.training.data import ImageFolderDataset, ResumableSampler, Sample, StyleDataModule, collate, find_images

from .conftest import make_photo


def _zoo(root: Path) -> dict[str, Path]:
    """Good files in every awkward mode, and bad files of every kind."""
    base = make_photo(1, (48, 40))
    sub = root / "nested" / "deeper"
    sub.mkdir(parents=True)
    files = {}

    def put(name: str, img: Image.Image, **kw) -> None:
        p = (sub if name.startswith("n_") else root) / name
        img.save(p, **kw)
        files[name] = p

    put("rgb.JPG", base, quality=90)
    put("n_gray.png", base.convert("L"))
    put("palette.gif", base.convert("P", palette=Image.ADAPTIVE))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.new("L", base.size, 0))  # fully transparent: must come out white, not garbage
    put("rgba.png", rgba)
    put("la.png", base.convert("LA"))
    put("cmyk.jpg", base.convert("CMYK"))
    arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    put("gray16.png", Image.fromarray(arr16))
    put("n_tiff.TIFF", base)
    put("webp.webp", base)
    rotated = base.transpose(Image.ROTATE_90)  # stored 40x48, EXIF says rotate back to 48x40
    exif = Image.Exif()
    exif[0x0112] = 8
    put("exif.jpg", rotated, exif=exif)
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image")
    good = root / "rgb.JPG"
    (root / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    (root / "notes.txt").write_text("ignored: not an image extension")
    return files


def test_find_images_recursive_case_insensitive(tmp_path: Path) -> None:
    files = _zoo(tmp_path)
    found = find_images(tmp_path)
    names = {p.name for p in found}
    assert set(files) <= names
    assert "notes.txt" not in names
    assert {"zero.jpg", "text.jpg", "truncated.jpg"} <= names  # listed; skipped when read


def test_every_mode_becomes_rgb(tmp_path: Path) -> None:
    files = _zoo(tmp_path)
    for name, path in files.items():
        img = open_image(path)
        assert img.mode == "RGB", name
        assert img.size == (48, 40), name  # exif.jpg is turned back upright
    white = np.asarray(open_image(files["rgba.png"]))
    assert (white == 255).all()  # transparent pixels composited on white
    gray16 = np.asarray(open_image(files["gray16.png"]))
    gray8 = np.asarray(make_photo(1, (48, 40)).convert("L"))
    assert np.abs(gray16[..., 0].astype(int) - gray8).max() <= 1  # 16-bit scaled, not clipped
    assert np.asarray(to_rgb(Image.new("F", (4, 4), 0.5)))[0, 0, 0] == 128


def test_bad_files_are_skipped_and_counted(tmp_path: Path) -> None:
    _zoo(tmp_path)
    files = find_images(tmp_path)
    ds = ImageFolderDataset(files, 32, train=True)
    total_skipped, images = 0, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(len(ds)):
            img, skipped = ds[Sample(i, (0, 0, 0, i))]
            images.append(img)
            total_skipped += skipped
    assert all(t.shape == (3, 32, 32) and t.dtype == torch.float32 for t in images)
    assert all(0 <= t.min() and t.max() <= 1 for t in images)
    bad = {"zero.jpg", "text.jpg", "truncated.jpg"}
    assert total_skipped == len(bad)  # each bad file is hit exactly once in a pass
    messages = " ".join(str(w.message) for w in caught)
    assert all(name in messages for name in bad)


def test_datamodule_reports_skips_through_batches(tmp_path: Path) -> None:
    _zoo(tmp_path)
    dm = StyleDataModule(str(tmp_path), image_size=32, batch_size=1, num_workers=0, val_count=2)
    dm.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_files) and all(b[0].shape == (1, 3, 32, 32) for b in batches)
    bad_in_train = [p for p in dm.train_files if p.name in {"zero.jpg", "text.jpg", "truncated.jpg"}]
    assert bad_in_train and sum(b[1] for b in batches) == len(bad_in_train)
    assert not set(dm.train_files) & set(dm.val_files)  # validation is held out


def test_empty_or_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path / "nope") + ".*does not exist"):
        StyleDataModule(str(tmp_path / "nope")).scan()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="contains no images"):
        StyleDataModule(str(tmp_path / "empty")).scan()
    with pytest.raises(UserError, match="batch_size"):
        StyleDataModule(str(tmp_path), batch_size=0)


def test_limit_and_val_root(tmp_path: Path, photo_dir: Path) -> None:
    dm = StyleDataModule(str(photo_dir), image_size=32, limit=5, val_count=3, num_workers=0)
    dm.scan()
    assert len(dm.train_files) == 5 and len(dm.val_files) == 3
    val = tmp_path / "val"
    val.mkdir()
    make_photo(99).save(val / "v.png")
    dm2 = StyleDataModule(str(photo_dir), image_size=32, val_root=str(val), num_workers=0)
    dm2.scan()
    assert len(dm2.train_files) == 12 and [p.name for p in dm2.val_files] == ["v.png"]
    assert dm2.preview_batch(4).shape == (1, 3, 32, 32)


def test_validation_images_are_fixed(photo_dir: Path) -> None:
    def val_batch() -> torch.Tensor:
        dm = StyleDataModule(str(photo_dir), image_size=32, batch_size=2, num_workers=0, val_count=2, seed=1)
        dm.setup("fit")
        return next(iter(dm.val_dataloader()))[0]

    assert torch.equal(val_batch(), val_batch())


def test_sampler_is_deterministic_sharded_and_resumable() -> None:
    def keys(sampler: ResumableSampler) -> list[tuple[int, tuple[int, ...]]]:
        return [(s.index, s.seed) for s in sampler]

    full = ResumableSampler(20, 2, seed=3)
    full.set_epoch(1)
    epoch1 = keys(full)
    assert sorted(k[0] for k in epoch1) == list(range(20))
    full.set_epoch(2)
    assert [k[0] for k in keys(full)] != [k[0] for k in epoch1]  # reshuffled per epoch
    resumed = ResumableSampler(20, 2, seed=3)
    resumed.resume(epoch=1, batch=4)
    assert keys(resumed) == epoch1[8:]
    assert len(resumed) == 20  # the epoch length the trainer sees is unchanged
    assert keys(resumed) == epoch1  # the skip applies once
    shards = [keys(ResumableSampler(21, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 10
    assert not {k[0] for k in shards[0]} & {k[0] for k in shards[1]}


def test_crops_depend_only_on_the_key(photo_dir: Path) -> None:
    ds = ImageFolderDataset(find_images(photo_dir), 32)
    a, _ = ds[Sample(3, (0, 1, 0, 5))]
    b, _ = ds[Sample(3, (0, 1, 0, 5))]
    c, _ = ds[Sample(3, (0, 2, 0, 5))]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert collate([(a, 0), (c, 2)])[0].shape == (2, 3, 32, 32) and collate([(a, 0), (c, 2)])[1] == 2


def test_image_deleted_or_broken_during_a_run_is_skipped(tmp_path: Path) -> None:
    for i in range(4):
        make_photo(i).save(tmp_path / f"{i}.jpg")
    dm = StyleDataModule(str(tmp_path), image_size=32, batch_size=2, num_workers=0, val_count=0)
    dm.setup("fit")
    (tmp_path / "1.jpg").unlink()  # gone after the scan
    (tmp_path / "2.jpg").write_bytes(b"\xff\xd8 broken")  # replaced by garbage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(dm.train_dataloader())
    assert sum(b[0].shape[0] for b in batches) == 4
    assert sum(b[1] for b in batches) == 2


def test_an_unreadable_file_is_never_chosen_as_the_validation_image(tmp_path: Path) -> None:
    """data.val_count=1 and the first file in sorted order is truncated (issue 9.7): training runs, the
    validation image is a readable one, and the message about consecutive unreadable files is not given."""
    from fastnst.training import fit

    from .conftest import make_painting, tiny_config

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        make_photo(i).save(photos / f"img_{i}.jpg", quality=90)
    good = (photos / "img_0.jpg").read_bytes()
    (photos / "img_0.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (photos / "img_5.jpg").write_bytes(b"not an image at all")
    dm = StyleDataModule(str(photos), image_size=32, batch_size=2, num_workers=0, val_count=1)
    with pytest.warns(UserWarning, match="skipping unreadable image .*img_0.jpg"):
        dm.scan()
    assert [p.name for p in dm.val_files] == ["img_1.jpg"]
    assert "img_0.jpg" in [p.name for p in dm.train_files]  # still skipped and counted there
    make_painting().save(tmp_path / "style.png")
    cfg = tiny_config(photos, tmp_path / "style.png", **{"data.val_count": 1, "trainer.max_steps": 3,
                                                          "trainer.val_check_interval": 2})
    result = fit(cfg, tmp_path / "run")
    assert result.global_step == 3


def test_a_validation_folder_without_readable_images_is_one_sentence(tmp_path: Path, photo_dir: Path) -> None:
    val = tmp_path / "val"
    val.mkdir()
    (val / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    dm = StyleDataModule(str(photo_dir), image_size=32, batch_size=2, num_workers=0, val_root=str(val), val_count=2)
    with pytest.raises(UserError, match="data.val_root .* holds no readable image"), pytest.warns(UserWarning):
        dm.scan()


def test_a_set_smaller_than_the_retry_window_says_all_are_unreadable(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"junk")
        files.append(tmp_path / f"bad{i}.jpg")
    ds = ImageFolderDataset(files, 32, train=False)
    with pytest.raises(UserError, match="all 3 images of this validation set are unreadable"), pytest.warns(UserWarning):
        ds[0]
