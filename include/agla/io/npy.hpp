#pragma once
/// \file
/// NumPy `.npy` (format 1.0/2.0/3.0) reading and writing for little-endian, C-order arrays.
/// Used for fixtures, diagnostics dumps and interchange with Python tooling.

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "agla/error.hpp"

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

}  // namespace detail

/// Reads a `.npy` file into a CPU tensor of the file's dtype and shape (a copy).
inline at::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check<FormatError>(in.good(), "agla::io::read_npy: cannot open '", path, "'");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const char magic[] = "\x93NUMPY";
  check<FormatError>(bytes.size() >= 10 && std::memcmp(bytes.data(), magic, 6) == 0,
                     "agla::io::read_npy: ", path, ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    header_start = 10;
  } else {
    check<FormatError>(bytes.size() >= 12 && (major == 2 || major == 3), "agla::io::read_npy: ", path,
                       ": unsupported format version ", major);
    uint32_t len = 0;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    header_start = 12;
  }
  check<FormatError>(header_start + header_len <= bytes.size(), "agla::io::read_npy: ", path,
                     ": header length ", header_len, " runs past the end of the file");
  const std::string header(bytes.data() + header_start, header_len);
  std::smatch m;
  check<FormatError>(std::regex_search(header, m, std::regex("'descr':\\s*'([^']*)'")), "agla::io::read_npy: ",
                     path, ": header has no descr");
  const at::ScalarType type = detail::npy_dtype(m[1].str(), path);
  check<FormatError>(std::regex_search(header, m, std::regex("'fortran_order':\\s*(True|False)")) &&
                         m[1].str() == "False",
                     "agla::io::read_npy: ", path, ": only C-order arrays are supported");
  check<FormatError>(std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")),
                     "agla::io::read_npy: ", path, ": header has no shape");
  std::vector<int64_t> shape;
  const std::string dims = m[1].str();
  std::regex number("[0-9]+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll(it->str()));
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const size_t data_start = header_start + header_len;
  const size_t expected = static_cast<size_t>(count) * at::elementSize(type);
  check<FormatError>(bytes.size() - data_start == expected, "agla::io::read_npy: ", path, ": expected ",
                     expected, " data bytes for the header's shape, found ", bytes.size() - data_start);
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(type));
  if (expected > 0) std::memcpy(out.data_ptr(), bytes.data() + data_start, expected);
  return out;
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
