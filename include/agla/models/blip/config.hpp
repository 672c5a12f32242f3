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

namespace agla::blip {

/// Largest value a size field of the config may hold (defined once in agla/io/limits.hpp).
using io::kMaxConfigSize;

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

/// `BlipVisionConfig`: the ViT (defaults = upstream `BlipVisionConfig.__init__`).
struct BlipVisionConfig {
  int64_t hidden_size = 768;         ///< width of the image tokens
  int64_t intermediate_size = 3072;  ///< MLP width
  int64_t num_hidden_layers = 12;    ///< ViT blocks
  int64_t num_attention_heads = 12;  ///< self-attention heads
  int64_t num_channels = 3;          ///< input channels (RGB)
  int64_t image_size = 384;          ///< input side S
  int64_t patch_size = 16;           ///< patch side; grid g = S / patch_size
  double layer_norm_eps = 1e-5;      ///< every vision LayerNorm (HF value; LAVIS used 1e-6)
  std::string hidden_act = "gelu";   ///< only the exact erf "gelu" is supported
};

/// `BlipConfig`: both towers plus the ITC projection width.
struct BlipConfig {
  BlipTextConfig text;                   ///< `text_config`
  BlipVisionConfig vision;               ///< `vision_config`
  int64_t image_text_hidden_size = 256;  ///< output width of `vision_proj` / `text_proj`
  int64_t projection_dim = 512;          ///< used by `BlipModel`, not by ITM/captioning

  /// Checks every size and id; throws `agla::FormatError` prefixed with `where` naming the bad field.
  void validate(const std::string& where = "agla::blip::BlipConfig") const {
    // The cap keeps the products the model forms from these sizes (patch grid squared, head
    // splits) far from int64 overflow; released BLIP models are orders of magnitude below it.
    auto positive = [&](int64_t v, const char* name) {
      check<FormatError>(v > 0 && v <= kMaxConfigSize, where, ": ", name, " must be in [1, ", kMaxConfigSize,
                         "]; got ", v);
    };
    positive(text.vocab_size, "text_config.vocab_size");
    positive(text.hidden_size, "text_config.hidden_size");
    positive(text.encoder_hidden_size, "text_config.encoder_hidden_size");
    positive(text.intermediate_size, "text_config.intermediate_size");
    positive(text.num_hidden_layers, "text_config.num_hidden_layers");
    positive(text.num_attention_heads, "text_config.num_attention_heads");
    positive(text.max_position_embeddings, "text_config.max_position_embeddings");
    positive(vision.hidden_size, "vision_config.hidden_size");
    positive(vision.intermediate_size, "vision_config.intermediate_size");
    positive(vision.num_hidden_layers, "vision_config.num_hidden_layers");
    positive(vision.num_attention_heads, "vision_config.num_attention_heads");
    positive(vision.num_channels, "vision_config.num_channels");
    positive(vision.image_size, "vision_config.image_size");
    positive(vision.patch_size, "vision_config.patch_size");
    positive(image_text_hidden_size, "image_text_hidden_size");
    check<FormatError>(text.hidden_size % text.num_attention_heads == 0, where, ": text_config.hidden_size (",
                       text.hidden_size, ") must be divisible by text_config.num_attention_heads (",
                       text.num_attention_heads, ")");
    check<FormatError>(vision.hidden_size % vision.num_attention_heads == 0, where, ": vision_config.hidden_size (",
                       vision.hidden_size, ") must be divisible by vision_config.num_attention_heads (",
                       vision.num_attention_heads, ")");
    check<FormatError>(vision.patch_size <= vision.image_size, where, ": vision_config.patch_size (", vision.patch_size,
                       ") exceeds image_size (", vision.image_size, ")");
    check<FormatError>(text.layer_norm_eps > 0 && vision.layer_norm_eps > 0, where,
                       ": layer_norm_eps must be positive; got text ", text.layer_norm_eps, ", vision ",
                       vision.layer_norm_eps);
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
    c.image_text_hidden_size = top.get_int("image_text_hidden_size", c.image_text_hidden_size);
    c.projection_dim = top.get_int("projection_dim", c.projection_dim);
    const io::JsonConfig t = top.child("text_config");
    BlipTextConfig& tc = c.text;
    tc.vocab_size = t.get_int("vocab_size", tc.vocab_size);
    tc.hidden_size = t.get_int("hidden_size", tc.hidden_size);
    tc.intermediate_size = t.get_int("intermediate_size", tc.intermediate_size);
    tc.num_hidden_layers = t.get_int("num_hidden_layers", tc.num_hidden_layers);
    tc.num_attention_heads = t.get_int("num_attention_heads", tc.num_attention_heads);
    tc.max_position_embeddings = t.get_int("max_position_embeddings", tc.max_position_embeddings);
    tc.layer_norm_eps = t.get_double("layer_norm_eps", tc.layer_norm_eps);
    tc.hidden_act = t.get_string("hidden_act", tc.hidden_act);
    tc.bos_token_id = t.get_int("bos_token_id", tc.bos_token_id);
    tc.eos_token_id = t.get_int("eos_token_id", tc.eos_token_id);
    tc.pad_token_id = t.get_int("pad_token_id", tc.pad_token_id);
    tc.sep_token_id = t.get_int("sep_token_id", tc.sep_token_id);
    const io::JsonConfig v = top.child("vision_config");
    BlipVisionConfig& vc = c.vision;
    vc.hidden_size = v.get_int("hidden_size", vc.hidden_size);
    vc.intermediate_size = v.get_int("intermediate_size", vc.intermediate_size);
    vc.num_hidden_layers = v.get_int("num_hidden_layers", vc.num_hidden_layers);
    vc.num_attention_heads = v.get_int("num_attention_heads", vc.num_attention_heads);
    vc.num_channels = v.get_int("num_channels", vc.num_channels);
    vc.image_size = v.get_int("image_size", vc.image_size);
    vc.patch_size = v.get_int("patch_size", vc.patch_size);
    vc.layer_norm_eps = v.get_double("layer_norm_eps", vc.layer_norm_eps);
    vc.hidden_act = v.get_string("hidden_act", vc.hidden_act);
    // BlipConfig.__init__: `self.text_config.encoder_hidden_size = self.vision_config.hidden_size`.
    tc.encoder_hidden_size = vc.hidden_size;
    c.validate(source);
    return c;
  }

  /// Reads and validates `path` (a `config.json`).
  static BlipConfig from_file(const std::string& path) { return from_json(io::read_json_file(path), path); }
};

}  // namespace agla::blip
