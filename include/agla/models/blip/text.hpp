#pragma once
/// \file
/// BLIP's BERT text model with cross-attention and its LM head, module for module as Hugging Face's
/// `modeling_blip_text.py` (`BlipTextEmbeddings`, `BlipTextSelfAttention` as `models::BertSelfAttention`,
/// `BlipTextSelfOutput`, `BlipTextAttention`, `BlipTextIntermediate`, `BlipTextOutput`, `BlipTextLayer`,
/// `BlipTextEncoder`, `BlipTextModel`, `BlipTextPredictionHeadTransform`,
/// `BlipTextLMPredictionHead`, `BlipTextOnlyMLMHead`, `BlipTextLMHeadModel`), registered under the
/// upstream attribute names. Post-LN BERT, exact erf GELU, `(1 - mask) * -10000` additive masks.
///
/// One module serves the three uses of BLIP's text tower (`TextRun` selects):
/// * ITM: bidirectional self-attention + cross-attention to the image tokens (first token `[ENC]`);
/// * ITC: text only (no image given: cross-attention blocks are skipped, first token `[CLS]`);
/// * captioning decoder: causal self-attention + cross-attention, with a `TextCache` so that each new
///   token costs one position.

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <vector>

#include "agla/error.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/common/bert.hpp"
#include "agla/models/common/layers.hpp"

namespace agla::blip {

/// Keys and values of one text layer kept between decoding steps.
struct TextLayerCache {
  at::Tensor self_key;     ///< `[B, H, T, dh]`: self-attention keys of the T positions seen so far
  at::Tensor self_value;   ///< `[B, H, T, dh]`
  at::Tensor cross_key;    ///< `[B, H, N, dh]`: cross-attention keys of the image tokens (computed once)
  at::Tensor cross_value;  ///< `[B, H, N, dh]`
};

/// KV cache of a whole text decoder: one entry per layer and the number of positions already seen.
struct TextCache {
  std::vector<TextLayerCache> layers;
  int64_t length = 0;  ///< positions already processed (the next token's position id)

  /// Whether nothing has been processed yet.
  bool empty() const { return length == 0; }
  /// Batch size held (0 when empty).
  int64_t batch() const { return layers.empty() || !layers[0].self_key.defined() ? 0 : layers[0].self_key.size(0); }
};

/// How one text forward runs (see the file comment for the three uses).
struct TextRun {
  /// `[B, T_past + L]` 0/1 over the key positions (int or float); undefined = all ones.
  at::Tensor attention_mask;
  /// `[B or 1, N, D_enc]` image tokens to cross-attend to; undefined = text only (ITC).
  /// A batch of 1 is broadcast over the B texts without copying.
  at::Tensor encoder_hidden_states;
  /// Causal self-attention (decoder) instead of bidirectional (encoder).
  bool causal = false;
  /// KV cache to read and extend (decoder); null = no cache.
  TextCache* cache = nullptr;
  /// Text layer whose cross-attention probabilities become an autograd leaf (-1 = none).
  int64_t capture_layer = -1;
  /// Receives that leaf `[B, H, L, N]` (requires_grad; the rest of the forward is built on it).
  at::Tensor* captured = nullptr;
};

/// `BlipTextEmbeddings`: word + absolute position embeddings, LayerNorm (no token types).
class BlipTextEmbeddingsImpl : public torch::nn::Module, public models::WordPositionEmbeddings {
 public:
  explicit BlipTextEmbeddingsImpl(const BlipTextConfig& c) {
    register_tables(*this, c.vocab_size, c.max_position_embeddings, c.hidden_size);
    LayerNorm = register_module("LayerNorm", models::LayerNorm(c.hidden_size, c.layer_norm_eps));
  }

  /// `input_ids` `[B, L]` int64 at positions `past .. past+L-1` -> `[B, L, D]`.
  at::Tensor forward(const at::Tensor& input_ids, int64_t past) { return LayerNorm(embed(input_ids, past)); }

  models::LayerNorm LayerNorm{nullptr};
};
TORCH_MODULE(BlipTextEmbeddings);

/// `BlipTextAttention`: `self` (attention) + `output` (dense, residual, LayerNorm).
class BlipTextAttentionImpl : public torch::nn::Module {
 public:
  BlipTextAttentionImpl(const BlipTextConfig& c, bool is_cross) {
    self = register_module("self", models::BertSelfAttention(c.hidden_size, c.num_attention_heads,
                                                             is_cross ? c.encoder_hidden_size : c.hidden_size));
    output = register_module("output", models::BertOutput(c.hidden_size, c.hidden_size, c.layer_norm_eps));
  }

  models::BertSelfAttention self{nullptr};
  models::BertOutput output{nullptr};
};
TORCH_MODULE(BlipTextAttention);

/// `BlipTextLayer`: self-attention, cross-attention (when image tokens are given), feed-forward.
class BlipTextLayerImpl : public torch::nn::Module {
 public:
  explicit BlipTextLayerImpl(const BlipTextConfig& c) {
    attention = register_module("attention", BlipTextAttention(c, false));
    // `text_config.is_decoder` is true in every BLIP config: each layer owns a cross-attention block.
    crossattention = register_module("crossattention", BlipTextAttention(c, true));
    intermediate = register_module("intermediate", models::BertIntermediate(c.hidden_size, c.intermediate_size));
    output = register_module("output", models::BertOutput(c.hidden_size, c.intermediate_size, c.layer_norm_eps));
  }

  /// One layer on `hidden` `[B, L, D]`. `self_mask` is the additive self-attention mask; `cache`
  /// (optional) holds this layer's keys/values; `leaf` (optional) captures the cross-attention
  /// probabilities as an autograd leaf.
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& self_mask, const at::Tensor& encoder_states,
                     TextLayerCache* cache, at::Tensor* leaf) {
    auto [k, v] = attention->self->keys_values(hidden);
    if (cache) {
      if (cache->self_key.defined()) {
        k = at::cat({cache->self_key, k}, 2);
        v = at::cat({cache->self_value, v}, 2);
      }
      cache->self_key = k;
      cache->self_value = v;
    }
    at::Tensor h = attention->output->forward(attention->self->attend(hidden, k, v, self_mask), hidden);
    if (encoder_states.defined() || (cache && cache->cross_key.defined())) {
      at::Tensor ck, cv;
      if (cache && cache->cross_key.defined()) {
        ck = cache->cross_key;
        cv = cache->cross_value;
      } else {
        std::tie(ck, cv) = crossattention->self->keys_values(encoder_states);
        if (cache) {
          cache->cross_key = ck;
          cache->cross_value = cv;
        }
      }
      // The image mask is all ones: upstream's `(1 - m) * finfo.min` adds exactly zero, so none is added.
      h = crossattention->output->forward(crossattention->self->attend(h, ck, cv, at::Tensor(), leaf), h);
    }
    return output->forward(intermediate->forward(h), h);
  }

  BlipTextAttention attention{nullptr}, crossattention{nullptr};
  models::BertIntermediate intermediate{nullptr};
  models::BertOutput output{nullptr};
};
TORCH_MODULE(BlipTextLayer);

/// `BlipTextEncoder`: the stack of `layer`.
class BlipTextEncoderImpl : public torch::nn::Module {
 public:
  explicit BlipTextEncoderImpl(const BlipTextConfig& c) {
    layer = register_module("layer", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layer->push_back(BlipTextLayer(c));
  }

  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(BlipTextEncoder);

/// `BlipTextModel` without pooler (`add_pooling_layer=False`, as every BLIP head uses it).
class BlipTextModelImpl : public torch::nn::Module {
 public:
  explicit BlipTextModelImpl(const BlipTextConfig& c) : config_(c) {
    embeddings = register_module("embeddings", BlipTextEmbeddings(c));
    encoder = register_module("encoder", BlipTextEncoder(c));
  }

  /// `input_ids` `[B, L]` int64 -> `last_hidden_state` `[B, L, D]` (see `TextRun`). With a cache, the
  /// ids are the positions after the cached ones and the cache is extended by L.
  at::Tensor forward(const at::Tensor& input_ids, const TextRun& run = {}) {
    const char* fn = "agla::blip::BlipTextModel";
    check<ShapeError>(input_ids.dim() == 2 && input_ids.size(1) > 0 && input_ids.scalar_type() == at::kLong, fn,
                      ": input_ids must be [B, L] int64 with L >= 1; got ", input_ids.sizes(), " ",
                      input_ids.scalar_type());
    // An out-of-range id would surface as an opaque index error deep inside the embedding lookup.
    const auto [low, high] = at::aminmax(input_ids);
    const int64_t min_id = low.item<int64_t>(), max_id = high.item<int64_t>();
    check<InvalidArgument>(min_id >= 0 && max_id < config_.vocab_size, fn, ": token ids must be in [0, ",
                           config_.vocab_size, "); got ids in [", min_id, ", ", max_id, "]");
    const int64_t batch = input_ids.size(0), length = input_ids.size(1);
    const int64_t past = run.cache ? run.cache->length : 0;
    check<InvalidArgument>(past + length <= config_.max_position_embeddings, fn, ": ", past + length,
                           " positions exceed max_position_embeddings ", config_.max_position_embeddings);
    check<InvalidArgument>(!run.cache || run.cache->empty() || run.cache->batch() == batch, fn,
                           ": the cache holds batch ", run.cache ? run.cache->batch() : 0, "; got input batch ", batch);
    const int64_t layers = static_cast<int64_t>(encoder->layer->size());
    check<InvalidArgument>(run.capture_layer < layers && (run.capture_layer < 0 || run.captured), fn,
                           ": capture_layer must be in [0, ", layers, ") with an output tensor; got ",
                           run.capture_layer);
    if (run.capture_layer >= 0) {
      check<InvalidArgument>(run.encoder_hidden_states.defined(), fn,
                             ": capturing cross-attention needs encoder_hidden_states");
    }
    if (run.encoder_hidden_states.defined()) {
      const at::Tensor& e = run.encoder_hidden_states;
      check<ShapeError>(
          e.dim() == 3 && (e.size(0) == batch || e.size(0) == 1) && e.size(2) == config_.encoder_hidden_size, fn,
          ": encoder_hidden_states must be [", batch, " or 1, N, ", config_.encoder_hidden_size, "]; got ", e.sizes());
    }
    const at::Tensor hidden0 = embeddings->forward(input_ids, past);
    const at::Tensor mask = self_attention_mask(run, batch, length, past, hidden0);
    at::Tensor encoder_states;
    if (run.encoder_hidden_states.defined()) {
      encoder_states = run.encoder_hidden_states.to(hidden0.device(), hidden0.scalar_type());
    }
    if (run.cache && run.cache->layers.size() != static_cast<size_t>(layers)) run.cache->layers.resize(layers);
    at::Tensor h = hidden0;
    for (int64_t i = 0; i < layers; ++i) {
      h = encoder->layer[i]->as<BlipTextLayer>()->forward(
          h, mask, encoder_states, run.cache ? &run.cache->layers[static_cast<size_t>(i)] : nullptr,
          i == run.capture_layer ? run.captured : nullptr);
    }
    if (run.cache) run.cache->length = past + length;
    return h;
  }

  /// The configuration the module was built from.
  const BlipTextConfig& config() const { return config_; }

  BlipTextEmbeddings embeddings{nullptr};
  BlipTextEncoder encoder{nullptr};

 private:
  /// Upstream `get_extended_attention_mask`: `(1 - causal * mask) * -10000`, `[B, 1, L|1, past+L]`.
  at::Tensor self_attention_mask(const TextRun& run, int64_t batch, int64_t length, int64_t past,
                                 const at::Tensor& like) const {
    const int64_t keys = past + length;
    at::Tensor keep;
    if (run.attention_mask.defined()) {
      check<ShapeError>(
          run.attention_mask.dim() == 2 && run.attention_mask.size(0) == batch && run.attention_mask.size(1) == keys,
          "agla::blip::BlipTextModel: attention_mask must be [", batch, ", ", keys, "]; got ",
          run.attention_mask.sizes());
      keep = run.attention_mask.to(like.device(), like.scalar_type()).view({batch, 1, 1, keys});
    }
    if (run.causal && length > 1) {
      // Query i (position past + i) sees keys 0 .. past + i.
      const auto opts = like.options().dtype(at::kLong);
      const at::Tensor causal =
          (at::arange(keys, opts).view({1, keys}) <= at::arange(past, keys, opts).view({length, 1}))
              .to(like.scalar_type())
              .view({1, 1, length, keys});
      keep = keep.defined() ? keep * causal : causal;
    }
    if (!keep.defined()) return at::Tensor();
    return (1.0 - keep) * -10000.0;
  }

  BlipTextConfig config_;
};
TORCH_MODULE(BlipTextModel);

/// `BlipTextPredictionHeadTransform`: dense -> exact GELU -> LayerNorm.
class BlipTextPredictionHeadTransformImpl : public torch::nn::Module {
 public:
  explicit BlipTextPredictionHeadTransformImpl(const BlipTextConfig& c) {
    dense = register_module("dense", models::Linear(c.hidden_size, c.hidden_size));
    LayerNorm = register_module("LayerNorm", models::LayerNorm(c.hidden_size, c.layer_norm_eps));
  }
  /// `[B, L, D]` -> `[B, L, D]`.
  at::Tensor forward(const at::Tensor& x) { return LayerNorm->forward(at::gelu(dense->forward(x))); }

  models::Linear dense{nullptr};
  models::LayerNorm LayerNorm{nullptr};
};
TORCH_MODULE(BlipTextPredictionHeadTransform);

/// `BlipTextLMPredictionHead`: transform, `decoder` (no bias of its own), shared `bias`.
class BlipTextLMPredictionHeadImpl : public torch::nn::Module, public models::ResetParameters {
 public:
  explicit BlipTextLMPredictionHeadImpl(const BlipTextConfig& c) {
    transform = register_module("transform", BlipTextPredictionHeadTransform(c));
    decoder = register_module("decoder", models::Linear(c.hidden_size, c.vocab_size, false));
    // Upstream `self.decoder.bias = self.bias`: one vector, saved as `cls.predictions.bias`.
    bias = register_parameter("bias", at::empty({c.vocab_size}));
  }
  /// `[B, L, D]` -> logits `[B, L, V]`.
  at::Tensor forward(const at::Tensor& x) { return decoder->forward(transform->forward(x)) + bias; }
  /// Upstream construction order: the transform's and decoder's defaults, then a zero bias.
  void reset_parameters() override {
    models::init_parameters(*transform);
    decoder->reset_parameters();
    torch::NoGradGuard no_grad;
    bias.zero_();
  }

  BlipTextPredictionHeadTransform transform{nullptr};
  models::Linear decoder{nullptr};
  at::Tensor bias;
};
TORCH_MODULE(BlipTextLMPredictionHead);

/// `BlipTextOnlyMLMHead`: holds `predictions`.
class BlipTextOnlyMlmHeadImpl : public torch::nn::Module {
 public:
  explicit BlipTextOnlyMlmHeadImpl(const BlipTextConfig& c) {
    predictions = register_module("predictions", BlipTextLMPredictionHead(c));
  }
  BlipTextLMPredictionHead predictions{nullptr};
};
TORCH_MODULE(BlipTextOnlyMlmHead);

/// `BlipTextLMHeadModel`: `bert` (text model, used causally) + `cls` (LM head).
class BlipTextLMHeadModelImpl : public torch::nn::Module {
 public:
  explicit BlipTextLMHeadModelImpl(const BlipTextConfig& c) {
    bert = register_module("bert", BlipTextModel(c));
    cls = register_module("cls", BlipTextOnlyMlmHead(c));
  }

  /// Causal forward of `input_ids` `[B, L]` over `image_states` `[B|1, N, D_enc]` -> logits `[B, L, V]`;
  /// with a cache, only the new positions are computed (and `image_states` is read from the cache
  /// after the first call). `last_only` applies the LM head to the last position only (`[B, 1, V]`).
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& image_states, TextCache* cache = nullptr,
                     bool last_only = false, const at::Tensor& attention_mask = at::Tensor()) {
    TextRun run;
    run.causal = true;
    run.cache = cache;
    run.attention_mask = attention_mask;
    if (!cache || cache->empty()) run.encoder_hidden_states = image_states;
    at::Tensor h = bert->forward(input_ids, run);
    if (last_only) h = h.narrow(1, h.size(1) - 1, 1);
    return cls->predictions->forward(h);
  }

  BlipTextModel bert{nullptr};
  BlipTextOnlyMlmHead cls{nullptr};
};
TORCH_MODULE(BlipTextLMHeadModel);

}  // namespace agla::blip
