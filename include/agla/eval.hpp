#pragma once
/// \file
/// The eval layer: POPE, MME and CHAIR (ShapesWorld and COCO) scoring and the plumbing of benchmark
/// runs (chunks, progress, answers files). Needs no libtorch.

#include "agla/eval/chair.hpp"
#include "agla/eval/coco_chair.hpp"
#include "agla/eval/jsonl.hpp"
#include "agla/eval/mme.hpp"
#include "agla/eval/pope.hpp"
#include "agla/eval/runner.hpp"
#include "agla/eval/words.hpp"
