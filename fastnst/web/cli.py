"""``python -m fastnst.web``: ``serve DIR`` (the web folder with the cross-origin-isolation headers), ``runtime``
(fill the onnxruntime-web cache once with npm, for offline exports) and ``bench`` (the page against native
onnxruntime, in a headless Chromium)."""

from __future__ import annotations

import argparse
import sys

from fastnst.cli import Parser, prog_name, run_main
from fastnst.web.bench import add_arguments, run_bench
from fastnst.web.runtime import CDN_BASE, NPM_PACKAGE, ORT_WEB_VERSION, cache_dir, fill_cache
from fastnst.web.serve import serve


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("fastnst-web"), description="fastnst in the browser: serve a web export, fill the "
               "runtime cache, measure the page's speed. Write a web folder with fastnst export --format web.",
               examples=["serve starry-web", "serve starry-web --port 8080", "runtime",
                         "bench --models mobile --sizes 512x512"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("serve", help="serve a web folder locally with the cross-origin-isolation headers")
    s.add_argument("folder", help="a folder written by fastnst export --format web")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    r = sub.add_parser("runtime", help=f"download {NPM_PACKAGE} {ORT_WEB_VERSION} once with npm into the cache "
                       f"({cache_dir()}), checked by hash, for offline exports")
    r.add_argument("--npm", default="npm", help="the npm executable (default: npm on PATH)")
    r.add_argument("--print", action="store_true", help="only print the cache folder, the version and the CDN URL")
    b = sub.add_parser("bench", help="per-image latency in the page (headless Chromium, wasm, threads) against native "
                       "onnxruntime on this machine, in one run")
    add_arguments(b)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return run_main(lambda: serve(args.folder, args.host, args.port), "the server stopped")
    if args.command == "runtime":
        if args.print:
            print(f"{NPM_PACKAGE} {ORT_WEB_VERSION}\ncache: {cache_dir()}\ncdn: {CDN_BASE}")
            return 0
        return run_main(lambda: fill_cache(args.npm) and None)
    return run_main(lambda: run_bench(args))


if __name__ == "__main__":
    sys.exit(main())
