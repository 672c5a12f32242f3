// Process-level helpers (threads, BLAS check) and the .npy reader/writer used across the tests.
#include "agla/io/npy.hpp"
#include "agla/runtime.hpp"

#include <cstdio>
#include <filesystem>

TEST(RuntimeTest, ConfigureThreadsSetsTheRequestedCount) {
  EXPECT_EQ(agla::configure_threads(2), 2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_GE(agla::configure_threads(0), 1);
}

TEST(RuntimeTest, OptimisedBlasIsLoaded) {
  // The set-up installs OpenBLAS; the reference BLAS would make every model ~40x slower.
  const std::string path = agla::loaded_blas_path();
  if (path.empty()) GTEST_SKIP() << "this libtorch does not call an external BLAS";
  EXPECT_FALSE(agla::blas_warning().has_value()) << *agla::blas_warning();
}

TEST(NpyTest, RoundTripKeepsDtypeShapeAndValues) {
  const std::string path = ::testing::TempDir() + "/roundtrip.npy";
  const at::Tensor values = at::arange(24, at::kFloat).reshape({2, 3, 4}) / 7;
  agla::io::write_npy(path, values);
  const at::Tensor back = agla::io::read_npy(path);
  EXPECT_EQ(back.scalar_type(), at::kFloat);
  EXPECT_EQ(back.sizes(), values.sizes());
  EXPECT_TRUE(at::equal(back, values));
  std::remove(path.c_str());
}

TEST(NpyTest, RejectsTruncatedFiles) {
  const std::string path = ::testing::TempDir() + "/truncated.npy";
  agla::io::write_npy(path, at::ones({10}, at::kDouble));
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 8);
  EXPECT_THROW(agla::io::read_npy(path), agla::FormatError);
  EXPECT_THROW(agla::io::read_npy(::testing::TempDir() + "/does-not-exist.npy"), agla::FormatError);
  std::remove(path.c_str());
}
