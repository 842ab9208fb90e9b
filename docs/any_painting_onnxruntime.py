"""Stylize a photo with any painting, using an exported fastnst network that takes a painting and only
onnxruntime, NumPy and Pillow (no torch):

    python docs/any_painting_onnxruntime.py model.onnx painting.jpg photo.jpg stylized.png

The export wrote two files: model.onnx (the transformer: ``image`` + ``style_vector``) and model.encoder.onnx
beside it (the style encoder: ``painting`` -> ``style_vector``). The metadata says the painting size.
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

model_path, painting_path, photo_path, out_path = sys.argv[1:5]
encoder_path = Path(model_path).with_name(Path(model_path).stem + ".encoder.onnx")
transformer = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
encoder = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
size = int(transformer.get_modelmeta().custom_metadata_map["painting_size"])  # longer side the encoder expects


def rgb(path: str) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def nchw(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0  # [1, 3, H, W] in [0, 1]


painting = rgb(painting_path)
scale = size / max(painting.size)
painting = painting.resize((max(1, round(painting.width * scale)), max(1, round(painting.height * scale))),
                           Image.BICUBIC)
(vector,) = encoder.run(["style_vector"], {"painting": nchw(painting)})      # [D] float32, once per painting
(y,) = transformer.run(["stylized"], {"image": nchw(rgb(photo_path)), "style_vector": vector.reshape(-1)})
Image.fromarray((y[0].transpose(1, 2, 0) * 255.0).round().astype(np.uint8)).save(out_path)
print("style vector:", vector.shape, "->", out_path)
