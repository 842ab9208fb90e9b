"""The onnxruntime-web runtime files a web export ships: one pinned version of the npm package, found offline
(a folder or tarball the user names, or the cache that ``fastnst web runtime`` fills once with npm)
or referenced on a CDN with Subresource Integrity hashes.

Every file is checked against the SHA-384 hash recorded here for the pinned version, wherever it comes from:
a copy of another version or a damaged download is refused in one sentence, and the same hashes are the
``integrity`` of the CDN option (the browser refuses a file that does not match).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastnst.errors import UserError

ORT_WEB_VERSION = "1.31.1"
NPM_PACKAGE = "onnxruntime-web"
CDN_BASE = f"https://cdn.jsdelivr.net/npm/{NPM_PACKAGE}@{ORT_WEB_VERSION}/dist/"
# The npm tarball's own integrity (npm view onnxruntime-web@1.31.1 dist.integrity).
NPM_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="

# Per backend: the ES module the page imports, the Emscripten loader it starts (also in the worker threads) and
# the WebAssembly binary. "wasm" is the CPU build (SIMD, threads); "webgpu" the build with the WebGPU execution
# provider (it also runs on the CPU, but the plain build is smaller and faster there).
BACKEND_FILES: dict[str, dict[str, str]] = {
    "wasm": {"module": "ort.wasm.min.mjs", "loader": "ort-wasm-simd-threaded.mjs",
             "binary": "ort-wasm-simd-threaded.wasm"},
    "webgpu": {"module": "ort.webgpu.min.mjs", "loader": "ort-wasm-simd-threaded.asyncify.mjs",
               "binary": "ort-wasm-simd-threaded.asyncify.wasm"},
}
INTEGRITY: dict[str, str] = {
    "ort.wasm.min.mjs": "sha384-Vo83xJ0b4xRW+799QzqOViZ2AdoasAnbfsI9UCyxkEGv/8dtIqcHTZ4EJOlDMcfc",
    "ort-wasm-simd-threaded.mjs": "sha384-L9olMNCg9w3FaNhr+m7EAeeiUpM5zy2Nlh6APnoogtFXjsL4ZZZRXlYhSVJc1r3j",
    "ort-wasm-simd-threaded.wasm": "sha384-bQJgW/bZhNOlc9KU45Zu0dyd0EFfNpkOZjfHyH/90dkZQSBBGkFTsAJaabSyYA4Z",
    "ort.webgpu.min.mjs": "sha384-aMG9NGKcj83ZD2AMjPev6sLctK3QhG+MTjMhAxuHlNCjMuYUrTBEHKo9NfA+UqZq",
    "ort-wasm-simd-threaded.asyncify.mjs": "sha384-MZXSqYGZtrCJ8cYZ26C4RYRYYoYtDVV2GnAEL1cLiD+oOr3MrUSe3Hur4S7NidC1",
    "ort-wasm-simd-threaded.asyncify.wasm": "sha384-Da9/alSN2rEHI5XIgPPOp70/HfJ82/URSSpUwy1h4UmGMPkJtb6PoMwvcBHy5h8P",
}
BACKENDS = tuple(BACKEND_FILES)


def runtime_files(backends: tuple[str, ...] = BACKENDS) -> list[str]:
    """The file names (in the package's ``dist/``) of ``backends``, in a fixed order."""
    unknown = [b for b in backends if b not in BACKEND_FILES]
    if unknown or not backends:
        raise UserError(f"unknown web backend(s) {', '.join(unknown) or '(none)'}; use wasm, webgpu or both")
    return [BACKEND_FILES[b][k] for b in backends for k in ("module", "loader", "binary")]


def sri(path: Path) -> str:
    """The Subresource Integrity string (sha384-BASE64) of a file."""
    h = hashlib.sha384()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha384-" + base64.b64encode(h.digest()).decode()


def cache_dir() -> Path:
    """Where ``fastnst web runtime`` keeps the pinned runtime: ``$FASTNST_CACHE`` or
    ``$XDG_CACHE_HOME/fastnst`` (default ``~/.cache/fastnst``), then ``onnxruntime-web-VERSION``."""
    root = os.environ.get("FASTNST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fastnst")
    return Path(root) / f"{NPM_PACKAGE}-{ORT_WEB_VERSION}"


def _dist_folder(path: Path) -> Path:
    """The folder holding the dist files inside a copy of the package: the package, its dist/, or
    node_modules/onnxruntime-web of a project."""
    for candidate in (path, path / "dist", path / "package" / "dist", path / "node_modules" / NPM_PACKAGE / "dist"):
        if (candidate / BACKEND_FILES["wasm"]["module"]).is_file():
            return candidate
    return path


@dataclass(frozen=True)
class Runtime:
    """Where the page gets onnxruntime-web: ``folder`` (files to copy into the export) or ``cdn`` (a base URL)."""

    backends: tuple[str, ...]
    folder: Path | None = None
    cdn: str | None = None

    def sidecar(self) -> dict[str, object]:
        """The sidecar's ``runtime`` entry: version, where the files are (``base``, relative to the page or an
        absolute URL), and each backend's file names with their integrity hashes."""
        return {"package": NPM_PACKAGE, "version": ORT_WEB_VERSION, "source": "cdn" if self.cdn else "local",
                "base": self.cdn or "ort/",
                "backends": {b: {k: {"file": name, "integrity": INTEGRITY[name]} for k, name in BACKEND_FILES[b].items()}
                             for b in self.backends}}


def check_folder(folder: Path, backends: tuple[str, ...], what: str) -> Path:
    """The dist folder inside ``folder`` after checking every file of ``backends`` against the pinned hashes."""
    dist = _dist_folder(folder)
    for name in runtime_files(backends):
        f = dist / name
        if not f.is_file():
            raise UserError(f"{what} {folder} has no {name}; it must hold the dist/ files of {NPM_PACKAGE} "
                            f"{ORT_WEB_VERSION} (npm pack {NPM_PACKAGE}@{ORT_WEB_VERSION}, then unpack it)")
        if sri(f) != INTEGRITY[name]:
            version = _package_version(dist)
            raise UserError(f"{what} {folder}: {name} is not the file of {NPM_PACKAGE} {ORT_WEB_VERSION}"
                            + (f" (that copy is version {version})" if version and version != ORT_WEB_VERSION else
                               " (damaged or changed)")
                            + f"; give a copy of version {ORT_WEB_VERSION} or fill the cache with "
                              f"fastnst web runtime")
    return dist


def _package_version(dist: Path) -> str | None:
    try:
        return str(json.loads((dist.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unpack_tarball(tarball: Path, dest: Path) -> Path:
    """Extract the runtime files of an npm tarball (``package/dist/...``) into ``dest``; nothing else is read
    out of it (no paths from the archive are trusted)."""
    wanted = {f"package/dist/{name}": name for name in runtime_files()}
    wanted["package/package.json"] = "package.json"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "dist").mkdir(exist_ok=True)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                target = dest / name if name == "package.json" else dest / "dist" / name
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{tarball} is not a readable npm tarball ({exc})") from None
    return dest


def fill_cache(npm: str = "npm", log=print) -> Path:  # type: ignore[no-untyped-def]
    """Download the pinned package once with ``npm pack`` into :func:`cache_dir` and check every file."""
    target = cache_dir()
    try:
        dist = check_folder(target, BACKENDS, "the runtime cache")
        log(f"fastnst: {NPM_PACKAGE} {ORT_WEB_VERSION} is already in {target} (every file checked)")
        return dist
    except UserError:
        pass
    exe = shutil.which(npm)
    if exe is None:
        raise UserError(f"npm is not installed; install Node.js (apt-get install npm), or download "
                        f"{NPM_PACKAGE}-{ORT_WEB_VERSION}.tgz elsewhere and pass it with --runtime-dir")
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fastnst: npm pack {NPM_PACKAGE}@{ORT_WEB_VERSION} ...")
        done = subprocess.run([exe, "pack", f"{NPM_PACKAGE}@{ORT_WEB_VERSION}", "--silent"], cwd=tmp,
                              capture_output=True, text=True, timeout=600)
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            reason = (done.stderr.strip().splitlines() or ["no tarball written"])[-1][:200]
            raise UserError(f"npm pack {NPM_PACKAGE}@{ORT_WEB_VERSION} failed ({reason}); check the network to the "
                            f"npm registry, or pass a local copy with --runtime-dir")
        staging = Path(tempfile.mkdtemp(prefix=".fill-", dir=_parent(target)))
        unpack_tarball(tarballs[0], staging)
    try:
        check_folder(staging, BACKENDS, "the downloaded package")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"fastnst: {NPM_PACKAGE} {ORT_WEB_VERSION} is in {target}")
    return target / "dist"


def _parent(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent


def find_runtime(runtime_dir: str | os.PathLike[str] | None, cdn: str | None, backends: tuple[str, ...]) -> Runtime:
    """The runtime an export uses: ``runtime_dir`` (a copy of the package, its dist/ folder or its npm tarball), a
    CDN base URL (``cdn``: the pinned jsDelivr URL or a mirror of it), or the cache; one sentence when none is
    there."""
    runtime_files(backends)  # checks the names
    if runtime_dir is not None and cdn is not None:
        raise UserError("--runtime-dir and --runtime-cdn exclude each other; pass one of them")
    if cdn is not None:
        if not cdn.startswith("https://") and not cdn.startswith("http://127.0.0.1") and not cdn.startswith("http://localhost"):
            raise UserError(f"--runtime-cdn {cdn} must be an https:// URL (a page served over https cannot load "
                            f"scripts over http)")
        return Runtime(backends, cdn=cdn if cdn.endswith("/") else cdn + "/")
    if runtime_dir is not None:
        src = Path(runtime_dir).expanduser()
        if not src.exists():
            raise UserError(f"--runtime-dir {src} does not exist; give a copy of {NPM_PACKAGE} {ORT_WEB_VERSION} "
                            f"(its folder, dist/ or .tgz)")
        if src.is_file():
            staging = Path(tempfile.mkdtemp(prefix="fastnst-ort-"))
            src = unpack_tarball(src, staging)
        return Runtime(backends, folder=check_folder(src, backends, "--runtime-dir"))
    cached = cache_dir()
    if not (cached / "dist").is_dir():
        raise UserError(f"the onnxruntime-web runtime is not here: fill the cache once with `fastnst web "
                        f"runtime` (uses npm), or pass --runtime-dir with a copy of {NPM_PACKAGE} {ORT_WEB_VERSION}, "
                        f"or --runtime-cdn to load it from {CDN_BASE} with integrity hashes")
    return Runtime(backends, folder=check_folder(cached, backends, "the runtime cache"))


__all__ = ["BACKENDS", "BACKEND_FILES", "CDN_BASE", "INTEGRITY", "NPM_PACKAGE", "ORT_WEB_VERSION", "Runtime",
           "cache_dir", "check_folder", "fill_cache", "find_runtime", "runtime_files", "sri", "unpack_tarball"]
