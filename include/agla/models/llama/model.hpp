#pragma once
/// \file
/// LLaMA decoder with a key/value cache (`LlamaForCausalLM`, models/llama/modeling_llama.py
/// v4.37.2, eager attention): RMSNorm, rotary embeddings in Hugging Face's rotate_half layout,
/// SwiGLU MLP, grouped-query attention. Module names follow Hugging Face so that
/// `language_model.*` checkpoint keys map one to one.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/models/llama/config.hpp"
#include "agla/models/common/layers.hpp"

namespace agla::llama {

/// Keys (after RoPE) and values of every layer for `rows` sequences, stored with spare capacity so
/// that appending a token copies only that token: per layer `[rows, kv_heads, capacity, head_dim]`,
/// before any GQA expansion. Which positions are filled is tracked by the caller (`KvSlot::past`),
/// so rows can be advanced in groups (one group per view of AGLA).
class KvCache {
 public:
  KvCache() = default;
  /// Allocates `layers` key and value buffers `[rows, kv_heads, capacity, head_dim]` with `options`.
  KvCache(int64_t layers, int64_t rows, int64_t kv_heads, int64_t head_dim, int64_t capacity,
          at::TensorOptions options) {
    check<InvalidArgument>(layers > 0 && rows > 0 && kv_heads > 0 && head_dim > 0 && capacity >= 0,
                           "agla::llama::KvCache: sizes must be positive; got layers ", layers, ", rows ", rows,
                           ", kv_heads ", kv_heads, ", head_dim ", head_dim, ", capacity ", capacity);
    for (int64_t i = 0; i < layers; ++i) {
      keys_.push_back(at::empty({rows, kv_heads, capacity, head_dim}, options));
      values_.push_back(at::empty({rows, kv_heads, capacity, head_dim}, options));
    }
  }
  /// Whether buffers were allocated.
  bool defined() const { return !keys_.empty(); }
  /// Number of layers.
  int64_t layers() const { return static_cast<int64_t>(keys_.size()); }
  /// Number of sequences (batch rows).
  int64_t rows() const { return defined() ? keys_[0].size(0) : 0; }
  /// Positions that fit without reallocating.
  int64_t capacity() const { return defined() ? keys_[0].size(2) : 0; }
  /// Grows every buffer to hold at least `needed` positions (at least doubling), keeping content.
  void reserve(int64_t needed) {
    if (!defined() || needed <= capacity()) return;
    const int64_t old = capacity();
    const int64_t grown = std::max(needed, 2 * old);
    for (auto* list : {&keys_, &values_}) {
      for (auto& buffer : *list) {
        auto sizes = buffer.sizes().vec();
        sizes[2] = grown;
        auto bigger = at::empty(sizes, buffer.options());
        bigger.narrow(2, 0, old).copy_(buffer);
        buffer = std::move(bigger);
      }
    }
  }
  /// Key buffer of `layer`, `[rows, kv_heads, capacity, head_dim]`.
  const at::Tensor& keys(int64_t layer) const { return keys_.at(static_cast<size_t>(layer)); }
  /// Value buffer of `layer`, `[rows, kv_heads, capacity, head_dim]`.
  const at::Tensor& values(int64_t layer) const { return values_.at(static_cast<size_t>(layer)); }

 private:
  std::vector<at::Tensor> keys_, values_;
};

/// The part of a `KvCache` one forward reads and appends to: rows `[row_begin, row_begin + N)`,
/// of which positions `[0, past)` are filled; the forward writes positions `[past, past + T)`.
/// The caller must `reserve(past + T)` first and advance `past` afterwards.
struct KvSlot {
  KvCache* cache = nullptr;  ///< the storage
  int64_t row_begin = 0;     ///< first row used
  int64_t past = 0;          ///< positions already cached
};

/// PAI's attention intervention (Liu et al., ECCV 2024; LALBJ/PAI `attention.py`): in layers
/// `[start_layer, end_layer)`, the last query row's pre-softmax scores on the keys `key_mask` marks
/// (the image tokens) become `a + alpha |a|`, in every head.
struct AttentionBoost {
  double alpha = 0.2;          ///< Boost of the image keys' scores.
  int64_t start_layer = 2;     ///< First boosted layer.
  int64_t end_layer = 32;      ///< One past the last boosted layer.
  at::Tensor key_mask;         ///< `[N, past + T]` bool: true at the keys to boost.

  /// Whether `layer` is boosted.
  bool covers(int64_t layer) const { return layer >= start_layer && layer < end_layer; }
};

/// cos and sin of the rotary angles for int64 `position_ids` `[N, T]`, as `[N, 1, T, head_dim]` in
/// `dtype`: angles `pos * theta^(-2i/d)` for i < d/2, duplicated (`cat(f, f)`), computed in float32
/// like `LlamaRotaryEmbedding` (float64 for a double model).
inline std::pair<at::Tensor, at::Tensor> rotary_cos_sin(const at::Tensor& position_ids, int64_t head_dim, double theta,
                                                        at::ScalarType dtype) {
  const auto compute = at::promote_types(at::kFloat, dtype);
  const auto opts = position_ids.options().dtype(compute);
  const auto exponents = at::arange(0, head_dim, 2, opts) / static_cast<double>(head_dim);
  const auto inv_freq = at::reciprocal(at::pow(theta, exponents));
  const auto freqs = position_ids.to(compute).unsqueeze(-1) * inv_freq;
  const auto emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

/// `cat(-x[..., d/2:], x[..., :d/2])`.
inline at::Tensor rotate_half(const at::Tensor& x) {
  const auto half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

/// Additive attention mask `[N or 1, 1, T, past + T]` in `dtype` (0 where allowed, the dtype's lowest
/// value elsewhere): causal over absolute positions, and keys whose `key_mask` `[N, past + T]` entry
/// is 0 (left padding) masked; undefined when nothing is masked (a single new token, no padding).
inline at::Tensor attention_mask(int64_t t, int64_t past, const at::Tensor& key_mask, at::ScalarType dtype,
                                 const at::Device& device) {
  const int64_t s = past + t;
  if (t == 1 && !key_mask.defined()) return {};
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  auto allowed = at::arange(s, opts).view({1, s}) <= at::arange(past, s, opts).view({t, 1});
  allowed = allowed.view({1, 1, t, s});
  if (key_mask.defined()) allowed = allowed & (key_mask.to(device).view({key_mask.size(0), 1, 1, s}) != 0);
  return at::zeros(allowed.sizes(), at::TensorOptions().dtype(dtype).device(device))
      .masked_fill(allowed.logical_not(), models::mask_fill_value(dtype));
}

/// Self-attention with RoPE and grouped-query heads (`LlamaAttention`, eager path).
class LlamaAttentionImpl : public torch::nn::Module {
 public:
  /// Registers `q_proj` `[H*d, D]`, `k_proj`/`v_proj` `[Hkv*d, D]`, `o_proj` `[D, H*d]`.
  explicit LlamaAttentionImpl(const LlamaConfig& c)
      : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim()) {
    q_proj = register_module("q_proj", models::Linear(c.hidden_size, heads_ * head_dim_, c.attention_bias));
    k_proj = register_module("k_proj", models::Linear(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
    v_proj = register_module("v_proj", models::Linear(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
    o_proj = register_module("o_proj", models::Linear(heads_ * head_dim_, c.hidden_size, c.attention_bias));
  }

  /// `x` `[N, T, D]`, rotary `cos`/`sin` `[N, 1, T, d]`, additive `mask` (see `attention_mask`, may be
  /// undefined); with `slot`, appends this step's keys/values to layer `layer` of the cache and
  /// attends over all cached positions; `boost` (may be null) is PAI's intervention. Returns `[N, T, D]`.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     const KvSlot* slot, int64_t layer, const AttentionBoost* boost = nullptr) {
    const auto n = x.size(0), t = x.size(1);
    auto q = q_proj(x).view({n, t, heads_, head_dim_}).transpose(1, 2);
    auto k = k_proj(x).view({n, t, kv_heads_, head_dim_}).transpose(1, 2);
    auto v = v_proj(x).view({n, t, kv_heads_, head_dim_}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    if (slot != nullptr) {
      const auto& keys = slot->cache->keys(layer);
      const auto& values = slot->cache->values(layer);
      auto rows_k = keys.narrow(0, slot->row_begin, n);
      auto rows_v = values.narrow(0, slot->row_begin, n);
      rows_k.narrow(2, slot->past, t).copy_(k);
      rows_v.narrow(2, slot->past, t).copy_(v);
      k = rows_k.narrow(2, 0, slot->past + t);
      v = rows_v.narrow(2, 0, slot->past + t);
    }
    if (kv_heads_ != heads_) {
      // Query head h reads kv head h / (H / Hkv): repeat_interleave of the kv heads (repeat_kv).
      const auto rep = heads_ / kv_heads_, s = k.size(2);
      k = k.unsqueeze(2).expand({n, kv_heads_, rep, s, head_dim_}).reshape({n, heads_, s, head_dim_});
      v = v.unsqueeze(2).expand({n, kv_heads_, rep, s, head_dim_}).reshape({n, heads_, s, head_dim_});
    }
    auto scores = at::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(head_dim_));
    if (mask.defined()) scores = scores + mask;
    if (boost != nullptr && boost->covers(layer)) {
      // Only the last query row, as upstream `attn_weights[:, :, -1, img_start:img_end]`.
      auto last = scores.select(2, t - 1);  // [N, H, S]
      const auto keys_to_boost = boost->key_mask.to(scores.device()).view({n, 1, last.size(2)});
      last.add_((last.abs() * boost->alpha).masked_fill(keys_to_boost.logical_not(), 0.0));
    }
    const auto probs = at::softmax(scores, -1, at::promote_types(at::kFloat, q.scalar_type())).to(q.scalar_type());
    const auto out = at::matmul(probs, v).transpose(1, 2).reshape({n, t, heads_ * head_dim_});
    return o_proj(out);
  }

  models::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};  ///< projections

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

/// SwiGLU feed-forward (`LlamaMLP`): `down(silu(gate(x)) * up(x))`.
class LlamaMlpImpl : public torch::nn::Module {
 public:
  /// Registers `gate_proj`/`up_proj` `[I, D]` and `down_proj` `[D, I]` (no biases).
  explicit LlamaMlpImpl(const LlamaConfig& c) {
    gate_proj = register_module("gate_proj", models::Linear(c.hidden_size, c.intermediate_size, false));
    up_proj = register_module("up_proj", models::Linear(c.hidden_size, c.intermediate_size, false));
    down_proj = register_module("down_proj", models::Linear(c.intermediate_size, c.hidden_size, false));
  }
  /// `[..., D]` -> `[..., D]`.
  at::Tensor forward(const at::Tensor& x) { return down_proj(at::silu(gate_proj(x)) * up_proj(x)); }

  models::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};  ///< projections
};
TORCH_MODULE(LlamaMlp);

/// Pre-norm decoder layer (`LlamaDecoderLayer`).
class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  /// Registers `self_attn`, `mlp`, `input_layernorm`, `post_attention_layernorm`.
  explicit LlamaDecoderLayerImpl(const LlamaConfig& c) {
    self_attn = register_module("self_attn", LlamaAttention(c));
    mlp = register_module("mlp", LlamaMlp(c));
    input_layernorm = register_module("input_layernorm", models::RmsNorm(c.hidden_size, c.rms_norm_eps));
    post_attention_layernorm = register_module("post_attention_layernorm", models::RmsNorm(c.hidden_size, c.rms_norm_eps));
  }
  /// `[N, T, D]` -> `[N, T, D]` (arguments as `LlamaAttention::forward`).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     const KvSlot* slot, int64_t layer, const AttentionBoost* boost = nullptr) {
    auto h = x + self_attn(input_layernorm(x), cos, sin, mask, slot, layer, boost);
    return h + mlp(post_attention_layernorm(h));
  }

  LlamaAttention self_attn{nullptr};          ///< attention
  LlamaMlp mlp{nullptr};                      ///< feed-forward
  models::RmsNorm input_layernorm{nullptr};           ///< before attention
  models::RmsNorm post_attention_layernorm{nullptr};  ///< before the MLP
};
TORCH_MODULE(LlamaDecoderLayer);

/// `LlamaModel`: `embed_tokens`, `layers.*`, final `norm`.
class LlamaModelImpl : public torch::nn::Module {
 public:
  /// Registers every submodule under its Hugging Face name.
  explicit LlamaModelImpl(const LlamaConfig& c) : config_(c) {
    embed_tokens = register_module("embed_tokens", models::Embedding(c.vocab_size, c.hidden_size));
    layers = models::register_blocks(*this, "layers", c.num_hidden_layers, blocks_,
                                     [&](int64_t) { return LlamaDecoderLayer(c); });
    norm = register_module("norm", models::RmsNorm(c.hidden_size, c.rms_norm_eps));
  }

  /// Runs the decoder on `inputs_embeds` `[N, T, D]` at int64 `position_ids` `[N, T]`.
  /// `key_mask` `[N, past + T]` (nonzero = attend; undefined = all) marks left padding; with `slot`,
  /// keys/values are appended to the cache (the caller reserved room and advances `past`).
  /// Returns the final-RMSNorm output `[N, T, D]`. When `hidden_states` is given it receives the
  /// input of layer 1, the outputs of layers 1..L-1 and the normed output (HF's `hidden_states`).
  /// `boost` (may be null) applies PAI's attention intervention; its key mask is `[N, past + T]`.
  at::Tensor forward(const at::Tensor& inputs_embeds, const at::Tensor& position_ids, const at::Tensor& key_mask = {},
                     const KvSlot* slot = nullptr, std::vector<at::Tensor>* hidden_states = nullptr,
                     const AttentionBoost* boost = nullptr) {
    const char* fn = "agla::llama::LlamaModel::forward: ";
    check<ShapeError>(inputs_embeds.dim() == 3 && inputs_embeds.size(2) == config_.hidden_size, fn,
                      "inputs_embeds must be [N, T, ", config_.hidden_size, "]; got ", inputs_embeds.sizes());
    const auto n = inputs_embeds.size(0), t = inputs_embeds.size(1);
    check<ShapeError>(position_ids.dim() == 2 && position_ids.size(0) == n && position_ids.size(1) == t &&
                          position_ids.scalar_type() == at::kLong,
                      fn, "position_ids must be int64 [", n, ", ", t, "]; got ", position_ids.sizes(), " ",
                      position_ids.scalar_type());
    const int64_t past = slot != nullptr ? slot->past : 0;
    if (slot != nullptr) {
      check<InvalidArgument>(slot->cache != nullptr && slot->cache->layers() == config_.num_hidden_layers &&
                                 slot->row_begin >= 0 && slot->row_begin + n <= slot->cache->rows() &&
                                 past + t <= slot->cache->capacity(),
                             fn, "the KV slot does not fit: rows [", slot->row_begin, ", ", slot->row_begin + n,
                             ") of ", slot->cache == nullptr ? 0 : slot->cache->rows(), ", positions ", past + t,
                             " of capacity ", slot->cache == nullptr ? 0 : slot->cache->capacity());
    }
    if (key_mask.defined()) {
      check<ShapeError>(key_mask.dim() == 2 && key_mask.size(0) == n && key_mask.size(1) == past + t, fn,
                        "key_mask must be [", n, ", ", past + t, "]; got ", key_mask.sizes());
    }
    if (boost != nullptr) {
      check<ShapeError>(boost->key_mask.defined() && boost->key_mask.dim() == 2 && boost->key_mask.size(0) == n &&
                            boost->key_mask.size(1) == past + t && boost->key_mask.scalar_type() == at::kBool,
                        fn, "the attention boost's key mask must be bool [", n, ", ", past + t, "]; got ",
                        boost->key_mask.defined() ? boost->key_mask.sizes() : at::IntArrayRef{});
    }
    const auto dtype = inputs_embeds.scalar_type();
    const auto [cos, sin] =
        rotary_cos_sin(position_ids.to(inputs_embeds.device()), config_.head_dim(), config_.rope_theta, dtype);
    const auto mask = attention_mask(t, past, key_mask, dtype, inputs_embeds.device());
    auto h = inputs_embeds;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      if (hidden_states != nullptr) hidden_states->push_back(h);
      h = blocks_[i]->forward(h, cos, sin, mask, slot, static_cast<int64_t>(i), boost);
    }
    h = norm(h);
    if (hidden_states != nullptr) hidden_states->push_back(h);
    return h;
  }

  /// Token embeddings of int64 ids `[B, T]` (any device) -> `[B, T, D]` on the weights' device;
  /// throws `agla::ShapeError` for another shape or dtype and `agla::InvalidArgument` (naming `who`)
  /// for ids outside the vocabulary.
  at::Tensor embed(const at::Tensor& ids, const std::string& who = "agla::llama::LlamaModel::embed") {
    check<ShapeError>(ids.defined() && ids.dim() == 2 && ids.scalar_type() == at::kLong, who,
                      ": ids must be int64 [B, T]; got ", ids.defined() ? ids.sizes() : at::IntArrayRef{}, " ",
                      ids.defined() ? ids.scalar_type() : at::kLong);
    if (ids.numel() > 0) {
      const auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
      check<InvalidArgument>(lo >= 0 && hi < config_.vocab_size, who, ": token ids must be in [0, ",
                             config_.vocab_size, "); got values in [", lo, ", ", hi, "]");
    }
    return embed_tokens(ids.to(embed_tokens->weight.device()));
  }

  /// The text config this was built from.
  const LlamaConfig& config() const { return config_; }

  models::Embedding embed_tokens{nullptr};        ///< `[V, D]`
  torch::nn::ModuleList layers{nullptr};  ///< `layers.*`
  models::RmsNorm norm{nullptr};                  ///< final norm

 private:
  LlamaConfig config_;
  std::vector<LlamaDecoderLayer> blocks_;
};
TORCH_MODULE(LlamaModel);

/// Whether checkpoint key `name` (under any prefix) is a buffer older transformers releases persisted
/// in LLaMA checkpoints and this implementation recomputes: `...layers.{i}.self_attn.rotary_emb.inv_freq`.
inline bool is_recomputed_buffer(const std::string& name) {
  const std::string suffix = ".self_attn.rotary_emb.inv_freq";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// `LlamaForCausalLM`: `model` plus `lm_head` (omitted when the embeddings are tied).
class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  /// Registers `model` and, unless `tie_word_embeddings`, `lm_head` `[V, D]`.
  explicit LlamaForCausalLMImpl(const LlamaConfig& c) {
    model = register_module("model", LlamaModel(c));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", models::Linear(c.hidden_size, c.vocab_size, false));
  }
  /// Float32 logits `[..., V]` of normed hidden states `[..., D]` (HF casts logits with `.float()`;
  /// a double model keeps float64).
  at::Tensor logits(const at::Tensor& hidden) {
    const auto& w = lm_head ? lm_head->weight : model->embed_tokens->weight;
    return at::linear(hidden, w).to(at::promote_types(at::kFloat, hidden.scalar_type()));
  }
  /// Float32 logits `[N, T, V]` for every position (arguments as `LlamaModel::forward`).
  at::Tensor forward(const at::Tensor& inputs_embeds, const at::Tensor& position_ids, const at::Tensor& key_mask = {},
                     const KvSlot* slot = nullptr) {
    return logits(model(inputs_embeds, position_ids, key_mask, slot));
  }

  LlamaModel model{nullptr};  ///< the decoder
  models::Linear lm_head{nullptr};    ///< output projection (null when tied)
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace agla::llama
