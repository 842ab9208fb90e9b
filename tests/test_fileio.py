"""fastnst.fileio: atomic writes (never half a file, never a private one) and the shared command-line handling."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastnst.fileio import FolderInUse, FolderLock, atomic_write


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "index.npy"
    atomic_write(target, lambda p: np.save(p, np.arange(3)))
    assert np.array_equal(np.load(target), np.arange(3))

    def crash(p: Path) -> None:
        p.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert np.array_equal(np.load(target), np.arange(3))  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["index.npy"]  # no temporary file left behind


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_gives_the_mode_open_would_and_keeps_an_overwritten_files_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", lambda p: p.write_bytes(b"x"))
        assert _mode(tmp_path / "a.bin") == 0o644  # as open() gives under umask 022, not mkstemp's 0600
        os.umask(0o027)
        atomic_write(tmp_path / "b.bin", lambda p: p.write_bytes(b"x"))
        assert _mode(tmp_path / "b.bin") == 0o640
        private = tmp_path / "private.bin"
        private.write_bytes(b"old")
        private.chmod(0o600)
        atomic_write(private, lambda p: p.write_bytes(b"new"))
        assert private.read_bytes() == b"new" and _mode(private) == 0o600
        shared = tmp_path / "shared.bin"
        shared.write_bytes(b"old")
        shared.chmod(0o664)
        atomic_write(shared, lambda p: p.write_bytes(b"new"))
        assert _mode(shared) == 0o664
    finally:
        os.umask(old)


def test_files_the_commands_write_are_not_private(trained_ckpt: Path, photo_dir: Path, tmp_path: Path) -> None:
    """Checkpoints, stylized images and exported models get the umask's mode (0644 under 022)."""
    from fastnst.tools.export import export_checkpoint

    from .test_infer import infer_main

    old = os.umask(0o022)
    try:
        assert _mode(trained_ckpt) == 0o666 & ~old  # written by training under the session's umask
        assert infer_main("--ckpt", trained_ckpt, photo_dir / "img_00.jpg", "-o", tmp_path / "s.png", "-q") == 0
        assert _mode(tmp_path / "s.png") == 0o644
        assert _mode(export_checkpoint(trained_ckpt, tmp_path / "m.onnx", log=lambda s: None)) == 0o644
    finally:
        os.umask(old)


def test_an_os_error_on_a_file_is_one_sentence_in_every_command(capsys) -> None:
    """The net under the commands' up-front checks: a full disk or a folder made read-only mid-run."""
    import errno

    from fastnst.cli import run_main

    def full_disk() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/x.png")

    def bug() -> int:
        raise OSError("not about a file")

    assert run_main(full_disk) == 2
    assert capsys.readouterr().err.strip() == ("fastnst: error: No space left on device on /data/out/x.png; check "
                                               "that path and the space and permissions of its folder")
    with pytest.raises(OSError, match="not about a file"):  # a programming error is not hidden
        run_main(bug)


def _hold(folder: str, ready: Any) -> None:
    lock = FolderLock(folder).acquire()  # noqa: F841 - held until this process is killed
    ready.set()
    time.sleep(60)


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 and fork are POSIX")
def test_the_run_folder_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    """A folder held by another process is refused with that process's pid; kill -9 of the holder frees it (the
    operating system drops the lock), and a pid file left behind by the dead process names nobody."""
    run = tmp_path / "run"
    assert FolderLock.holder(run) is None and not run.exists()  # asking creates nothing
    ctx = multiprocessing.get_context("fork")  # the child starts with fastnst imported: no second start-up
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(run), ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(30)
        assert FolderLock.holder(run) == holder.pid
        with pytest.raises(FolderInUse) as caught:
            FolderLock(run).acquire()
        assert caught.value.pid == holder.pid
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
    assert FolderLock.holder(run) is None
    with FolderLock(run):
        assert FolderLock.holder(run) == os.getpid()  # this process holds it now (probed from another descriptor)
    assert FolderLock.holder(run) is None
