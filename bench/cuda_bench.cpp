// The CUDA path's costs as ratios measured in this one process (bench/gpu/check.sh runs it on a GPU
// machine; without a CUDA device every benchmark reports "no CUDA device" and the program exits 0):
//   BM_CudaDecodeOverhead/V/B  one AGLA decoding step (fusion, cutoff, sampling; no NaN check) on
//                              [B, V] logits against a floor kernel that reads both logit arrays once;
//   BM_CudaLlavaDecode/B       AGLA with both views in one batched forward against regular decoding,
//                              tokens/s of a LLaVA-shaped model in float16 (steps interleaved);
//   BM_CudaIpm                 IPM (ImagePromptMatcher::match) against one plain ITM forward at
//                              BLIP-large size, float32.
// Every timed region ends with a device synchronisation, so the figures are device time.
//
//   cuda_bench [--threads N] [google-benchmark flags]

#include <ATen/Context.h>
#include <benchmark/benchmark.h>
#include <torch/cuda.h>

#include <chrono>
#include <string>

#include "agla/agla.hpp"
#include "support/harness.hpp"
#include "support/model_shapes.hpp"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool skip_without_cuda(benchmark::State& state) {
  if (torch::cuda::is_available()) return false;
  state.SkipWithError("no CUDA device");
  for (auto _ : state) {
  }
  return true;
}

void BM_CudaDecodeOverhead(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  const int64_t v = state.range(0), b = state.range(1);
  const at::Tensor l = at::randn({b, v}, at::kCUDA), a = at::randn({b, v}, at::kCUDA);
  auto options = agla::DecodeOptions::agla();
  options.finite_check = agla::FiniteCheck::Never;
  const at::Generator gen = at::globalContext().defaultGenerator(at::kCUDA);
  const int repeats = 200;
  double floor_s = 0, step_s = 0;
  for (auto _ : state) {
    torch::cuda::synchronize();
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) benchmark::DoNotOptimize((l + a).amax(-1));
    torch::cuda::synchronize();
    floor_s += seconds_since(start);
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) benchmark::DoNotOptimize(agla::decode_logits(l, a, options, gen));
    torch::cuda::synchronize();
    step_s += seconds_since(start);
  }
  const double n = static_cast<double>(repeats * state.iterations());
  state.counters["floor_us"] = 1e6 * floor_s / n;
  state.counters["step_us"] = 1e6 * step_s / n;
  state.counters["step/floor"] = step_s / floor_s;
}

// llava_bench's LLaVA-shaped model in float16 on the GPU.
agla::llava::LlavaModel llava_model() {
  torch::manual_seed(0);
  agla::llava::LlavaModel model(agla::llava::parse_config(agla::bench::llava_bench_config()));
  agla::models::init_parameters(*model);
  model->to(at::kCUDA, at::kHalf);
  model->eval();
  return model;
}

void BM_CudaLlavaDecode(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  static const agla::llava::LlavaModel model = llava_model();
  const int64_t streams = state.range(0);
  at::Tensor prompt = at::randint(3, 31000, {1, 60}, at::kLong);
  prompt[0][0] = 1;
  prompt[0][35] = 31999;
  const at::Tensor pixels = at::randn({1, 3, 224, 224});
  const auto inputs = agla::LvlmInputs::images(prompt.repeat({streams, 1}), pixels.repeat({streams, 1, 1, 1}),
                                               {pixels.flip(-1).repeat({streams, 1, 1, 1})}, 256);
  auto regular_options = agla::DecodeOptions::regular();
  auto agla_options = agla::DecodeOptions::agla();
  regular_options.finite_check = agla_options.finite_check = agla::FiniteCheck::Never;
  const at::Generator gen = at::globalContext().defaultGenerator(at::kCUDA);
  agla::llava::LlavaLvlm regular(model), both(model);
  at::Tensor regular_tokens = agla::decode_step(regular, regular.begin(inputs), regular_options, gen).unsqueeze(1);
  at::Tensor agla_tokens = agla::decode_step(both, both.begin(inputs), agla_options, gen).unsqueeze(1);
  double regular_s = 0, agla_s = 0;
  for (auto _ : state) {
    torch::cuda::synchronize();
    auto start = std::chrono::steady_clock::now();
    regular_tokens = agla::decode_step(regular, regular_tokens, regular_options, gen).unsqueeze(1);
    torch::cuda::synchronize();
    regular_s += seconds_since(start);
    start = std::chrono::steady_clock::now();
    agla_tokens = agla::decode_step(both, agla_tokens, agla_options, gen).unsqueeze(1);
    torch::cuda::synchronize();
    agla_s += seconds_since(start);
  }
  const double n = static_cast<double>(streams * state.iterations());
  state.counters["regular_tok/s"] = n / regular_s;
  state.counters["agla_tok/s"] = n / agla_s;
  state.counters["agla/regular"] = regular_s / agla_s;
}

void BM_CudaIpm(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  torch::manual_seed(0);
  agla::blip::BlipItmModel module(agla::bench::blip_large_config());
  agla::models::init_parameters(*module);
  module->to(at::kCUDA);
  const agla::blip::BlipItm model(module, agla::text::WordPieceTokenizer::bert_base_uncased());
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(model);
  const at::Tensor image = at::randint(0, 256, {480, 640, 3}, at::kByte);
  const std::string prompt = "Is there a dog in the image? Please answer this question with one word.";
  auto plain = [&] {
    const at::Tensor pixels = matcher.pixel_values(matcher.resize_for_model(image));
    const auto text = model.encode_text({prompt});
    return model.itm_logits(model.encode_image(pixels), text.itm_input_ids, text.attention_mask);
  };
  benchmark::DoNotOptimize(plain());
  benchmark::DoNotOptimize(matcher.match(image, prompt).mask);
  double plain_s = 0, ipm_s = 0;
  for (auto _ : state) {
    torch::cuda::synchronize();
    auto start = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(plain());
    torch::cuda::synchronize();
    plain_s += seconds_since(start);
    start = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(matcher.match(image, prompt).mask);
    torch::cuda::synchronize();
    ipm_s += seconds_since(start);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["itm_ms"] = 1e3 * plain_s / n;
  state.counters["ipm_ms"] = 1e3 * ipm_s / n;
  state.counters["ipm/itm"] = ipm_s / plain_s;
}

}  // namespace

BENCHMARK(BM_CudaDecodeOverhead)->ArgsProduct({{32000, 152064}, {1, 8}})->Iterations(5)->UseRealTime();
BENCHMARK(BM_CudaLlavaDecode)->Arg(1)->Arg(8)->Iterations(32)->UseRealTime();
BENCHMARK(BM_CudaIpm)->Iterations(5)->UseRealTime();

int main(int argc, char** argv) { return agla::bench::run_benchmarks(argc, argv, 0); }
