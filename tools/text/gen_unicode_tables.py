#!/usr/bin/env python3
"""Generates the Unicode tables and the embedded vocabulary of agla's BERT WordPiece tokenizer.

The tables reproduce exactly what the reference tokenizers compute with Python's `unicodedata`
and `str` methods, so they must come from the Unicode version the reference ran with (14.0.0,
CPython 3.10/3.11):

  unicode_tables.hpp          character classes, per-code-point lower case, canonical
                              decompositions, canonical combining classes
  bert_base_uncased_vocab.hpp bert-base-uncased vocab.txt as string pieces

Usage (from the repository root):
  python3 tools/text/gen_unicode_tables.py

Every table is checked against `unicodedata` / `str` for all code points before writing.
"""

import hashlib
import os
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
VOCAB = os.path.join(ROOT, "tests", "data", "tokenizer", "bert-base-uncased-vocab.txt")
OUT = os.path.join(ROOT, "include", "agla", "text", "detail")
EXPECTED_UNICODE = "14.0.0"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"

# Bit flags; keep in sync with unicode.hpp.
CONTROL_ANY_C = 1 << 0      # general category C*  (transformers BertTokenizer's _is_control)
CONTROL_CC_CF = 1 << 1      # Cc or Cf             (google-research/bert's _is_control)
SPACE_ZS = 1 << 2           # Zs                   (both tokenizers' _is_whitespace)
PUNCT_P = 1 << 3            # P*                   (_is_punctuation, ASCII ranges added in code)
MARK_MN = 1 << 4            # Mn                   (accent stripping drops these after NFD)
PY_SPACE = 1 << 5           # str.isspace()        (str.split(), str.strip(), re's \s)
CASE_IGNORABLE = 1 << 6     # Case_Ignorable       (final-sigma context of str.lower())
CASED_NOT_IGNORABLE = 1 << 7  # Cased and not Case_Ignorable

SCALARS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def flags_of(c):
    ch = chr(c)
    cat = unicodedata.category(ch)
    f = 0
    if cat.startswith("C"):
        f |= CONTROL_ANY_C
    if cat in ("Cc", "Cf"):
        f |= CONTROL_CC_CF
    if cat == "Zs":
        f |= SPACE_ZS
    if cat.startswith("P"):
        f |= PUNCT_P
    if cat == "Mn":
        f |= MARK_MN
    if ch.isspace():
        f |= PY_SPACE
    # CPython's handle_capital_sigma skips Case_Ignorable characters backwards and then asks
    # whether the first other one is Cased; both properties are observable through lower():
    #   (c + SIGMA).lower() ends in final sigma  <=>  not CI(c) and Cased(c)
    #   ("A" + c + SIGMA).lower() ends in final sigma  <=>  CI(c) or Cased(c)
    t1 = (ch + "\u03a3").lower()[-1] == "\u03c2"
    t2 = ("A" + ch + "\u03a3").lower()[-1] == "\u03c2"
    if t2 and not t1:
        f |= CASE_IGNORABLE
    if t1:
        f |= CASED_NOT_IGNORABLE
    return f


def hangul(c):
    return 0xAC00 <= c <= 0xD7A3


def main():
    if unicodedata.unidata_version != EXPECTED_UNICODE:
        sys.exit(f"need Unicode {EXPECTED_UNICODE}, this Python has {unicodedata.unidata_version}")

    # Character classes as ranges [first, next first) of equal flags, over all code points
    # (surrogates get the flags of Cs, they never occur in decoded UTF-8).
    ranges = []
    prev = None
    for c in range(0x110000):
        f = flags_of(c) if not 0xD800 <= c <= 0xDFFF else (CONTROL_ANY_C)
        if f != prev:
            ranges.append((c, f))
            prev = f

    lower_single, lower_multi = [], []
    for c in SCALARS:
        low = chr(c).lower()
        if low != chr(c):
            (lower_single if len(low) == 1 else lower_multi).append((c, [ord(x) for x in low]))

    decomp_index, decomp_data = [], []
    for c in SCALARS:
        if hangul(c):
            continue
        d = unicodedata.normalize("NFD", chr(c))
        if d != chr(c):
            decomp_index.append((c, len(decomp_data), len(d)))
            decomp_data.extend(ord(x) for x in d)

    ccc_ranges = []
    for c in SCALARS:
        k = unicodedata.combining(chr(c))
        if k:
            if ccc_ranges and ccc_ranges[-1][1] == c - 1 and ccc_ranges[-1][2] == k:
                ccc_ranges[-1][1] = c
            else:
                ccc_ranges.append([c, c, k])

    verify(ranges, lower_single, lower_multi, decomp_index, decomp_data, ccc_ranges)
    write_tables(ranges, lower_single, lower_multi, decomp_index, decomp_data, ccc_ranges)
    write_vocab()


def verify(ranges, lower_single, lower_multi, decomp_index, decomp_data, ccc_ranges):
    """Re-implements NFD and lower() from the tables and compares with Python for every code point."""
    import bisect
    import random

    starts = [r[0] for r in ranges]

    def flags(c):
        return ranges[bisect.bisect_right(starts, c) - 1][1]

    low = {c: v for c, v in lower_single + lower_multi}
    dec = {c: decomp_data[o:o + n] for c, o, n in decomp_index}
    ccc = {}
    for a, b, k in ccc_ranges:
        for c in range(a, b + 1):
            ccc[c] = k

    def decompose(c):
        if hangul(c):
            s = c - 0xAC00
            out = [0x1100 + s // 588, 0x1161 + (s % 588) // 28]
            if s % 28:
                out.append(0x11A7 + s % 28)
            return out
        return dec.get(c, [c])

    def nfd(cps):
        out = []
        for c in cps:
            out.extend(decompose(c))
        # Canonical ordering: stable sort of every run of non-starters by combining class.
        i = 0
        while i < len(out):
            if ccc.get(out[i], 0) == 0:
                i += 1
                continue
            j = i
            while j < len(out) and ccc.get(out[j], 0) != 0:
                j += 1
            out[i:j] = sorted(out[i:j], key=lambda x: ccc[x])
            i = j
        return out

    def lower(cps):
        out = []
        for i, c in enumerate(cps):
            if c == 0x3A3:
                j = i - 1
                while j >= 0 and flags(cps[j]) & CASE_IGNORABLE:
                    j -= 1
                final = j >= 0 and bool(flags(cps[j]) & CASED_NOT_IGNORABLE)
                if final:
                    j = i + 1
                    while j < len(cps) and flags(cps[j]) & CASE_IGNORABLE:
                        j += 1
                    final = j == len(cps) or not flags(cps[j]) & CASED_NOT_IGNORABLE
                out.append(0x3C2 if final else 0x3C3)
            else:
                out.extend(low.get(c, [c]))
        return out

    for c in SCALARS:
        ch = chr(c)
        assert [ord(x) for x in unicodedata.normalize("NFD", ch)] == nfd([c]), hex(c)
        assert [ord(x) for x in ch.lower()] == lower([c]), hex(c)
        f = flags(c)
        assert bool(f & MARK_MN) == (unicodedata.category(ch) == "Mn"), hex(c)
        assert bool(f & PY_SPACE) == ch.isspace(), hex(c)

    # Strings mixing marks, sigmas, cased and case-ignorable characters.
    rng = random.Random(14)
    pool = [0x3A3, 0x41, 0x61, 0x20, 0x2E, 0x27, 0x301, 0x345, 0x1D165, 0x1D16E, 0x302E, 0x5B0, 0x591,
            0xC5, 0x212B, 0x1E0A, 0x323, 0xAC00, 0x2B0, 0x130, 0x3A3, 0x3C3, 0x10400, 0x16FF0, 0xF73, 0x1F1]
    for _ in range(200000):
        s = "".join(chr(rng.choice(pool)) for _ in range(rng.randint(1, 8)))
        cps = [ord(x) for x in s]
        assert [ord(x) for x in unicodedata.normalize("NFD", s)] == nfd(cps), s
        assert [ord(x) for x in s.lower()] == lower(cps), s


def write_tables(ranges, lower_single, lower_multi, decomp_index, decomp_data, ccc_ranges):
    def rows(items, per_line):
        lines = []
        for i in range(0, len(items), per_line):
            lines.append("    " + " ".join(items[i:i + per_line]))
        return "\n".join(lines)

    multi_data, multi_index = [], []
    for c, v in lower_multi:
        multi_index.append((c, len(multi_data), len(v)))
        multi_data.extend(v)

    out = []
    out.append("#pragma once\n/// \\file\n/// Unicode " + EXPECTED_UNICODE + " tables of the BERT tokenizer. GENERATED by gen_unicode_tables.py")
    out.append("/// (CPython `unicodedata` " + unicodedata.unidata_version + "); do not edit.\n")
    out.append("#include <cstdint>\n\nnamespace agla::text::detail::unicode {\n")
    out.append("/// One range of equal character flags: code points [first, next range's first).")
    out.append("struct FlagRange {\n  uint32_t first;\n  uint8_t flags;\n};\n")
    out.append("/// Canonical decomposition of one code point: `length` code points from `offset` in kDecompositionData.")
    out.append("struct Decomposition {\n  uint32_t code_point;\n  uint32_t offset;\n  uint32_t length;\n};\n")
    out.append("/// Code points [first, last] share the nonzero canonical combining class `ccc`.")
    out.append("struct CombiningRange {\n  uint32_t first;\n  uint32_t last;\n  uint8_t ccc;\n};\n")
    out.append("/// Simple lower-case mapping (Python `chr(c).lower()` of length 1).")
    out.append("struct LowerPair {\n  uint32_t code_point;\n  uint32_t lower;\n};\n")

    def table(doc, declaration, entries, per_line):
        """One documented array: `declaration` is its type and name, `entries` its initializers."""
        out.append("/// " + doc)
        out.append(f"inline constexpr {declaration}[{len(entries)}] = {{")
        out.append(rows(entries, per_line))
        out.append("};\n")

    table("Character flags over all code points (see unicode.hpp for the bits).", "FlagRange kFlagRanges",
          [f"{{0x{c:X}, {f}}}," for c, f in ranges], 8)
    table("Code points whose `chr(c).lower()` is one different code point, sorted.", "LowerPair kLowerSingle",
          [f"{{0x{c:X}, 0x{v[0]:X}}}," for c, v in lower_single], 6)
    table("Code points whose `chr(c).lower()` has several code points, sorted.", "Decomposition kLowerMulti",
          [f"{{0x{c:X}, {o}, {n}}}," for c, o, n in multi_index], 6)
    table("Targets of kLowerMulti.", "uint32_t kLowerMultiData", [f"0x{v:X}," for v in multi_data], 10)
    table("Full canonical decompositions (NFD of one code point), sorted; Hangul syllables are algorithmic.",
          "Decomposition kDecompositions", [f"{{0x{c:X}, {o}, {n}}}," for c, o, n in decomp_index], 5)
    table("Targets of kDecompositions.", "uint32_t kDecompositionData", [f"0x{v:X}," for v in decomp_data], 10)
    table("Nonzero canonical combining classes, sorted ranges.", "CombiningRange kCombiningRanges",
          [f"{{0x{a:X}, 0x{b:X}, {k}}}," for a, b, k in ccc_ranges], 5)
    out.append("}  // namespace agla::text::detail::unicode\n")
    with open(os.path.join(OUT, "unicode_tables.hpp"), "w", encoding="utf-8") as f:
        f.write("\n".join(out))


def write_vocab():
    data = open(VOCAB, "rb").read()
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        sys.exit(f"{VOCAB}: unexpected sha256")
    text = data.decode("utf-8")
    assert ")agla\"" not in text
    # Pieces of at most ~8 KB: some compilers cap the length of one string literal.
    pieces, current = [], ""
    for line in text.splitlines(keepends=True):
        if len((current + line).encode("utf-8")) > 8000:
            pieces.append(current)
            current = ""
        current += line
    pieces.append(current)
    out = ["#pragma once\n/// \\file\n/// bert-base-uncased `vocab.txt` (30522 lines, sha256 " + VOCAB_SHA256[:16] + "...).",
           "/// GENERATED by gen_unicode_tables.py from bert-base-uncased-vocab.txt; do not edit.\n",
           "namespace agla::text::detail {\n",
           "/// The vocabulary file's bytes, split into pieces; concatenated they are the file.",
           f"inline constexpr const char* kBertBaseUncasedVocab[{len(pieces)}] = {{"]
    for p in pieces:
        out.append('R"agla(' + p + ')agla",')
    out.append("};\n\n}  // namespace agla::text::detail\n")
    with open(os.path.join(OUT, "bert_base_uncased_vocab.hpp"), "w", encoding="utf-8") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
