#pragma once
/// \file
/// The LLaVA-1.5 layer: configuration, CLIP vision tower, projector, LLaMA decoder with KV cache,
/// checkpoint loading, image preprocessing, prompts, the checkpoint's SentencePiece tokenizer (read
/// natively; no libsentencepiece) and the LVLM forward functor for AGLA decoding.
///
/// Typical use (a llava-hf directory such as `llava-hf/llava-1.5-7b-hf`):
///
///     auto model = agla::llava::load_model(dir, {at::Device(at::kCUDA), at::kHalf});
///     const auto& config = model->config();
///     agla::llava::SentencePieceTokenizer tokenizer(dir + "/tokenizer.model");
///     auto text = agla::llava::build_prompt(question, agla::llava::llava_v1_template(), /*pope=*/true);
///     auto ids = tokenizer.encode_prompt(text, config.image_token_index);      // one <image> id
///     auto prompt = at::tensor(ids).view({1, -1}).to(model->device());
///     auto pixels = agla::llava::preprocess_images({image}, config.vision.image_size);
///     auto pixels_aug = agla::llava::preprocess_images({masked_image}, config.vision.image_size);
///     agla::llava::LlavaLvlm lvlm(model);
///     lvlm.begin(prompt, pixels, pixels_aug, {}, limits.max_new_tokens);
///     auto result = agla::generate(lvlm, prompt, agla::DecodeOptions{}, limits, generator);

#include "agla/models/llava/clip.hpp"
#include "agla/models/llava/config.hpp"
#include "agla/models/llava/layers.hpp"
#include "agla/models/llava/llama.hpp"
#include "agla/models/llava/lvlm.hpp"
#include "agla/models/llava/model.hpp"
#include "agla/models/llava/preprocess.hpp"
#include "agla/models/llava/prompt.hpp"
#include "agla/models/llava/tokenizer.hpp"
