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
#include "agla/models/common/vit.hpp"
#include "agla/models/llama/config.hpp"

namespace agla::llava {

/// CLIP's `vision_config` defaults (upstream `CLIPVisionConfig.__init__`): ViT-B/32 at 224 px, quick GELU.
inline models::VisionConfig clip_vision_defaults() {
  return models::VisionConfig::sized(768, 3072, 12, 12, 224, 32, 1e-5, "quick_gelu");
}

/// Top-level LLaVA settings (`LlavaConfig`) with both sub-configs.
struct LlavaConfig {
  models::VisionConfig vision = clip_vision_defaults();    ///< `vision_config`
  llama::LlamaConfig text;                                 ///< `text_config`
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
  top.read({{"image_token_index", &c.image_token_index}, {"pad_token_id", &c.pad_token_id},
            {"projector_hidden_act", &c.projector_hidden_act}, {"vision_feature_layer", &c.vision_feature_layer},
            {"vision_feature_select_strategy", &c.vision_feature_select_strategy}});
  c.vision = models::VisionConfig::read(top.child("vision_config"), clip_vision_defaults());
  c.text = llama::LlamaConfig::read(top.child("text_config"));
  const std::string where = "agla::llava::parse_config";
  c.vision.validate(where);
  c.text.validate(where);
  check<FormatError>(c.projector_hidden_act == "gelu", fn, "projector_hidden_act must be \"gelu\"; got \"",
                     c.projector_hidden_act, "\"");
  check<FormatError>(c.vision_feature_select_strategy == "default" || c.vision_feature_select_strategy == "full", fn,
                     "vision_feature_select_strategy must be \"default\" or \"full\"; got \"",
                     c.vision_feature_select_strategy, "\"");
  const int64_t used = c.vision_layers_used();
  check<FormatError>(used >= 0 && used <= c.vision.num_hidden_layers, fn, "vision_feature_layer ",
                     c.vision_feature_layer, " is outside [-", c.vision.num_hidden_layers + 1, ", ",
                     c.vision.num_hidden_layers, "]");
  check<FormatError>(c.image_token_index >= 0 && c.image_token_index < c.text.vocab_size, fn, "image_token_index ",
                     c.image_token_index, " is outside the text vocabulary [0, ", c.text.vocab_size, ")");
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
  return io::checkpoint_declares(dir, "llava", "LlavaForConditionalGeneration");
}

}  // namespace agla::llava
