#pragma once
/// \file
/// The views layer: the extra inputs the training-free decoders contrast or assemble with the
/// original -- VCD's diffusion noise, RITUAL's random transformations, ICD's disturbed
/// instructions, VACoDe-style selection among candidate views. AGLA's own view, the IPM mask, is
/// the ipm layer (`agla/ipm.hpp`).

#include "agla/views/instruction.hpp"
#include "agla/views/noise.hpp"
#include "agla/views/selection.hpp"
#include "agla/views/transforms.hpp"
