// Per-step overhead of the AGLA decoding step, the forward pass excluded (the functor hands out
// precomputed logits), for B in {1, 8} streams and V in {32000 (LLaMA/Vicuna), 152064 (Qwen2)}.
// Settings: the reference's (alpha 2, beta 0.5, no warper active), float32, CPU. Measured in this
// one process:
//   BM_DecodeFloor             (d) one pass that reads both logit arrays once (max of l + l_aug);
//   BM_DecodeReferenceWay      (c) the reference's op sequence (AGLA eval/sample.py): log(beta) +
//                              max, l + alpha * l_aug, masked_fill, softmax, torch.multinomial;
//   BM_DecodeTorch             (a) agla::decode_step, multinomial (and BM_DecodeTorchGreedy);
//   BM_DecodeRawFast / Greedy / TorchCompatible
//                              (b) agla::raw::Decoder with the fast sampler, greedy, and the
//                              PyTorch-compatible sampler (2 MT19937 outputs per token and row).
// Each benchmark reports counters x_floor and x_reference: its time over (d) and over (c) of the
// same B and V measured earlier in this run; a table of all ratios is printed at exit. Ratios use
// process CPU time, which a busy machine disturbs less than wall time.
// Targets: (b) fast and greedy <= 3x (d) at V = 32000, B = 1; (a) faster than (c).
// `--threads N` sets libtorch's intra-op threads (default 1: the step runs on the decode thread).
#include "agla/decode/raw.hpp"
#if defined(C10_API) || defined(TORCH_API)
#error "agla/decode/raw.hpp must not include libtorch"
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "agla/decode.hpp"
#include "support/harness.hpp"

namespace {

using Key = std::pair<std::int64_t, std::int64_t>;  // (B, V)

// Seconds per step of each benchmark, by (B, V), from its last run.
std::map<std::string, std::map<Key, double>>& timings() {
  static std::map<std::string, std::map<Key, double>> table;
  return table;
}

// Prints every ratio at exit, after Google Benchmark's own report.
struct RatioTable {
  RatioTable() { timings(); }  // constructed first, so the table outlives this printer
  ~RatioTable() {
    const auto& table = timings();
    if (table.count("floor") == 0 || table.count("reference") == 0) return;
    std::printf("\nDecode step, time per step and ratios (same run):\n");
    std::printf("%-18s %3s %7s %15s %9s %9s\n", "path", "B", "V", "CPU us/step", "x_floor", "x_ref");
    for (const auto& [name, rows] : table) {
      for (const auto& [key, seconds] : rows) {
        const auto floor = table.at("floor").find(key);
        const auto reference = table.at("reference").find(key);
        std::printf("%-18s %3lld %7lld %15.2f %9.2f %9.3f\n", name.c_str(),
                    static_cast<long long>(key.first), static_cast<long long>(key.second), seconds * 1e6,
                    floor != table.at("floor").end() ? seconds / floor->second : 0.0,
                    reference != table.at("reference").end() ? seconds / reference->second : 0.0);
      }
    }
  }
} ratio_table;

// Logits with an LLM-like spread: Gaussian scores, std 3 (a handful of tokens pass beta = 0.5).
struct Inputs {
  at::Tensor logits;      // [B, V]
  at::Tensor logits_aug;  // [B, V]
  at::Tensor both;        // [2B, V], original rows first
};

const Inputs& inputs(std::int64_t batch, std::int64_t vocab) {
  static std::map<Key, Inputs> cache;
  auto found = cache.find({batch, vocab});
  if (found != cache.end()) return found->second;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(7);
  Inputs in;
  in.both = at::randn({2 * batch, vocab}, generator) * 3.0;
  in.logits = in.both.narrow(0, 0, batch);
  in.logits_aug = in.both.narrow(0, batch, batch);
  return cache.emplace(Key{batch, vocab}, in).first->second;
}

// Times the loop itself (besides Google Benchmark) so later benchmarks can report ratios.
template <typename Body>
void timed_loop(benchmark::State& state, const std::string& name, Body&& body) {
  const std::int64_t batch = state.range(0);
  const std::int64_t vocab = state.range(1);
  const double start = agla::bench::Clocks::now().cpu;
  for (auto _ : state) body();
  const double seconds = (agla::bench::Clocks::now().cpu - start) / static_cast<double>(state.iterations());
  timings()[name][{batch, vocab}] = seconds;
  for (const char* baseline : {"floor", "reference"}) {
    const auto& rows = timings()[baseline];
    const auto found = rows.find({batch, vocab});
    if (found != rows.end()) state.counters[std::string("x_") + baseline] = seconds / found->second;
  }
}

// The functor: precomputed logits of both views in the batched form.
struct PrecomputedForward {
  at::Tensor both;
  at::Tensor operator()(const at::Tensor& /*step_tokens*/, agla::BothViews) const { return both; }
};

void BM_DecodeFloor(benchmark::State& state) {
  const Inputs& in = inputs(state.range(0), state.range(1));
  const std::int64_t batch = state.range(0);
  const std::int64_t vocab = state.range(1);
  const float* logits = in.logits.data_ptr<float>();
  const float* logits_aug = in.logits_aug.data_ptr<float>();
  timed_loop(state, "floor", [&] {
    float sink = 0.0f;
    for (std::int64_t b = 0; b < batch; ++b) {
      const Eigen::Map<const Eigen::ArrayXf> l(logits + b * vocab, vocab);
      const Eigen::Map<const Eigen::ArrayXf> a(logits_aug + b * vocab, vocab);
      sink += (l + a).maxCoeff();
    }
    benchmark::DoNotOptimize(sink);
  });
}

void BM_DecodeReferenceWay(benchmark::State& state) {
  const Inputs& in = inputs(state.range(0), state.range(1));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
  const double alpha = 2.0;
  const double beta = 0.5;
  timed_loop(state, "reference", [&] {
    // AGLA eval/sample.py, one op per line as upstream.
    const at::Tensor cutoff = at::log(at::scalar_tensor(beta, at::kFloat)) +
                              std::get<0>(in.logits.max(-1, /*keepdim=*/true));
    const at::Tensor diffs = in.logits + alpha * in.logits_aug;
    const at::Tensor cd_logits = diffs.masked_fill(in.logits < cutoff, -std::numeric_limits<float>::infinity());
    const at::Tensor cd_probs = cd_logits.softmax(-1);
    at::Tensor next = at::multinomial(cd_probs, 1, false, generator).squeeze(1);
    benchmark::DoNotOptimize(next.data_ptr<std::int64_t>());
  });
}

void torch_path(benchmark::State& state, const char* name, bool greedy) {
  const Inputs& in = inputs(state.range(0), state.range(1));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
  PrecomputedForward forward{in.both};
  const at::Tensor step_tokens = at::zeros({state.range(0), 1}, at::kLong);
  agla::DecodeOptions options;
  options.greedy = greedy;
  const agla::OptionsPolicies policies = agla::policies_from(options);
  timed_loop(state, name, [&] {
    at::Tensor next = agla::decode_step(forward, step_tokens, policies, generator);
    benchmark::DoNotOptimize(next.data_ptr<std::int64_t>());
  });
}

void BM_DecodeTorch(benchmark::State& state) { torch_path(state, "torch", false); }
void BM_DecodeTorchGreedy(benchmark::State& state) { torch_path(state, "torch_greedy", true); }

template <typename Sampler>
void raw_path(benchmark::State& state, const char* name, Sampler sampler) {
  const Inputs& in = inputs(state.range(0), state.range(1));
  const std::int64_t batch = state.range(0);
  const std::int64_t vocab = state.range(1);
  agla::raw::Decoder<> decoder(agla::DecodeOptions{});
  std::vector<std::int64_t> tokens(static_cast<size_t>(batch));
  const float* logits = in.logits.data_ptr<float>();
  const float* logits_aug = in.logits_aug.data_ptr<float>();
  decoder.step(logits, logits_aug, batch, vocab, sampler, tokens.data());  // warm-up: sizes the workspace
  timed_loop(state, name, [&] {
    decoder.step(logits, logits_aug, batch, vocab, sampler, tokens.data());
    benchmark::DoNotOptimize(tokens.data());
  });
  state.counters["kept"] = static_cast<double>(decoder.stats(0).n_kept);
}

void BM_DecodeRawFast(benchmark::State& state) { raw_path(state, "raw_fast", agla::raw::FastSampler<>(1)); }
void BM_DecodeRawGreedy(benchmark::State& state) { raw_path(state, "raw_greedy", agla::raw::GreedySampler{}); }
void BM_DecodeRawTorchCompatible(benchmark::State& state) {
  raw_path(state, "raw_torch_compat", agla::raw::TorchSampler(1));
}

void shapes(benchmark::internal::Benchmark* bench) {
  bench->ArgNames({"B", "V"});
  for (std::int64_t batch : {1, 8})
    for (std::int64_t vocab : {32000, 152064}) bench->Args({batch, vocab});
  bench->Unit(benchmark::kMicrosecond);
}

// Baselines first: later benchmarks divide by their times.
BENCHMARK(BM_DecodeFloor)->Apply(shapes);
BENCHMARK(BM_DecodeReferenceWay)->Apply(shapes);
BENCHMARK(BM_DecodeTorch)->Apply(shapes);
BENCHMARK(BM_DecodeTorchGreedy)->Apply(shapes);
BENCHMARK(BM_DecodeRawFast)->Apply(shapes);
BENCHMARK(BM_DecodeRawGreedy)->Apply(shapes);
BENCHMARK(BM_DecodeRawTorchCompatible)->Apply(shapes);

}  // namespace

int main(int argc, char** argv) { return agla::bench::run_benchmarks(argc, argv, 1); }
