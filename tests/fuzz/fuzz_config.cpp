// Fuzzes the config parsers on JSON bytes: agla::blip::BlipConfig::from_json,
// agla::llava::parse_config and agla::instructblip::parse_config must accept a config or throw agla::Error -- never crash, overflow or
// convert an out-of-range number with undefined behaviour. Bytes that are not JSON are skipped
// (nlohmann's own parser is not under test).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/instructblip/config.hpp"
#include "agla/models/llava/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json json = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  try {
    const agla::blip::BlipConfig c = agla::blip::BlipConfig::from_json(json, "fuzz/config.json");
    // Derived quantities the models compute from a validated config.
    volatile int64_t grid = c.vision.image_size / c.vision.patch_size;
    volatile int64_t head = c.text.hidden_size / c.text.num_attention_heads;
    (void)grid;
    (void)head;
  } catch (const agla::Error&) {
  }
  try {
    const agla::llava::LlavaConfig c = agla::llava::parse_config(json);
    volatile int64_t tokens = c.image_tokens();
    volatile int64_t layers = c.vision_layers_used();
    volatile int64_t head = c.text.head_dim();
    (void)tokens;
    (void)layers;
    (void)head;
  } catch (const agla::Error&) {
  }
  try {
    const agla::instructblip::InstructBlipConfig c = agla::instructblip::parse_config(json);
    volatile int64_t patches = c.vision.num_patches();
    volatile int64_t head = c.qformer.hidden_size / c.qformer.num_attention_heads;
    volatile bool cross = c.qformer.has_cross_attention(c.qformer.num_hidden_layers - 1);
    (void)patches;
    (void)head;
    (void)cross;
  } catch (const agla::Error&) {
  }
  try {
    // The generic typed look-ups every model config goes through.
    const agla::io::JsonConfig top(json, "fuzz/config.json");
    for (auto it = json.begin(); json.is_object() && it != json.end(); ++it) {
      try {
        (void)top.get_int(it.key(), 0);
      } catch (const agla::Error&) {
      }
      try {
        (void)top.get_double(it.key(), 0.0);
      } catch (const agla::Error&) {
      }
      try {
        (void)top.child(it.key()).where();
      } catch (const agla::Error&) {
      }
    }
  } catch (const agla::Error&) {
  }
  return 0;
}
