#pragma once
/// \file
/// Filling a `torch::nn::Module` from a StateDict by exact key names, strictly: every parameter and
/// buffer filled with a tensor of the same shape, every checkpoint tensor consumed. Anything else is
/// one `agla::FormatError` that lists the missing, unexpected and mis-shaped names together (the
/// strict mode of `torch.nn.Module.load_state_dict`).

#include <torch/nn/module.h>

#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/state_dict.hpp"

namespace agla::io {

/// Hooks for checkpoints whose names are not exactly the module's.
struct LoadHooks {
  /// Checkpoint key that fills module entry `name` (default: `name` itself). Used for aliases such as
  /// a tied LM-head matrix that some checkpoints store only once.
  std::function<std::string(const std::string& name, const StateDict& dict)> key_for;
  /// Checkpoint keys that may be present without filling anything (e.g. buffers that older versions
  /// saved and newer ones no longer persist). Default: none.
  std::function<bool(const std::string& key, const StateDict& dict)> ignorable;
};

namespace detail {

inline void list_names(std::ostringstream& out, const char* title, const std::vector<std::string>& names) {
  if (names.empty()) return;
  out << "\n  " << title << " (" << names.size() << "):";
  for (const std::string& name : names) out << "\n    " << name;
}

}  // namespace detail

/// Copies `dict` into the parameters and buffers of `module` (converted to each entry's dtype and
/// device, without recording autograd). `source` names the checkpoint in error messages. Throws one
/// `agla::FormatError` listing every missing, unexpected and shape-mismatched name; on error the module
/// is left unchanged.
inline void load_module_state(torch::nn::Module& module, const StateDict& dict, const std::string& source,
                              const LoadHooks& hooks = {}) {
  struct Entry {
    std::string name;
    std::string key;
    at::Tensor target;
  };
  std::vector<Entry> entries;
  for (const auto& item : module.named_parameters(true)) entries.push_back({item.key(), "", item.value()});
  for (const auto& item : module.named_buffers(true)) entries.push_back({item.key(), "", item.value()});
  std::vector<std::string> missing, mismatched, unexpected;
  std::set<std::string> consumed;
  for (Entry& entry : entries) {
    entry.key = hooks.key_for ? hooks.key_for(entry.name, dict) : entry.name;
    const auto it = dict.find(entry.key);
    if (it == dict.end()) {
      missing.push_back(entry.key == entry.name ? entry.name : entry.name + " (looked up as " + entry.key + ")");
      continue;
    }
    consumed.insert(entry.key);
    if (it->second.sizes() != entry.target.sizes()) {
      mismatched.push_back(
          agla::detail::concat(entry.name, ": checkpoint ", it->second.sizes(), ", model ", entry.target.sizes()));
    }
  }
  for (const auto& item : dict) {
    if (consumed.count(item.first) == 0 && !(hooks.ignorable && hooks.ignorable(item.first, dict))) {
      unexpected.push_back(item.first);
    }
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::ostringstream out;
    out << "agla::io::load_module_state: " << source << " does not match the model";
    detail::list_names(out, "missing", missing);
    detail::list_names(out, "unexpected", unexpected);
    detail::list_names(out, "shape mismatch", mismatched);
    throw FormatError(out.str());
  }
  at::NoGradGuard no_grad;
  for (Entry& entry : entries) entry.target.copy_(dict.at(entry.key));
}

}  // namespace agla::io
