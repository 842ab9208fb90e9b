"""What every fastnst command line shares: argparse errors and user errors as one ``fastnst: error:`` line
with exit status 2, Ctrl-C as one line with exit status 130 (no tracebacks for things a user can fix)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from fastnst.errors import UserError

PREFIX = "fastnst"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors read like the other errors of fastnst (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{PREFIX}: error: {message}", file=sys.stderr)
        sys.exit(2)


def file_error(exc: OSError) -> str:
    """An operating-system error on a file (permissions, a full disk, a read-only file system) as one sentence."""
    what = exc.filename if exc.filename is not None else "a file"
    return f"{exc.strerror or type(exc).__name__} on {what}; check that path and the space and permissions of its folder"


def run_main(fn: Callable[[], int | None], interrupted: str = "") -> int:
    """Run a command's body: its return value (None = 0) is the exit status; a :class:`UserError` prints
    ``fastnst: error: MESSAGE`` and gives 2, as does an operating-system error on a named file (the commands
    check their outputs up front; this is the net under those checks); Ctrl-C prints ``fastnst: interrupted``
    (plus ``interrupted``, e.g. what was kept) and gives 130."""
    try:
        status = fn()
    except UserError as exc:
        print(f"{PREFIX}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"{PREFIX}: error: {file_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PREFIX}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return 130
    return 0 if status is None else int(status)
