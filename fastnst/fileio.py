"""Atomic file writes (a crash or Ctrl-C at any moment leaves the old file or the new one, never half of one),
checks that an output can be written before long work, and the run folder's lock."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

from fastnst.errors import UserError


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


def check_writable_folder(folder: Path, what: str) -> None:
    """Fail before long work if ``folder`` (named by option ``what``) cannot be created or written: it is
    created, and a file is created in it and removed. Raises a :class:`fastnst.errors.UserError` naming both."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {folder} for {what} ({exc.strerror or exc}); choose another "
                        f"path") from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fastnst-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"the folder {folder} for {what} is not writable ({exc.strerror or exc}); choose another "
                        f"path") from None


def check_output_file(path: Path, what: str, example: str = "out.png") -> None:
    """Fail before long work if ``path`` (an output file named by option ``what``) is a folder or its folder
    cannot be created or written; raises a :class:`fastnst.errors.UserError` naming the option."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; pass a file name such as {path / example}")
    check_writable_folder(path.parent, f"{what} {path}")


def launched_rank() -> int:
    """This process's rank when a launcher started several (Lightning's DDP children, torchrun, srun), else 0."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


class FolderInUse(Exception):
    """Another live process holds the folder (see :class:`FolderLock`)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        super().__init__(f"{folder} is in use by process {pid if pid is not None else '(unknown)'}")
        self.folder, self.pid = folder, pid


class FolderLock:
    """An exclusive claim on a folder by one process: filelock's lock on ``FOLDER/.fastnst.lock`` (``flock`` on
    POSIX, ``msvcrt.locking`` on Windows), which the operating system drops when the process ends, however it
    ends (``kill -9`` included), so a lock file left behind never blocks anyone. The owner's pid is written
    beside it (``FOLDER/.fastnst.pid``: the lock file itself is rewritten by every process that tries it), for
    the message that names the process. On a file system without locks the claim is skipped."""

    NAME = ".fastnst.lock"
    PID = ".fastnst.pid"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._lock: FileLock | None = None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise :class:`FolderInUse` naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.folder / self.NAME, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise FolderInUse(self.folder, _holder_pid(self.folder / self.PID)) from None
        except NotImplementedError:  # no flock on this file system (some cluster mounts): no claim
            return self
        self._lock = lock
        with contextlib.suppress(OSError):
            (self.folder / self.PID).write_text(str(os.getpid()))
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @classmethod
    def holder(cls, folder: str | os.PathLike[str]) -> int | None:
        """The pid of the live process holding ``folder``'s lock (-1 if it cannot be read), else None; nothing
        is created where there is no lock file."""
        path = Path(folder) / cls.NAME
        if not path.is_file():
            return None
        probe = FileLock(path, timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return _holder_pid(Path(folder) / cls.PID) or -1
        except (NotImplementedError, OSError):
            return None
        probe.release()
        return None


def _holder_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that process is alive (a pid file left by a killed run names nobody)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None
