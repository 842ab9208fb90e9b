"""Data speed: images/s of the training data pipeline on a folder of JPEGs, per worker, and of the same
photos after ``python -m fastnst.prepare``."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fastnst.media.image import find_images
from fastnst.tools.bench.common import BenchConfig


def make_jpegs(folder: Path, count: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (smooth colour fields, edges and sensor noise; COCO's typical size)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(count):
        base = Image.fromarray(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        arr = np.asarray(base, dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        arr += 30 * np.sin(xx / (4 + i % 7) + yy / (9 + i % 5))[..., None]
        arr += rng.normal(0, 6, arr.shape)
        p = folder / f"photo_{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(p, quality=90)
        out.append(p)
    return out

def _loader_rate(root: str, cfg: BenchConfig, workers: int) -> dict[str, Any]:
    """Images/s of StyleDataModule's training loader, after its first batch (worker start-up)."""
    from fastnst.training.data import StyleDataModule

    dm = StyleDataModule(root, image_size=cfg.data_size, batch_size=cfg.data_batch, num_workers=workers,
                         val_count=0, seed=0)
    loader = dm.train_dataloader()
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(cfg.data_epochs + 1):
            dm.sampler.set_epoch(epoch)
            # timed from iter(): the queues start empty, so prefetching cannot inflate the rate
            n, t0 = 0, time.perf_counter()
            for images, _ in loader:
                assert images.shape[-1] == cfg.data_size
                n += images.shape[0]
            dt = time.perf_counter() - t0
            if epoch > 0 and n:  # epoch 0 warms the page cache and the workers
                rates.append(n / dt)
    del loader
    ips = statistics.median(rates) if rates else float("nan")
    return {"workers": workers, "images_per_s": ips, "images_per_s_per_worker": ips / max(1, workers)}

def run_data(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    from fastnst.training.prepared import prepare

    with tempfile.TemporaryDirectory(prefix="fastnst-bench-data-") as tmp:
        if cfg.data_root:
            root = str(Path(cfg.data_root).expanduser())
            source = f"{root}"
        else:
            root = str(Path(tmp) / "jpegs")
            make_jpegs(Path(root), cfg.data_images)
            source = f"{cfg.data_images} synthetic 640x480 JPEGs"
        files = find_images(root, "--data-root")
        from PIL import Image

        sizes = []
        for f in files[:64]:
            with contextlib.suppress(OSError), Image.open(f) as im:
                sizes.append(im.size)
        median_px = f"{int(np.median([s[0] for s in sizes]))}x{int(np.median([s[1] for s in sizes]))}" if sizes else None
        results = []
        for w in cfg.data_workers:
            log(f"data: JPEG folder, {w} worker(s) ...")
            results.append({"pipeline": "jpeg", **_loader_rate(root, cfg, w)})
        prep: dict[str, Any] | None = None
        if cfg.data_prepared:
            dst = Path(tmp) / "prepared"
            log("data: python -m fastnst.prepare ...")
            t0 = time.perf_counter()
            stats = prepare(root, dst, size=cfg.data_size, workers=max(1, os.cpu_count() or 1), progress=False)
            dt = time.perf_counter() - t0
            prep = {"seconds": dt, "images_per_s": stats.written / dt if dt > 0 else float("nan"),
                    "images": stats.written, "skipped": stats.skipped, "bytes": stats.bytes}
            for w in cfg.data_workers:
                log(f"data: prepared dataset, {w} worker(s) ...")
                results.append({"pipeline": "prepared", **_loader_rate(str(dst), cfg, w)})
    return {"source": source, "images": len(files), "median_size": median_px, "crop": cfg.data_size,
            "batch_size": cfg.data_batch, "epochs_timed": cfg.data_epochs, "prepare": prep, "results": results}
