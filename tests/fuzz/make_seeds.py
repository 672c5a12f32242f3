#!/usr/bin/env python3
"""Writes the generated seed inputs of tests/fuzz/corpus/ (standard library only).

Run from anywhere: python3 tests/fuzz/make_seeds.py. The other seeds are copies of test data:
config/ holds the fixture config.json files, image/ the fixture PNG/JPEG/BMP images (the JPEGs
of tests/data/image_jpeg: baseline, progressive, restarts, arithmetic, grey, RGB, CMYK, YCCK,
4:1:1), tokenizer/ texts of tests/data/tokenizer/cases.json. The seeds of pytorch_checkpoint/,
sentencepiece/, npy/ and sharded_index/ are written here from the torch.save files, the
SentencePiece model, the .npy files and the index of tests/data, plus hand-made variants.
"""
import json
import os
import pickle
import struct
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")


def write(target, name, data):
    path = os.path.join(HERE, "corpus", target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# --- safetensors -----------------------------------------------------------------------------
def safetensors(tensors, metadata=None, pad=True):
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


write("safetensors", "dtypes.safetensors", safetensors([
    ("a.f32", "F32", [2, 2], struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)),
    ("b.bf16", "BF16", [3], b"\x80\x3f\x00\x40\x40\xc0"),
    ("c.f16", "F16", [], b"\x00\x3c"),
    ("d.i64", "I64", [1], struct.pack("<q", -7)),
    ("e.bool", "BOOL", [2], b"\x01\x00"),
    ("f.u8", "U8", [0, 5], b""),
    ("g.i32", "I32", [1, 1, 1], struct.pack("<i", 42)),
], metadata={"format": "pt"}))
write("safetensors", "misaligned.safetensors", safetensors([
    ("w", "F32", [3], struct.pack("<3f", 1.0, 2.0, 3.0)),
    ("x", "F64", [1], struct.pack("<d", 0.25)),
], pad=False))
write("safetensors", "empty.safetensors", safetensors([]))
write("safetensors", "metadata_only.safetensors", safetensors([], metadata={"format": "pt", "k": "v"}))
write("safetensors", "two_i8.safetensors", safetensors([
    ("p", "I8", [2], b"\x7f\x80"),
    ("q", "I16", [2], struct.pack("<2h", -1, 1)),
]))


# --- images ----------------------------------------------------------------------------------
def png(width, height, color_type, bit_depth, rows, extra=b"", interlace=0):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


write("image", "rgb_1x1.png", png(1, 1, 2, 8, [b"\x10\x20\x30"]))
write("image", "grey16_3x2.png", png(3, 2, 0, 16, [b"\x00\x00\x80\x00\xff\xff", b"\x12\x34\x56\x78\x9a\xbc"]))
palette = b"\x00\x00\x00\xff\x00\x00\x00\xff\x00\x00\x00\xff"
write("image", "palette_4x2.png",
      png(4, 2, 3, 8, [b"\x00\x01\x02\x03", b"\x03\x02\x01\x00"],
          extra=(struct.pack(">I", len(palette)) + b"PLTE" + palette +
                 struct.pack(">I", zlib.crc32(b"PLTE" + palette) & 0xFFFFFFFF))))
write("image", "greyalpha_2x2.png", png(2, 2, 4, 8, [b"\x10\xff\x20\x80", b"\x30\x00\x40\x40"]))
# Adam7 interlaced 2x2 RGBA: pass 1 holds (0,0), pass 6 (1,0), pass 7 row 1 (both pixels).
adam7 = b"\x00\x01\x02\x03\xff" + b"\x00\x04\x05\x06\xff" + b"\x00\x07\x08\x09\xff\x0a\x0b\x0c\xff"
ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 6, 0, 0, 1)


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


write("image", "interlaced_2x2.png",
      b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(adam7)) + chunk(b"IEND", b""))


def bmp(width, height, bpp, pixel_rows, palette=b""):
    row_bytes = ((width * bpp + 31) // 32) * 4
    data = b"".join(r.ljust(row_bytes, b"\x00") for r in pixel_rows)
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, len(data), 2835, 2835, len(palette) // 4, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


write("image", "rgb24_2x2.bmp", bmp(2, 2, 24, [b"\x00\x00\xff\x00\xff\x00", b"\xff\x00\x00\xff\xff\xff"]))
write("image", "pal8_3x1.bmp", bmp(3, 1, 8, [b"\x00\x01\x01"], palette=b"\x00\x00\x00\x00\xff\xff\xff\x00"))

# --- tokenizer -------------------------------------------------------------------------------
with open(os.path.join(DATA, "tokenizer", "cases.json"), encoding="utf-8") as f:
    cases = json.load(f)["cases"]
per_category = {}
for case in cases:
    if per_category.get(case["category"], 0) < 4:
        per_category[case["category"]] = per_category.get(case["category"], 0) + 1
        write("tokenizer", "case_%03d.txt" % case["id"], case["text"])


# --- pytorch_checkpoint: byte 0 even = whole file, odd = the pickle alone ----------------------
CKPT = os.path.join(DATA, "pytorch_checkpoint")
for name in ["basic.pt", "nested.pth", "shard-00001-of-00002.bin", "shard-00002-of-00002.bin", "malicious_eval.pt",
             "oob_size.pt", "oob_offset.pt", "truncated.pt", "legacy.pt"]:
    with open(os.path.join(CKPT, name), "rb") as f:
        data = f.read()
    stem = name.split(".")[0]
    write("pytorch_checkpoint", "file_" + stem, b"\x00" + data)
    if zipfile.is_zipfile(os.path.join(CKPT, name)):
        with zipfile.ZipFile(os.path.join(CKPT, name)) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
            write("pytorch_checkpoint", "pickle_" + stem, b"\x01" + z.read(pkl))
# Plain values in every protocol the unpickler reads (FRAME, MEMOIZE, SHORT_BINUNICODE, LONG1, ...).
values = {"a": [1, -2, 300, 70000, 2.5, None, True, False, b"xy", "text", (1, 2), (3,), ()],
          "big": 2 ** 70, "neg": -(2 ** 40), "nested": {"k": [[], {}], 7: "int key"}}
for protocol in (2, 3, 4, 5):
    write("pytorch_checkpoint", "pickle_values_p%d" % protocol, b"\x01" + pickle.dumps(values, protocol=protocol))


def stored_zip(records, descriptor):
    """A zip of stored records; with `descriptor`, torch.save's layout (sizes after the data)."""
    out, central = b"", b""
    for name, data in records:
        crc = zlib.crc32(data) & 0xFFFFFFFF
        flags = 0x808 if descriptor else 0
        offset = len(out)
        sizes = (0, 0, 0) if descriptor else (crc, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, 0, 0, *sizes, len(name), 0) + name + data
        if descriptor:
            out += struct.pack("<IIII", 0x08074B50, crc, len(data), len(data))
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, 0, 0, 0, crc, len(data), len(data),
                               len(name), 0, 0, 0, 0, 0, offset) + name
    return out + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central),
                                       len(out), 0)


with zipfile.ZipFile(os.path.join(CKPT, "shard-00002-of-00002.bin")) as z:
    records = [(n.replace("shard-00002-of-00002/", "archive/").encode(), z.read(n)) for n in z.namelist()]
write("pytorch_checkpoint", "file_plain_headers", b"\x00" + stored_zip(records, False))
write("pytorch_checkpoint", "file_descriptors", b"\x00" + stored_zip(records, True))

# --- sentencepiece: 2-byte text length, text, tokenizer.model ----------------------------------
with open(os.path.join(DATA, "llava", "tokenizer", "tiny_llama_bpe.model"), "rb") as f:
    spm = f.read()
with open(os.path.join(DATA, "llava", "tokenizer", "cases.json"), encoding="utf-8") as f:
    spm_texts = [c["text"] for c in json.load(f)]
for i, text in enumerate([spm_texts[3], spm_texts[len(spm_texts) // 2], spm_texts[-1], "USER: <image>\nIs there a cat?"]):
    t = text.encode("utf-8")
    write("sentencepiece", "model_%d" % i, struct.pack("<H", len(t)) + t + spm)
write("sentencepiece", "text_only", struct.pack("<H", 5) + b"hello")

# --- npy -----------------------------------------------------------------------------------------
for src in ["pytorch_checkpoint/basic_linear.npy", "image_resize/resized_1x1.npy", "decode/data/rand00_v7.logits.npy"]:
    with open(os.path.join(DATA, src), "rb") as f:
        write("npy", os.path.basename(src), f.read())


def npy(descr, shape, data, version=1, order="False"):
    dims = "".join("%d," % d for d in shape) if len(shape) == 1 else ", ".join(str(d) for d in shape)
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, order, dims)
    prefix = 10 if version == 1 else 12
    header += " " * ((64 - (prefix + len(header) + 1) % 64) % 64) + "\n"
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header.encode() + data


write("npy", "f8_scalar.npy", npy("<f8", (), struct.pack("<d", 0.5)))
write("npy", "b1_2x2.npy", npy("|b1", (2, 2), b"\x01\x00\x00\x01"))
write("npy", "i2_empty.npy", npy("<i2", (0, 3), b""))
write("npy", "f2_v2.npy", npy("<f2", (3,), b"\x00\x3c\x00\x40\x00\xc0", version=2))
write("npy", "u1_v3.npy", npy("|u1", (1, 1, 2), b"\x07\x08", version=3))
write("npy", "fortran.npy", npy("<i4", (2,), struct.pack("<2i", 1, 2), order="True"))

# --- sharded_index ---------------------------------------------------------------------------------
with open(os.path.join(CKPT, "shard.bin.index.json"), "rb") as f:
    write("sharded_index", "shard.bin.index.json", f.read())
write("sharded_index", "safetensors.index.json", json.dumps({
    "metadata": {"total_size": 1234},
    "weight_map": {"model.embed.weight": "model-00001-of-00003.safetensors",
                   "model.layers.0.w": "model-00002-of-00003.safetensors",
                   "model.layers.1.w": "model-00002-of-00003.safetensors",
                   "lm_head.weight": "model-00003-of-00003.safetensors"}}, indent=2))
write("sharded_index", "escape.index.json", '{"weight_map": {"a": "../a.bin", "b": "b\\u0000.bin"}}')
