#pragma once
/// \file
/// The programs' thread policy (docs/tools.md "Threads", with the measurements behind it): models
/// whose weights are small run on one intra-op thread (OpenMP's fork/join costs more than the tiny
/// matrix products gain); larger ones on the physical cores, with OpenMP's idle workers sleeping
/// (`OMP_WAIT_POLICY=PASSIVE`) rather than spinning, which on a shared or small machine otherwise
/// steal the cores the working threads need. libgomp reads `OMP_WAIT_POLICY` once, when it is
/// loaded, so a program that runs several threads restarts itself once with the variable set when
/// the user has not set it.

#include <cstdint>
#include <string>

namespace agla::tools {

/// Weight files below this total size run on one thread by default.
inline constexpr std::uintmax_t kSmallModelBytes = 64ull << 20;

/// Physical cores among the CPUs this process may run on (distinct core/package pairs of its
/// affinity mask); the number of CPUs in the mask when the topology is not readable.
int physical_cores();

/// Total size of the weight files (`*.safetensors`, `*.bin`, `*.pth`, `*.pt`) in model directory `dir`.
std::uintmax_t weight_bytes(const std::string& dir);

/// The default thread count for models whose weights total `bytes`: 1 below `kSmallModelBytes`,
/// else `physical_cores()`.
int default_threads(std::uintmax_t bytes);

/// Lets `use_threads` restart this program with `OMP_WAIT_POLICY=PASSIVE` (`argv` as main got it).
/// Only a program's main calls it: code running in another process (a test) is never restarted.
void allow_restart(char** argv);

/// Sets libtorch's intra-op threads to `requested` (> 0) or, for 0, `default_threads(model_bytes)`,
/// and returns the count. With more than one thread, `OMP_WAIT_POLICY` unset and a restart allowed,
/// it restarts the program with `OMP_WAIT_POLICY=PASSIVE` first (it does not return then).
int use_threads(int requested, std::uintmax_t model_bytes);

/// `OMP_WAIT_POLICY` as this process started with it ("" when unset).
std::string omp_wait_policy();

}  // namespace agla::tools
