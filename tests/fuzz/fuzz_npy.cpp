// Fuzzes agla::io::read_npy: any byte string written as a file must be refused with
// agla::FormatError or give a tensor whose bytes are exactly the file's data bytes; an accepted
// array is written back with write_npy and must read back identical.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/npy.hpp"

namespace {

std::string scratch_path(const char* tag) {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  static std::vector<std::string> paths;
  paths.push_back(std::string(dir) + "/agla_fuzz_npy_" + tag + "_" + std::to_string(getpid()) + ".npy");
  if (paths.size() == 1) {
    std::atexit([] {
      for (const std::string& p : paths) std::remove(p.c_str());
    });
  }
  return paths.back();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string in_path = scratch_path("in");
  static const std::string out_path = scratch_path("out");
  {
    std::ofstream out(in_path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
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
