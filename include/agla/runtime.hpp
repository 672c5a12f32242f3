#pragma once
/// \file
/// Process-level settings programs should apply at start-up: intra-op threads and a check that
/// a fast BLAS is what libtorch will call.

#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include "agla/error.hpp"

namespace agla {

/// Sets libtorch's intra-op thread count; `threads <= 0` means one per hardware thread.
/// (Debian's libtorch defaults to a single thread.) Returns the count that was set.
inline int configure_threads(int threads = 0) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return threads;
}

/// The file that provides the BLAS `sgemm_` symbol in this process, or empty when none is loaded
/// (libtorch builds with MKL or their own kernels do not export it).
inline std::string loaded_blas_path() {
  void* symbol = dlsym(RTLD_DEFAULT, "sgemm_");
  if (symbol == nullptr) return {};
  Dl_info info{};
  if (dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return {};
  char resolved[PATH_MAX];
  return realpath(info.dli_fname, resolved) != nullptr ? std::string(resolved) : std::string(info.dli_fname);
}

/// A warning when the BLAS libtorch calls is the slow reference implementation (Debian's
/// `libblas3` fallback, ~40x slower for matrix products than OpenBLAS); nothing otherwise.
inline std::optional<std::string> blas_warning() {
  const std::string path = loaded_blas_path();
  if (path.empty() || path.find("openblas") != std::string::npos || path.find("mkl") != std::string::npos ||
      path.find("blis") != std::string::npos || path.find("atlas") != std::string::npos)
    return std::nullopt;
  if (path.find("/blas/libblas") != std::string::npos || path.find("libblas.so") != std::string::npos)
    return "agla: warning: libtorch is using the reference BLAS (" + path +
           "), which is about 40x slower for matrix products; install an optimised BLAS "
           "(Debian: apt-get install libopenblas0-pthread)";
  return std::nullopt;
}

}  // namespace agla
