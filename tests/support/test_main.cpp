// Entry point shared by all test programs: checks once that a fast BLAS is loaded, because
// Debian's libtorch calls whatever libblas.so.3 resolves to and the reference BLAS is ~40x slower.
#include <gtest/gtest.h>

#include <iostream>

#include "agla/runtime.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (auto warning = agla::blas_warning()) std::cerr << *warning << "\n";
  return RUN_ALL_TESTS();
}
