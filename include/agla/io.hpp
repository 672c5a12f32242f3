#pragma once
/// \file
/// The io layer: array, weight, config and image files.

#include "agla/io/checkpoint.hpp"
#include "agla/io/file.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/io/image.hpp"
#include "agla/io/limits.hpp"
#include "agla/io/module_loader.hpp"
#include "agla/io/npy.hpp"
#include "agla/io/pytorch_checkpoint.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/io/sharded_index.hpp"
#include "agla/io/state_dict.hpp"
#include "agla/io/zip.hpp"
