#pragma once
/// \file
/// The BLIP family: configuration, BERT text model with cross-attention, WordPiece tokenizer, the
/// ITM/ITC model for image-prompt matching and the captioner (an LVLM of `agla/models/lvlm.hpp`).
/// The vision transformer is `agla::models::VisionTransformer` (`agla/models/common/vit.hpp`).

#include "agla/models/blip/captioner.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/blip/itm.hpp"
#include "agla/models/blip/text.hpp"
