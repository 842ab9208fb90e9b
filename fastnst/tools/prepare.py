"""``python -m fastnst.prepare SRC DST --shorter-side 256``: pre-resize a folder of photos once, so training never
decodes a JPEG again; then train with data.root=DST. The format: :mod:`fastnst.training.prepared`.

Resumable: run the same command again after an interruption (at most the last few seconds are lost).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastnst.cli import Parser, prog_name, quiet_on_broken_pipe, run_main
from fastnst.training.prepared import prepare


def build_parser() -> Parser:
    p = Parser(prog=prog_name("fastnst-prepare"),
               description="Pre-resize a folder of photos once, so training never decodes a JPEG again.",
               epilog="Resumable: run the same command again after an interruption.",
               examples=["/data/coco/train2014 /data/coco256 --shorter-side 256"])
    p.add_argument("src", help="folder of photos (searched recursively), e.g. COCO train2014")
    p.add_argument("dst", help="output folder (created); train with data.root=DST")
    p.add_argument("--shorter-side", "--size", dest="size", type=int, default=256, metavar="PX",
                   help="every photo is resized so that its shorter side is PX, at least the training crop "
                        "data.image_size (default 256; --size is the old name)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPUs)")
    p.add_argument("--limit", type=int, default=None, help="stop after the first N files (a later run continues)")
    p.add_argument("--overwrite", action="store_true", help="start DST again from scratch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@quiet_on_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args), interrupted=f"the work so far is saved in {args.dst}; run the same "
                                                      f"command again to continue")


def _run(args: argparse.Namespace) -> None:
    stats = prepare(args.src, args.dst, size=args.size, workers=args.workers, limit=args.limit,
                    overwrite=args.overwrite, progress=not args.no_progress)
    where = "resumed at file %d, " % stats.resumed_at if stats.resumed_at else ""
    state = "complete" if stats.complete else "incomplete (run again without --limit to continue)"
    print(f"{args.dst}: {stats.total} images at {args.size}px ({stats.bytes / 2**30:.2f} GiB), {where}"
          f"{stats.written} written now, {stats.skipped} unreadable file(s) skipped; {state}. "
          f"Train with data.root={args.dst}")


if __name__ == "__main__":
    sys.exit(main())
