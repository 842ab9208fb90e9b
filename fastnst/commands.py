"""The ``fastnst`` command: one entry point whose subcommands are fastnst's tools.

Each subcommand is a module with ``main(argv) -> int`` (training: Hydra's entry); it is imported only when
it runs, so ``fastnst --help`` answers at once. The old entry points (``python train.py``, ``python infer.py``,
``python -m fastnst.export``, ``fastnst-export``, ...) call the same functions.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

from fastnst.cli import invoked_as, quiet_on_broken_pipe


class Subcommand(NamedTuple):
    module: str  # holds main(argv) -> int
    summary: str  # one line for `fastnst --help`


SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("fastnst.training.entry", "train a style network on a folder of photos (Hydra overrides)"),
    "stylize": Subcommand("fastnst.inference.cli", "stylize images, GIFs and videos with a trained model"),
    "export": Subcommand("fastnst.tools.export", "export a model to ONNX, int8 ONNX, torch.export (.pt2) or a web page"),
    "info": Subcommand("fastnst.tools.info", "say what a model file is: format, network, styles, training"),
    "evaluate": Subcommand("fastnst.tools.evaluate", "report content, style and smoothness losses of a model"),
    "optimize": Subcommand("fastnst.tools.optimize", "the slow quality reference: style transfer by optimisation"),
    "bench": Subcommand("fastnst.tools.bench.cli", "time inference and training paths on this machine; --tune"),
    "prepare": Subcommand("fastnst.tools.prepare", "pre-resize a folder of photos once for faster training"),
    "demo": Subcommand("fastnst.tools.demo", "train on sample photos and stylize them (a smoke test)"),
    "web": Subcommand("fastnst.web.cli", "serve a web export locally, fill the onnxruntime-web cache, time the page"),
}

USAGE = "usage: fastnst [-h] [--version] COMMAND [ARGS...]"


def _help() -> str:
    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items())
    return (f"{USAGE}\n\nFast neural style transfer: train feed-forward style networks, stylize, export.\n\n"
            f"commands:\n{rows}\n\n`fastnst COMMAND --help` shows a command's options and examples, e.g.\n"
            f"  fastnst train data.root=photos/ style.image=starry_night.jpg\n"
            f"  fastnst stylize --ckpt runs/NAME/checkpoints/last.ckpt photo.jpg -o photo_styled.jpg\n")


@quiet_on_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastnst COMMAND ARGS...``; returns the exit status (2 for an unknown command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_help())
        return 0 if args else 2
    if args[0] == "--version":
        from fastnst import __version__

        print(f"fastnst {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"{USAGE}\nfastnst: error: {name!r} is not a fastnst command; choose one of {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    invoked_as(f"fastnst {name}")
    module = importlib.import_module(SUBCOMMANDS[name].module)
    if name == "train":  # Hydra's entry exits itself; the resume hint repeats how it was started
        program = sys.argv[0]
        start = [sys.executable, "-m", "fastnst"] if program.endswith("__main__.py") else [os.path.basename(program)]
        module.main(rest, invocation=[*start, name])
        return 0
    return int(module.main(rest) or 0)
