"""Headless Chromium for the page's tests and the speed measurement: the system's ``chromium`` (Debian's package;
``make browser`` installs it) driven by Playwright, with the flags this needs offline and the fake camera."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from fastnst.errors import UserError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream"]


def find_chromium() -> str | None:
    """The Chromium executable: ``$FASTNST_CHROMIUM`` or the first of chromium, chromium-browser, google-chrome on
    PATH; None when there is none."""
    forced = os.environ.get("FASTNST_CHROMIUM")
    if forced:
        return forced if os.path.isfile(forced) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


# WebGPU without a GPU: Chromium's software Vulkan (SwiftShader) as the adapter; slow, but the real code path.
SOFTWARE_WEBGPU = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan",
                   "--use-vulkan=swiftshader", "--use-angle=swiftshader"]


_DRIVER: dict[str, Any] = {"playwright": None, "users": 0}


@contextlib.contextmanager
def _playwright() -> Iterator[Any]:
    """The process's one Playwright driver (its sync API cannot be started twice at once; several browsers run
    under one driver), started by the first user and stopped when the last one is done."""
    if _DRIVER["playwright"] is None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise UserError("Playwright for Python is not installed; pip install playwright (or pip install -e "
                            "'.[test]')") from None
        _DRIVER["playwright"] = sync_playwright().start()
    _DRIVER["users"] += 1
    try:
        yield _DRIVER["playwright"]
    finally:
        _DRIVER["users"] -= 1
        if _DRIVER["users"] == 0:
            _DRIVER["playwright"].stop()
            _DRIVER["playwright"] = None


@contextlib.contextmanager
def chromium(extra_flags: list[str] | None = None, webgpu: bool = False) -> Iterator[Any]:
    """A Playwright browser context on a fresh profile (the caller opens pages in it); closed at the end.
    ``webgpu``: give the page a software WebGPU adapter (SwiftShader) instead of disabling the GPU."""
    exe = find_chromium()
    if exe is None:
        raise UserError("no chromium found; install it (make browser, or apt-get install chromium)")
    with _playwright() as pw, tempfile.TemporaryDirectory(prefix="fastnst-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(profile, executable_path=exe, headless=True,
                                                        args=[f for f in FLAGS if not (webgpu and f == "--disable-gpu")]
                                                        + (SOFTWARE_WEBGPU if webgpu else []) + (extra_flags or []),
                                                        viewport={"width": 1280, "height": 860})
        try:
            yield context
        finally:
            context.close()


__all__ = ["FLAGS", "chromium", "find_chromium"]
