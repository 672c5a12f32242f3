#pragma once
/// \file
/// CLIP vision tower as LLaVA uses it (`CLIPVisionModel`, models/clip/modeling_clip.py v4.37.2):
/// patch + CLS embeddings, `pre_layrnorm`, pre-norm encoder layers. Module names follow Hugging
/// Face so that `vision_tower.vision_model.*` checkpoint keys map one to one.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <vector>

#include "agla/error.hpp"
#include "agla/models/common/vit.hpp"
#include "agla/models/common/layers.hpp"

namespace agla::llava {

/// Patch embedding (Conv2d, stride = patch, no bias), CLS token and learned positions (`CLIPVisionEmbeddings`).
class ClipEmbeddingsImpl : public torch::nn::Module {
 public:
  /// Registers `class_embedding` `[D]`, `patch_embedding.weight` `[D, C, p, p]`, `position_embedding.weight` `[P+1,
  /// D]`.
  explicit ClipEmbeddingsImpl(const models::VisionConfig& c) {
    class_embedding = register_parameter("class_embedding", at::empty({c.hidden_size}), false);
    patch_embedding =
        register_module("patch_embedding", models::PatchEmbedding(c.num_channels, c.hidden_size, c.patch_size, false));
    position_embedding = register_module("position_embedding", models::Embedding(c.num_patches() + 1, c.hidden_size));
  }
  /// pixel_values `[N, C, S, S]` -> `[N, 1 + P, D]`: CLS first, then patches in row-major grid order
  /// (the conv output flattened), plus position embeddings (row 0 belongs to CLS).
  at::Tensor forward(const at::Tensor& pixel_values) {
    const auto patches = patch_embedding(pixel_values);
    const auto n = pixel_values.size(0);
    auto cls = class_embedding.view({1, 1, -1}).expand({n, 1, class_embedding.size(0)});
    return at::cat({cls, patches}, 1) + position_embedding->weight.unsqueeze(0);
  }

  at::Tensor class_embedding;                      ///< `[D]`
  models::PatchEmbedding patch_embedding{nullptr};  ///< `[D, C, p, p]` convolution, no bias
  models::Embedding position_embedding{nullptr};   ///< `[P + 1, D]`
};
TORCH_MODULE(ClipEmbeddings);

/// Multi-head self-attention without mask (`CLIPAttention`); q is scaled by head_dim^-0.5 before `q k^T`.
class ClipAttentionImpl : public torch::nn::Module {
 public:
  /// Registers `{q,k,v,out}_proj` `[D, D]` with biases.
  explicit ClipAttentionImpl(const models::VisionConfig& c)
      : heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads) {
    q_proj = register_module("q_proj", models::Linear(c.hidden_size, c.hidden_size, true));
    k_proj = register_module("k_proj", models::Linear(c.hidden_size, c.hidden_size, true));
    v_proj = register_module("v_proj", models::Linear(c.hidden_size, c.hidden_size, true));
    out_proj = register_module("out_proj", models::Linear(c.hidden_size, c.hidden_size, true));
  }
  /// `[N, T, D]` -> `[N, T, D]`.
  at::Tensor forward(const at::Tensor& x) {
    const auto n = x.size(0), t = x.size(1);
    const double scale = std::pow(static_cast<double>(head_dim_), -0.5);
    auto split = [&](const at::Tensor& y) { return y.view({n, t, heads_, head_dim_}).transpose(1, 2); };
    const auto q = split(q_proj(x) * scale);
    const auto k = split(k_proj(x));
    const auto v = split(v_proj(x));
    const auto probs = at::softmax(at::matmul(q, k.transpose(-1, -2)), -1);
    return out_proj(at::matmul(probs, v).transpose(1, 2).reshape({n, t, heads_ * head_dim_}));
  }

  models::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};  ///< projections

 private:
  int64_t heads_, head_dim_;
};
TORCH_MODULE(ClipAttention);

/// Pre-norm transformer layer (`CLIPEncoderLayer`): `x += attn(LN1(x)); x += MLP(LN2(x))`.
class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  /// Registers `self_attn`, `layer_norm1`, `mlp`, `layer_norm2`.
  explicit ClipEncoderLayerImpl(const models::VisionConfig& c) {
    self_attn = register_module("self_attn", ClipAttention(c));
    layer_norm1 = register_module("layer_norm1", models::LayerNorm(c.hidden_size, c.layer_norm_eps));
    mlp = register_module(
        "mlp", models::Mlp(c.hidden_size, c.intermediate_size,
                           models::parse_activation(c.hidden_act, "vision_config.hidden_act")));
    layer_norm2 = register_module("layer_norm2", models::LayerNorm(c.hidden_size, c.layer_norm_eps));
  }
  /// `[N, T, D]` -> `[N, T, D]`.
  at::Tensor forward(const at::Tensor& x) {
    auto h = x + self_attn(layer_norm1(x));
    return h + mlp(layer_norm2(h));
  }

  ClipAttention self_attn{nullptr};  ///< attention
  models::LayerNorm layer_norm1{nullptr};    ///< before attention
  models::Mlp mlp{nullptr};          ///< MLP
  models::LayerNorm layer_norm2{nullptr};    ///< before the MLP
};
TORCH_MODULE(ClipEncoderLayer);

/// `CLIPVisionTransformer`: embeddings, `pre_layrnorm` (sic), `encoder.layers.*`, `post_layernorm`
/// (loaded for checkpoint completeness; LLaVA never applies it).
class ClipVisionTransformerImpl : public torch::nn::Module {
 public:
  /// Registers every submodule under its Hugging Face name.
  explicit ClipVisionTransformerImpl(const models::VisionConfig& c) {
    embeddings = register_module("embeddings", ClipEmbeddings(c));
    pre_layrnorm = register_module("pre_layrnorm", models::LayerNorm(c.hidden_size, c.layer_norm_eps));
    auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    layers = models::register_blocks(*encoder, "layers", c.num_hidden_layers, blocks_,
                                     [&](int64_t) { return ClipEncoderLayer(c); });
    post_layernorm = register_module("post_layernorm", models::LayerNorm(c.hidden_size, c.layer_norm_eps));
  }

  /// Hidden states 0..`count` (`[count + 1]` tensors `[N, 1 + P, D]`): entry 0 after `pre_layrnorm`,
  /// entry i the output of encoder layer i; layers after `count` are not run.
  std::vector<at::Tensor> hidden_states(const at::Tensor& pixel_values, int64_t count) {
    check<InvalidArgument>(count >= 0 && count <= static_cast<int64_t>(blocks_.size()),
                           "agla::llava::ClipVisionTransformer::hidden_states: count must be in [0, ", layers->size(),
                           "]; got ", count);
    std::vector<at::Tensor> out;
    out.push_back(pre_layrnorm(embeddings(pixel_values)));
    for (int64_t i = 0; i < count; ++i) out.push_back(blocks_[i]->forward(out.back()));
    return out;
  }

  /// Output of encoder layer `index` (hidden_states index, 0 = after `pre_layrnorm`), `[N, 1 + P, D]`.
  at::Tensor forward(const at::Tensor& pixel_values, int64_t index) {
    check<InvalidArgument>(index >= 0 && index <= static_cast<int64_t>(blocks_.size()),
                           "agla::llava::ClipVisionTransformer::forward: layer index must be in [0, ", layers->size(),
                           "]; got ", index);
    auto h = pre_layrnorm(embeddings(pixel_values));
    for (int64_t i = 0; i < index; ++i) h = blocks_[i]->forward(h);
    return h;
  }

  ClipEmbeddings embeddings{nullptr};     ///< patch, CLS and position embeddings
  models::LayerNorm pre_layrnorm{nullptr};        ///< LayerNorm before the encoder
  torch::nn::ModuleList layers{nullptr};  ///< `encoder.layers.*`
  models::LayerNorm post_layernorm{nullptr};      ///< unused by LLaVA

 private:
  std::vector<ClipEncoderLayer> blocks_;
};
TORCH_MODULE(ClipVisionTransformer);

/// `CLIPVisionModel`: a wrapper whose only child is `vision_model`.
class ClipVisionModelImpl : public torch::nn::Module {
 public:
  /// Registers `vision_model`.
  explicit ClipVisionModelImpl(const models::VisionConfig& c) {
    vision_model = register_module("vision_model", ClipVisionTransformer(c));
  }
  ClipVisionTransformer vision_model{nullptr};  ///< the transformer
};
TORCH_MODULE(ClipVisionModel);

}  // namespace agla::llava
