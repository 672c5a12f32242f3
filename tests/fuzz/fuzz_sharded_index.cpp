// Fuzzes the one sharded-index reader (agla::io::read_sharded_index, load_sharded). The input is
// written as an index file; an accepted index must name only plain shard files and list each
// tensor once. Shards are then synthesised from the index itself (exact, missing a tensor,
// holding an extra or another shard's tensor, by a hash of the shard name) and load_sharded must
// accept exactly the consistent ones.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iterator>
#include <set>
#include <string>

#include "agla/error.hpp"
#include "agla/io/sharded_index.hpp"
#include "scratch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = agla_fuzz::scratch_path("index") + "/";
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::string path = dir + "model.safetensors.index.json";
  agla_fuzz::write_file(path, data, size);
  agla::io::ShardedIndex index;
  try {
    index = agla::io::read_sharded_index(path);
  } catch (const agla::FormatError&) {
    return 0;
  }
  size_t listed = 0;
  for (const auto& [shard, names] : index.shards) {
    if (!agla::io::is_plain_shard_name(shard) || shard.find('/') != std::string::npos || shard == ".." ||
        names.empty()) {
      __builtin_trap();
    }
    listed += names.size();
  }
  if (index.dir != dir || listed == 0) __builtin_trap();
  const at::Tensor zero = at::zeros({1});
  bool consistent = true;
  auto read_shard = [&](const std::string& shard_path) {
    const std::string shard = shard_path.substr(dir.size());
    const std::set<std::string>& names = index.shards.at(shard);
    agla::io::StateDict part;
    for (const std::string& name : names) part.emplace(name, zero);
    switch (std::hash<std::string>{}(shard) % 4) {
      case 1:
        part.erase(part.begin());
        consistent = false;
        break;
      case 2:
        if (part.emplace(std::string("\x01unlisted"), zero).second) consistent = false;
        break;
      case 3:
        if (index.shards.size() > 1) {
          const auto& other = index.shards.begin()->first == shard ? std::next(index.shards.begin())->second
                                                                   : index.shards.begin()->second;
          part.emplace(*other.begin(), zero);
          consistent = false;
        }
        break;
      default:
        break;
    }
    return part;
  };
  try {
    const agla::io::StateDict all = agla::io::load_sharded(index, read_shard);
    if (!consistent || all.size() != listed) __builtin_trap();
  } catch (const agla::FormatError&) {
    if (consistent) __builtin_trap();
  }
  return 0;
}
