#pragma once
/// \file
/// The building blocks every model family shares: linear, embedding, patch-embedding and norm
/// layers whose parameters are registered under PyTorch's names (`weight`, `bias`) but left
/// uninitialised, because loading replaces every parameter by a checkpoint tensor (zero-copy from
/// the file mapping, `agla/io/module_loader.hpp`). Random initialisation of a 7B model would cost
/// minutes and the memory of a second copy. Models trained from scratch call
/// `agla::models::init_parameters`, which draws what PyTorch's own modules draw at construction.

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "agla/error.hpp"

namespace agla::models {

/// A module that draws its own initial parameters (for training from scratch); see `init_parameters`.
class ResetParameters {
 public:
  virtual ~ResetParameters() = default;
  /// Draws the module's parameters (and its children's) from libtorch's default generator.
  virtual void reset_parameters() = 0;
};

namespace detail {

/// PyTorch's `Linear`/`Conv` initialisation: Kaiming-uniform with a = sqrt(5) (bound 1/sqrt(fan_in))
/// and a bias uniform in +-1/sqrt(fan_in), in that order.
inline void torch_linear_init(at::Tensor& weight, at::Tensor& bias) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const auto fan_in = std::get<0>(torch::nn::init::_calculate_fan_in_and_fan_out(weight));
    const double bound = 1 / std::sqrt(fan_in);
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

}  // namespace detail

/// `y = x W^T + b` (PyTorch `nn.Linear`); weight `[out, in]`, optional bias `[out]`, uninitialised.
class LinearImpl : public torch::nn::Module, public ResetParameters {
 public:
  /// Registers `weight` `[out_features, in_features]` and, when `bias`, `bias` `[out_features]`.
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true) {
    weight = register_parameter("weight", at::empty({out_features, in_features}), false);
    if (bias) this->bias = register_parameter("bias", at::empty({out_features}), false);
  }
  /// `[..., in]` -> `[..., out]` in the weight's dtype/device.
  at::Tensor forward(const at::Tensor& x) { return at::linear(x, weight, bias); }
  /// PyTorch's `nn.Linear` initialisation.
  void reset_parameters() override { detail::torch_linear_init(weight, bias); }

  at::Tensor weight;  ///< `[out, in]`
  at::Tensor bias;    ///< `[out]` or undefined
};
TORCH_MODULE(Linear);

/// Token lookup table (PyTorch `nn.Embedding`), weight `[num, dim]`, uninitialised.
class EmbeddingImpl : public torch::nn::Module, public ResetParameters {
 public:
  /// Registers `weight` `[num_embeddings, dim]`.
  EmbeddingImpl(int64_t num_embeddings, int64_t dim) {
    weight = register_parameter("weight", at::empty({num_embeddings, dim}), false);
  }
  /// int64 ids `[...]` -> `[..., dim]`.
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight, ids); }
  /// PyTorch's `nn.Embedding` initialisation: N(0, 1).
  void reset_parameters() override {
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(weight);
  }

  at::Tensor weight;  ///< `[num, dim]`
};
TORCH_MODULE(Embedding);

/// Non-overlapping patch embedding (PyTorch `nn.Conv2d` with kernel = stride = patch), weight
/// `[out, channels, patch, patch]`, optional bias `[out]`, uninitialised.
class PatchEmbeddingImpl : public torch::nn::Module, public ResetParameters {
 public:
  /// Registers `weight` and, when `bias`, `bias`.
  PatchEmbeddingImpl(int64_t channels, int64_t out, int64_t patch, bool bias) : patch_(patch) {
    weight = register_parameter("weight", at::empty({out, channels, patch, patch}), false);
    if (bias) this->bias = register_parameter("bias", at::empty({out}), false);
  }
  /// pixels `[N, C, S, S]` (cast to the weight's dtype) -> `[N, P, out]`, patches in row-major grid
  /// order (the convolution output flattened, as upstream `flatten(2).transpose(1, 2)`).
  at::Tensor forward(const at::Tensor& pixels) {
    return at::conv2d(pixels.to(weight.scalar_type()), weight, bias, {patch_, patch_}).flatten(2).transpose(1, 2);
  }
  /// PyTorch's `nn.Conv2d` initialisation.
  void reset_parameters() override { detail::torch_linear_init(weight, bias); }

  at::Tensor weight;  ///< `[out, C, p, p]`
  at::Tensor bias;    ///< `[out]` or undefined

 private:
  int64_t patch_;
};
TORCH_MODULE(PatchEmbedding);

/// PyTorch `nn.LayerNorm` over the last dimension (biased variance, eps inside the sqrt).
class LayerNormImpl : public torch::nn::Module, public ResetParameters {
 public:
  /// Registers `weight` and `bias`, both `[dim]`.
  LayerNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) {
    weight = register_parameter("weight", at::empty({dim}), false);
    bias = register_parameter("bias", at::empty({dim}), false);
  }
  /// `[..., dim]` -> `[..., dim]`.
  at::Tensor forward(const at::Tensor& x) { return at::layer_norm(x, {dim_}, weight, bias, eps_); }
  /// PyTorch's initialisation: weight 1, bias 0.
  void reset_parameters() override {
    torch::NoGradGuard no_grad;
    weight.fill_(1.0);
    bias.zero_();
  }

  at::Tensor weight;  ///< `[dim]`
  at::Tensor bias;    ///< `[dim]`

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

/// LLaMA RMSNorm (`LlamaRMSNorm`, modeling_llama.py v4.37.2): normalise in float32 (float64 for
/// double inputs), cast back to the input dtype, then scale: `w * (x * rsqrt(mean(x^2) + eps))`.
class RmsNormImpl : public torch::nn::Module, public ResetParameters {
 public:
  /// Registers `weight` `[dim]`.
  RmsNormImpl(int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", at::empty({dim}), false); }
  /// `[..., dim]` -> `[..., dim]` in the input's dtype.
  at::Tensor forward(const at::Tensor& x) {
    const auto h = x.to(at::promote_types(at::kFloat, x.scalar_type()));
    const auto variance = h.pow(2).mean(-1, true);
    return weight * (h * at::rsqrt(variance + eps_)).to(x.scalar_type());
  }
  /// Weight 1.
  void reset_parameters() override {
    torch::NoGradGuard no_grad;
    weight.fill_(1.0);
  }

  at::Tensor weight;  ///< `[dim]`

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

/// The feed-forward activations of the shipped models, by their Hugging Face `hidden_act` names.
enum class Activation {
  Gelu,       ///< "gelu": exact (erf) GELU, `0.5 x (1 + erf(x / sqrt 2))`
  QuickGelu,  ///< "quick_gelu": CLIP's `x * sigmoid(1.702 x)`
};

/// The activation named `name`; throws `agla::FormatError` (naming `where`) for any other name.
inline Activation parse_activation(const std::string& name, const std::string& where) {
  if (name == "gelu") return Activation::Gelu;
  if (name == "quick_gelu") return Activation::QuickGelu;
  throw FormatError(agla::detail::concat(where, " must be \"gelu\" or \"quick_gelu\"; got \"", name, "\""));
}

/// Applies `activation` elementwise.
inline at::Tensor activate(Activation activation, const at::Tensor& x) {
  return activation == Activation::QuickGelu ? x * at::sigmoid(x * 1.702) : at::gelu(x);
}

/// Transformer feed-forward `fc2(act(fc1(x)))` with biases (`CLIPMLP`, `BlipMLP`, BLIP-2's MLP).
class MlpImpl : public torch::nn::Module {
 public:
  /// Registers `fc1` `[I, D]` and `fc2` `[D, I]`.
  MlpImpl(int64_t dim, int64_t intermediate, Activation activation) : activation_(activation) {
    fc1 = register_module("fc1", Linear(dim, intermediate));
    fc2 = register_module("fc2", Linear(intermediate, dim));
  }
  /// `[..., D]` -> `[..., D]`.
  at::Tensor forward(const at::Tensor& x) { return fc2(activate(activation_, fc1(x))); }

  Linear fc1{nullptr}, fc2{nullptr};  ///< the two layers

 private:
  Activation activation_;
};
TORCH_MODULE(Mlp);

/// Registers `count` blocks `make(i)` as the ModuleList `name` of `parent` (parameters
/// `name.i.*`, as upstream names them) and keeps them, typed, in `blocks` for the forward.
template <class Block, class Make>
torch::nn::ModuleList register_blocks(torch::nn::Module& parent, const std::string& name, int64_t count,
                                      std::vector<Block>& blocks, Make make) {
  torch::nn::ModuleList list = parent.register_module(name, torch::nn::ModuleList());
  for (int64_t i = 0; i < count; ++i) {
    blocks.push_back(make(i));
    list->push_back(blocks.back());
  }
  return list;
}

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

/// `[N, T, H * d]` -> `[N, H, T, d]`.
inline at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
}

/// `[N, H, T, d]` -> `[N, T, H * d]`.
inline at::Tensor merge_heads(const at::Tensor& x) {
  return x.transpose(1, 2).reshape({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

/// Draws initial parameters for a model trained from scratch, as PyTorch's modules draw them at
/// construction: the module tree is walked in registration order and every `ResetParameters`
/// module draws its own subtree. Throws `agla::InvalidArgument` for a parameter no initialiser owns.
inline void init_parameters(torch::nn::Module& module) {
  if (auto* resettable = dynamic_cast<ResetParameters*>(&module)) {
    resettable->reset_parameters();
    return;
  }
  const auto own = module.named_parameters(/*recurse=*/false);
  check<InvalidArgument>(own.size() == 0, "agla::models::init_parameters: module ", module.name(),
                         " owns parameter '", own.size() > 0 ? own.keys().front() : std::string(),
                         "' but has no initialiser (derive it from agla::models::ResetParameters)");
  for (const auto& child : module.children()) init_parameters(*child);
}

}  // namespace agla::models
