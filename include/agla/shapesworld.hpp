#pragma once
/// \file
/// ShapesWorld: the seeded synthetic benchmark world (scenes, texts, POPE-format evaluation sets)
/// and the conversion of its scenes to tensors.

#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/random.hpp"
#include "agla/shapesworld/tensor.hpp"
#include "agla/shapesworld/text.hpp"
#include "agla/shapesworld/world.hpp"
