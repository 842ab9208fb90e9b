"""Stylize images and videos: ``python infer.py --ckpt MODEL INPUT... [-o OUT]``.

The same as ``fastnst stylize ...`` (:mod:`fastnst.inference.cli`). MODEL is a training checkpoint (.ckpt), an
exported model (.onnx, .pt2) or a pytorch/examples model (.pth); INPUT is image or video files, folders
(searched recursively) or glob patterns. ``python infer.py --help`` lists every option.
"""

import sys

from fastnst.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
