#pragma once
/// \file
/// Loading the weights of a Hugging Face model directory, whatever layout it ships:
/// `model.safetensors`, sharded `model.safetensors.index.json`, `pytorch_model.bin` or sharded
/// `pytorch_model.bin.index.json` (the last two through the weights-only unpickler of
/// `pytorch_checkpoint.hpp`). Mirrors the file lookup order of
/// `transformers.modeling_utils.PreTrainedModel.from_pretrained` (safetensors first).

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/io/pytorch_checkpoint.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/io/state_dict.hpp"

namespace agla::io {

namespace detail {

inline bool file_exists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return in.good();
}

/// Reads a sharded index (`{"weight_map": {tensor: shard file}}`): every listed tensor must be in its
/// shard, every shard tensor must be listed for that shard, and no name may come from two shards.
/// `read_shard` turns one shard path into a StateDict.
template <typename ReadShard>
StateDict read_sharded(const std::string& index_path, ReadShard&& read_shard) {
  const char* fn = "agla::io::load_checkpoint";
  const nlohmann::json index = read_json_file(index_path);
  check<FormatError>(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), fn, ": ",
                     index_path, ": expected an object with a \"weight_map\" object");
  const std::string dir = index_path.substr(0, index_path.find_last_of('/') + 1);
  std::map<std::string, std::set<std::string>> by_shard;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    check<FormatError>(it.value().is_string(), fn, ": ", index_path, ": weight_map entry '", it.key(),
                       "' must name a shard file");
    const std::string shard = it.value().get<std::string>();
    // Shards live next to the index: refuse paths that would leave the model directory.
    check<FormatError>(!shard.empty() && shard.find('/') == std::string::npos &&
                           shard.find('\\') == std::string::npos && shard != "." && shard != "..",
                       fn, ": ", index_path, ": tensor '", it.key(), "' maps to invalid shard name '", shard, "'");
    by_shard[shard].insert(it.key());
  }
  check<FormatError>(!by_shard.empty(), fn, ": ", index_path, ": weight_map is empty");
  StateDict out;
  for (const auto& entry : by_shard) {
    const std::string shard_path = dir + entry.first;
    StateDict shard = read_shard(shard_path);
    for (const std::string& name : entry.second) {
      check<FormatError>(shard.count(name) != 0, fn, ": ", index_path, ": tensor '", name, "' is listed for shard '",
                         entry.first, "' but that file does not contain it");
    }
    for (auto& tensor : shard) {
      check<FormatError>(entry.second.count(tensor.first) != 0, fn, ": ", shard_path, ": tensor '", tensor.first,
                         "' is not listed for this shard in ", index_path);
      out.emplace(tensor.first, std::move(tensor.second));
    }
  }
  return out;
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
    return detail::read_sharded(dir + "model.safetensors.index.json",
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
