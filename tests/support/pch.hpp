#pragma once
// Precompiled for every test program: the heavy headers that nearly all of them include.
#include <gtest/gtest.h>
#include <torch/torch.h>
