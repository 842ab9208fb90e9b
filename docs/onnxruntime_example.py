"""Stylize a photo with an exported fastnst ONNX model, using only onnxruntime, NumPy and Pillow (no torch).

    python docs/onnxruntime_example.py model.onnx photo.jpg stylized.png
"""

import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

model_path, photo_path, out_path = sys.argv[1:4]
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
print("style:", session.get_modelmeta().custom_metadata_map.get("style_name"))

photo = ImageOps.exif_transpose(Image.open(photo_path)).convert("RGB")
x = np.asarray(photo, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0  # [1, 3, H, W] in [0, 1]
(y,) = session.run(["stylized"], {"image": x})                               # same shape, in [0, 1]
Image.fromarray((y[0].transpose(1, 2, 0) * 255.0).round().astype(np.uint8)).save(out_path)
