// The CUDA path against the CPU path: the decoding step (every fusion method, cutoff, warpers,
// greedy; sampling by its statistics), host synchronisation per step, IPM (ITM + GradCAM + mask)
// and the LVLMs in float16/bfloat16 and in the batched form. Every test skips itself without a
// CUDA device; bench/gpu/check.sh runs them on a GPU machine.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

// Set by tests/CMakeLists.txt when the libtorch found was built with CUDA.
#ifdef AGLA_TEST_TORCH_HAS_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "agla/agla.hpp"

namespace {

const std::string kData = AGLA_TEST_DATA_DIR;

// The device under test: CUDA, or the CPU when AGLA_CUDA_TEST_ON_CPU=1 asks for a dry run of the
// tests' own logic on a machine without a GPU.
bool dry_run() {
  const char* env = std::getenv("AGLA_CUDA_TEST_ON_CPU");
  return env != nullptr && std::string(env) == "1";
}
at::Device device() { return torch::cuda::is_available() ? at::Device(at::kCUDA) : at::Device(at::kCPU); }

#define AGLA_REQUIRE_CUDA() \
  if (!torch::cuda::is_available() && !dry_run()) GTEST_SKIP() << "no CUDA device"

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kFloat) - b.to(at::kCPU, at::kFloat)).abs().max().item<double>();
}

// Every preset the library ships, with warpers on and off, in greedy and sampled form.
std::vector<std::pair<std::string, agla::DecodeOptions>> presets() {
  std::vector<std::pair<std::string, agla::DecodeOptions>> all = {
      {"agla", agla::DecodeOptions::agla()},   {"regular", agla::DecodeOptions::regular()},
      {"vcd", agla::DecodeOptions::vcd()},     {"ritual", agla::DecodeOptions::ritual()},
      {"m3id", agla::DecodeOptions::m3id()},   {"pai", agla::DecodeOptions::pai()},
      {"instructblip", agla::DecodeOptions::instructblip_reference()}};
  agla::DecodeOptions warped = agla::DecodeOptions::agla();
  warped.temperature = 0.7;
  warped.top_k = 40;
  warped.top_p = 0.9;
  all.emplace_back("agla-warped", warped);
  return all;
}

TEST(CudaDecodeTest, EveryPresetGivesTheCpuScoresAndGreedyTokens) {
  AGLA_REQUIRE_CUDA();
  torch::manual_seed(0);
  const int64_t b = 8, v = 32000;
  const std::vector<at::Tensor> cpu_views = {at::randn({b, v}) * 3, at::randn({b, v}) * 3, at::randn({b, v}) * 3};
  for (auto [name, options] : presets()) {
    options.greedy = true;
    const std::vector<at::Tensor> views(cpu_views.begin(), cpu_views.begin() + 1 + options.extra_views());
    std::vector<at::Tensor> cuda_views;
    for (const auto& view : views) cuda_views.push_back(view.to(device()));
    at::Tensor cpu_scores, cuda_scores;
    agla::StepControl cpu_control, cuda_control;
    cpu_control.step = cuda_control.step = 3;
    cpu_control.log_probs = &cpu_scores;
    cuda_control.log_probs = &cuda_scores;
    const auto policies = agla::policies_from(options);
    const at::Tensor cpu_tokens = agla::decode_views(views, policies, {}, cpu_control);
    const at::Tensor cuda_tokens = agla::decode_views(cuda_views, policies, {}, cuda_control);
    EXPECT_EQ(cuda_tokens.device(), device()) << name;
    EXPECT_TRUE(at::equal(cuda_tokens.cpu(), cpu_tokens)) << name;
    // Cut-off entries are -inf on both devices; the kept ones agree to float32 rounding.
    const at::Tensor kept = at::isfinite(cpu_scores);
    EXPECT_TRUE(at::equal(at::isfinite(cuda_scores).cpu(), kept)) << name;
    EXPECT_LT(max_diff(cuda_scores.cpu().masked_select(kept), cpu_scores.masked_select(kept)), 1e-4) << name;
  }
}

TEST(CudaDecodeTest, SampledTokensFollowTheCpuDistribution) {
  AGLA_REQUIRE_CUDA();
  // One row of 8 logits repeated 20,000 times: the token counts must match the CPU step's
  // probabilities within 5 standard errors.
  const at::Tensor row = at::tensor({2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -3.0f}).view({1, 8});
  const at::Tensor aug = at::tensor({1.0f, 1.8f, 0.2f, 0.5f, -0.4f, -0.5f, -1.0f, -2.0f}).view({1, 8});
  const int64_t n = 20000;
  const auto options = agla::DecodeOptions::agla();
  at::Tensor probs;
  agla::StepControl control;
  control.log_probs = &probs;
  auto scoring = options;  // the same scores; greedy needs no generator
  scoring.greedy = true;
  agla::decode_logits(row, aug, scoring, {}, control);
  probs = probs.exp()[0];
  const at::Generator gen = at::globalContext().defaultGenerator(device().type());
  const at::Tensor tokens =
      agla::decode_logits(row.expand({n, 8}).to(device()), aug.expand({n, 8}).to(device()), options, gen);
  const at::Tensor counts = at::bincount(tokens.cpu(), {}, 8).to(at::kDouble) / static_cast<double>(n);
  for (int64_t i = 0; i < 8; ++i) {
    const double p = probs[i].item<double>();
    const double se = std::sqrt(p * (1 - p) / static_cast<double>(n)) + 1e-9;
    EXPECT_NEAR(counts[i].item<double>(), p, 5 * se + 1e-6) << "token " << i;
  }
}

#ifdef AGLA_TEST_TORCH_HAS_CUDA
TEST(CudaDecodeTest, AStepSynchronisesWithTheHostOnlyWhenTheNanCheckAsks) {
  AGLA_REQUIRE_CUDA();
  // libtorch's synchronisation debug mode turns every host synchronisation into an error.
  const at::Tensor l = at::randn({4, 32000}, at::kCUDA), a = at::randn({4, 32000}, at::kCUDA);
  auto options = agla::DecodeOptions::agla();
  auto& state = c10::cuda::warning_state();
  const auto before = state.get_sync_debug_mode();
  int synchronising = 0;
  for (const agla::FiniteCheck check : {agla::FiniteCheck::Auto, agla::FiniteCheck::Never, agla::FiniteCheck::Always}) {
    options.finite_check = check;
    state.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
    try {
      for (int step = 0; step < 4; ++step) agla::decode_logits(l, a, options);
    } catch (const c10::Error&) {
      ++synchronising;
      EXPECT_EQ(check, agla::FiniteCheck::Always);
    }
    state.set_sync_debug_mode(before);
  }
  EXPECT_EQ(synchronising, 1);
}
#endif

TEST(CudaIpmTest, MatcherOnCudaAgreesWithCpu) {
  AGLA_REQUIRE_CUDA();
  const auto cpu_model = agla::blip::BlipItm::load(kData + "/blip/itm");
  const auto cuda_model = agla::blip::BlipItm::load(kData + "/blip/itm", {device(), at::kFloat});
  const at::Tensor image = agla::io::read_image(kData + "/blip/images/chelsea_32.png");
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> cpu(cpu_model), cuda(cuda_model);
  const auto a = cpu.match(image, "a cat on a sofa");
  const auto b = cuda.match(image, "a cat on a sofa");
  EXPECT_LT(max_diff(a.itm_logits, b.itm_logits), 1e-3);
  EXPECT_LT(max_diff(a.grid, b.grid), 1e-3 * (a.grid.abs().max().item<double>() + 1e-6));
  // The mask keeps the top patches by relevance: ties aside the kept patches are the same.
  EXPECT_LE((a.mask.cpu() != b.mask.cpu()).sum().item<int64_t>(), 2);
}

TEST(CudaLvlmTest, LlavaHalfPrecisionAndBatchedViewsAgreeWithFloat32) {
  AGLA_REQUIRE_CUDA();
  const auto ref = agla::io::SafetensorsFile::open(kData + "/llava/tiny_t/reference.safetensors");
  const at::Tensor ids = ref.tensor("input_ids"), pixels = ref.tensor("pixel_values");
  const auto inputs = agla::LvlmInputs::images(ids, pixels, {pixels.flip(-1)});
  auto cpu = agla::llava::LlavaLvlm::load(kData + "/llava/tiny_t");
  const at::Tensor expected = cpu(cpu.begin(inputs), agla::AllViews{});
  // float16 matrix products need a GPU; a CPU dry run checks float32 and bfloat16.
  std::vector<at::ScalarType> dtypes{at::kFloat, at::kBFloat16};
  if (device().is_cuda()) dtypes.push_back(at::kHalf);
  for (const at::ScalarType dtype : dtypes) {
    auto lvlm = agla::llava::LlavaLvlm::load(kData + "/llava/tiny_t", {device(), dtype});
    const at::Tensor batched = lvlm(lvlm.begin(inputs), agla::AllViews{});
    EXPECT_EQ(batched.device(), device());
    const double tolerance = dtype == at::kFloat ? 1e-4 : 0.05 * expected.abs().max().item<double>() + 0.05;
    EXPECT_LT(max_diff(batched, expected), tolerance) << dtype;
    // The plain form, view by view, gives the batched rows.
    auto plain = agla::llava::LlavaLvlm::load(kData + "/llava/tiny_t", {device(), dtype});
    const at::Tensor first = plain.begin(inputs);
    for (int32_t view = 0; view < 2; ++view)
      EXPECT_LT(max_diff(plain(first, agla::View{view}), batched.narrow(0, view, 1)), tolerance) << dtype;
  }
}

TEST(CudaLvlmTest, GenerateOnCudaGivesTheCpuGreedyTokens) {
  AGLA_REQUIRE_CUDA();
  const auto ref = agla::io::SafetensorsFile::open(kData + "/llava/tiny_t/reference.safetensors");
  const at::Tensor ids = ref.tensor("input_ids"), pixels = ref.tensor("pixel_values");
  auto options = agla::DecodeOptions::agla();
  options.greedy = true;
  agla::GenerateOptions limits;
  limits.max_new_tokens = 8;
  auto run = [&](at::Device device) {
    auto lvlm = agla::llava::LlavaLvlm::load(kData + "/llava/tiny_t", {device, at::kFloat});
    const at::Tensor prompt = lvlm.begin(agla::LvlmInputs::images(ids, pixels, {pixels.flip(-1)}, 8));
    return agla::generate(lvlm, prompt, options, limits).tokens.cpu();
  };
  EXPECT_TRUE(at::equal(run(device()), run(at::kCPU)));
}

}  // namespace
