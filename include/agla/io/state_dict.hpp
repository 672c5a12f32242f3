#pragma once
/// \file
/// The in-memory form of a checkpoint, whatever file format it came from.

#include <ATen/ATen.h>

#include <map>
#include <string>

namespace agla::io {

/// Tensor name (Hugging Face `state_dict()` key) -> tensor (CPU, the file's dtype).
using StateDict = std::map<std::string, at::Tensor>;

}  // namespace agla::io
