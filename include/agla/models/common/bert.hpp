#pragma once
/// \file
/// The post-LN BERT blocks that BLIP's text model and InstructBLIP's Q-Former share, registered
/// under the upstream attribute names (`dense`, `LayerNorm`): `BertSelfOutput`,
/// `BertIntermediate`, `BertOutput` of `modeling_bert.py` (and their BLIP / Q-Former copies).

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "agla/models/common/layers.hpp"

namespace agla::models {

/// `BertSelfOutput`: `LayerNorm(dense(context) + residual)`, `dense` `[D, D]`.
class BertSelfOutputImpl : public torch::nn::Module {
 public:
  /// Registers `dense` and `LayerNorm`.
  BertSelfOutputImpl(int64_t hidden, double eps) {
    dense = register_module("dense", Linear(hidden, hidden));
    LayerNorm = register_module("LayerNorm", models::LayerNorm(hidden, eps));
  }
  /// `[B, L, D]`, `[B, L, D]` -> `[B, L, D]`.
  at::Tensor forward(const at::Tensor& context, const at::Tensor& residual) {
    return LayerNorm(dense(context) + residual);
  }

  Linear dense{nullptr};               ///< `[D, D]`
  models::LayerNorm LayerNorm{nullptr};  ///< post-residual norm (upstream name)
};
TORCH_MODULE(BertSelfOutput);

/// `BertIntermediate`: `gelu(dense(x))`, `dense` `[I, D]` (exact erf GELU).
class BertIntermediateImpl : public torch::nn::Module {
 public:
  /// Registers `dense`.
  BertIntermediateImpl(int64_t hidden, int64_t intermediate) {
    dense = register_module("dense", Linear(hidden, intermediate));
  }
  /// `[B, L, D]` -> `[B, L, I]`.
  at::Tensor forward(const at::Tensor& x) { return at::gelu(dense(x)); }

  Linear dense{nullptr};  ///< `[I, D]`
};
TORCH_MODULE(BertIntermediate);

/// `BertOutput`: `LayerNorm(dense(intermediate) + residual)`, `dense` `[D, I]`.
class BertOutputImpl : public torch::nn::Module {
 public:
  /// Registers `dense` and `LayerNorm`.
  BertOutputImpl(int64_t hidden, int64_t intermediate, double eps) {
    dense = register_module("dense", Linear(intermediate, hidden));
    LayerNorm = register_module("LayerNorm", models::LayerNorm(hidden, eps));
  }
  /// `[B, L, I]`, `[B, L, D]` -> `[B, L, D]`.
  at::Tensor forward(const at::Tensor& intermediate, const at::Tensor& residual) {
    return LayerNorm(dense(intermediate) + residual);
  }

  Linear dense{nullptr};               ///< `[D, I]`
  models::LayerNorm LayerNorm{nullptr};  ///< post-residual norm (upstream name)
};
TORCH_MODULE(BertOutput);

}  // namespace agla::models
