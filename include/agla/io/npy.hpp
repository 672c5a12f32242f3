#pragma once
/// \file
/// NumPy `.npy` (format 1.0/2.0/3.0) reading and writing for little-endian, C-order arrays.
/// Used for fixtures, diagnostics dumps and interchange with Python tooling.

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/limits.hpp"

namespace agla::io {

namespace detail {

inline at::ScalarType npy_dtype(const std::string& descr, const std::string& path) {
  if (descr == "<f4") return at::kFloat;
  if (descr == "<f8") return at::kDouble;
  if (descr == "<f2") return at::kHalf;
  if (descr == "|u1" || descr == "<u1") return at::kByte;
  if (descr == "|i1" || descr == "<i1") return at::kChar;
  if (descr == "<i2") return at::kShort;
  if (descr == "<i4") return at::kInt;
  if (descr == "<i8") return at::kLong;
  if (descr == "|b1") return at::kBool;
  throw FormatError(agla::detail::concat("agla::io::read_npy: ", path, ": unsupported dtype '", descr,
                                         "'; expected one of <f4 <f8 <f2 |u1 |i1 <i2 <i4 <i8 |b1"));
}

inline std::string npy_descr(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "<f4";
    case at::kDouble: return "<f8";
    case at::kHalf: return "<f2";
    case at::kByte: return "|u1";
    case at::kChar: return "|i1";
    case at::kShort: return "<i2";
    case at::kInt: return "<i4";
    case at::kLong: return "<i8";
    case at::kBool: return "|b1";
    default:
      throw InvalidArgument(agla::detail::concat("agla::io::write_npy: unsupported dtype ", type));
  }
}

/// What a `.npy` header declares.
struct NpyHeader {
  std::string descr;           ///< dtype spelling, e.g. "<f4"
  bool fortran_order = false;  ///< column-major data
  std::vector<int64_t> shape;  ///< dims (empty: a scalar)
};

/// Parses the Python dict literal of a `.npy` header, e.g. `{'descr': '<f4', 'fortran_order':
/// False, 'shape': (2, 3), }`: exactly the three keys, string, boolean and a tuple of at most
/// `kMaxTensorDims` non-negative integers below 2^63. A hand-written scanner (no regular
/// expressions, whose backtracking recursion a long header could drive into a stack overflow).
/// Throws `agla::FormatError` prefixed by `where`.
inline NpyHeader parse_npy_header(const std::string& text, const std::string& where) {
  size_t at = 0;
  auto fail = [&](const std::string& what) -> void {
    throw FormatError(agla::detail::concat(where, ": malformed header (", what, " at byte ", at, ")"));
  };
  auto skip_space = [&] {
    while (at < text.size() && (text[at] == ' ' || text[at] == '\n' || text[at] == '\t' || text[at] == '\r')) ++at;
  };
  auto expect = [&](char c) {
    skip_space();
    if (at >= text.size() || text[at] != c) fail(std::string("expected '") + c + "'");
    ++at;
  };
  // After an item: a comma, or the closing character (left for the caller's loop to see).
  auto separator = [&](char close) {
    skip_space();
    if (at < text.size() && text[at] == ',') {
      ++at;
    } else if (at >= text.size() || text[at] != close) {
      fail(std::string("expected ',' or '") + close + "'");
    }
  };
  auto quoted = [&] {
    skip_space();
    if (at >= text.size() || (text[at] != '\'' && text[at] != '"')) fail("expected a quoted string");
    const char quote = text[at++];
    const size_t close = text.find(quote, at);
    if (close == std::string::npos) fail("unterminated string");
    std::string out = text.substr(at, close - at);
    at = close + 1;
    return out;
  };
  NpyHeader header;
  bool has_descr = false, has_order = false, has_shape = false;
  expect('{');
  while (true) {
    skip_space();
    if (at < text.size() && text[at] == '}') break;
    const std::string key = quoted();
    expect(':');
    skip_space();
    if (key == "descr" && !has_descr) {
      header.descr = quoted();
      has_descr = true;
    } else if (key == "fortran_order" && !has_order) {
      if (text.compare(at, 4, "True") == 0) {
        header.fortran_order = true;
        at += 4;
      } else if (text.compare(at, 5, "False") == 0) {
        at += 5;
      } else {
        fail("fortran_order must be True or False");
      }
      has_order = true;
    } else if (key == "shape" && !has_shape) {
      expect('(');
      while (true) {
        skip_space();
        if (at < text.size() && text[at] == ')') break;
        if (at >= text.size() || !std::isdigit(static_cast<unsigned char>(text[at]))) fail("expected a dimension");
        uint64_t dim = 0;
        while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) {
          const auto digit = static_cast<uint64_t>(text[at++] - '0');
          if (dim > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - digit) / 10) {
            fail("dimension of 2^63 or more");
          }
          dim = dim * 10 + digit;
        }
        if (static_cast<int64_t>(header.shape.size()) >= kMaxTensorDims) fail("more than 64 dimensions");
        header.shape.push_back(static_cast<int64_t>(dim));
        separator(')');
      }
      ++at;
      has_shape = true;
    } else {
      fail("unexpected or repeated key '" + key + "'");
    }
    separator('}');
  }
  ++at;
  skip_space();
  if (at != text.size()) fail("text after the header dict");
  if (!has_descr || !has_order || !has_shape) fail("the dict needs 'descr', 'fortran_order' and 'shape'");
  return header;
}

}  // namespace detail

/// Reads a `.npy` file into a CPU tensor of the file's dtype and shape (a copy). The header is
/// parsed and the data size it implies checked against the file before the tensor is allocated,
/// so memory never exceeds the file's data bytes. Throws `agla::FormatError` naming the file.
inline at::Tensor read_npy(const std::string& path) {
  const std::string where = "agla::io::read_npy: " + path;
  const uint64_t file_size = regular_file_size(path, where);
  std::ifstream in(path, std::ios::binary);
  check<FormatError>(in.good(), where, ": cannot open file");
  auto read = [&in, &where](void* out, uint64_t n) {
    in.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
    check<FormatError>(static_cast<uint64_t>(in.gcount()) == n, where, ": file changed while it was read");
  };
  unsigned char prefix[12] = {};
  check<FormatError>(file_size >= 10, where, ": not a .npy file (", file_size, " bytes)");
  read(prefix, 10);
  check<FormatError>(std::memcmp(prefix, "\x93NUMPY", 6) == 0, where, ": not a .npy file (bad magic)");
  const int major = prefix[6];
  uint64_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = prefix[8] | (prefix[9] << 8);
    header_start = 10;
  } else {
    check<FormatError>(file_size >= 12 && (major == 2 || major == 3), where, ": unsupported format version ", major);
    read(prefix + 10, 2);
    header_len = prefix[8] | (prefix[9] << 8) | (uint64_t{prefix[10]} << 16) | (uint64_t{prefix[11]} << 24);
    header_start = 12;
  }
  check<FormatError>(header_len <= kMaxNpyHeaderBytes, where, ": header length ", header_len,
                     " exceeds the limit of ", kMaxNpyHeaderBytes, " bytes");
  check<FormatError>(header_start + header_len <= file_size, where, ": header length ", header_len,
                     " runs past the end of the file");
  std::string text(static_cast<size_t>(header_len), '\0');
  read(text.data(), header_len);
  const detail::NpyHeader header = detail::parse_npy_header(text, where);
  const at::ScalarType type = detail::npy_dtype(header.descr, path);
  check<FormatError>(!header.fortran_order, where, ": only C-order arrays are supported");
  // Bytes the shape implies, overflow-checked, must be exactly what the file holds.
  const uint64_t data_bytes = file_size - header_start - header_len;
  uint64_t expected = at::elementSize(type);
  bool fits = true;
  for (const int64_t d : header.shape) {
    const auto dim = static_cast<uint64_t>(d);
    fits = fits && (dim == 0 || expected <= data_bytes / dim);
    if (fits) expected *= dim;
  }
  if (std::find(header.shape.begin(), header.shape.end(), 0) != header.shape.end()) {
    fits = true;
    expected = 0;
  }
  check<FormatError>(fits && expected == data_bytes, where, ": the header's shape ", at::IntArrayRef(header.shape),
                     " x ", at::elementSize(type), " bytes does not match the ", data_bytes, " data bytes of the file");
  return guard_allocation(where, [&] {
    at::Tensor out = at::empty(header.shape, at::TensorOptions().dtype(type));
    if (expected > 0) read(out.data_ptr(), expected);
    return out;
  });
}

/// Writes a tensor (any device; copied to CPU, made contiguous) as a version 1.0 `.npy` file.
inline void write_npy(const std::string& path, const at::Tensor& tensor) {
  const at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 ? "," : (i + 1 < t.dim() ? ", " : ""));
  shape += ")";
  std::string header = "{'descr': '" + detail::npy_descr(t.scalar_type()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  check<FormatError>(out.good(), "agla::io::write_npy: cannot create '", path, "'");
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  check<FormatError>(out.good(), "agla::io::write_npy: failed writing '", path, "'");
}

}  // namespace agla::io
