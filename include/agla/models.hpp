#pragma once
/// \file
/// The models layer: the LVLM contract (`agla/models/lvlm.hpp`), the building blocks the families
/// share (`agla/models/common/`), and the shipped families: BLIP (ITM for IPM, and captioning),
/// LLaVA-1.5, InstructBLIP-Vicuna, and the LLaMA decoder the last two build on.

#include "agla/models/lvlm.hpp"
#include "agla/models/common/bert.hpp"
#include "agla/models/common/image_processing.hpp"
#include "agla/models/common/layers.hpp"
#include "agla/models/common/vit.hpp"
#include "agla/models/blip.hpp"
#include "agla/models/instructblip.hpp"
#include "agla/models/llava.hpp"
