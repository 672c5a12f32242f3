#pragma once
/// \file
/// InstructBLIP's Q-Former (`InstructBlipQFormerModel` of `modeling_instructblip.py`, transformers
/// v4.37.2), module for module and registered under the upstream attribute names, so that
/// `qformer.*` checkpoint keys map one to one:
///
/// * embeddings: the instruction's word embeddings plus absolute positions 0..T-1 (the text rows
///   only), the learned query tokens prepended as they are, then `layernorm` (lower case upstream);
/// * each post-LN BERT layer: bidirectional self-attention over queries and instruction together
///   (additive mask `(1 - m) * -10000`); then the query rows alone cross-attend to the image tokens
///   (layers `i % cross_attention_frequency == 0`) and take the query feed-forward
///   (`intermediate_query` / `output_query`), while the instruction rows take the text feed-forward
///   (`intermediate` / `output`); queries first again.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <vector>

#include "agla/error.hpp"
#include "agla/models/common/bert.hpp"
#include "agla/models/common/layers.hpp"
#include "agla/models/instructblip/config.hpp"

namespace agla::instructblip {

/// `InstructBlipQFormerEmbeddings`: `layernorm(cat(query_embeds, word(ids) + position(0..T-1)))`.
class QFormerEmbeddingsImpl : public torch::nn::Module, public models::WordPositionEmbeddings {
 public:
  /// Registers `word_embeddings` `[V, D]`, `position_embeddings` `[P, D]`, `layernorm`.
  explicit QFormerEmbeddingsImpl(const QFormerConfig& c) {
    register_tables(*this, c.vocab_size, c.max_position_embeddings, c.hidden_size);
    layernorm = register_module("layernorm", models::LayerNorm(c.hidden_size, c.layer_norm_eps));
  }

  /// `query_embeds` `[B, Q, D]` and int64 `input_ids` `[B, T]` (T may be 0) -> `[B, Q + T, D]` in the
  /// weights' dtype.
  at::Tensor forward(const at::Tensor& query_embeds, const at::Tensor& input_ids) {
    const auto& weight = layernorm->weight;
    at::Tensor x = query_embeds.to(weight.scalar_type());
    if (input_ids.size(1) > 0) x = at::cat({x, embed(input_ids, 0)}, 1);
    return layernorm(x);
  }

  models::LayerNorm layernorm{nullptr};  ///< after the concatenation
};
TORCH_MODULE(QFormerEmbeddings);

/// `InstructBlipQFormerAttention`: `attention` (multi-head, self or cross) + `output` (dense, residual, LayerNorm).
class QFormerAttentionImpl : public torch::nn::Module {
 public:
  /// Registers `attention` (key/value width `kv_width`) and `output`.
  QFormerAttentionImpl(const QFormerConfig& c, int64_t kv_width) {
    attention =
        register_module("attention", models::BertSelfAttention(c.hidden_size, c.num_attention_heads, kv_width));
    output = register_module("output", models::BertOutput(c.hidden_size, c.hidden_size, c.layer_norm_eps));
  }
  /// `LayerNorm(dense(attend(hidden, source)) + hidden)`: `hidden` `[B, L, D]`, `source` `[B, Lk, kv_width]`,
  /// `additive_mask` broadcastable to `[B, H, L, Lk]` or undefined.
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& source, const at::Tensor& additive_mask) {
    return output(attention(hidden, source, additive_mask), hidden);
  }

  models::BertSelfAttention attention{nullptr};  ///< query/key/value
  models::BertOutput output{nullptr};        ///< dense + LayerNorm
};
TORCH_MODULE(QFormerAttention);

/// `InstructBlipQFormerLayer`: self-attention over all rows, cross-attention for the query rows
/// (when the layer has it), separate query and text feed-forward blocks.
class QFormerLayerImpl : public torch::nn::Module {
 public:
  /// Registers `attention`, `crossattention` (layers with `index % cross_attention_frequency == 0`),
  /// `intermediate`, `output`, `intermediate_query`, `output_query` (upstream order).
  QFormerLayerImpl(const QFormerConfig& c, int64_t index) {
    attention = register_module("attention", QFormerAttention(c, c.hidden_size));
    if (c.has_cross_attention(index))
      crossattention = register_module("crossattention", QFormerAttention(c, c.encoder_hidden_size));
    intermediate = register_module("intermediate", models::BertIntermediate(c.hidden_size, c.intermediate_size));
    output = register_module("output", models::BertOutput(c.hidden_size, c.intermediate_size, c.layer_norm_eps));
    intermediate_query =
        register_module("intermediate_query", models::BertIntermediate(c.hidden_size, c.intermediate_size));
    output_query =
        register_module("output_query", models::BertOutput(c.hidden_size, c.intermediate_size, c.layer_norm_eps));
  }

  /// `hidden` `[B, Q + T, D]` (Q query rows first) -> `[B, Q + T, D]`; `self_mask` is the additive
  /// self-attention mask `[B, 1, 1, Q + T]` (or undefined), `image` `[B, N, D_enc]` the image tokens.
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& self_mask, const at::Tensor& image, int64_t queries) {
    const at::Tensor h = attention(hidden, hidden, self_mask);
    at::Tensor q = h.narrow(1, 0, queries);
    // The image mask is all ones: upstream's `(1 - m) * finfo.min` adds exactly zero, so none is added.
    if (crossattention) q = crossattention(q, image, at::Tensor());
    q = output_query(intermediate_query(q), q);
    const int64_t text = h.size(1) - queries;
    if (text == 0) return q;
    const at::Tensor t = h.narrow(1, queries, text);
    return at::cat({q, output(intermediate(t), t)}, 1);
  }

  QFormerAttention attention{nullptr};                ///< self-attention
  QFormerAttention crossattention{nullptr};           ///< image cross-attention (null in layers without)
  models::BertIntermediate intermediate{nullptr};     ///< text rows' feed-forward, first half
  models::BertOutput output{nullptr};                 ///< text rows' feed-forward, second half
  models::BertIntermediate intermediate_query{nullptr};  ///< query rows' feed-forward, first half
  models::BertOutput output_query{nullptr};              ///< query rows' feed-forward, second half
};
TORCH_MODULE(QFormerLayer);

/// `InstructBlipQFormerModel`: `embeddings` and `encoder.layer.*`.
class QFormerModelImpl : public torch::nn::Module {
 public:
  /// Registers every submodule under its Hugging Face name; `config` must be valid.
  explicit QFormerModelImpl(const QFormerConfig& c) : config_(c) {
    c.validate("agla::instructblip::QFormerModel");
    embeddings = register_module("embeddings", QFormerEmbeddings(c));
    auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    layer = models::register_blocks(*encoder, "layer", c.num_hidden_layers, layers_,
                                    [&](int64_t i) { return QFormerLayer(c, i); });
  }

  /// The last hidden state `[B, Q + T, D]` (queries first) for `query_embeds` `[B, Q, D]`, int64
  /// instruction ids `[B, T]` with their 0/1 `attention_mask` `[B, T]` (undefined = all ones; the
  /// query rows are always attended), and the image tokens `image_embeds` `[B, N, encoder_hidden_size]`.
  /// Text positions are 0..T-1 whatever the mask, as upstream: pad instruction rows on the right.
  /// `hidden_states`, if given, receives the embedding output and every layer's output.
  at::Tensor forward(const at::Tensor& query_embeds, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                     const at::Tensor& image_embeds, std::vector<at::Tensor>* hidden_states = nullptr) {
    const char* fn = "agla::instructblip::QFormerModel::forward: ";
    check<ShapeError>(query_embeds.dim() == 3 && query_embeds.size(1) > 0 && query_embeds.size(2) == config_.hidden_size,
                      fn, "query_embeds must be [B, Q, ", config_.hidden_size, "] with Q > 0; got ",
                      query_embeds.sizes());
    const int64_t b = query_embeds.size(0), q = query_embeds.size(1);
    check<ShapeError>(input_ids.dim() == 2 && input_ids.size(0) == b && input_ids.scalar_type() == at::kLong, fn,
                      "input_ids must be int64 [", b, ", T]; got ", input_ids.sizes(), " ", input_ids.scalar_type());
    const int64_t t = input_ids.size(1);
    check<InvalidArgument>(t <= config_.max_position_embeddings, fn, "the instruction has ", t,
                           " tokens; at most max_position_embeddings = ", config_.max_position_embeddings, " fit");
    if (t > 0) {
      const auto lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
      check<InvalidArgument>(lo >= 0 && hi < config_.vocab_size, fn, "input_ids must be in [0, ", config_.vocab_size,
                             "); got values in [", lo, ", ", hi, "]");
    }
    check<ShapeError>(image_embeds.dim() == 3 && image_embeds.size(0) == b &&
                          image_embeds.size(2) == config_.encoder_hidden_size,
                      fn, "image_embeds must be [", b, ", N, ", config_.encoder_hidden_size, "]; got ",
                      image_embeds.sizes());
    const at::Tensor x0 = embeddings(query_embeds, input_ids.to(device()));
    at::Tensor mask;
    if (attention_mask.defined()) {
      check<ShapeError>(attention_mask.dim() == 2 && attention_mask.size(0) == b && attention_mask.size(1) == t, fn,
                        "attention_mask must be [", b, ", ", t, "]; got ", attention_mask.sizes());
      // get_extended_attention_mask: cat(ones(Q), mask) -> (1 - m) * -10000 in the model dtype.
      const at::Tensor keep =
          at::cat({at::ones({b, q}, x0.options()), (attention_mask.to(x0.device()) != 0).to(x0.scalar_type())}, 1);
      mask = ((1.0 - keep) * -10000.0).view({b, 1, 1, q + t});
    }
    const at::Tensor image = image_embeds.to(x0.device(), x0.scalar_type());
    at::Tensor h = x0;
    if (hidden_states) hidden_states->push_back(h);
    for (auto& block : layers_) {
      h = block->forward(h, mask, image, q);
      if (hidden_states) hidden_states->push_back(h);
    }
    return h;
  }

  /// The configuration the module was built from.
  const QFormerConfig& config() const { return config_; }
  /// Device of the weights.
  at::Device device() const { return embeddings->layernorm->weight.device(); }

  QFormerEmbeddings embeddings{nullptr};  ///< queries, instruction embeddings, LayerNorm
  torch::nn::ModuleList layer{nullptr};   ///< `encoder.layer.*`

 private:
  QFormerConfig config_;
  std::vector<QFormerLayer> layers_;
};
TORCH_MODULE(QFormerModel);

}  // namespace agla::instructblip
