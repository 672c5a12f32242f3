#pragma once
/// \file
/// Umbrella header: the whole public API of agla, layer by layer in data-flow order
/// (io, text -> models -> ipm -> decode; see docs/design.md), plus the ShapesWorld
/// benchmark and POPE/CHAIR scoring.

#include "agla/error.hpp"
#include "agla/runtime.hpp"
#include "agla/io.hpp"
#include "agla/text.hpp"
#include "agla/models.hpp"
#include "agla/ipm.hpp"
#include "agla/views.hpp"
#include "agla/decode.hpp"
#include "agla/shapesworld.hpp"
#include "agla/eval.hpp"
