#pragma once
/// \file
/// The one reader of sharded-checkpoint indexes, for both `model.safetensors.index.json` and
/// `pytorch_model.bin.index.json`: `{"metadata": {...}, "weight_map": {tensor: shard file}}`.
///
/// Rules (a violation throws `agla::FormatError` naming the index, and the shard and tensor):
/// - the index is a JSON file within the bounds of `read_json_file` (size, value count, no
///   repeated key -- so no tensor can be listed for two shards);
/// - `weight_map` is a non-empty object of strings; `metadata`, when present, is an object;
/// - shard names stay inside the index's directory: a plain file name, no `/` or `\`, not `.` or
///   `..`, no control characters, at most 255 bytes (a shard may still be a symbolic link, as in
///   the Hugging Face cache);
/// - every tensor listed for a shard is in that shard, every tensor of a shard is listed for it,
///   so no tensor name comes from two shards.

#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <string>
#include <utility>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/io/state_dict.hpp"

namespace agla::io {

/// A validated sharded-checkpoint index.
struct ShardedIndex {
  std::string path;                                     ///< the index file
  std::string dir;                                      ///< directory of the shards ("" or ending in '/')
  std::map<std::string, std::set<std::string>> shards;  ///< shard file name -> tensors listed for it
};

/// Whether `name` is a file name that stays inside the directory of the index.
inline bool is_plain_shard_name(const std::string& name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (const char c : name) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '/' || c == '\\' || byte < 0x20 || byte == 0x7f) return false;
  }
  return true;
}

/// Reads and validates the index `index_path` (rules in the file comment); the shards are not
/// opened. Throws `agla::FormatError` naming the file.
inline ShardedIndex read_sharded_index(const std::string& index_path) {
  const std::string where = "agla::io::read_sharded_index: " + index_path;
  const nlohmann::json index = read_json_file(index_path);
  check<FormatError>(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), where,
                     ": expected an object with a \"weight_map\" object");
  check<FormatError>(!index.contains("metadata") || index["metadata"].is_object(), where,
                     ": \"metadata\" must be an object");
  const nlohmann::json& weight_map = index["weight_map"];
  check<FormatError>(!weight_map.empty(), where, ": weight_map is empty");
  ShardedIndex out;
  out.path = index_path;
  out.dir = index_path.substr(0, index_path.find_last_of('/') + 1);
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
    check<FormatError>(!it.key().empty(), where, ": weight_map has an empty tensor name");
    check<FormatError>(it.value().is_string(), where, ": weight_map entry '", it.key(), "' must name a shard file; got ",
                       detail::describe_json(it.value()));
    const std::string& shard = it.value().get_ref<const std::string&>();
    check<FormatError>(is_plain_shard_name(shard), where, ": tensor '", it.key(), "' maps to invalid shard name ",
                       detail::describe_json(it.value()),
                       " (shards are plain file names next to the index)");
    out.shards[shard].insert(it.key());
  }
  return out;
}

/// Every tensor of the shards of `index`, each shard read by `read_shard(path) -> StateDict`;
/// checks that the shards hold exactly the tensors the index lists for them. Throws
/// `agla::FormatError` naming the index, the shard and the tensor.
template <typename ReadShard>
StateDict load_sharded(const ShardedIndex& index, ReadShard&& read_shard) {
  const std::string where = "agla::io::load_sharded: " + index.path;
  StateDict out;
  for (const auto& [shard, names] : index.shards) {
    const std::string shard_path = index.dir + shard;
    StateDict part = read_shard(shard_path);
    for (const std::string& name : names) {
      check<FormatError>(part.count(name) != 0, where, ": tensor '", name, "' is listed for shard '", shard,
                         "' but that file does not contain it");
    }
    for (auto& [name, tensor] : part) {
      check<FormatError>(names.count(name) != 0, where, ": tensor '", name, "' is not listed for shard '", shard,
                         "', which holds it");
      check<FormatError>(out.emplace(name, std::move(tensor)).second, where, ": tensor '", name,
                         "' comes from two shards");
    }
  }
  return out;
}

}  // namespace agla::io
