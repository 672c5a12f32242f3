// Fuzzes agla::io::read_npy: any byte string written as a file must be refused with
// agla::FormatError or give a tensor whose bytes are exactly the file's data bytes; an accepted
// array is written back with write_npy and must read back identical.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/npy.hpp"
#include "scratch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string in_path = agla_fuzz::scratch_path("input.npy");
  static const std::string out_path = agla_fuzz::scratch_path("output.npy");
  agla_fuzz::write_file(in_path, data, size);
  at::Tensor t;
  try {
    t = agla::io::read_npy(in_path);
  } catch (const agla::FormatError&) {
    return 0;
  }
  const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
  if (nbytes > size) __builtin_trap();  // more bytes than the file holds
  if (nbytes > 0 && std::memcmp(t.data_ptr(), data + size - nbytes, nbytes) != 0) __builtin_trap();
  agla::io::write_npy(out_path, t);
  const at::Tensor back = agla::io::read_npy(out_path);
  if (back.sizes() != t.sizes() || back.scalar_type() != t.scalar_type()) __builtin_trap();
  if (nbytes > 0 && std::memcmp(back.data_ptr(), t.data_ptr(), nbytes) != 0) __builtin_trap();
  return 0;
}
