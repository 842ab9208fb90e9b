"""Every command, pointed at a folder it cannot write, ends in one sentence and status 2 before doing the
work (issue 9.5). For root, chmod protects nothing, so the unwritable folder is /sys, which nobody may write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.fixture()
def unwritable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize("command", ["export", "infer", "infer-folder", "optimize", "evaluate-json",
                                     "evaluate-outputs", "prepare", "bench", "train"])
def test_an_unwritable_output_folder_is_one_sentence(command: str, unwritable: Path, trained_ckpt: Path,
                                                      photo_dir: Path, style_path: Path) -> None:
    photo = photo_dir / "img_00.jpg"
    args = {
        "export": ["-m", "fastnst.export", "--ckpt", trained_ckpt, "-o", unwritable / "m.onnx"],
        "infer": [ROOT / "infer.py", "--ckpt", trained_ckpt, photo, "-o", unwritable / "o.png"],
        "infer-folder": [ROOT / "infer.py", "--ckpt", trained_ckpt, photo_dir, "-o", unwritable / "out"],
        "optimize": ["-m", "fastnst.optimize", "--content", photo, "--style", style_path, "-o", unwritable / "o.png",
                     "--vgg-weights", "random", "--size", "32", "--steps", "1"],
        "evaluate-json": ["-m", "fastnst.evaluate", "--ckpt", trained_ckpt, "--images", photo, "--style", style_path,
                          "--size", "32", "--json", unwritable / "r.json"],
        "evaluate-outputs": ["-m", "fastnst.evaluate", "--ckpt", trained_ckpt, "--images", photo, "--style",
                             style_path, "--size", "32", "--save-outputs", unwritable / "outs"],
        "prepare": ["-m", "fastnst.prepare", photo_dir, unwritable / "prepared", "--size", "32", "--no-progress"],
        "bench": ["-m", "fastnst.bench", "--quick", "--parts", "infer", "--json", unwritable / "b.json"],
        "train": [ROOT / "train.py", f"data.root={photo_dir}", f"style.image={style_path}", "loss.vgg_weights=random",
                  f"hydra.run.dir={unwritable / 'run'}"],
    }[command]
    r = _run([str(a) for a in args])
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastnst: error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert str(unwritable) in lines[0]
    assert "wrote" not in r.stdout and "loss fell" not in r.stdout  # refused before the work, not after
