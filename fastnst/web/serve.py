"""Serve a web folder locally with the headers its page needs.

WebAssembly threads need ``SharedArrayBuffer``, which browsers give only to a cross-origin isolated page:
``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp`` on the page,
``Cross-Origin-Resource-Policy`` on what it loads. Without them the page still works, on one thread.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from fastnst.errors import UserError

ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
         ".onnx": "application/octet-stream", ".css": "text/css", ".html": "text/html; charset=utf-8"}


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with the cross-origin-isolation headers and the right types for .mjs and .wasm."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}
    quiet = False

    def end_headers(self) -> None:
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-cache")  # revalidate: a re-export shows at the next reload
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        if not self.quiet:
            super().log_message(format, *args)


class Server(http.server.ThreadingHTTPServer):
    """A threading server that stays quiet when a browser drops a connection (it does so on every reload)."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def _server(folder: str | os.PathLike[str], host: str, port: int, quiet: bool) -> Server:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; serve a folder written by fastnst export --format web")
    if not (root / "index.html").is_file():
        raise UserError(f"{root} has no index.html; serve a folder written by fastnst export --format web")
    handler = functools.partial(type("QuietHandler" if quiet else "Handler", (Handler,), {"quiet": quiet}),
                                directory=str(root))
    try:
        return Server((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port") from None


def serve(folder: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, log=print) -> None:  # type: ignore[no-untyped-def]
    """Serve ``folder`` until Ctrl-C."""
    server = _server(folder, host, port, quiet=False)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    log(f"fastnst: serving {folder} at http://{shown}:{server.server_address[1]}/ (cross-origin isolated; Ctrl-C stops)")
    with server:
        server.serve_forever()


@contextlib.contextmanager
def serving(folder: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``folder`` in a background thread for the duration of the block; yields the base URL (tests, bench)."""
    server = _server(folder, host, port, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


__all__ = ["ISOLATION_HEADERS", "serve", "serving"]
