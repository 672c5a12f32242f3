#pragma once
/// \file
/// UTF-8 decoding and the few Unicode 14.0 operations the BERT tokenizer needs, on the generated
/// tables of unicode_tables.hpp: character classes, Python's `str.lower()` (with the final-sigma
/// rule or per code point), and NFD followed by dropping non-spacing marks (accent stripping).

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/text/detail/unicode_tables.hpp"

namespace agla::text::detail::unicode {

/// Flag bits of kFlagRanges (generated; see gen_unicode_tables.py).
enum Flag : uint8_t {
  kControlAnyC = 1 << 0,        ///< general category C* (transformers' `_is_control`)
  kControlCcCf = 1 << 1,        ///< Cc or Cf (google-research/bert's `_is_control`)
  kSpaceZs = 1 << 2,            ///< Zs
  kPunctP = 1 << 3,             ///< P*
  kMarkMn = 1 << 4,             ///< Mn
  kPySpace = 1 << 5,            ///< Python `str.isspace()` (also `str.split()` and `re`'s `\s`)
  kCaseIgnorable = 1 << 6,      ///< Case_Ignorable
  kCasedNotIgnorable = 1 << 7,  ///< Cased and not Case_Ignorable
};

/// The flag bits of code point `c` (any value up to 0x10FFFF).
inline uint8_t flags(char32_t c) {
  const auto* end = kFlagRanges + sizeof(kFlagRanges) / sizeof(kFlagRanges[0]);
  const auto* it = std::upper_bound(kFlagRanges, end, static_cast<uint32_t>(c),
                                    [](uint32_t v, const FlagRange& r) { return v < r.first; });
  return (it - 1)->flags;
}

/// Decodes UTF-8 into code points; malformed input (overlong forms, surrogates, values above
/// 0x10FFFF, truncated or stray continuation bytes) throws agla::InvalidArgument naming `where`.
inline std::u32string decode_utf8(const std::string& text, const char* where) {
  std::u32string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  auto fail = [&](const char* why) {
    throw InvalidArgument(agla::detail::concat(where, ": text is not valid UTF-8 (", why, " at byte ", i, ")"));
  };
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    size_t len = 0;
    char32_t c = 0;
    char32_t min = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2, c = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3, c = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4, c = b & 0x07, min = 0x10000;
    } else {
      fail("invalid lead byte");
    }
    if (i + len > n) fail("truncated sequence");
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) fail("missing continuation byte");
      c = (c << 6) | (s[i + k] & 0x3F);
    }
    if (c < min) fail("overlong encoding");
    if (c > 0x10FFFF) fail("code point above U+10FFFF");
    if (c >= 0xD800 && c <= 0xDFFF) fail("encoded surrogate");
    out.push_back(c);
    i += len;
  }
  return out;
}

/// Appends the UTF-8 encoding of the valid scalar value `c` to `out`.
inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

/// UTF-8 encoding of code points [begin, end).
inline std::string encode_utf8(const char32_t* begin, const char32_t* end) {
  std::string out;
  out.reserve(static_cast<size_t>(end - begin));
  for (const char32_t* p = begin; p != end; ++p) append_utf8(out, *p);
  return out;
}

/// Appends Python's `chr(c).lower()` (no context) to `out`.
inline void append_lower(std::u32string& out, char32_t c) {
  const auto* end = kLowerSingle + sizeof(kLowerSingle) / sizeof(kLowerSingle[0]);
  const auto* it = std::lower_bound(kLowerSingle, end, static_cast<uint32_t>(c),
                                    [](const LowerPair& p, uint32_t v) { return p.code_point < v; });
  if (it != end && it->code_point == c) {
    out.push_back(it->lower);
    return;
  }
  for (const Decomposition& m : kLowerMulti) {
    if (m.code_point == c) {
      out.append(kLowerMultiData + m.offset, kLowerMultiData + m.offset + m.length);
      return;
    }
  }
  out.push_back(c);
}

/// Python's `str.lower()` on the whole string: per code point, except that U+03A3 becomes the
/// final sigma U+03C2 when preceded by a cased letter and not followed by one, skipping
/// case-ignorable characters (CPython `handle_capital_sigma`, Unicode's Final_Sigma context).
inline std::u32string lower_full(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  for (size_t i = 0; i < n; ++i) {
    if (s[i] != 0x3A3) {
      append_lower(out, s[i]);
      continue;
    }
    size_t j = i;
    while (j > 0 && (flags(s[j - 1]) & kCaseIgnorable)) --j;
    bool final_sigma = j > 0 && (flags(s[j - 1]) & kCasedNotIgnorable);
    if (final_sigma) {
      size_t k = i + 1;
      while (k < n && (flags(s[k]) & kCaseIgnorable)) ++k;
      final_sigma = k == n || !(flags(s[k]) & kCasedNotIgnorable);
    }
    out.push_back(final_sigma ? 0x3C2 : 0x3C3);
  }
  return out;
}

/// Python's `str.lower()` applied to each code point separately (no final-sigma context), as
/// transformers' `PreTrainedTokenizer.tokenize` lower-cases the text between special tokens.
inline std::u32string lower_per_code_point(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) append_lower(out, c);
  return out;
}

/// Canonical combining class of `c` (0 for starters).
inline uint8_t combining_class(char32_t c) {
  const auto* end = kCombiningRanges + sizeof(kCombiningRanges) / sizeof(kCombiningRanges[0]);
  const auto* it = std::upper_bound(kCombiningRanges, end, static_cast<uint32_t>(c),
                                    [](uint32_t v, const CombiningRange& r) { return v < r.first; });
  if (it == kCombiningRanges) return 0;
  --it;
  return c <= it->last ? it->ccc : 0;
}

/// Appends the full canonical decomposition of `c` (Hangul syllables algorithmically, UAX #15).
inline void append_decomposition(std::u32string& out, char32_t c) {
  if (c >= 0xAC00 && c <= 0xD7A3) {
    const char32_t s = c - 0xAC00;
    out.push_back(0x1100 + s / 588);
    out.push_back(0x1161 + (s % 588) / 28);
    if (s % 28 != 0) out.push_back(0x11A7 + s % 28);
    return;
  }
  const auto* end = kDecompositions + sizeof(kDecompositions) / sizeof(kDecompositions[0]);
  const auto* it = std::lower_bound(kDecompositions, end, static_cast<uint32_t>(c),
                                    [](const Decomposition& d, uint32_t v) { return d.code_point < v; });
  if (it != end && it->code_point == c) {
    out.append(kDecompositionData + it->offset, kDecompositionData + it->offset + it->length);
  } else {
    out.push_back(c);
  }
}

/// `unicodedata.normalize("NFD", s)` with every Mn code point removed afterwards: the accent
/// stripping of both BERT tokenizers (`_run_strip_accents`).
inline std::u32string strip_accents(const std::u32string& s) {
  std::u32string d;
  d.reserve(s.size() + 8);
  for (char32_t c : s) append_decomposition(d, c);
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  std::u32string out;
  out.reserve(d.size());
  for (char32_t c : d)
    if (!(flags(c) & kMarkMn)) out.push_back(c);
  return out;
}

/// Python `str.isspace()`.
inline bool is_py_space(char32_t c) { return (flags(c) & kPySpace) != 0; }

/// Python `str.split()` (no argument): maximal runs of non-white-space code points.
inline std::vector<std::u32string> split_py_whitespace(const std::u32string& s) {
  std::vector<std::u32string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_py_space(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !is_py_space(s[j])) ++j;
    if (j > i) out.emplace_back(s, i, j - i);
    i = j;
  }
  return out;
}

}  // namespace agla::text::detail::unicode
