#pragma once
/// \file
/// Where the programs find their data (the sample image and the shipped ShapesWorld models): the
/// directory named by the `AGLA_DATA_DIR` environment variable, else `<program dir>/data` (the
/// build tree, where it is a link to the source tree's `tools/data`), else
/// `<program dir>/../share/agla/data` (an installed program). Nothing is compiled in, so a moved or
/// installed program finds its data the same way.

#include <optional>
#include <string>
#include <vector>

namespace agla::tools {

/// The path of the running program (`/proc/self/exe`); empty when it cannot be read.
std::string executable_path();

/// The data directories a program at `executable` looks for, in order (without the environment
/// override): `<dir>/data`, `<dir>/../share/agla/data`.
std::vector<std::string> data_dir_candidates(const std::string& executable);

/// The data directory: `override_dir` when given (it must be a directory, else
/// `agla::FormatError`), else the first existing candidate of `executable`; nullopt when none exists.
std::optional<std::string> find_data_dir(const std::optional<std::string>& override_dir, const std::string& executable);

/// The data directory of this process (`AGLA_DATA_DIR`, else relative to the program); throws
/// `agla::FormatError` naming `program`, the places looked at and how to fix it when none exists.
std::string data_dir(const std::string& program);

/// One line for `--help`: the data directory this process resolved, or where it looked.
std::string data_dir_help();

/// The shipped model `name` under `<data>/models` (a directory with config.json); throws
/// `agla::FormatError` naming `program`, the path, the option that overrides it and how to make the
/// models (`agla_train --stage all`).
std::string shipped_model(const std::string& program, const std::string& name, const std::string& option);

}  // namespace agla::tools
