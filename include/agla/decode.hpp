#pragma once
/// \file
/// The decoding layer: fusion policies (AGLA assembly, VCD contrast, none), the adaptive
/// plausibility cutoff, Hugging Face warpers, samplers, `agla::decode_step`, `agla::DecodeSession`,
/// `agla::generate`,
/// and the libtorch-free raw-float path (`agla::raw`).

#include "agla/decode/fusion.hpp"
#include "agla/decode/generate.hpp"
#include "agla/decode/options.hpp"
#include "agla/decode/policies.hpp"
#include "agla/decode/raw.hpp"
#include "agla/decode/session.hpp"
#include "agla/decode/step.hpp"
#include "agla/decode/view.hpp"
