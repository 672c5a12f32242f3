#pragma once
/// \file
/// InstructBLIP configuration as Hugging Face writes it (`config.json` of an
/// `InstructBlipForConditionalGeneration` checkpoint such as `Salesforce/instructblip-vicuna-7b`),
/// with the defaults of transformers v4.37.2 (`configuration_instructblip.py`) filled in for the
/// keys `save_pretrained` omits: `vision_config` (`InstructBlipVisionConfig`), `qformer_config`
/// (`InstructBlipQFormerConfig`) and a LLaMA `text_config` (`LlamaConfig`). See
/// tests/data/instructblip/README.md.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/models/common/vit.hpp"
#include "agla/models/llama/config.hpp"

namespace agla::instructblip {

/// `InstructBlipVisionConfig` defaults: EVA-ViT-g at 224 px (1408 wide, 39 layers, 14 px patches).
inline models::VisionConfig instructblip_vision_defaults() {
  return models::VisionConfig::sized(1408, 6144, 39, 16, 224, 14, 1e-6, "gelu");
}

/// The Q-Former's settings (`InstructBlipQFormerConfig`, upstream defaults: a BERT-base encoder
/// with cross-attention in every second layer).
struct QFormerConfig {
  int64_t vocab_size = 30522;                   ///< rows of `word_embeddings` (BERT uncased ids)
  int64_t hidden_size = 768;                    ///< width D of queries and instruction tokens
  int64_t num_hidden_layers = 12;               ///< BERT layers
  int64_t num_attention_heads = 12;             ///< heads of self- and cross-attention
  int64_t intermediate_size = 3072;             ///< feed-forward width (query and text FFNs)
  std::string hidden_act = "gelu";              ///< only the exact erf "gelu" is supported
  int64_t max_position_embeddings = 512;        ///< longest instruction (positions are learned)
  double layer_norm_eps = 1e-12;                ///< every Q-Former LayerNorm
  int64_t pad_token_id = 0;                     ///< `[PAD]`
  std::string position_embedding_type = "absolute";  ///< only "absolute" is supported
  int64_t cross_attention_frequency = 2;        ///< layer i cross-attends when i % frequency == 0
  int64_t encoder_hidden_size = 1408;           ///< width of the image tokens (= vision hidden_size)

  /// Whether layer `i` owns a cross-attention block (`i % cross_attention_frequency == 0`).
  bool has_cross_attention(int64_t i) const { return i % cross_attention_frequency == 0; }

  /// Checks every size and option; throws `agla::FormatError` naming `where` and the field (`qformer_config.*`).
  void validate(const std::string& where) const {
    models::check_config_sizes(where, "qformer_config.",
                               {{"vocab_size", vocab_size}, {"hidden_size", hidden_size},
                                {"num_hidden_layers", num_hidden_layers}, {"num_attention_heads", num_attention_heads},
                                {"intermediate_size", intermediate_size},
                                {"max_position_embeddings", max_position_embeddings},
                                {"cross_attention_frequency", cross_attention_frequency},
                                {"encoder_hidden_size", encoder_hidden_size}});
    check<FormatError>(hidden_size % num_attention_heads == 0, where, ": qformer_config.hidden_size (", hidden_size,
                       ") must be divisible by qformer_config.num_attention_heads (", num_attention_heads, ")");
    check<FormatError>(layer_norm_eps > 0, where, ": qformer_config.layer_norm_eps must be positive; got ",
                       layer_norm_eps);
    check<FormatError>(hidden_act == "gelu", where, ": qformer_config.hidden_act must be \"gelu\"; got \"", hidden_act,
                       "\"");
    check<FormatError>(position_embedding_type == "absolute", where,
                       ": qformer_config.position_embedding_type must be \"absolute\"; got \"",
                       position_embedding_type, "\"");
    check<FormatError>(pad_token_id >= 0 && pad_token_id < vocab_size, where, ": qformer_config.pad_token_id ",
                       pad_token_id, " is outside the vocabulary [0, ", vocab_size, ")");
  }

  /// Reads the keys of `json` (a `qformer_config` object) over the upstream defaults. Does not validate.
  static QFormerConfig read(const io::JsonConfig& json) {
    QFormerConfig c;
    json.read({{"vocab_size", &c.vocab_size}, {"hidden_size", &c.hidden_size},
               {"num_hidden_layers", &c.num_hidden_layers}, {"num_attention_heads", &c.num_attention_heads},
               {"intermediate_size", &c.intermediate_size}, {"hidden_act", &c.hidden_act},
               {"max_position_embeddings", &c.max_position_embeddings}, {"layer_norm_eps", &c.layer_norm_eps},
               {"pad_token_id", &c.pad_token_id}, {"position_embedding_type", &c.position_embedding_type},
               {"cross_attention_frequency", &c.cross_attention_frequency},
               {"encoder_hidden_size", &c.encoder_hidden_size}});
    return c;
  }
};

/// Top-level InstructBLIP settings (`InstructBlipConfig`) with its three sub-configs.
struct InstructBlipConfig {
  models::VisionConfig vision = instructblip_vision_defaults();  ///< `vision_config`
  QFormerConfig qformer;                                          ///< `qformer_config`
  llama::LlamaConfig text;                                        ///< `text_config` (LLaMA / Vicuna)
  int64_t num_query_tokens = 32;                                  ///< learned queries Q prepended to the prompt
  /// `text_config.architectures[0]` ("" when absent). v4.37.2's `generate` maps generated id 0 to 2
  /// only for "LLaMAForCausalLM" (the original Vicuna checkpoints).
  std::string text_architecture;
  int64_t text_pad_token_id = -1;  ///< `text_config.pad_token_id` (-1 when null)

  /// Whether decoded ids 0 become 2 (EOS), as v4.37.2's `generate` does for this architecture name.
  bool maps_zero_to_eos() const { return text_architecture == "LLaMAForCausalLM"; }
};

/// Parses an `InstructBlipConfig` from the JSON of a `config.json` (full or sparse); `source` names it
/// in errors. Validates sizes and the options this implementation supports (a LLaMA language model,
/// `qkv_bias` true, absolute Q-Former positions); throws `agla::FormatError` naming the field.
inline InstructBlipConfig parse_config(const nlohmann::json& json, const std::string& source = "config") {
  const std::string where = "agla::instructblip::parse_config: " + source;
  check<FormatError>(json.is_object(), where, ": expected a JSON object; got ", json.type_name());
  const io::JsonConfig top(json, where);
  const std::string model_type = top.get_string("model_type", "instructblip");
  check<FormatError>(model_type == "instructblip", where, ": model_type must be \"instructblip\"; got \"", model_type,
                     "\"");
  InstructBlipConfig c;
  c.num_query_tokens = top.get_int("num_query_tokens", c.num_query_tokens);

  const io::JsonConfig vision = top.child("vision_config");
  c.vision = models::VisionConfig::read(vision, instructblip_vision_defaults());
  // Upstream registers the fused qkv without bias and then q/v biases; a checkpoint without them
  // has no `qkv.bias`, which the shared vision tower always owns.
  check<FormatError>(vision.get_bool("qkv_bias", true), where,
                     ": vision_config.qkv_bias false is not supported (InstructBLIP checkpoints use true)");

  c.qformer = QFormerConfig::read(top.child("qformer_config"));
  // InstructBlipConfig.__init__: `self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size`.
  c.qformer.encoder_hidden_size = c.vision.hidden_size;

  const io::JsonConfig text = top.child("text_config");
  // Upstream falls back to an OPT text model when `model_type` is absent; only LLaMA is implemented.
  const std::string text_type = text.get_string("model_type", "opt");
  check<FormatError>(text_type == "llama", where, ": text_config.model_type must be \"llama\"; got \"", text_type,
                     "\"", text.has("model_type") ? "" : " (the upstream default when the key is absent)");
  c.text = llama::LlamaConfig::read(text);
  c.text_pad_token_id = text.get_int("pad_token_id", -1);
  const auto text_json = json.find("text_config");
  if (text_json != json.end() && text_json->is_object()) {
    const auto arch = text_json->find("architectures");
    if (arch != text_json->end() && !arch->is_null()) {
      check<FormatError>(arch->is_array() && !arch->empty() && arch->at(0).is_string(), where,
                         ": text_config.architectures must be a list of names; got ", io::detail::describe_json(*arch));
      c.text_architecture = arch->at(0).get<std::string>();
    }
  }

  c.vision.validate(where);
  c.qformer.validate(where);
  c.text.validate(where);
  models::check_config_size(c.num_query_tokens, where, "num_query_tokens");
  check<FormatError>(c.text_pad_token_id < c.text.vocab_size, where, ": text_config.pad_token_id ",
                     c.text_pad_token_id, " is outside the vocabulary [0, ", c.text.vocab_size, ")");
  return c;
}

/// Reads and parses `path` (a `config.json`); throws `agla::FormatError` naming the file.
inline InstructBlipConfig read_config(const std::string& path) { return parse_config(io::read_json_file(path), path); }

/// Whether `dir` holds an InstructBLIP checkpoint: its `config.json` says `"model_type": "instructblip"`
/// (or lists `InstructBlipForConditionalGeneration`). False when the file is missing or unreadable;
/// lets programs pick the model type of a `--lvlm DIR` argument.
inline bool is_instructblip_checkpoint(const std::string& dir) {
  return io::checkpoint_declares(dir, "instructblip", "InstructBlipForConditionalGeneration");
}

}  // namespace agla::instructblip
