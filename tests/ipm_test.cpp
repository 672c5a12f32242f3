// Image-prompt matching: GradCAM (Eq. 2) against the BLIP fixture, the mask post-processing
// against every case of tests/data/augment (README tolerances), VCD's noise view, and the
// ImagePromptMatcher template on a fixture-backed fake ITM model.
#include "agla/io/npy.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/ipm.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <string>

namespace {

const std::string kAugmentDir = std::string(AGLA_TEST_DATA_DIR) + "/augment/";
const std::string kBlipDir = std::string(AGLA_TEST_DATA_DIR) + "/blip/";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

const std::map<std::string, at::Tensor>& blip_fixtures() {
  static const std::map<std::string, at::Tensor> tensors =
      agla::io::read_safetensors(kBlipDir + "fixtures.safetensors");
  return tensors;
}

const at::Tensor& fixture(const std::string& name) {
  const auto& all = blip_fixtures();
  const auto it = all.find(name);
  if (it == all.end()) throw std::runtime_error("fixture tensor missing: " + name);
  return it->second;
}

// Max |a - b| over entries where both are numbers; -1 when the NaN patterns differ.
double max_abs_diff_nan_aware(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble);
  const at::Tensor y = b.to(at::kDouble);
  if (!at::equal(x.isnan(), y.isnan())) return -1;
  const at::Tensor both = x.isnan().logical_not();
  if (both.sum().item<int64_t>() == 0) return 0;
  return (x.masked_select(both) - y.masked_select(both)).abs().max().item<double>();
}

}  // namespace

// ---------------------------------------------------------------- mask post-processing

TEST(AugmentTest, EveryCaseMatchesTheReference) {
  const nlohmann::json cases = read_json(kAugmentDir + "cases.json");
  ASSERT_GE(cases["cases"].size(), 12u);
  for (const auto& c : cases["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const int64_t side = c["side"];
    const at::Tensor gradcam = agla::io::read_npy(kAugmentDir + c["files"]["gradcam"].get<std::string>());
    const at::Tensor want_resized = agla::io::read_npy(kAugmentDir + c["files"]["resized"].get<std::string>());
    const at::Tensor want_blurred =
        agla::io::read_npy(kAugmentDir + c["files"]["blurred_normalized"].get<std::string>());
    const at::Tensor want_mask = agla::io::read_npy(kAugmentDir + c["files"]["mask"].get<std::string>());

    const at::Tensor resized = agla::ipm::spline_resize(agla::ipm::normalize_min_max(gradcam), side, side);
    const double resized_diff = max_abs_diff_nan_aware(resized, want_resized);
    EXPECT_GE(resized_diff, 0) << "NaN pattern differs";
    EXPECT_LE(resized_diff, 1e-6);

    const at::Tensor blurred = agla::ipm::relevance_map(gradcam, side, side);
    const double blurred_diff = max_abs_diff_nan_aware(blurred, want_blurred);
    EXPECT_GE(blurred_diff, 0) << "NaN pattern differs";
    EXPECT_LE(blurred_diff, 1e-6);
    EXPECT_EQ(blurred.isnan().all().item<bool>(), c["blurred_is_nan"].get<bool>());

    const double itc = c["itc"].get<double>();
    const agla::ipm::KeepRatio ratio = agla::ipm::reference_keep_ratio(itc);
    EXPECT_EQ(!ratio.single_precision, c["ratio_clamped"].get<bool>());
    EXPECT_EQ(static_cast<float>(ratio.keep), static_cast<float>(c["ratio"].get<double>()));

    // Threshold step alone, on the reference map: exact.
    const agla::ipm::Threshold alone = agla::ipm::threshold_map(want_blurred, ratio);
    EXPECT_EQ(alone.index, c["index"].get<int64_t>());
    if (c["threshold"].is_string()) {
      EXPECT_TRUE(std::isnan(alone.value));
    } else {
      EXPECT_EQ(alone.value, static_cast<float>(c["threshold"].get<double>()));
    }
    EXPECT_TRUE(at::equal(alone.mask.to(at::kByte), want_mask));

    // End to end from the GradCAM map: exact mask, kept pixels and fraction.
    const agla::ipm::Threshold full = agla::ipm::threshold_map(blurred, ratio);
    EXPECT_EQ(full.index, c["index"].get<int64_t>());
    EXPECT_TRUE(at::equal(full.mask.to(at::kByte), want_mask));
    EXPECT_EQ(full.kept_pixels, c["kept_pixels"].get<int64_t>());
    EXPECT_DOUBLE_EQ(full.kept_fraction, c["kept_fraction"].get<double>());
  }
}

TEST(AugmentTest, FullImageCaseGivesTheExpectedImage) {
  const nlohmann::json spec = read_json(kAugmentDir + "cases.json")["full_image"];
  const at::Tensor gradcam = agla::io::read_npy(kAugmentDir + spec["files"]["gradcam"].get<std::string>());
  const at::Tensor resized = agla::io::read_npy(kAugmentDir + spec["files"]["resized_uint8"].get<std::string>());
  const at::Tensor want = agla::io::read_npy(kAugmentDir + spec["files"]["augmented_uint8"].get<std::string>());
  const at::Tensor want_blurred =
      agla::io::read_npy(kAugmentDir + spec["files"]["blurred_normalized"].get<std::string>());

  const at::Tensor relevance = agla::ipm::relevance_map(gradcam, resized.size(0), resized.size(1));
  EXPECT_LE(max_abs_diff_nan_aware(relevance, want_blurred), 1e-6);
  const agla::ipm::Threshold cut =
      agla::ipm::threshold_map(relevance, agla::ipm::reference_keep_ratio(spec["itc"].get<double>()));
  EXPECT_EQ(cut.index, spec["index"].get<int64_t>());
  EXPECT_EQ(cut.value, static_cast<float>(spec["threshold"].get<double>()));
  EXPECT_EQ(cut.kept_pixels, spec["kept_pixels"].get<int64_t>());
  const at::Tensor augmented = agla::ipm::apply_mask(resized, cut.mask);
  EXPECT_EQ(augmented.scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(augmented, want));
}

TEST(AugmentTest, GaussianKernelIsNormalisedAndSymmetric) {
  const std::vector<double> k = agla::ipm::gaussian_kernel(7.68, 31);
  ASSERT_EQ(k.size(), 63u);
  double total = 0;
  for (double w : k) total += w;
  EXPECT_NEAR(total, 1.0, 1e-15);
  for (size_t i = 0; i < k.size(); ++i) EXPECT_EQ(k[i], k[k.size() - 1 - i]);
}

TEST(AugmentTest, NonSquareOutputKeepsTheRequestedShape) {
  const at::Tensor gradcam = agla::io::read_npy(kAugmentDir + "data/gradcam_like.gradcam.npy");
  const at::Tensor map = agla::ipm::relevance_map(gradcam, 300, 451);
  EXPECT_EQ(map.sizes(), (at::IntArrayRef{300, 451}));
  EXPECT_FLOAT_EQ(map.min().item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(map.max().item<float>(), 1.0f);
  const agla::ipm::Threshold cut = agla::ipm::threshold_map(map, agla::ipm::reference_keep_ratio(0.4));
  EXPECT_EQ(cut.index, static_cast<int64_t>(300.0f * 451.0f * 0.8f));
  EXPECT_GE(cut.kept_pixels, cut.index + 1);
}

TEST(AugmentTest, BadInputThrowsAglaErrors) {
  EXPECT_THROW(agla::ipm::spline_resize(at::zeros({3}), 8, 8), agla::ShapeError);
  EXPECT_THROW(agla::ipm::spline_resize(at::zeros({4, 4}), 0, 8), agla::InvalidArgument);
  EXPECT_THROW(agla::ipm::gaussian_blur(at::zeros({4, 4}), -1.0), agla::InvalidArgument);
  EXPECT_THROW(agla::ipm::apply_mask(at::zeros({4, 4, 3}), at::ones({4, 4})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::apply_mask(at::zeros({4, 4, 3}, at::kByte), at::ones({4, 5})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::threshold_map(at::zeros({2, 2, 2}), {}), agla::ShapeError);
}

// ---------------------------------------------------------------- GradCAM

TEST(GradCamTest, MatchesTheFixturePerPair) {
  for (int i = 0; i < 2; ++i) {
    for (int p = 0; p < 4; ++p) {
      const std::string base = "gradcam.i" + std::to_string(i) + ".p" + std::to_string(p) + ".";
      SCOPED_TRACE(base);
      const at::Tensor attention = fixture(base + "attn_probs");
      const at::Tensor grads = fixture(base + "attn_grads");
      const at::Tensor mask = at::ones({1, attention.size(2)}, at::kLong);
      const agla::ipm::GradCamMaps maps = agla::ipm::gradcam(attention, grads, mask);
      EXPECT_LE((maps.per_token[0] - fixture(base + "per_token")).abs().max().item<double>(), 1e-6);
      EXPECT_LE((maps.average[0] - fixture(base + "avg")).abs().max().item<double>(), 1e-6);
      EXPECT_LE((agla::ipm::lavis_layout(maps, 0) - fixture(base + "lavis_output")).abs().max().item<double>(),
                1e-6);
      EXPECT_EQ(maps.token_counts[0], attention.size(2) - 2);
    }
  }
}

TEST(GradCamTest, PaddedBatchMatchesTheFixture) {
  const agla::ipm::GradCamMaps maps = agla::ipm::gradcam(
      fixture("itm_batch.attn_probs"), fixture("itm_batch.attn_grads"), fixture("itm_batch.attention_mask"));
  EXPECT_LE((maps.average - fixture("itm_batch.gradcam_avg")).abs().max().item<double>(), 1e-6);
  for (int p = 0; p < 4; ++p)
    EXPECT_LE((maps.average[p] - fixture("gradcam.i0.p" + std::to_string(p) + ".avg")).abs().max().item<double>(),
              1e-6);
  EXPECT_EQ(maps.token_counts, (std::vector<int64_t>{6, 8, 5, 9}));
}

TEST(GradCamTest, BadInputThrowsAglaErrors) {
  const at::Tensor a = at::rand({1, 2, 5, 17});
  EXPECT_THROW(agla::ipm::gradcam(a, at::rand({1, 2, 5, 16}), at::ones({1, 5})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::gradcam(a, a, at::ones({1, 4})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::gradcam(at::rand({1, 2, 5, 16}), at::rand({1, 2, 5, 16}), at::ones({1, 5})),
               agla::ShapeError);  // 15 patches: not a square grid
  EXPECT_THROW(agla::ipm::gradcam(a, a, at::ones({1, 2})), agla::ShapeError);
  at::Tensor short_mask = at::zeros({1, 5});
  short_mask.narrow(1, 0, 2).fill_(1);  // [ENC] [SEP] only: no prompt token
  EXPECT_THROW(agla::ipm::gradcam(a, a, short_mask), agla::InvalidArgument);
}

// ---------------------------------------------------------------- VCD noise

TEST(DiffusionNoiseTest, ScheduleMatchesVcd) {
  // abar_500 ~ 0.745 for the sigmoid schedule (a linear one would leave almost pure noise).
  const agla::ipm::DiffusionCoefficients k = agla::ipm::diffusion_coefficients(500);
  EXPECT_NEAR(k.signal * k.signal, 0.745, 0.005);
  EXPECT_NEAR(k.signal * k.signal + k.noise * k.noise, 1.0, 1e-6);
  const agla::ipm::DiffusionCoefficients first = agla::ipm::diffusion_coefficients(0);
  EXPECT_NEAR(first.signal * first.signal, 1.0 - (1.0 / (1.0 + std::exp(6.0)) * (0.5e-2 - 1e-5) + 1e-5), 1e-6);
  EXPECT_THROW(agla::ipm::diffusion_coefficients(1000), agla::InvalidArgument);
  EXPECT_THROW(agla::ipm::diffusion_coefficients(-1), agla::InvalidArgument);
}

TEST(DiffusionNoiseTest, SameGeneratorSeedGivesTheSameView) {
  const at::Tensor pixels = at::rand({1, 3, 8, 8}) * 2 - 1;
  const agla::ipm::DiffusionNoiseView view;
  const at::Tensor a = view(pixels, at::make_generator<at::CPUGeneratorImpl>(7));
  const at::Tensor b = view(pixels, at::make_generator<at::CPUGeneratorImpl>(7));
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_EQ(a.sizes(), pixels.sizes());
  // x_t - sqrt(abar) x_0 is the scaled noise; its spread is sqrt(1 - abar).
  const agla::ipm::DiffusionCoefficients k = agla::ipm::diffusion_coefficients(500);
  const at::Tensor big = at::zeros({1, 3, 128, 128});
  const at::Tensor noisy = agla::ipm::add_diffusion_noise(big, at::make_generator<at::CPUGeneratorImpl>(3));
  EXPECT_NEAR(noisy.std().item<double>(), k.noise, 0.02);
  EXPECT_THROW(agla::ipm::add_diffusion_noise(at::zeros({2}, at::kByte), at::make_generator<at::CPUGeneratorImpl>(1)),
               agla::ShapeError);
}
