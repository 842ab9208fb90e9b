"""Stylize a photo with an exported fastnst ONNX model, using only onnxruntime, NumPy and Pillow (no torch).

    python docs/onnxruntime_example.py model.onnx photo.jpg stylized.png [STYLE]

STYLE picks a style of a multi-style model: a name, or a blend such as starry_night=0.7,udnie=0.3
(weights normalised to sum 1); default: the first style.
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

model_path, photo_path, out_path = sys.argv[1:4]
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
styles = json.loads(session.get_modelmeta().custom_metadata_map.get("styles", "[]"))

photo = ImageOps.exif_transpose(Image.open(photo_path)).convert("RGB")
x = np.asarray(photo, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0  # [1, 3, H, W] in [0, 1]
feeds = {"image": x}
choice = sys.argv[4] if len(sys.argv) > 4 else styles[0]
if len(styles) > 1:  # a multi-style model takes one weight per style, [S] float32
    weights = np.zeros(len(styles), dtype=np.float32)
    for part in choice.split(","):
        name, _, weight = part.partition("=")
        if name not in styles:
            sys.exit(f"unknown style {name!r}; the model holds {', '.join(styles)}")
        weights[styles.index(name)] += float(weight or 1.0)
    feeds["style_weights"] = weights / weights.sum()
print("style:", choice)
(y,) = session.run(["stylized"], feeds)                                     # same shape, in [0, 1]
Image.fromarray((y[0].transpose(1, 2, 0) * 255.0).round().astype(np.uint8)).save(out_path)
