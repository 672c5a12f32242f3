#include "common/data.hpp"

#include <cstdlib>
#include <filesystem>

#include "agla/error.hpp"

namespace agla::tools {

namespace fs = std::filesystem;

namespace {

/// The `AGLA_DATA_DIR` override, when set and non-empty.
std::optional<std::string> environment_override() {
  const char* value = std::getenv("AGLA_DATA_DIR");
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

}  // namespace

std::string executable_path() {
  std::error_code error;
  const fs::path path = fs::read_symlink("/proc/self/exe", error);
  return error ? std::string() : path.string();
}

std::vector<std::string> data_dir_candidates(const std::string& executable) {
  if (executable.empty()) return {};
  const fs::path dir = fs::path(executable).parent_path();
  return {(dir / "data").lexically_normal().string(),
          (dir / ".." / "share" / "agla" / "data").lexically_normal().string()};
}

std::optional<std::string> find_data_dir(const std::optional<std::string>& override_dir,
                                         const std::string& executable) {
  if (override_dir) {
    check<FormatError>(fs::is_directory(*override_dir), "AGLA_DATA_DIR is set to '", *override_dir,
                       "', which is not a directory");
    return *override_dir;
  }
  for (const std::string& candidate : data_dir_candidates(executable))
    if (fs::is_directory(candidate)) return candidate;
  return std::nullopt;
}

std::string data_dir(const std::string& program) {
  const std::string executable = executable_path();
  if (auto found = find_data_dir(environment_override(), executable)) return *found;
  std::string looked;
  for (const std::string& candidate : data_dir_candidates(executable))
    looked += (looked.empty() ? "'" : ", '") + candidate + "'";
  throw FormatError(detail::concat(program, ": no data directory found (looked at ",
                                   looked.empty() ? std::string("nothing: /proc/self/exe is unreadable") : looked,
                                   "); set AGLA_DATA_DIR to a copy of the source tree's tools/data, or run the "
                                   "program from its build or install tree"));
}

std::string data_dir_help() {
  try {
    const std::string dir = data_dir("agla");
    return "data directory: " + dir + (environment_override() ? " (from AGLA_DATA_DIR)" : "");
  } catch (const Error& e) {
    return std::string("data directory: none found; ") + e.what();
  }
}

std::string shipped_model(const std::string& program, const std::string& name, const std::string& option) {
  const std::string models = (fs::path(data_dir(program)) / "models").string();
  const std::string dir = (fs::path(models) / name).string();
  check<FormatError>(fs::is_regular_file(fs::path(dir) / "config.json"), program, ": the shipped model '", name,
                     "' is missing: no config.json in '", dir,
                     "'. The ShapesWorld models ship in the source tree (tools/data/models) and are installed to "
                     "share/agla/data/models; rebuild them with `agla_train --stage all --out ",
                     models, " --work /tmp/agla-train`, or pass ", option, " DIR");
  return dir;
}

}  // namespace agla::tools
