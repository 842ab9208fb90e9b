"""Atomic file writes: a crash or Ctrl-C at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The permission bits a file written at ``path`` should get: those of the file it replaces, else what a
    plain ``open(path, "w")`` gives under the current umask (0644 under umask 022)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike[str], write_fn: Callable[[Path], object], keep_suffix: bool = True) -> Path:
    """Call ``write_fn(tmp)`` to write a temporary file next to ``path``, fsync it, rename it over ``path``
    and fsync the folder (so the rename survives a power cut). The temporary name is unique (several
    processes may write the same target), hidden, and keeps ``path``'s extension, so writers that pick the
    format from the suffix (Pillow, ``np.save``) work; it is removed if anything fails. ``keep_suffix=False``
    ends it in ``.tmp`` instead, so that globs for finished files (``*.ckpt``) never see one (a SIGKILL can
    leave it behind). The file gets the mode of the file it replaces, or the umask's default for a new file
    (``mkstemp`` alone would leave it private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = new_file_mode(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}" if keep_suffix else ".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):  # some filesystems (and Windows) cannot open or fsync a folder
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def check_output_file(path: Path, what: str, example: str = "out.png") -> None:
    """Fail before long work if ``path`` (an output file named by option ``what``) is a folder or its folder
    cannot be created; raises a :class:`fastnst.errors.UserError` naming the option."""
    from fastnst.errors import UserError

    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; pass a file name such as {path / example}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder of {what} {path} ({exc.strerror or exc}); choose another path") from None
