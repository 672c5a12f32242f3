#pragma once
/// \file
/// BLIP configuration as Hugging Face's `BlipConfig` stores it in `config.json`
/// (`transformers/models/blip/configuration_blip.py`): a `text_config` and a `vision_config` with
/// the upstream defaults for absent keys, and the top-level projection sizes.

#include <cstdint>
#include <string>
#include <utility>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/models/common/vit.hpp"

namespace agla::blip {

/// `BlipTextConfig`: the BERT text encoder/decoder (defaults = upstream `BlipTextConfig.__init__`).
struct BlipTextConfig {
  int64_t vocab_size = 30524;             ///< ids, bert-base-uncased + `[DEC]` + `[ENC]`
  int64_t hidden_size = 768;              ///< width D of the text tokens
  int64_t encoder_hidden_size = 768;      ///< width of the image tokens cross-attended to
  int64_t intermediate_size = 3072;       ///< feed-forward width
  int64_t num_hidden_layers = 12;         ///< text layers (each with self- and cross-attention)
  int64_t num_attention_heads = 8;        ///< heads of self- and cross-attention
  int64_t max_position_embeddings = 512;  ///< longest text (positions are learned)
  double layer_norm_eps = 1e-12;          ///< every text LayerNorm
  std::string hidden_act = "gelu";        ///< only the exact erf "gelu" is supported
  int64_t bos_token_id = 30522;           ///< `[DEC]`: first token of captioning input
  int64_t eos_token_id = 2;               ///< upstream default; not the stop token (see `sep_token_id`)
  int64_t pad_token_id = 0;               ///< `[PAD]`
  int64_t sep_token_id = 102;             ///< `[SEP]`: Hugging Face's BLIP generation stops on it
};

/// BLIP's `vision_config` defaults (upstream `BlipVisionConfig.__init__`): ViT-B/16 at 384 px.
/// The HF value of `layer_norm_eps` is 1e-5 (LAVIS used 1e-6); only the exact erf "gelu" runs.
inline models::VisionConfig blip_vision_defaults() {
  return models::VisionConfig::sized(768, 3072, 12, 12, 384, 16, 1e-5, "gelu");
}

/// `BlipConfig`: both towers plus the ITC projection width.
struct BlipConfig {
  BlipTextConfig text;                   ///< `text_config`
  models::VisionConfig vision = blip_vision_defaults();  ///< `vision_config`
  int64_t image_text_hidden_size = 256;  ///< output width of `vision_proj` / `text_proj`
  int64_t projection_dim = 512;          ///< used by `BlipModel`, not by ITM/captioning

  /// Checks every size and id; throws `agla::FormatError` prefixed with `where` naming the bad field.
  void validate(const std::string& where = "agla::blip::BlipConfig") const {
    models::check_config_sizes(
        where, "text_config.",
        {{"vocab_size", text.vocab_size}, {"hidden_size", text.hidden_size},
         {"encoder_hidden_size", text.encoder_hidden_size}, {"intermediate_size", text.intermediate_size},
         {"num_hidden_layers", text.num_hidden_layers}, {"num_attention_heads", text.num_attention_heads},
         {"max_position_embeddings", text.max_position_embeddings}});
    models::check_config_size(image_text_hidden_size, where, "image_text_hidden_size");
    vision.validate(where);
    check<FormatError>(text.hidden_size % text.num_attention_heads == 0, where, ": text_config.hidden_size (",
                       text.hidden_size, ") must be divisible by text_config.num_attention_heads (",
                       text.num_attention_heads, ")");
    check<FormatError>(text.layer_norm_eps > 0, where, ": text_config.layer_norm_eps must be positive; got ",
                       text.layer_norm_eps);
    // Only the exact erf GELU of BLIP is implemented; refusing others beats silently computing garbage.
    check<FormatError>(text.hidden_act == "gelu" && vision.hidden_act == "gelu", where,
                       ": hidden_act must be \"gelu\"; got text \"", text.hidden_act, "\", vision \"",
                       vision.hidden_act, "\"");
    for (const auto& [id, name] : {std::pair<int64_t, const char*>{text.bos_token_id, "bos_token_id"},
                                   {text.pad_token_id, "pad_token_id"},
                                   {text.sep_token_id, "sep_token_id"}}) {
      check<FormatError>(id >= 0 && id < text.vocab_size, where, ": text_config.", name, " must be in [0, ",
                         text.vocab_size, "); got ", id);
    }
  }

  /// Parses a `BlipConfig.to_dict()` JSON object; `source` names it in errors. Validates the result.
  static BlipConfig from_json(const nlohmann::json& json, const std::string& source) {
    const io::JsonConfig top(json, source);
    check<FormatError>(json.is_object(), source, ": expected a JSON object");
    const std::string model_type = top.get_string("model_type", "blip");
    check<FormatError>(model_type == "blip", source, ": model_type must be \"blip\"; got \"", model_type, "\"");
    BlipConfig c;
    top.read({{"image_text_hidden_size", &c.image_text_hidden_size}, {"projection_dim", &c.projection_dim}});
    BlipTextConfig& tc = c.text;
    top.child("text_config")
        .read({{"vocab_size", &tc.vocab_size}, {"hidden_size", &tc.hidden_size},
               {"intermediate_size", &tc.intermediate_size}, {"num_hidden_layers", &tc.num_hidden_layers},
               {"num_attention_heads", &tc.num_attention_heads},
               {"max_position_embeddings", &tc.max_position_embeddings}, {"layer_norm_eps", &tc.layer_norm_eps},
               {"hidden_act", &tc.hidden_act}, {"bos_token_id", &tc.bos_token_id}, {"eos_token_id", &tc.eos_token_id},
               {"pad_token_id", &tc.pad_token_id}, {"sep_token_id", &tc.sep_token_id}});
    c.vision = models::VisionConfig::read(top.child("vision_config"), blip_vision_defaults());
    // BlipConfig.__init__: `self.text_config.encoder_hidden_size = self.vision_config.hidden_size`.
    tc.encoder_hidden_size = c.vision.hidden_size;
    c.validate(source);
    return c;
  }

  /// Reads and validates `path` (a `config.json`).
  static BlipConfig from_file(const std::string& path) { return from_json(io::read_json_file(path), path); }
};

}  // namespace agla::blip
