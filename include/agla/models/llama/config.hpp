#pragma once
/// \file
/// LLaMA language-model settings (`text_config` of LLaVA-1.5 and InstructBLIP-Vicuna checkpoints,
/// class `LlamaConfig` of transformers v4.37.2), with the upstream defaults for the keys
/// `save_pretrained` omits, and their validation.

#include <cstdint>
#include <string>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/models/common/vit.hpp"

namespace agla::llama {

/// LLaMA language model settings (`LlamaConfig`).
struct LlamaConfig {
  int64_t vocab_size = 32000;              ///< rows of embed_tokens and lm_head
  int64_t hidden_size = 4096;              ///< model width
  int64_t intermediate_size = 11008;       ///< SwiGLU width
  int64_t num_hidden_layers = 32;          ///< decoder layers
  int64_t num_attention_heads = 32;        ///< query heads
  int64_t num_key_value_heads = 32;        ///< key/value heads (< query heads: grouped-query attention)
  std::string hidden_act = "silu";         ///< MLP gate activation (only "silu" is supported)
  int64_t max_position_embeddings = 2048;  ///< context length the model was trained for
  double rms_norm_eps = 1e-6;              ///< RMSNorm epsilon (Vicuna-based LLaVA-1.5: 1e-5)
  double rope_theta = 10000.0;             ///< RoPE base
  bool attention_bias = false;             ///< q/k/v/o projections carry biases
  bool tie_word_embeddings = false;        ///< lm_head shares embed_tokens' weight
  int64_t bos_token_id = 1;                ///< beginning-of-sequence id
  int64_t eos_token_id = 2;                ///< end-of-sequence id

  /// Dimension of one attention head, hidden_size / num_attention_heads.
  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  /// Reads the keys of `json` (a `text_config` object) over the upstream defaults; `num_key_value_heads`
  /// defaults to `num_attention_heads`. Throws `agla::FormatError` for unsupported keys
  /// (`rope_scaling`, `pretraining_tp` < 1). Does not validate sizes (`validate`).
  static LlamaConfig read(const io::JsonConfig& t) {
    LlamaConfig tc;
    t.read({{"vocab_size", &tc.vocab_size}, {"hidden_size", &tc.hidden_size},
            {"intermediate_size", &tc.intermediate_size}, {"num_hidden_layers", &tc.num_hidden_layers},
            {"num_attention_heads", &tc.num_attention_heads}, {"hidden_act", &tc.hidden_act},
            {"max_position_embeddings", &tc.max_position_embeddings}, {"rms_norm_eps", &tc.rms_norm_eps},
            {"rope_theta", &tc.rope_theta}, {"attention_bias", &tc.attention_bias},
            {"tie_word_embeddings", &tc.tie_word_embeddings}, {"bos_token_id", &tc.bos_token_id},
            {"eos_token_id", &tc.eos_token_id}});
    tc.num_key_value_heads = t.get_int("num_key_value_heads", tc.num_attention_heads);
    check<FormatError>(!t.has("rope_scaling"), t.where(), ".rope_scaling is not supported (LLaVA-1.5 and Vicuna have none)");
    const int64_t tp = t.get_int("pretraining_tp", 1);
    check<FormatError>(tp >= 1, t.where(), ".pretraining_tp must be >= 1; got ", tp);
    return tc;
  }

  /// Checks every size and option; throws `agla::FormatError` naming `where` and the field (`text_config.*`).
  void validate(const std::string& where) const {
    models::check_config_sizes(where, "text_config.",
                               {{"vocab_size", vocab_size}, {"hidden_size", hidden_size},
                                {"intermediate_size", intermediate_size}, {"num_hidden_layers", num_hidden_layers},
                                {"num_attention_heads", num_attention_heads},
                                {"num_key_value_heads", num_key_value_heads},
                                {"max_position_embeddings", max_position_embeddings}});
    check<FormatError>(rms_norm_eps > 0 && rope_theta > 0, where,
                       ": text_config.rms_norm_eps and text_config.rope_theta must be positive; got ", rms_norm_eps,
                       ", ", rope_theta);
    check<FormatError>(hidden_size % num_attention_heads == 0, where,
                       ": text_config.hidden_size must be divisible by num_attention_heads; got ", hidden_size, " and ",
                       num_attention_heads);
    check<FormatError>(head_dim() % 2 == 0, where, ": text head dim must be even for RoPE; got ", head_dim());
    check<FormatError>(num_attention_heads % num_key_value_heads == 0, where,
                       ": text_config.num_attention_heads must be a multiple of num_key_value_heads; got ",
                       num_attention_heads, " and ", num_key_value_heads);
    check<FormatError>(hidden_act == "silu", where, ": text_config.hidden_act must be \"silu\"; got \"", hidden_act,
                       "\"");
    check<FormatError>(eos_token_id >= 0 && eos_token_id < vocab_size, where, ": text_config.eos_token_id ",
                       eos_token_id, " is outside the vocabulary [0, ", vocab_size, ")");
  }
};

}  // namespace agla::llama
