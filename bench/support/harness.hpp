// The harness every bench program shares: `--threads`, the BLAS warning, and the wall-clock and
// process-CPU clocks the ratios are computed from (process CPU time, summed over threads, is the
// steadier of the two on a shared machine).
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <vector>

#include "agla/runtime.hpp"

namespace agla::bench {

/// Wall-clock and process-CPU seconds since arbitrary origins; a difference of two is a duration.
struct Clocks {
  double wall = 0;
  double cpu = 0;

  static Clocks now() {
    timespec cpu_time{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu_time);
    return {std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(),
            static_cast<double>(cpu_time.tv_sec) + 1e-9 * static_cast<double>(cpu_time.tv_nsec)};
  }
  Clocks operator-(const Clocks& start) const { return {wall - start.wall, cpu - start.cpu}; }
};

/// The body of a bench program's main(): takes `--threads N` (default `default_threads`; 0 = one
/// per hardware thread) and every argument `own_flag` accepts, prints the thread count and the
/// BLAS warning, then runs the registered benchmarks with Google Benchmark's flags, through
/// `reporter` when one is given. Returns main's exit status.
inline int run_benchmarks(int argc, char** argv, int default_threads,
                          benchmark::BenchmarkReporter* reporter = nullptr,
                          const std::function<bool(const char*)>& own_flag = {}) {
  int threads = default_threads;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strcmp(argv[i], "--threads") == 0) {
      char* end = nullptr;
      const long value = i + 1 < argc ? std::strtol(argv[i + 1], &end, 10) : -1;
      if (end == nullptr || *end != '\0' || value < 0 || value > 4096) {
        std::fprintf(stderr, "%s: --threads expects a count (0 = one per hardware thread)\n", argv[0]);
        return 1;
      }
      threads = static_cast<int>(value);
      ++i;
    } else if (i == 0 || !own_flag || !own_flag(argv[i])) {
      rest.push_back(argv[i]);
    }
  }
  std::printf("threads: %d\n", agla::configure_threads(threads));
  if (const auto warning = agla::blas_warning()) std::printf("%s\n", warning->c_str());
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_count, rest.data())) return 1;
  if (reporter != nullptr) {
    benchmark::RunSpecifiedBenchmarks(reporter);
  } else {
    benchmark::RunSpecifiedBenchmarks();
  }
  benchmark::Shutdown();
  return 0;
}

}  // namespace agla::bench
