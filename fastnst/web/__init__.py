"""fastnst in the browser: a static web folder for any fastnst model (``fastnst export --format web``),
served locally with the cross-origin-isolation headers (``fastnst web serve DIR``).

The page (package data under ``static/``: plain ES modules, no build step) runs the exported ONNX model with
onnxruntime-web, WebGPU where the browser has it, else WebAssembly with SIMD and threads; it reads what the
model is from the JSON sidecar ``model.json`` written beside it (:mod:`fastnst.web.site`). The runtime files
come from one pinned version of the npm package, checked by hash (:mod:`fastnst.web.runtime`).
"""

from __future__ import annotations

from fastnst.web.runtime import ORT_WEB_VERSION, find_runtime
from fastnst.web.serve import serve, serving
from fastnst.web.site import write_site

__all__ = ["ORT_WEB_VERSION", "find_runtime", "serve", "serving", "write_site"]
