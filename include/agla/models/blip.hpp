#pragma once
/// \file
/// The BLIP layer: configuration, vision transformer, BERT text model with cross-attention,
/// WordPiece tokenizer, the ITM/ITC model for image-prompt matching and the captioner.

#include "agla/models/blip/captioner.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/blip/itm.hpp"
#include "agla/models/blip/text.hpp"
#include "agla/models/blip/tokenizer.hpp"
#include "agla/models/blip/vision.hpp"
