#include "common/threads.hpp"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "agla/runtime.hpp"

namespace agla::tools {

namespace fs = std::filesystem;

namespace {

char** restart_argv = nullptr;

/// The integer in `path` (a sysfs topology file), or -1.
long read_number(const std::string& path) {
  std::ifstream in(path);
  long value = -1;
  return (in >> value) ? value : -1;
}

}  // namespace

int physical_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  std::set<std::pair<long, long>> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    const std::string topology = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    const long core = read_number(topology + "core_id"), package = read_number(topology + "physical_package_id");
    if (core < 0 || package < 0) return std::max(1, CPU_COUNT(&set));
    cores.emplace(package, core);
  }
  return std::max(1, static_cast<int>(cores.size()));
}

std::uintmax_t weight_bytes(const std::string& dir) {
  std::uintmax_t total = 0;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    const std::string ext = it->path().extension().string();
    if ((ext == ".safetensors" || ext == ".bin" || ext == ".pth" || ext == ".pt") && it->is_regular_file(error)) {
      const std::uintmax_t size = it->file_size(error);
      if (!error) total += size;
    }
  }
  return total;
}

int default_threads(std::uintmax_t bytes) { return bytes < kSmallModelBytes ? 1 : physical_cores(); }

void allow_restart(char** argv) { restart_argv = argv; }

std::string omp_wait_policy() {
  const char* value = std::getenv("OMP_WAIT_POLICY");
  return value == nullptr ? std::string() : std::string(value);
}

int use_threads(int requested, std::uintmax_t model_bytes) {
  const int threads = requested > 0 ? requested : default_threads(model_bytes);
  if (threads > 1 && restart_argv != nullptr && std::getenv("OMP_WAIT_POLICY") == nullptr) {
    // libgomp has read the variable already; only a fresh process image sees it. If exec fails
    // the program goes on with spinning workers.
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", restart_argv);
    unsetenv("OMP_WAIT_POLICY");
  }
  return agla::configure_threads(threads);
}

}  // namespace agla::tools
