#!/usr/bin/python3
"""Reference resizes for agla::io::resize_bicubic / resize_shortest_side / center_crop.

Pillow 9.4.0, NumPy 1.24.2 (Debian 12 python3-pil, python3-numpy). Writes input.npy (a random 23x37 RGB uint8 image, seed 0) and
resized_<H>x<W>.npy = np.asarray(Image.fromarray(input).resize((W, H)))  (RGB default filter:
BICUBIC), plus clip_32.npy = centre 32x32 crop, transformers-style (top = (h - 32) // 2), of the image
resized so that its shortest side is 32 (long side int(32 * long / short)) for a 60x45 (portrait)
random image clip_input.npy (seed 1); and the input as BMP, JPEG, grey PNG and RGBA PNG with
Pillow's convert("RGB") of each.
"""
import os

import numpy as np
import PIL
from PIL import Image

assert PIL.__version__ == "9.4.0", PIL.__version__
here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(0)
img = rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8)
np.save(os.path.join(here, "input.npy"), img)
for h, w in [(50, 61), (11, 7), (23, 10), (40, 37), (1, 1), (5, 100)]:
    out = np.asarray(Image.fromarray(img).resize((w, h)))
    np.save(os.path.join(here, f"resized_{h}x{w}.npy"), out)

rng = np.random.default_rng(1)
clip_in = rng.integers(0, 256, size=(60, 45, 3), dtype=np.uint8)
np.save(os.path.join(here, "clip_input.npy"), clip_in)
height, width = clip_in.shape[:2]
short, long = min(height, width), max(height, width)
new_long = int(32 * long / short)
new_h, new_w = (new_long, 32) if width <= height else (32, new_long)
resized = np.asarray(Image.fromarray(clip_in).resize((new_w, new_h)))
top, left = (new_h - 32) // 2, (new_w - 32) // 2
np.save(os.path.join(here, "clip_32.npy"), resized[top:top + 32, left:left + 32])

# Other encodings of the 23x37 input, with Pillow's decoding (convert("RGB")) as reference:
# BMP and PNG are lossless; the JPEG's reference is Pillow's decoding of it.
Image.fromarray(img).save(os.path.join(here, "input.bmp"))
Image.fromarray(img).save(os.path.join(here, "input.jpg"), quality=95)
np.save(os.path.join(here, "input_jpg_pillow.npy"), np.asarray(Image.open(os.path.join(here, "input.jpg")).convert("RGB")))
grey = Image.fromarray(img).convert("L")
grey.save(os.path.join(here, "grey.png"))
np.save(os.path.join(here, "grey_as_rgb.npy"), np.asarray(grey.convert("RGB")))
rgba = np.concatenate([img, rng.integers(0, 256, size=(23, 37, 1), dtype=np.uint8)], axis=2)
Image.fromarray(rgba, "RGBA").save(os.path.join(here, "rgba.png"))
np.save(os.path.join(here, "rgba_as_rgb.npy"), np.asarray(Image.open(os.path.join(here, "rgba.png")).convert("RGB")))
