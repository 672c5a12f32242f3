#pragma once
/// \file
/// The InstructBLIP family (`InstructBlipForConditionalGeneration` checkpoints with a LLaMA / Vicuna
/// language model, e.g. `Salesforce/instructblip-vicuna-7b`): configuration, the Q-Former, the
/// model with checkpoint loading, prompts for its two tokenizers, and `InstructBlipLvlm`, the LVLM
/// of `agla/models/lvlm.hpp` (docs/models/instructblip.md).
///
/// Typical use:
///
///     auto lvlm = agla::instructblip::InstructBlipLvlm::load(dir, {at::Device(at::kCUDA), at::kHalf});
///     agla::LvlmInputs inputs;
///     inputs.prompt = agla::batch_prompts({lvlm.prompt(question + " Please answer this question with one word.")},
///                                         lvlm.tokens().pad_id);
///     inputs.pixels = lvlm.preprocess(image).unsqueeze(0);
///     inputs.views = {{agla::ViewKind::Image, lvlm.preprocess(masked_image).unsqueeze(0)}};
///     inputs.max_new_tokens = limits.max_new_tokens;
///     auto result = agla::generate(lvlm, lvlm.begin(inputs), agla::DecodeOptions::instructblip_reference(),
///                                  limits, generator);

#include "agla/models/instructblip/config.hpp"
#include "agla/models/instructblip/lvlm.hpp"
#include "agla/models/instructblip/model.hpp"
#include "agla/models/instructblip/prompt.hpp"
#include "agla/models/instructblip/qformer.hpp"
