#pragma once
/// \file
/// The building blocks LLaVA's modules share: linear, embedding and norm layers whose parameters
/// are registered under PyTorch's names (`weight`, `bias`) but left uninitialised, because every
/// parameter is replaced by a checkpoint tensor (zero-copy from the file mapping) right after
/// construction. Random initialisation of a 7B model would cost minutes and the memory of a
/// second copy.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <limits>

#include "agla/error.hpp"

namespace agla::llava {

/// `y = x W^T + b` (PyTorch `nn.Linear`); weight `[out, in]`, optional bias `[out]`, uninitialised.
class LinearImpl : public torch::nn::Module {
 public:
  /// Registers `weight` `[out_features, in_features]` and, when `bias`, `bias` `[out_features]`.
  LinearImpl(int64_t in_features, int64_t out_features, bool bias) {
    weight = register_parameter("weight", at::empty({out_features, in_features}), false);
    if (bias) this->bias = register_parameter("bias", at::empty({out_features}), false);
  }
  /// `[..., in]` -> `[..., out]` in the weight's dtype/device.
  at::Tensor forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

  at::Tensor weight;  ///< `[out, in]`
  at::Tensor bias;    ///< `[out]` or undefined
};
TORCH_MODULE(Linear);

/// Token lookup table (PyTorch `nn.Embedding`), weight `[num, dim]`, uninitialised.
class EmbeddingImpl : public torch::nn::Module {
 public:
  /// Registers `weight` `[num_embeddings, dim]`.
  EmbeddingImpl(int64_t num_embeddings, int64_t dim) {
    weight = register_parameter("weight", at::empty({num_embeddings, dim}), false);
  }
  /// int64 ids `[...]` -> `[..., dim]`.
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

  at::Tensor weight;  ///< `[num, dim]`
};
TORCH_MODULE(Embedding);

/// PyTorch `nn.LayerNorm` over the last dimension (biased variance, eps inside the sqrt).
class LayerNormImpl : public torch::nn::Module {
 public:
  /// Registers `weight` and `bias`, both `[dim]`.
  LayerNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) {
    weight = register_parameter("weight", at::empty({dim}), false);
    bias = register_parameter("bias", at::empty({dim}), false);
  }
  /// `[..., dim]` -> `[..., dim]`.
  at::Tensor forward(const at::Tensor& x) { return at::layer_norm(x, {dim_}, weight, bias, eps_); }

  at::Tensor weight;  ///< `[dim]`
  at::Tensor bias;    ///< `[dim]`

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

/// LLaMA RMSNorm (`LlamaRMSNorm`, modeling_llama.py v4.37.2): normalise in float32 (float64 for
/// double inputs), cast back to the input dtype, then scale: `w * (x * rsqrt(mean(x^2) + eps))`.
class RmsNormImpl : public torch::nn::Module {
 public:
  /// Registers `weight` `[dim]`.
  RmsNormImpl(int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", at::empty({dim}), false); }
  /// `[..., dim]` -> `[..., dim]` in the input's dtype.
  at::Tensor forward(const at::Tensor& x) {
    const auto h = x.to(at::promote_types(at::kFloat, x.scalar_type()));
    const auto variance = h.pow(2).mean(-1, true);
    return weight * (h * at::rsqrt(variance + eps_)).to(x.scalar_type());
  }

  at::Tensor weight;  ///< `[dim]`

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

/// CLIP's `quick_gelu`: `x * sigmoid(1.702 x)`.
inline at::Tensor quick_gelu(const at::Tensor& x) { return x * at::sigmoid(x * 1.702); }

/// Exact (erf) GELU, `0.5 x (1 + erf(x / sqrt 2))` (transformers' "gelu").
inline at::Tensor exact_gelu(const at::Tensor& x) { return at::gelu(x); }

/// The value Hugging Face adds at masked attention entries: the dtype's lowest finite number.
inline double mask_fill_value(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return -65504.0;
    case at::kBFloat16:
      return -3.3895313892515355e38;
    case at::kDouble:
      return std::numeric_limits<double>::lowest();
    default:
      return std::numeric_limits<float>::lowest();
  }
}

}  // namespace agla::llava
