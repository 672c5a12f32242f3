// Decoding speed of LLaVA-1.5 under AGLA: regular decoding, AGLA with one forward per view, and
// AGLA with both views in one batched forward, on a LLaVA-shaped model with random weights
// (sizes in bench/support/model_shapes.hpp; --llava-small for a quick check); and the same for every decoding
// method of docs/decoding.md (BM_LlavaMethod_*: one or two extra views of the method's kinds,
// PAI with its attention boost). Prints tokens per second and the ratios to regular decoding
// measured in the same process.
//
//   llava_bench [--threads N] [--llava-small] [google-benchmark flags]
//   llava_bench --benchmark_filter=Method      # the method table only
//
// On a machine shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE: libgomp's spinning
// workers otherwise compete with OpenBLAS's own threads (Debian's openblas-pthread), which made
// the two-row batched decode step 3-5x slower than two one-row steps in our runs.

#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "agla/models/llava.hpp"
#include "support/harness.hpp"
#include "support/model_shapes.hpp"
#include "support/lvlm_bench.hpp"

namespace {

namespace llava = agla::llava;

bool g_small = false;

struct BenchModel {
  llava::LlavaModel model{nullptr};
  at::Tensor prompt;     // [1, 60]: a POPE-length prompt with the image token at index 35
  at::Tensor disturbed;  // [1, 72]: ICD's text view, 12 more tokens where the system prompt is
  at::Tensor original;   // [1, 3, 224, 224]
  at::Tensor augmented;  // [1, 3, 224, 224]: the original with its right half blacked out
};

BenchModel& bench_model() {
  static BenchModel m = [] {
    BenchModel b;
    b.model = llava::LlavaModel(llava::parse_config(agla::bench::llava_bench_config(g_small)));
    auto [gen, count] = agla::bench::draw_bench_weights(*b.model);
    b.prompt = agla::bench::llava_bench_prompt(60, b.model->config().image_token_index, gen);
    b.disturbed = at::cat({b.prompt.narrow(1, 0, 1), at::randint(3, 31000, {1, 12}, gen, at::kLong),
                           b.prompt.narrow(1, 1, b.prompt.size(1) - 1)},
                          1);
    b.original = at::randn({1, 3, 224, 224}, gen);
    b.augmented = agla::bench::half_blacked_out(b.original);
    std::printf("LLaVA-shaped model: %.3f B parameters (float32), %lld image tokens, prompt %lld tokens\n",
                static_cast<double>(count) / 1e9, static_cast<long long>(b.model->config().image_tokens()),
                static_cast<long long>(b.prompt.size(1)));
    return b;
  }();
  return m;
}

// The LLaVA bench case: a fresh LlavaLvlm over the shared model; B copies of the prompt, the
// original image and its half-blacked-out view.
const agla::bench::LvlmCase<llava::LlavaLvlm>& bench_case() {
  static const agla::bench::LvlmCase<llava::LlavaLvlm> c{
      [] { return std::make_unique<llava::LlavaLvlm>(bench_model().model); },
      [](int64_t streams, int64_t max_new_tokens) {
        const auto& m = bench_model();
        return agla::bench::repeated_image_inputs(m.prompt, m.original, m.augmented, streams, max_new_tokens);
      },
      [](int64_t streams, int64_t max_new_tokens, const std::vector<agla::ViewKind>& kinds) {
        const auto& m = bench_model();
        agla::LvlmInputs inputs =
            agla::LvlmInputs::images(m.prompt.repeat({streams, 1}), m.original.repeat({streams, 1, 1, 1}), {},
                                     max_new_tokens);
        for (agla::ViewKind kind : kinds) {
          agla::ExtraView view{kind, {}, {}};
          if (kind == agla::ViewKind::Image) view.pixels = m.augmented.repeat({streams, 1, 1, 1});
          if (kind == agla::ViewKind::Text) view.prompt.ids = m.disturbed.repeat({streams, 1});
          inputs.views.push_back(view);
        }
        return inputs;
      },
      [](llava::LlavaLvlm& lvlm) { lvlm.set_pai_attention(llava::PaiAttention{}); }};
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  agla::bench::register_lvlm_benchmarks("BM_Llava", &bench_case());
  agla::bench::register_lvlm_method_benchmarks("BM_Llava", &bench_case());
  agla::bench::LvlmRatioReporter reporter("BM_Llava");
  return agla::bench::run_benchmarks(argc, argv, 0, &reporter, agla::bench::switch_flag("--llava-small", g_small));
}
