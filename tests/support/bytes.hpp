// What the tests that forge files byte by byte share: the CRC-32 that zip archives and PNG chunks
// store, and little-endian integers.
#pragma once

#include <cstdint>
#include <string>

namespace agla::test {

/// The CRC-32 of `bytes` (reflected polynomial 0xEDB88320, as in zip and PNG).
inline uint32_t crc32(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

/// The low `bytes` bytes of `v`, little-endian.
inline std::string le(uint64_t v, int bytes) {
  std::string out(static_cast<size_t>(bytes), '\0');
  for (int i = 0; i < bytes; ++i) out[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

}  // namespace agla::test
