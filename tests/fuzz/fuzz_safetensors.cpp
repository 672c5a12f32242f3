// Fuzzes agla::io::SafetensorsFile: any byte string written as a file must either open and hand
// out tensors whose every byte can be read, or throw agla::Error. Bytes are checksummed so a span
// pointing outside the mapping faults (or is caught by ASan when the file is read into memory).
#include <cstddef>
#include <cstdint>
#include <string>

#include "agla/error.hpp"
#include "agla/io/safetensors.hpp"
#include "scratch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = agla_fuzz::scratch_path("input.safetensors");
  agla_fuzz::write_file(path, data, size);
  try {
    const agla::io::SafetensorsFile file = agla::io::SafetensorsFile::open(path);
    uint64_t checksum = 0;
    for (const std::string& name : file.names()) {
      const agla::io::SafetensorsTensorInfo& info = file.info(name);
      try {
        const at::Tensor t = file.tensor(name);
        if (t.numel() != 0) {
          const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
          const size_t count = static_cast<size_t>(t.numel()) * t.element_size();
          if (count != info.end - info.begin) __builtin_trap();
          for (size_t i = 0; i < count; ++i) checksum += bytes[i];
        }
      } catch (const agla::Error&) {
        // e.g. a BOOL tensor holding bytes other than 0/1
      }
    }
    (void)file.metadata();
    volatile uint64_t sink = checksum;
    (void)sink;
  } catch (const agla::Error&) {
  }
  return 0;
}
