// BLIP at BLIP-large size with random weights (ViT-L/16 at 384 px: hidden 1024, 24 layers, 16 heads,
// MLP 4096; BERT-base text: hidden 768, 12 layers, 12 heads, intermediate 3072, cross-attention from
// 1024-wide image tokens) on CPU, float32: the image encoding, one ITM scoring (with and without the
// GradCAM gradient), one ITC scoring, and the captioner's per-token cost with the KV cache against
// re-running the whole sequence (HF without cache), reported as a ratio measured in the same run.
//
//   blip_bench [--threads N] [google-benchmark flags]
//
// "Time" is wall time, "CPU" the CPU time of the whole process (all intra-op threads): on a shared
// machine the second is the better measure of the work done.
#include <benchmark/benchmark.h>
#include <torch/autograd.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "agla/models/blip.hpp"
#include "support/harness.hpp"
#include "support/model_shapes.hpp"

namespace {

// A BLIP-large `Model` with PyTorch's initial weights drawn after `at::manual_seed(seed)`, wrapped
// with the BERT tokenizer.
template <class Wrapper, class Model>
Wrapper blip_large(std::uint64_t seed) {
  at::manual_seed(seed);
  Model module(agla::bench::blip_large_config());
  agla::models::init_parameters(*module);
  return Wrapper(module, agla::text::WordPieceTokenizer::bert_base_uncased());
}

agla::blip::BlipItm& itm() {
  static agla::blip::BlipItm model = blip_large<agla::blip::BlipItm, agla::blip::BlipItmModel>(0);
  return model;
}

agla::blip::BlipCaptioner& captioner() {
  static agla::blip::BlipCaptioner model = blip_large<agla::blip::BlipCaptioner, agla::blip::BlipCaptionModel>(1);
  return model;
}

at::Tensor random_pixels() {
  at::manual_seed(2);
  return at::randn({1, 3, 384, 384});
}

void BM_BlipEncodeImage(benchmark::State& state) {
  auto& model = itm();
  const at::Tensor pixels = random_pixels();
  for (auto _ : state) benchmark::DoNotOptimize(model.encode_image(pixels));
}

// One image's tokens and one question's ids, the inputs every ITM/ITC case scores.
struct ItmPair {
  at::Tensor image;
  agla::blip::TextBatch text;
};

const ItmPair& itm_pair() {
  static const ItmPair pair{itm().encode_image(random_pixels()),
                            itm().encode_text({"is there a dog sitting on the couch in the image?"})};
  return pair;
}

void BM_BlipItmLogits(benchmark::State& state) {
  const auto& [image, text] = itm_pair();
  for (auto _ : state) benchmark::DoNotOptimize(itm().itm_logits(image, text.itm_input_ids, text.attention_mask));
}

// What IPM runs per (image, prompt): the forward with the layer-6 capture and the gradient w.r.t. it.
void BM_BlipItmScoreWithGradient(benchmark::State& state) {
  const auto& [image, text] = itm_pair();
  for (auto _ : state) {
    const auto score = itm().score_itm(image, text.itm_input_ids, text.attention_mask, 6);
    benchmark::DoNotOptimize(torch::autograd::grad({score.logits.select(1, 1).sum()}, {score.attention}));
  }
}

void BM_BlipItcSimilarity(benchmark::State& state) {
  const auto& [image, text] = itm_pair();
  for (auto _ : state) benchmark::DoNotOptimize(itm().itc_similarity(image, text.input_ids, text.attention_mask));
}

// Per generated token at sequence length `state.range(0)`: one cached step (one new position) vs the
// uncached forward over the whole sequence, timed back to back in each iteration.
void BM_BlipCaptionPerToken(benchmark::State& state) {
  auto& model = captioner();
  const int64_t length = state.range(0);
  const at::Tensor pixels = random_pixels();
  const at::Tensor image = model.encode_image(pixels);
  at::manual_seed(3);
  const at::Tensor sequence = at::randint(1000, 2000, {1, length}, at::kLong);
  const agla::LvlmInputs inputs = agla::LvlmInputs::images(sequence.narrow(1, 0, length - 1), pixels);
  double cached_s = 0, uncached_s = 0, cached_cpu_s = 0, uncached_cpu_s = 0;
  int64_t steps = 0;
  using agla::bench::Clocks;
  for (auto _ : state) {
    benchmark::DoNotOptimize(model(model.begin(inputs), agla::View::Original));
    const Clocks t0 = Clocks::now();
    benchmark::DoNotOptimize(model(sequence.narrow(1, length - 1, 1), agla::View::Original));
    const Clocks t1 = Clocks::now();
    benchmark::DoNotOptimize(model.logits_full(image, sequence).select(1, length - 1));
    const Clocks t2 = Clocks::now();
    cached_s += (t1 - t0).wall;
    uncached_s += (t2 - t1).wall;
    cached_cpu_s += (t1 - t0).cpu;
    uncached_cpu_s += (t2 - t1).cpu;
    ++steps;
  }
  state.counters["cached_ms"] = 1e3 * cached_s / static_cast<double>(steps);
  state.counters["uncached_ms"] = 1e3 * uncached_s / static_cast<double>(steps);
  state.counters["uncached_over_cached"] = uncached_s / cached_s;
  state.counters["cached_cpu_ms"] = 1e3 * cached_cpu_s / static_cast<double>(steps);
  state.counters["uncached_cpu_ms"] = 1e3 * uncached_cpu_s / static_cast<double>(steps);
  state.counters["cpu_uncached_over_cached"] = uncached_cpu_s / cached_cpu_s;
}

}  // namespace

BENCHMARK(BM_BlipEncodeImage)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()->UseRealTime()->Iterations(2);
BENCHMARK(BM_BlipItmLogits)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()->UseRealTime()->Iterations(3);
BENCHMARK(BM_BlipItmScoreWithGradient)
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Iterations(3);
BENCHMARK(BM_BlipItcSimilarity)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()->UseRealTime()->Iterations(3);
BENCHMARK(BM_BlipCaptionPerToken)
    ->Arg(20)
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Iterations(3);

int main(int argc, char** argv) { return agla::bench::run_benchmarks(argc, argv, 0); }
