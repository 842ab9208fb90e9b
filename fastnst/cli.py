"""What every fastnst command line shares: argparse errors and user errors as one ``fastnst: error:`` line
with exit status 2, Ctrl-C as one line with exit status 130 (no tracebacks for things a user can fix)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from fastnst.errors import UserError

PREFIX = "fastnst"
# Set by the ``fastnst`` command to e.g. "fastnst export", so that usage lines and examples show what was typed.
_invoked_as: str | None = None


def prog_name(default: str) -> str:
    """The program name a command's parser shows: ``fastnst SUBCOMMAND`` under the ``fastnst`` command, else
    ``default`` (``infer.py``, ``fastnst-export``, ...)."""
    return _invoked_as or default


def invoked_as(name: str | None) -> None:
    """Tell the parsers how the command was typed (the ``fastnst`` dispatcher calls this)."""
    global _invoked_as
    _invoked_as = name


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions as usual; keeps text with line breaks (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors read like the other errors of fastnst (exit status 2). ``examples``
    are command lines after the program name, shown under ``examples:`` at the end of ``--help`` (tested:
    each one parses)."""

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self.examples = list(examples)
        if self.examples:
            shown = "\n".join(f"  {self.prog} {line}".rstrip() for line in self.examples)
            self.epilog = (self.epilog + "\n\n" if self.epilog else "") + f"examples:\n{shown}\n"

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{PREFIX}: error: {message}", file=sys.stderr)
        sys.exit(2)


F = TypeVar("F", bound=Callable[..., Any])
BROKEN_PIPE_STATUS = 141  # 128 + SIGPIPE: what a shell shows for a program stopped by a closed pipe


def quiet_on_broken_pipe(main: F) -> F:
    """Decorate a command's ``main``: output piped into a program that stops reading (``| head -1``) ends the
    command quietly with status 141, as a program that SIGPIPE stops, instead of a BrokenPipeError traceback."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            result = main(*args, **kwargs)
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            # Python flushes stdout again at exit; pointed at /dev/null, that flush cannot fail a second time.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise SystemExit(BROKEN_PIPE_STATUS) from None

    return wrapped  # type: ignore[return-value]


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
