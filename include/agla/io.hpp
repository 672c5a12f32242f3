#pragma once
/// \file
/// The io layer: array, weight, config and image files.

#include "agla/io/npy.hpp"
