#pragma once
/// \file
/// `agla_train`'s logic, callable in-process: trains the tiny ShapesWorld BLIP models shipped in
/// `tools/data/models/` (CPU, deterministic, resumable) and prints their quality gates.

#include <ostream>
#include <string>
#include <vector>

namespace agla::train {

/// Runs `agla_train` with `args` (without the program name); report and progress to `out`, errors to
/// `err`; returns the exit status (0 success, 1 any error).
int run_train(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace agla::train
