#pragma once
/// \file
/// The io layer: array, weight, config and image files.

#include "agla/io/image.hpp"
#include "agla/io/npy.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/io/state_dict.hpp"
