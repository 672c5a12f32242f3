#pragma once
/// \file
/// LLaVA-1.5 configuration as Hugging Face writes it (`config.json` of a `llava-hf` checkpoint),
/// with the defaults of transformers v4.37.2 filled in for the keys `save_pretrained` omits
/// (`LlavaConfig`, `LlamaConfig`, `CLIPVisionConfig`; see tests/data/llava/README.md).

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"

namespace agla::llava {

/// Largest value a size field of the config may hold (defined once in agla/io/limits.hpp).
using io::kMaxConfigSize;

/// CLIP vision tower settings (`vision_config`, class `CLIPVisionConfig`).
struct ClipVisionConfig {
  int64_t hidden_size = 768;              ///< width of the patch embeddings
  int64_t intermediate_size = 3072;       ///< MLP width
  int64_t num_hidden_layers = 12;         ///< encoder layers
  int64_t num_attention_heads = 12;       ///< heads; head dim = hidden_size / heads
  int64_t num_channels = 3;               ///< image channels
  int64_t image_size = 224;               ///< square input side in pixels
  int64_t patch_size = 32;                ///< square patch side in pixels
  std::string hidden_act = "quick_gelu";  ///< MLP activation: "quick_gelu" or "gelu"
  double layer_norm_eps = 1e-5;           ///< LayerNorm epsilon

  /// Patches per image, (image_size / patch_size)^2.
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

/// LLaMA language model settings (`text_config`, class `LlamaConfig`).
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
};

/// Top-level LLaVA settings (`LlavaConfig`) with both sub-configs.
struct LlavaConfig {
  ClipVisionConfig vision;                                 ///< `vision_config`
  LlamaConfig text;                                        ///< `text_config`
  int64_t image_token_index = 32000;                       ///< id of the `<image>` placeholder in input_ids
  int64_t pad_token_id = -1;                               ///< top-level pad id (-1 when null)
  std::string projector_hidden_act = "gelu";               ///< activation between the two projector layers
  int64_t vision_feature_layer = -2;                       ///< index into CLIP's hidden_states (0 = after pre_layrnorm)
  std::string vision_feature_select_strategy = "default";  ///< "default" drops CLS, "full" keeps it

  /// Number of CLIP encoder layers whose output the projector sees (hidden_states index, >= 0).
  int64_t vision_layers_used() const {
    return vision_feature_layer < 0 ? vision.num_hidden_layers + 1 + vision_feature_layer : vision_feature_layer;
  }
  /// Feature rows one image contributes to the merged sequence.
  int64_t image_tokens() const { return vision.num_patches() + (vision_feature_select_strategy == "full" ? 1 : 0); }
};

/// Parses a `LlavaConfig` from the JSON of a llava-hf `config.json` (full or sparse), validating
/// sizes and the options this implementation supports; throws `agla::FormatError` otherwise.
inline LlavaConfig parse_config(const nlohmann::json& json) {
  const char* fn = "agla::llava::parse_config: ";
  check<FormatError>(json.is_object(), fn, "config must be a JSON object; got ", json.type_name());
  const io::JsonConfig top(json, "agla::llava::parse_config: config");
  LlavaConfig c;
  c.image_token_index = top.get_int("image_token_index", c.image_token_index);
  c.pad_token_id = top.get_int("pad_token_id", c.pad_token_id);
  c.projector_hidden_act = top.get_string("projector_hidden_act", c.projector_hidden_act);
  c.vision_feature_layer = top.get_int("vision_feature_layer", c.vision_feature_layer);
  c.vision_feature_select_strategy =
      top.get_string("vision_feature_select_strategy", c.vision_feature_select_strategy);

  const io::JsonConfig v = top.child("vision_config");
  auto& vc = c.vision;
  vc.hidden_size = v.get_int("hidden_size", vc.hidden_size);
  vc.intermediate_size = v.get_int("intermediate_size", vc.intermediate_size);
  vc.num_hidden_layers = v.get_int("num_hidden_layers", vc.num_hidden_layers);
  vc.num_attention_heads = v.get_int("num_attention_heads", vc.num_attention_heads);
  vc.num_channels = v.get_int("num_channels", vc.num_channels);
  vc.image_size = v.get_int("image_size", vc.image_size);
  vc.patch_size = v.get_int("patch_size", vc.patch_size);
  vc.hidden_act = v.get_string("hidden_act", vc.hidden_act);
  vc.layer_norm_eps = v.get_double("layer_norm_eps", vc.layer_norm_eps);

  const io::JsonConfig t = top.child("text_config");
  auto& tc = c.text;
  tc.vocab_size = t.get_int("vocab_size", tc.vocab_size);
  tc.hidden_size = t.get_int("hidden_size", tc.hidden_size);
  tc.intermediate_size = t.get_int("intermediate_size", tc.intermediate_size);
  tc.num_hidden_layers = t.get_int("num_hidden_layers", tc.num_hidden_layers);
  tc.num_attention_heads = t.get_int("num_attention_heads", tc.num_attention_heads);
  tc.num_key_value_heads = t.get_int("num_key_value_heads", tc.num_attention_heads);
  tc.hidden_act = t.get_string("hidden_act", tc.hidden_act);
  tc.max_position_embeddings = t.get_int("max_position_embeddings", tc.max_position_embeddings);
  tc.rms_norm_eps = t.get_double("rms_norm_eps", tc.rms_norm_eps);
  tc.rope_theta = t.get_double("rope_theta", tc.rope_theta);
  tc.attention_bias = t.get_bool("attention_bias", tc.attention_bias);
  tc.tie_word_embeddings = t.get_bool("tie_word_embeddings", tc.tie_word_embeddings);
  tc.bos_token_id = t.get_int("bos_token_id", tc.bos_token_id);
  tc.eos_token_id = t.get_int("eos_token_id", tc.eos_token_id);

  // The cap keeps every product the model forms from these sizes (patch grids, head splits,
  // vision_layers_used) far from int64 overflow; released models are orders of magnitude below it.
  auto positive = [&](int64_t value, const char* name) {
    check<FormatError>(value > 0 && value <= kMaxConfigSize, fn, name, " must be in [1, ", kMaxConfigSize, "]; got ",
                       value);
  };
  positive(vc.hidden_size, "vision_config.hidden_size");
  positive(vc.intermediate_size, "vision_config.intermediate_size");
  positive(vc.num_hidden_layers, "vision_config.num_hidden_layers");
  positive(vc.num_attention_heads, "vision_config.num_attention_heads");
  positive(vc.num_channels, "vision_config.num_channels");
  positive(vc.image_size, "vision_config.image_size");
  positive(vc.patch_size, "vision_config.patch_size");
  positive(tc.vocab_size, "text_config.vocab_size");
  positive(tc.hidden_size, "text_config.hidden_size");
  positive(tc.intermediate_size, "text_config.intermediate_size");
  positive(tc.num_hidden_layers, "text_config.num_hidden_layers");
  positive(tc.num_attention_heads, "text_config.num_attention_heads");
  positive(tc.num_key_value_heads, "text_config.num_key_value_heads");
  positive(tc.max_position_embeddings, "text_config.max_position_embeddings");
  check<FormatError>(vc.layer_norm_eps > 0 && tc.rms_norm_eps > 0 && tc.rope_theta > 0, fn,
                     "vision_config.layer_norm_eps, text_config.rms_norm_eps and text_config.rope_theta must be "
                     "positive; got ",
                     vc.layer_norm_eps, ", ", tc.rms_norm_eps, ", ", tc.rope_theta);
  check<FormatError>(vc.hidden_size % vc.num_attention_heads == 0, fn,
                     "vision_config.hidden_size must be divisible by num_attention_heads; got ", vc.hidden_size,
                     " and ", vc.num_attention_heads);
  check<FormatError>(vc.image_size % vc.patch_size == 0, fn,
                     "vision_config.image_size must be a multiple of patch_size; got ", vc.image_size, " and ",
                     vc.patch_size);
  check<FormatError>(tc.hidden_size % tc.num_attention_heads == 0, fn,
                     "text_config.hidden_size must be divisible by num_attention_heads; got ", tc.hidden_size, " and ",
                     tc.num_attention_heads);
  check<FormatError>(tc.head_dim() % 2 == 0, fn, "text head dim must be even for RoPE; got ", tc.head_dim());
  check<FormatError>(tc.num_attention_heads % tc.num_key_value_heads == 0, fn,
                     "text_config.num_attention_heads must be a multiple of num_key_value_heads; got ",
                     tc.num_attention_heads, " and ", tc.num_key_value_heads);
  check<FormatError>(vc.hidden_act == "quick_gelu" || vc.hidden_act == "gelu", fn,
                     "vision_config.hidden_act must be \"quick_gelu\" or \"gelu\"; got \"", vc.hidden_act, "\"");
  check<FormatError>(tc.hidden_act == "silu", fn, "text_config.hidden_act must be \"silu\"; got \"", tc.hidden_act,
                     "\"");
  check<FormatError>(c.projector_hidden_act == "gelu", fn, "projector_hidden_act must be \"gelu\"; got \"",
                     c.projector_hidden_act, "\"");
  check<FormatError>(c.vision_feature_select_strategy == "default" || c.vision_feature_select_strategy == "full", fn,
                     "vision_feature_select_strategy must be \"default\" or \"full\"; got \"",
                     c.vision_feature_select_strategy, "\"");
  const int64_t used = c.vision_layers_used();
  check<FormatError>(used >= 0 && used <= vc.num_hidden_layers, fn, "vision_feature_layer ", c.vision_feature_layer,
                     " is outside [-", vc.num_hidden_layers + 1, ", ", vc.num_hidden_layers, "]");
  check<FormatError>(!t.has("rope_scaling"), fn, "text_config.rope_scaling is not supported (LLaVA-1.5 has none)");
  const int64_t tp = t.get_int("pretraining_tp", 1);
  check<FormatError>(tp >= 1, fn, "text_config.pretraining_tp must be >= 1; got ", tp);
  check<FormatError>(c.image_token_index >= 0 && c.image_token_index < tc.vocab_size, fn, "image_token_index ",
                     c.image_token_index, " is outside the text vocabulary [0, ", tc.vocab_size, ")");
  return c;
}

/// Reads and parses `path` (a llava-hf `config.json`); throws `agla::FormatError` naming the file.
inline LlavaConfig read_config(const std::string& path) {
  const nlohmann::json json = io::read_json_file(path);  // bounded size, no repeated keys
  try {
    return parse_config(json);
  } catch (const FormatError& e) {
    throw FormatError(agla::detail::concat(e.what(), " (in \"", path, "\")"));
  }
}

/// Whether `dir` holds a LLaVA checkpoint: its `config.json` says `"model_type": "llava"` (or lists
/// `LlavaForConditionalGeneration`). False when the file is missing or unreadable; lets programs
/// pick the model type of a `--lvlm DIR` argument.
inline bool is_llava_checkpoint(const std::string& dir) {
  const std::string path = dir.empty() || dir.back() == '/' ? dir + "config.json" : dir + "/config.json";
  nlohmann::json json;
  try {
    json = io::read_json_file(path);
  } catch (const FormatError&) {
    return false;
  }
  if (!json.is_object()) return false;
  if (json.value("model_type", std::string()) == "llava") return true;
  const auto arch = json.find("architectures");
  if (arch == json.end() || !arch->is_array()) return false;
  for (const auto& name : *arch) {
    if (name.is_string() && name.get<std::string>() == "LlavaForConditionalGeneration") return true;
  }
  return false;
}

}  // namespace agla::llava
