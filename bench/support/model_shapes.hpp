// The model sizes the bench programs share, so that their figures compare: BLIP-large (ITM and
// captioner) and the LLaVA- and InstructBLIP-shaped models sized for a 2-core CPU. Weights are drawn by each program.
#pragma once

#include <nlohmann/json.hpp>

#include "agla/models/blip/config.hpp"

namespace agla::bench {

/// Salesforce/blip-itm-large-coco's (and blip-image-captioning-large's) sizes: ViT-L/16 at 384 px
/// and a BERT-base text model with cross-attention.
inline blip::BlipConfig blip_large_config() {
  return blip::BlipConfig::from_json(nlohmann::json::parse(R"({
    "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096, "image_size": 384, "patch_size": 16},
    "text_config": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "intermediate_size": 3072},
    "image_text_hidden_size": 256})"),
                                     "agla::bench::blip_large_config");
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

/// InstructBLIP-Vicuna-7B's layout at the size of `llava_bench_config`: its LLaMA (with LLaMA's
/// default RMSNorm epsilon, as the Vicuna text config has) behind a 6-layer ViT-B-wide vision
/// encoder at 224 px with 14 px patches (257 image tokens, as EVA-ViT-g's) and a 4-layer BERT-base
/// Q-Former (cross-attention every second layer) with the released 32 queries.
inline nlohmann::json instructblip_bench_config(bool small = false) {
  const nlohmann::json llava = llava_bench_config(small);
  nlohmann::json c;
  c["num_query_tokens"] = 32;
  c["text_config"] = llava["text_config"];
  c["text_config"]["model_type"] = "llama";
  c["text_config"].erase("rms_norm_eps");
  c["vision_config"] = llava["vision_config"];
  c["vision_config"]["num_hidden_layers"] = small ? 2 : 6;
  c["qformer_config"] = {{"hidden_size", small ? 128 : 768}, {"intermediate_size", small ? 512 : 3072},
                         {"num_hidden_layers", small ? 2 : 4}, {"num_attention_heads", small ? 4 : 12}};
  return c;
}

}  // namespace agla::bench
