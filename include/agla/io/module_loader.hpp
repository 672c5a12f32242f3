#pragma once
/// \file
/// The one way weights get into a model: `agla::io::load_module` binds the tensors of a StateDict to
/// the parameters and buffers of a `torch::nn::Module` by exact key names, strictly -- every entry
/// filled with a tensor of the same shape, every checkpoint tensor consumed -- and without copying
/// tensors whose dtype and device already match (a memory-mapped checkpoint is not held twice).
/// Anything else is one `agla::FormatError` that lists the missing, unexpected and mis-shaped names
/// together (the strict mode of `torch.nn.Module.load_state_dict`). Every model family's
/// `X::load(dir, LoadOptions)` goes through it.

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/nn/module.h>

#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/state_dict.hpp"

namespace agla::io {

/// Where and how a model's weights are placed when it is loaded.
struct LoadOptions {
  at::Device device = at::kCPU;       ///< Where the model runs (CPU, or CUDA when the build has it).
  at::ScalarType dtype = at::kFloat;  ///< Float, Double, BFloat16, or Half (CUDA only).
  /// Bind checkpoint tensors whose dtype and device already match without a copy (they stay views
  /// of the read-only file mapping). False copies every tensor into memory of its own.
  bool zero_copy = true;

  /// Throws `agla::InvalidArgument` (naming `who`) for a dtype or device this build cannot run.
  void validate(const std::string& who) const {
    check<InvalidArgument>(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
                           who, ": LoadOptions::dtype must be Float, Double, Half or BFloat16; got ", dtype);
    check<InvalidArgument>(!(dtype == at::kHalf && device.is_cpu()), who,
                           ": LoadOptions::dtype Half is supported on CUDA only; use Float (or BFloat16) on CPU");
    check<InvalidArgument>(device.is_cpu() || (device.is_cuda() && at::hasCUDA()), who, ": LoadOptions::device ",
                           device, " is not available in this libtorch build (CPU", at::hasCUDA() ? " and CUDA" : " only",
                           ")");
  }
};

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

/// Binds `dict` to the parameters and buffers of `module`, each converted to `options.dtype` and
/// `options.device` (floating entries; others keep their dtype), without recording autograd.
/// `source` names the checkpoint in error messages. Throws one `agla::FormatError` listing every
/// missing, unexpected, mis-shaped or non-floating name; on error the module is left unchanged.
inline void load_module(torch::nn::Module& module, const StateDict& dict, const std::string& source,
                        const LoadOptions& options = {}, const LoadHooks& hooks = {}) {
  options.validate("agla::io::load_module");
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
    } else if (at::isFloatingType(entry.target.scalar_type()) != at::isFloatingType(it->second.scalar_type())) {
      mismatched.push_back(agla::detail::concat(entry.name, ": checkpoint dtype ", it->second.scalar_type(),
                                                ", model dtype ", entry.target.scalar_type()));
    }
  }
  for (const auto& item : dict) {
    if (consumed.count(item.first) == 0 && !(hooks.ignorable && hooks.ignorable(item.first, dict))) {
      unexpected.push_back(item.first);
    }
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::ostringstream out;
    out << "agla::io::load_module: " << source << " does not match the model";
    detail::list_names(out, "missing", missing);
    detail::list_names(out, "unexpected", unexpected);
    detail::list_names(out, "shape or dtype mismatch", mismatched);
    throw FormatError(out.str());
  }
  at::NoGradGuard no_grad;
  for (Entry& entry : entries) {
    const at::Tensor& stored = dict.at(entry.key);
    const at::ScalarType dtype = at::isFloatingType(stored.scalar_type()) ? options.dtype : stored.scalar_type();
    entry.target.set_data(stored.to(options.device, dtype, /*non_blocking=*/false, /*copy=*/!options.zero_copy));
  }
}

}  // namespace agla::io
