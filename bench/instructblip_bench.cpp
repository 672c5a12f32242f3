// Decoding speed of InstructBLIP-Vicuna under AGLA: regular decoding, AGLA with one forward per
// view, and AGLA with both views in one batched forward (both images through the vision encoder
// and the Q-Former in one batch at the prefill, then one language-model forward for both rows), on
// an InstructBLIP-shaped model with random weights (sizes below; --instructblip-small for a quick
// check). Prints tokens per second, the prefill time per question, and the ratios to regular
// decoding measured in the same process.
//
//   instructblip_bench [--threads N] [--instructblip-small] [google-benchmark flags]
//
// Run with OMP_WAIT_POLICY=PASSIVE on a shared machine (see llava_bench.cpp).

#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>

#include "agla/models/instructblip.hpp"
#include "support/harness.hpp"
#include "support/lvlm_bench.hpp"
#include "support/model_shapes.hpp"

namespace {

namespace ib = agla::instructblip;

bool g_small = false;


struct BenchModel {
  ib::InstructBlipModel model{nullptr};
  at::Tensor prompt;       // [1, 20]: BOS + a POPE question with its suffix (the language model's ids)
  at::Tensor instruction;  // [1, 20]: [CLS] the same question [SEP] (the Q-Former's ids)
  at::Tensor original;     // [1, 3, 224, 224]
  at::Tensor augmented;    // [1, 3, 224, 224]: the original with its right half blacked out
};

BenchModel& bench_model() {
  static BenchModel m = [] {
    BenchModel b;
    b.model = ib::InstructBlipModel(ib::parse_config(agla::bench::instructblip_bench_config(g_small)));
    auto [gen, count] = agla::bench::draw_bench_weights(*b.model);
    b.prompt = agla::bench::bench_prompt(20, 2, gen);  // BOS: the checkpoint's </s>
    b.instruction = at::randint(1000, 30000, {1, 20}, gen, at::kLong);
    b.instruction[0][0] = 101;
    b.instruction[0][19] = 102;
    b.original = at::randn({1, 3, 224, 224}, gen);
    b.augmented = agla::bench::half_blacked_out(b.original);
    const auto& c = b.model->config();
    std::printf(
        "InstructBLIP-shaped model: %.3f B parameters (float32), %lld image tokens, %lld queries, prompt %lld "
        "tokens, instruction %lld tokens\n",
        static_cast<double>(count) / 1e9, static_cast<long long>(c.vision.num_patches() + 1),
        static_cast<long long>(c.num_query_tokens), static_cast<long long>(b.prompt.size(1)),
        static_cast<long long>(b.instruction.size(1)));
    return b;
  }();
  return m;
}

// A fresh InstructBlipLvlm over the shared model; B copies of the prompt and instruction, the
// original image and its half-blacked-out view.
const agla::bench::LvlmCase<ib::InstructBlipLvlm>& bench_case() {
  static const agla::bench::LvlmCase<ib::InstructBlipLvlm> c{
      [] { return std::make_unique<ib::InstructBlipLvlm>(bench_model().model); },
      [](int64_t streams, int64_t max_new_tokens) {
        const auto& m = bench_model();
        auto inputs = agla::bench::repeated_image_inputs(m.prompt, m.original, m.augmented, streams, max_new_tokens);
        inputs.prompt.instruction_ids = m.instruction.repeat({streams, 1});
        return inputs;
      }};
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  agla::bench::register_lvlm_benchmarks("BM_InstructBlip", &bench_case());
  agla::bench::LvlmRatioReporter reporter("BM_InstructBlip");
  return agla::bench::run_benchmarks(argc, argv, 0, &reporter,
                                     agla::bench::switch_flag("--instructblip-small", g_small));
}
