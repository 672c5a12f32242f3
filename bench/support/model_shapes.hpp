// The model sizes the bench programs share, so that their figures compare: BLIP-large (ITM and
// captioner) and the LLaVA-shaped model sized for a 2-core CPU. Weights are drawn by each program.
#pragma once

#include <nlohmann/json.hpp>

#include "agla/models/blip/config.hpp"

namespace agla::bench {

/// Salesforce/blip-itm-large-coco's (and blip-image-captioning-large's) sizes: ViT-L/16 at 384 px
/// and a BERT-base text model with cross-attention.
inline blip::BlipConfig blip_large_config() {
  blip::BlipConfig c;
  c.vision.hidden_size = 1024;
  c.vision.num_hidden_layers = 24;
  c.vision.num_attention_heads = 16;
  c.vision.intermediate_size = 4096;
  c.vision.image_size = 384;
  c.vision.patch_size = 16;
  c.text.hidden_size = 768;
  c.text.num_hidden_layers = 12;
  c.text.num_attention_heads = 12;
  c.text.intermediate_size = 3072;
  c.text.encoder_hidden_size = 1024;
  c.image_text_hidden_size = 256;
  return c;
}

/// LLaVA-1.5's layout at a size two CPU cores can run, as a llava-hf `config.json`: a ~0.94 B
/// parameter LLaMA (hidden 2048, 16 layers, 32 heads, SwiGLU 5504, vocabulary 32000) behind a
/// ViT-B-sized CLIP tower at 224 px with 14 px patches (256 image tokens, like LLaVA's 576 at a
/// quarter of the pixels); `small` shrinks every width and depth for a quick check.
inline nlohmann::json llava_bench_config(bool small = false) {
  nlohmann::json c;
  c["image_token_index"] = 31999;
  c["text_config"] = {{"hidden_size", small ? 256 : 2048},
                      {"intermediate_size", small ? 688 : 5504},
                      {"num_hidden_layers", small ? 2 : 16},
                      {"num_attention_heads", small ? 4 : 32},
                      {"num_key_value_heads", small ? 4 : 32},
                      {"vocab_size", 32000},
                      {"rms_norm_eps", 1e-5}};
  c["vision_config"] = {{"hidden_size", small ? 128 : 768},
                        {"intermediate_size", small ? 512 : 3072},
                        {"num_hidden_layers", small ? 2 : 12},
                        {"num_attention_heads", small ? 4 : 12},
                        {"image_size", 224},
                        {"patch_size", 14}};
  return c;
}

}  // namespace agla::bench
