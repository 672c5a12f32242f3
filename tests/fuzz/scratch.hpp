#pragma once
// Scratch files for the fuzz targets that read files: one path per name and process, on tmpfs when
// available, removed (files or whole directories) when the process exits.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace agla_fuzz {

/// A path unique to this process for `name` (e.g. "input.npy"); removed at exit.
inline std::string scratch_path(const std::string& name) {
  static std::vector<std::string>* const paths = [] {
    auto* list = new std::vector<std::string>();
    std::atexit([] {
      std::error_code ignored;
      for (const std::string& p : *paths) std::filesystem::remove_all(p, ignored);
    });
    return list;
  }();
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  paths->push_back(std::string(dir) + "/agla_fuzz_" + std::to_string(getpid()) + "_" + name);
  return paths->back();
}

/// Replaces the content of `path` by `size` bytes at `data`.
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace agla_fuzz
