#pragma once
/// \file
/// The LLaVA-1.5 layer: configuration, CLIP vision tower, projector, LLaMA decoder with KV cache,
/// checkpoint loading, image preprocessing, prompts and the LVLM forward functor for AGLA
/// decoding. The SentencePiece tokenizer (`agla/models/llava/tokenizer.hpp`) is opt-in because it
/// needs `sentencepiece` linked.

#include "agla/models/llava/clip.hpp"
#include "agla/models/llava/config.hpp"
#include "agla/models/llava/layers.hpp"
#include "agla/models/llava/llama.hpp"
#include "agla/models/llava/lvlm.hpp"
#include "agla/models/llava/model.hpp"
#include "agla/models/llava/preprocess.hpp"
#include "agla/models/llava/prompt.hpp"
