// agla_caption: captions an image with regular decoding and with AGLA (same seed), side by side,
// with tokens per second for both, and writes IPM's relevance heat-map, mask and augmented view.
//
//   agla_caption                      # the shipped ShapesWorld models on the embedded sample image
//   agla_caption --image PATH --itm DIR --lvlm DIR [--prompt TEXT | --prompt-ids IDS] [--json] ...
//
// --lvlm takes a BLIP captioning directory (Salesforce/blip-image-captioning-*, the ShapesWorld
// LVLM) or a llava-hf LLaVA-1.5 directory; the kind comes from config.json. Without trained models
// in examples/data/models it falls back to the random-weight test models and says so. Bad input:
// the library's message on stderr, exit status 1. Options: agla_caption --help.
#include <iostream>
#include <string>
#include <vector>

#include "common/caption_app.hpp"

int main(int argc, char** argv) {
  return agla::examples::run_caption(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
