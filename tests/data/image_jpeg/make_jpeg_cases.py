#!/usr/bin/python3
"""JPEG decoding cases for agla::io::decode_image, with Pillow's pixels and verdicts as reference.

Run with Debian 12's /usr/bin/python3 (python3-pil 9.4.0 on libjpeg62-turbo 2.1.5, python3-numpy
1.24.2) and libjpeg-turbo-progs 2.1.5 (cjpeg, jpegtran) installed:

    /usr/bin/python3 tests/data/image_jpeg/make_jpeg_cases.py

The source pixels are crops of ../augment/image/astronaut.png (scikit-image's astronaut sample, a
photograph). Every JPEG is written here, then opened with Pillow: `pixels` files hold
np.asarray(Image.open(f).convert("RGB")); refused files record the exception Pillow raised.
Everything is listed in cases.json. See README.md.
"""
import io
import json
import os
import struct
import subprocess

import numpy as np
import PIL
from PIL import Image, features

HERE = os.path.dirname(os.path.abspath(__file__))
assert PIL.__version__ == "9.4.0", PIL.__version__
assert features.version_feature("libjpeg_turbo") == "2.1.5", features.version_feature("libjpeg_turbo")
tool_version = subprocess.run(["jpegtran", "-version"], capture_output=True, text=True).stderr.strip()
assert "2.1.5" in tool_version, tool_version

astronaut = Image.open(os.path.join(HERE, "..", "augment", "image", "astronaut.png")).convert("RGB")
small = astronaut.crop((180, 100, 257, 153))  # 77x53: partial MCUs on both axes
photo = astronaut.crop((150, 40, 310, 160))   # 160x120
cases = []


def path(name):
    return os.path.join(HERE, name)


def pillow_decode(data):
    """('ok', pixels) or ('refused', "ExceptionType: message") for Image.open(...).convert("RGB")."""
    try:
        return "ok", np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as e:  # the verdict is what is recorded
        return "refused", f"{type(e).__name__}: {e}"


def add(name, data, kind, pixels_of=None):
    """Writes `name`, decodes it with Pillow and records the case. Pixels go to <name>.npy unless
    they equal those of the earlier case `pixels_of` (asserted), whose file is then referenced."""
    with open(path(name), "wb") as f:
        f.write(data)
    verdict, result = pillow_decode(data)
    case = {"file": name, "kind": kind, "pillow": verdict}
    if verdict == "ok":
        if pixels_of is None:
            case["pixels"] = name.rsplit(".", 1)[0] + ".npy"
            np.save(path(case["pixels"]), result)
        else:
            case["pixels"] = pixels_of.rsplit(".", 1)[0] + ".npy"
            assert np.array_equal(np.load(path(case["pixels"])), result), name
    else:
        case["message"] = result
    cases.append(case)
    return data


def pillow_jpeg(image, **options):
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def tool(args, data):
    return subprocess.run(args, input=data, capture_output=True, check=True).stdout


def segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def without_segment(data, marker):
    """`data` with its first marker segment of type `marker` removed (header markers only)."""
    pos = 2
    while data[pos + 1] != marker:
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return data[:pos] + data[pos + 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]:]


def ppm(image):
    out = io.BytesIO()
    image.save(out, "PPM")
    return out.getvalue()


# --- pixels: every kind of JPEG Pillow reads ---------------------------------------------------
base444 = add("baseline_444_q95.jpg", pillow_jpeg(small, quality=95, subsampling=0), "baseline 4:4:4")
base422 = add("baseline_422_q90.jpg", pillow_jpeg(small, quality=90, subsampling=1), "baseline 4:2:2")
base420 = add("baseline_420_q50.jpg", pillow_jpeg(small, quality=50, subsampling=2), "baseline 4:2:0")
progressive = add("progressive_420_q75.jpg", pillow_jpeg(small, quality=75, progressive=True),
                  "progressive 4:2:0")
add("progressive_444_optimized.jpg", pillow_jpeg(small, quality=90, subsampling=0, progressive=True, optimize=True),
    "progressive 4:4:4, optimised Huffman tables")
add("restart_422.jpg", tool(["jpegtran", "-restart", "2B"], base422),
    "baseline 4:2:2 with a restart marker every 2 MCUs (jpegtran -restart 2B)", pixels_of="baseline_422_q90.jpg")
add("arithmetic_420.jpg", tool(["jpegtran", "-arithmetic"], base420), "arithmetic coding (jpegtran -arithmetic)",
    pixels_of="baseline_420_q50.jpg")
add("sample_440.jpg", tool(["cjpeg", "-quality", "85", "-sample", "1x2"], ppm(small)), "baseline 4:4:0 (cjpeg -sample 1x2)")
add("sample_411.jpg", tool(["cjpeg", "-quality", "85", "-sample", "4x1"], ppm(small)), "baseline 4:1:1 (cjpeg -sample 4x1)")
add("rgb_adobe.jpg", tool(["cjpeg", "-quality", "90", "-rgb"], ppm(small)),
    "three components stored as RGB (Adobe transform 0; cjpeg -rgb)")
add("grayscale_q85.jpg", pillow_jpeg(small.convert("L"), quality=85), "grayscale")
rgb = np.asarray(small).astype(np.int32)
k = 255 - rgb.max(axis=2)
scale = np.maximum(255 - k, 1)
cmy = np.where((255 - k)[..., None] > 0, (255 - rgb - k[..., None]) * 255 // scale[..., None], 0)
cmyk = Image.fromarray(np.concatenate([cmy, k[..., None]], axis=2).astype(np.uint8), "CMYK")
cmyk_adobe = add("cmyk_adobe.jpg", pillow_jpeg(cmyk, quality=90), "CMYK, Adobe marker (inverted values, Pillow's own)")
add("cmyk_no_adobe.jpg", without_segment(cmyk_adobe, 0xEE), "CMYK without an Adobe marker (Pillow still inverts)",
    pixels_of="cmyk_adobe.jpg")
adobe = cmyk_adobe.index(b"\xff\xee\x00\x0eAdobe")
assert cmyk_adobe[adobe + 15] == 0  # Adobe transform 0: CMYK stored as is
add("ycck_adobe.jpg", cmyk_adobe[:adobe + 15] + b"\x02" + cmyk_adobe[adobe + 16:],
    "the CMYK file with its Adobe transform set to 2 (YCCK): libjpeg converts YCCK to CMYK")
add("photo_q75.jpg", pillow_jpeg(photo, quality=75), "photo, 160x120, Pillow's defaults (quality 75, 4:2:0)")
corrupt = bytearray(base420)
for i in range(len(corrupt) // 2, len(corrupt) // 2 + 24, 3):
    corrupt[i] ^= 0x5A
add("corrupt_entropy_420.jpg", bytes(corrupt), "entropy-coded bytes flipped: libjpeg warns, Pillow decodes")
add("tables_then_image.jpg",
    b"\xff\xd8" + base420[base420.index(b"\xff\xdb"):base420.index(b"\xff\xc0")] + b"\xff\xd9" + base420,
    "a tables-only datastream (SOI, DQT, DHT, EOI) before the image", pixels_of="baseline_420_q50.jpg")
add("junk_after_eoi.jpg", base420 + b"trailing bytes" * 8, "data after EOI", pixels_of="baseline_420_q50.jpg")

# --- verdicts: where the data ends, and what Pillow's 64 KiB reads see ------------------------
body = base420[:-2]  # everything but EOI
bad_dht = segment(0xC4, b"\x00" + b"\xff" * 16)  # a Huffman table claiming 4080 codes
comment = segment(0xFE, b"x" * 65000)
add("cut_eoi.jpg", body, "baseline without its EOI marker")
add("cut_half.jpg", base420[:len(base420) // 2], "baseline cut in its entropy-coded data")
add("cut_header.jpg", base420[:300], "cut inside the header (after the SOF, before the scan)")
add("cut_progressive_eoi.jpg", progressive[:-2], "progressive without its EOI marker")
add("bad_dht_after_scan.jpg", body + bad_dht + b"\xff\xd9", "a bad Huffman table after the scan, within the first read")
add("bad_dht_after_64k.jpg", body + comment + bad_dht + b"\xff\xd9",
    "a bad Huffman table after the scan, past Pillow's first 64 KiB read", pixels_of="baseline_420_q50.jpg")
add("no_eoi_after_64k.jpg", body + comment, "no EOI, the data ending past Pillow's first 64 KiB read",
    pixels_of="baseline_420_q50.jpg")

with open(path("cases.json"), "w") as f:
    json.dump({
        "generator": "make_jpeg_cases.py",
        "versions": {"pillow": PIL.__version__, "libjpeg_turbo": features.version_feature("libjpeg_turbo"),
                     "numpy": np.__version__, "libjpeg_turbo_progs": tool_version},
        "cases": cases,
    }, f, indent=1)
    f.write("\n")

# The benchmark input of bench/image_bench.cpp: 640x480, Pillow's defaults.
Image.fromarray(np.asarray(astronaut.resize((640, 640), Image.BICUBIC))[80:560]).save(path("bench_640x480.jpg"),
                                                                                     quality=75)
