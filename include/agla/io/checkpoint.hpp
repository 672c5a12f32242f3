#pragma once
/// \file
/// Loading the weights of a Hugging Face model directory, whatever layout it ships:
/// `model.safetensors`, sharded `model.safetensors.index.json`, `pytorch_model.bin` or sharded
/// `pytorch_model.bin.index.json` (the last two through the weights-only unpickler of
/// `pytorch_checkpoint.hpp`); both sharded layouts through the one index reader of
/// `sharded_index.hpp`. Mirrors the file lookup order of
/// `transformers.modeling_utils.PreTrainedModel.from_pretrained` (safetensors first).

#include <fstream>
#include <string>

#include "agla/error.hpp"
#include "agla/io/pytorch_checkpoint.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/io/sharded_index.hpp"
#include "agla/io/state_dict.hpp"

namespace agla::io {

namespace detail {

inline bool file_exists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return in.good();
}

}  // namespace detail

/// All weights of the Hugging Face model directory `model_dir` (CPU, file dtypes): the first of
/// `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin`,
/// `pytorch_model.bin.index.json` that exists. Throws `agla::FormatError` naming the file (and tensor)
/// when the files are malformed or none exists.
inline StateDict load_checkpoint(const std::string& model_dir) {
  const std::string dir = model_dir.empty() || model_dir.back() == '/' ? model_dir : model_dir + "/";
  if (detail::file_exists(dir + "model.safetensors")) return read_safetensors(dir + "model.safetensors");
  if (detail::file_exists(dir + "model.safetensors.index.json")) {
    return load_sharded(read_sharded_index(dir + "model.safetensors.index.json"),
                        [](const std::string& path) { return read_safetensors(path); });
  }
  if (detail::file_exists(dir + "pytorch_model.bin")) return read_pytorch_checkpoint(dir + "pytorch_model.bin");
  if (detail::file_exists(dir + "pytorch_model.bin.index.json")) {
    return read_pytorch_checkpoint_index(dir + "pytorch_model.bin.index.json");
  }
  const char* looked_for =
      "model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
      "pytorch_model.bin.index.json";
  throw FormatError(agla::detail::concat("agla::io::load_checkpoint: '", model_dir, "' holds no ", looked_for));
}

}  // namespace agla::io
