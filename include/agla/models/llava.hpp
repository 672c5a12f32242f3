#pragma once
/// \file
/// The LLaVA-1.5 family: configuration, CLIP vision tower, projector, the shared LLaMA decoder with
/// its KV cache, checkpoint loading, image preprocessing, prompts, the checkpoint's SentencePiece
/// tokenizer (read natively; no libsentencepiece) and `LlavaLvlm`, the LVLM of `agla/models/lvlm.hpp`.
///
/// Typical use (a llava-hf directory such as `llava-hf/llava-1.5-7b-hf`):
///
///     auto lvlm = agla::llava::LlavaLvlm::load(dir, {at::Device(at::kCUDA), at::kHalf});
///     agla::LvlmInputs inputs;
///     inputs.prompt = agla::batch_prompts({lvlm.prompt(question)}, lvlm.tokens().pad_id);
///     inputs.pixels = lvlm.preprocess(image).unsqueeze(0);
///     inputs.views = {{agla::ViewKind::Image, lvlm.preprocess(masked_image).unsqueeze(0)}};
///     inputs.max_new_tokens = limits.max_new_tokens;
///     auto result = agla::generate(lvlm, lvlm.begin(inputs), agla::DecodeOptions{}, limits, generator);

#include "agla/models/llama/config.hpp"
#include "agla/models/llama/model.hpp"
#include "agla/models/llava/clip.hpp"
#include "agla/models/llava/config.hpp"
#include "agla/models/llava/lvlm.hpp"
#include "agla/models/llava/model.hpp"
#include "agla/models/llava/preprocess.hpp"
#include "agla/models/llava/prompt.hpp"
