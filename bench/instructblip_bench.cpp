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
#include <cstring>
#include <memory>

#include "agla/models/instructblip.hpp"
#include "support/harness.hpp"
#include "support/lvlm_bench.hpp"

namespace {

namespace ib = agla::instructblip;

bool g_small = false;

// InstructBLIP-Vicuna-7B's layout at a size two CPU cores can run: the ~0.94 B-parameter LLaMA of
// llava_bench (hidden 2048, 16 layers, 32 heads, SwiGLU 5504, vocabulary 32000) behind a 6-layer
// ViT-B-wide vision encoder at 224 px with 14 px patches (257 image tokens, as EVA-ViT-g's) and a
// 4-layer BERT-base Q-Former (cross-attention every second layer) with the released 32 queries.
nlohmann::json bench_config() {
  nlohmann::json c;
  c["num_query_tokens"] = 32;
  c["text_config"] = {{"model_type", "llama"},
                      {"hidden_size", g_small ? 256 : 2048},
                      {"intermediate_size", g_small ? 688 : 5504},
                      {"num_hidden_layers", g_small ? 2 : 16},
                      {"num_attention_heads", g_small ? 4 : 32},
                      {"num_key_value_heads", g_small ? 4 : 32},
                      {"vocab_size", 32000}};
  c["vision_config"] = {{"hidden_size", g_small ? 128 : 768},
                        {"intermediate_size", g_small ? 512 : 3072},
                        {"num_hidden_layers", g_small ? 2 : 6},
                        {"num_attention_heads", g_small ? 4 : 12},
                        {"image_size", 224},
                        {"patch_size", 14}};
  c["qformer_config"] = {{"hidden_size", g_small ? 128 : 768},
                         {"intermediate_size", g_small ? 512 : 3072},
                         {"num_hidden_layers", g_small ? 2 : 4},
                         {"num_attention_heads", g_small ? 4 : 12}};
  return c;
}

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
    b.model = ib::InstructBlipModel(ib::parse_config(bench_config()));
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
    agla::bench::init_bench_weights(*b.model, gen);
    b.model->eval();
    b.prompt = at::randint(3, 31000, {1, 20}, gen, at::kLong);
    b.prompt[0][0] = 2;  // the checkpoint's BOS, </s>
    b.instruction = at::randint(1000, 30000, {1, 20}, gen, at::kLong);
    b.instruction[0][0] = 101;
    b.instruction[0][19] = 102;
    b.original = at::randn({1, 3, 224, 224}, gen);
    b.augmented = b.original.clone();
    b.augmented.narrow(3, 112, 112).fill_(0.0);
    std::size_t count = 0;
    for (const auto& p : b.model->parameters()) count += static_cast<std::size_t>(p.numel());
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
        auto inputs = agla::LvlmInputs::images(m.prompt.repeat({streams, 1}), m.original.repeat({streams, 1, 1, 1}),
                                               {m.augmented.repeat({streams, 1, 1, 1})}, max_new_tokens);
        inputs.prompt.instruction_ids = m.instruction.repeat({streams, 1});
        return inputs;
      }};
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  agla::bench::register_lvlm_benchmarks("BM_InstructBlip", &bench_case());
  agla::bench::LvlmRatioReporter reporter("BM_InstructBlip");
  return agla::bench::run_benchmarks(argc, argv, 0, &reporter, [](const char* arg) {
    if (std::strcmp(arg, "--instructblip-small") != 0) return false;
    g_small = true;
    return true;
  });
}
