#pragma once
/// \file
/// The post-LN BERT blocks that BLIP's text model and InstructBLIP's Q-Former share, registered
/// under the upstream attribute names (`query`/`key`/`value`, `dense`, `LayerNorm`):
/// `BertSelfAttention`, `BertIntermediate`, `BertOutput` (also serving as `BertSelfOutput`) of `modeling_bert.py`
/// (and their BLIP / Q-Former copies).

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <utility>

#include "agla/models/common/layers.hpp"

namespace agla::models {

/// `BertSelfAttention` with absolute positions (self- or cross-attention): separate `query`, `key`,
/// `value` linears with biases, `softmax(q k^T / sqrt(dh) + mask) v`.
class BertSelfAttentionImpl : public torch::nn::Module {
 public:
  /// Registers `query` `[D, D]` and `key`/`value` `[D, kv_width]`: `kv_width` is D for
  /// self-attention and the width of the attended tokens (the image encoder's) for cross-attention.
  BertSelfAttentionImpl(int64_t hidden, int64_t heads, int64_t kv_width) : heads_(heads), head_dim_(hidden / heads) {
    query = register_module("query", Linear(hidden, hidden));
    key = register_module("key", Linear(kv_width, hidden));
    value = register_module("value", Linear(kv_width, hidden));
  }

  /// Context `[B, L, D]` of queries `hidden` `[B, L, D]` over keys/values `k`, `v` `[B|1, H, Lk, dh]`,
  /// with `additive_mask` broadcastable to `[B, H, L, Lk]` (or undefined). When `leaf` is given, the
  /// probabilities are replaced by an autograd leaf holding their values, stored in `*leaf`.
  at::Tensor attend(const at::Tensor& hidden, const at::Tensor& k, const at::Tensor& v, const at::Tensor& additive_mask,
                    at::Tensor* leaf = nullptr) {
    const at::Tensor q = split_heads(query->forward(hidden), heads_);
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim_));
    if (additive_mask.defined()) scores = scores + additive_mask;
    at::Tensor probs = at::softmax(scores, -1);
    if (leaf) {
      // GradCAM (docs/design.md §4): differentiate the match logit w.r.t. these probabilities only.
      probs = probs.detach().requires_grad_(true);
      *leaf = probs;
    }
    return merge_heads(at::matmul(probs, v));
  }

  /// Keys and values `[B, H, Lk, dh]` of `source` `[B, Lk, kv_width]`.
  std::pair<at::Tensor, at::Tensor> keys_values(const at::Tensor& source) {
    return {split_heads(key->forward(source), heads_), split_heads(value->forward(source), heads_)};
  }

  /// `hidden` `[B, L, D]` attending to `source` `[B, Lk, kv_width]` (itself for self-attention).
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& source, const at::Tensor& additive_mask) {
    const auto [k, v] = keys_values(source);
    return attend(hidden, k, v, additive_mask);
  }

  Linear query{nullptr}, key{nullptr}, value{nullptr};  ///< projections

 private:
  int64_t heads_, head_dim_;
};
TORCH_MODULE(BertSelfAttention);

/// The learned word and absolute position embeddings of a BERT-style embeddings module
/// (`word_embeddings` `[V, D]`, `position_embeddings` `[P, D]`, registered on that module under
/// these upstream names) and their sum.
struct WordPositionEmbeddings {
  /// Registers both tables on `module`.
  void register_tables(torch::nn::Module& module, int64_t vocab, int64_t positions, int64_t hidden) {
    word_embeddings = module.register_module("word_embeddings", Embedding(vocab, hidden));
    position_embeddings = module.register_module("position_embeddings", Embedding(positions, hidden));
  }
  /// int64 `ids` `[B, L]` at positions `past .. past + L - 1` -> `[B, L, D]`, before any norm.
  at::Tensor embed(const at::Tensor& ids, int64_t past) {
    const at::Tensor positions = at::arange(past, past + ids.size(1), ids.options().dtype(at::kLong));
    return word_embeddings(ids) + position_embeddings(positions);
  }

  Embedding word_embeddings{nullptr};      ///< `[V, D]`
  Embedding position_embeddings{nullptr};  ///< `[P, D]`
};

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

/// `BertOutput`: `LayerNorm(dense(intermediate) + residual)`, `dense` `[D, I]`. With `intermediate`
/// = `hidden` it is `BertSelfOutput`, the same block on the attention's context (`dense` `[D, D]`).
class BertOutputImpl : public torch::nn::Module {
 public:
  /// Registers `dense` and `LayerNorm`.
  BertOutputImpl(int64_t hidden, int64_t intermediate, double eps) {
    dense = register_module("dense", Linear(intermediate, hidden));
    LayerNorm = register_module("LayerNorm", models::LayerNorm(hidden, eps));
  }
  /// `[B, L, I]`, `[B, L, D]` -> `[B, L, D]`.
  at::Tensor forward(const at::Tensor& input, const at::Tensor& residual) { return LayerNorm(dense(input) + residual); }

  Linear dense{nullptr};               ///< `[D, I]`
  models::LayerNorm LayerNorm{nullptr};  ///< post-residual norm (upstream name)
};
TORCH_MODULE(BertOutput);

}  // namespace agla::models
