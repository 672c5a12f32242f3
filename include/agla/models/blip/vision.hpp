#pragma once
/// \file
/// BLIP's vision transformer, module for module as Hugging Face's `modeling_blip.py`
/// (`BlipVisionEmbeddings`, `BlipAttention`, `BlipMLP`, `BlipEncoderLayer`, `BlipEncoder`,
/// `BlipVisionModel`), registered under the upstream attribute names so that
/// `vision_model.<...>` checkpoint keys map one to one. Pre-LN blocks, exact erf GELU, final
/// `post_layernorm`; no attention mask.

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <vector>

#include "agla/error.hpp"
#include "agla/models/blip/config.hpp"

namespace agla::blip {

/// `BlipVisionEmbeddings`: `[CLS] + conv patches + learned positions` -> `[B, 1 + g*g, D]`.
class BlipVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit BlipVisionEmbeddingsImpl(const BlipVisionConfig& c) {
    const int64_t grid = c.image_size / c.patch_size;
    class_embedding = register_parameter("class_embedding", torch::randn({1, 1, c.hidden_size}) * 0.02);
    patch_embedding = register_module(
        "patch_embedding",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size).stride(c.patch_size)));
    position_embedding =
        register_parameter("position_embedding", torch::randn({1, grid * grid + 1, c.hidden_size}) * 0.02);
  }

  /// `[B, C, S, S]` -> `[B, 1 + g*g, D]`; patch index = row * g + col (upstream `flatten(2).transpose(1, 2)`).
  at::Tensor forward(const at::Tensor& pixel_values) {
    const at::Tensor patches =
        patch_embedding->forward(pixel_values.to(class_embedding.scalar_type())).flatten(2).transpose(1, 2);
    const at::Tensor cls = class_embedding.expand({pixel_values.size(0), 1, -1});
    const at::Tensor tokens = at::cat({cls, patches}, 1);
    return tokens + position_embedding.narrow(1, 0, tokens.size(1));
  }

  at::Tensor class_embedding;
  torch::nn::Conv2d patch_embedding{nullptr};
  at::Tensor position_embedding;
};
TORCH_MODULE(BlipVisionEmbeddings);

/// `BlipAttention`: fused `qkv` projection (rows: all q, all k, all v), scores scaled by dh^-0.5.
class BlipAttentionImpl : public torch::nn::Module {
 public:
  explicit BlipAttentionImpl(const BlipVisionConfig& c)
      : num_heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads) {
    qkv = register_module("qkv", torch::nn::Linear(c.hidden_size, 3 * c.hidden_size));
    projection = register_module("projection", torch::nn::Linear(c.hidden_size, c.hidden_size));
  }

  /// `[B, N, D]` -> `[B, N, D]` (upstream `mixed_qkv.reshape(B, N, 3, H, dh).permute(2, 0, 3, 1, 4)`).
  at::Tensor forward(const at::Tensor& x) {
    const int64_t b = x.size(0), n = x.size(1);
    const at::Tensor mixed = qkv->forward(x).reshape({b, n, 3, num_heads_, head_dim_}).permute({2, 0, 3, 1, 4});
    const at::Tensor q = mixed[0], k = mixed[1], v = mixed[2];
    const at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) * std::pow(static_cast<double>(head_dim_), -0.5);
    const at::Tensor context = at::matmul(at::softmax(scores, -1), v).permute({0, 2, 1, 3}).reshape({b, n, -1});
    return projection->forward(context);
  }

  torch::nn::Linear qkv{nullptr}, projection{nullptr};

 private:
  int64_t num_heads_, head_dim_;
};
TORCH_MODULE(BlipAttention);

/// `BlipMLP`: fc1 -> exact GELU -> fc2.
class BlipMlpImpl : public torch::nn::Module {
 public:
  explicit BlipMlpImpl(const BlipVisionConfig& c) {
    fc1 = register_module("fc1", torch::nn::Linear(c.hidden_size, c.intermediate_size));
    fc2 = register_module("fc2", torch::nn::Linear(c.intermediate_size, c.hidden_size));
  }
  /// `[B, N, D]` -> `[B, N, D]`.
  at::Tensor forward(const at::Tensor& x) { return fc2->forward(at::gelu(fc1->forward(x))); }

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(BlipMlp);

/// `BlipEncoderLayer`: pre-LN, `x + attn(LN1 x)`, then `x + mlp(LN2 x)`.
class BlipEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit BlipEncoderLayerImpl(const BlipVisionConfig& c) {
    const auto ln = torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps);
    self_attn = register_module("self_attn", BlipAttention(c));
    layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(ln));
    mlp = register_module("mlp", BlipMlp(c));
    layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(ln));
  }
  /// `[B, N, D]` -> `[B, N, D]`.
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = x + self_attn->forward(layer_norm1->forward(x));
    return h + mlp->forward(layer_norm2->forward(h));
  }

  BlipAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr};
  BlipMlp mlp{nullptr};
  torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(BlipEncoderLayer);

/// `BlipEncoder`: the stack of `layers`.
class BlipEncoderImpl : public torch::nn::Module {
 public:
  explicit BlipEncoderImpl(const BlipVisionConfig& c) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(BlipEncoderLayer(c));
  }
  /// `[B, N, D]` -> `[B, N, D]`; appends every layer's input and the last output to `hidden_states` if given.
  at::Tensor forward(at::Tensor x, std::vector<at::Tensor>* hidden_states = nullptr) {
    for (const auto& layer : *layers) {
      if (hidden_states) hidden_states->push_back(x);
      x = layer->as<BlipEncoderLayer>()->forward(x);
    }
    if (hidden_states) hidden_states->push_back(x);
    return x;
  }

  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(BlipEncoder);

/// `BlipVisionModel`: embeddings -> encoder -> `post_layernorm`.
class BlipVisionModelImpl : public torch::nn::Module {
 public:
  explicit BlipVisionModelImpl(const BlipVisionConfig& c) : config_(c) {
    embeddings = register_module("embeddings", BlipVisionEmbeddings(c));
    encoder = register_module("encoder", BlipEncoder(c));
    post_layernorm = register_module(
        "post_layernorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  }

  /// `pixel_values` `[B, C, S, S]` (S = image_size, any float dtype) -> `last_hidden_state`
  /// `[B, 1 + g*g, D]` (post-LayerNorm, what cross-attention and ITC consume). `hidden_states`, if
  /// given, receives the encoder's input and each layer's output (before `post_layernorm`).
  at::Tensor forward(const at::Tensor& pixel_values, std::vector<at::Tensor>* hidden_states = nullptr) {
    check<ShapeError>(pixel_values.dim() == 4 && pixel_values.size(1) == config_.num_channels &&
                          pixel_values.size(2) == config_.image_size && pixel_values.size(3) == config_.image_size,
                      "agla::blip::BlipVisionModel: pixel_values must be [B, ", config_.num_channels, ", ",
                      config_.image_size, ", ", config_.image_size, "]; got ", pixel_values.sizes());
    check<ShapeError>(at::isFloatingType(pixel_values.scalar_type()),
                      "agla::blip::BlipVisionModel: pixel_values must be floating point; got ",
                      pixel_values.scalar_type());
    return post_layernorm->forward(encoder->forward(embeddings->forward(pixel_values), hidden_states));
  }

  /// The configuration the module was built from.
  const BlipVisionConfig& config() const { return config_; }

  BlipVisionEmbeddings embeddings{nullptr};
  BlipEncoder encoder{nullptr};
  torch::nn::LayerNorm post_layernorm{nullptr};

 private:
  BlipVisionConfig config_;
};
TORCH_MODULE(BlipVisionModel);

}  // namespace agla::blip
