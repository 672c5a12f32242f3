// Decoding speed of LLaVA-1.5 under AGLA: regular decoding, AGLA with one forward per view, and
// AGLA with both views in one batched forward, on a LLaVA-shaped model with random weights
// (sizes below; override with --llava-small for a quick check). Prints tokens per second and the
// ratios to regular decoding measured in the same process.
//
//   llava_bench [--threads N] [--llava-small] [google-benchmark flags]
//
// On a machine shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE: libgomp's spinning
// workers otherwise compete with OpenBLAS's own threads (Debian's openblas-pthread), which made
// the two-row batched decode step 3-5x slower than two one-row steps in our runs.

#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agla/decode.hpp"
#include "agla/models/llava.hpp"
#include "support/harness.hpp"

namespace {

namespace llava = agla::llava;

bool g_small = false;

// LLaVA-1.5's layout at a size two CPU cores can run: a ~0.94 B-parameter LLaMA (hidden 2048,
// 16 layers, 32 heads, SwiGLU 5504, vocabulary 32000) behind a ViT-B-sized CLIP tower at 224 px
// with 14 px patches (256 image tokens, like LLaVA's 576 at a quarter of the pixels).
nlohmann::json bench_config() {
  nlohmann::json c;
  c["image_token_index"] = 31999;
  c["text_config"] = {{"hidden_size", g_small ? 256 : 2048},
                      {"intermediate_size", g_small ? 688 : 5504},
                      {"num_hidden_layers", g_small ? 2 : 16},
                      {"num_attention_heads", g_small ? 4 : 32},
                      {"num_key_value_heads", g_small ? 4 : 32},
                      {"vocab_size", 32000},
                      {"rms_norm_eps", 1e-5}};
  c["vision_config"] = {{"hidden_size", g_small ? 128 : 768},
                        {"intermediate_size", g_small ? 512 : 3072},
                        {"num_hidden_layers", g_small ? 2 : 12},
                        {"num_attention_heads", g_small ? 4 : 12},
                        {"image_size", 224},
                        {"patch_size", 14}};
  return c;
}

struct BenchModel {
  llava::LlavaModel model{nullptr};
  at::Tensor prompt;     // [1, 60]: a POPE-length prompt with the image token at index 35
  at::Tensor original;   // [1, 3, 224, 224]
  at::Tensor augmented;  // [1, 3, 224, 224]: the original with its right half blacked out
};

BenchModel& bench_model() {
  static BenchModel m = [] {
    BenchModel b;
    b.model = llava::LlavaModel(llava::parse_config(bench_config()));
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
    at::NoGradGuard no_grad;
    for (const auto& item : b.model->named_parameters(true)) {
      auto p = item.value();
      const std::string& name = item.key();
      const bool norm = name.find("norm") != std::string::npos || name.find("layrnorm") != std::string::npos;
      if (norm && name.find(".weight") != std::string::npos) {
        p.fill_(1.0);
      } else if (norm || name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
        p.zero_();
      } else {
        p.normal_(0.0, 0.02, gen);
      }
    }
    b.model->eval();
    b.prompt = at::randint(3, 31000, {1, 60}, gen, at::kLong);
    b.prompt[0][0] = 1;
    b.prompt[0][35] = b.model->config().image_token_index;
    b.original = at::randn({1, 3, 224, 224}, gen);
    b.augmented = b.original.clone();
    b.augmented.narrow(3, 112, 112).fill_(0.0);
    std::size_t count = 0;
    for (const auto& p : b.model->parameters()) count += static_cast<std::size_t>(p.numel());
    std::printf("LLaVA-shaped model: %.3f B parameters (float32), %lld image tokens, prompt %lld tokens\n",
                static_cast<double>(count) / 1e9, static_cast<long long>(b.model->config().image_tokens()),
                static_cast<long long>(b.prompt.size(1)));
    return b;
  }();
  return m;
}

// Exposes only the plain form, so that agla::decode_step runs one forward per view.
struct SequentialViews {
  llava::LlavaLvlm* lvlm;
  at::Tensor operator()(const at::Tensor& tokens, agla::View view) { return (*lvlm)(tokens, view); }
};

enum class Mode { Regular, AglaSequential, AglaBatched };

agla::DecodeOptions options_for(Mode mode) {
  agla::DecodeOptions options;  // the reference's alpha 2, beta 0.5, sampling at temperature 1
  if (mode == Mode::Regular) options.method = agla::FusionMethod::Plain;
  return options;
}

at::Tensor run_step(Mode mode, llava::LlavaLvlm& lvlm, const at::Tensor& tokens, const agla::DecodeOptions& options,
                    const at::Generator& gen) {
  if (mode == Mode::AglaSequential) return agla::decode_step(SequentialViews{&lvlm}, tokens, options, gen);
  return agla::decode_step(lvlm, tokens, options, gen);
}

// One generated token per stream per iteration, after a prefill outside the timed loop.
void decode_bench(benchmark::State& state, Mode mode) {
  auto& m = bench_model();
  const int64_t streams = state.range(0);
  const auto prompt = m.prompt.repeat({streams, 1});
  llava::LlavaLvlm lvlm(m.model);
  lvlm.begin(agla::LvlmInputs::images(prompt, m.original.repeat({streams, 1, 1, 1}),
                                       {m.augmented.repeat({streams, 1, 1, 1})}, 64));
  const auto options = options_for(mode);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto tokens = run_step(mode, lvlm, prompt, options, gen).unsqueeze(1);
  for (auto _ : state) {
    tokens = run_step(mode, lvlm, tokens, options, gen).unsqueeze(1);
    benchmark::DoNotOptimize(tokens.data_ptr());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(streams * state.iterations()), benchmark::Counter::kIsRate);
}

// The three modes step by step in turn (regular, sequential, batched), so that the load of a shared
// machine falls on all of them alike; reports each AGLA mode's throughput relative to regular.
void BM_LlavaDecodeInterleaved(benchmark::State& state) {
  auto& m = bench_model();
  const int64_t streams = state.range(0);
  const auto prompt = m.prompt.repeat({streams, 1});
  const std::array<Mode, 3> modes{Mode::Regular, Mode::AglaSequential, Mode::AglaBatched};
  std::vector<std::unique_ptr<llava::LlavaLvlm>> lvlms;
  std::vector<at::Tensor> tokens;
  std::array<agla::bench::Clocks, 3> spent{};
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (Mode mode : modes) {
    lvlms.push_back(std::make_unique<llava::LlavaLvlm>(m.model));
    lvlms.back()->begin(agla::LvlmInputs::images(prompt, m.original.repeat({streams, 1, 1, 1}),
                                                {m.augmented.repeat({streams, 1, 1, 1})}, 64));
    tokens.push_back(run_step(mode, *lvlms.back(), prompt, options_for(mode), gen).unsqueeze(1));
  }
  for (auto _ : state) {
    for (size_t i = 0; i < modes.size(); ++i) {
      const agla::bench::Clocks start = agla::bench::Clocks::now();
      tokens[i] = run_step(modes[i], *lvlms[i], tokens[i], options_for(modes[i]), gen).unsqueeze(1);
      const agla::bench::Clocks took = agla::bench::Clocks::now() - start;
      spent[i].wall += took.wall;
      spent[i].cpu += took.cpu;
    }
  }
  const double n = static_cast<double>(streams * state.iterations());
  state.counters["regular_tok/s"] = n / spent[0].wall;
  state.counters["seq_wall"] = spent[0].wall / spent[1].wall;
  state.counters["seq_cpu"] = spent[0].cpu / spent[1].cpu;
  state.counters["batched_wall"] = spent[0].wall / spent[2].wall;
  state.counters["batched_cpu"] = spent[0].cpu / spent[2].cpu;
}

// The prompt step (vision tower, splice, LLaMA over the merged prompt) and its first token.
void prefill_bench(benchmark::State& state, Mode mode) {
  auto& m = bench_model();
  const auto options = options_for(mode);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  llava::LlavaLvlm lvlm(m.model);
  for (auto _ : state) {
    lvlm.begin(agla::LvlmInputs::images(m.prompt, m.original, {m.augmented}, 8));
    auto token = run_step(mode, lvlm, m.prompt, options, gen);
    benchmark::DoNotOptimize(token.data_ptr());
  }
  state.counters["prompts/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_LlavaDecodeRegular(benchmark::State& state) { decode_bench(state, Mode::Regular); }
void BM_LlavaDecodeAglaSequential(benchmark::State& state) { decode_bench(state, Mode::AglaSequential); }
void BM_LlavaDecodeAglaBatched(benchmark::State& state) { decode_bench(state, Mode::AglaBatched); }
void BM_LlavaPrefillRegular(benchmark::State& state) { prefill_bench(state, Mode::Regular); }
void BM_LlavaPrefillAglaSequential(benchmark::State& state) { prefill_bench(state, Mode::AglaSequential); }
void BM_LlavaPrefillAglaBatched(benchmark::State& state) { prefill_bench(state, Mode::AglaBatched); }

BENCHMARK(BM_LlavaDecodeRegular)
    ->Arg(1)
    ->Arg(4)
    ->Iterations(12)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();
BENCHMARK(BM_LlavaDecodeAglaSequential)
    ->Arg(1)
    ->Arg(4)
    ->Iterations(12)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();
BENCHMARK(BM_LlavaDecodeAglaBatched)
    ->Arg(1)
    ->Arg(4)
    ->Iterations(12)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();
BENCHMARK(BM_LlavaDecodeInterleaved)
    ->Arg(1)
    ->Arg(4)
    ->Iterations(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();
BENCHMARK(BM_LlavaPrefillRegular)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(BM_LlavaPrefillAglaSequential)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();
BENCHMARK(BM_LlavaPrefillAglaBatched)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();

// Console output plus the seconds per iteration of every run, for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      if (run.error_occurred || run.run_type != Run::RT_Iteration || run.iterations == 0) continue;
      const auto n = static_cast<double>(run.iterations);
      seconds_[run.benchmark_name()] = {run.real_accumulated_time / n, run.cpu_accumulated_time / n};
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    print_ratios();
  }

  // Ratios of wall-clock and of process CPU time (the latter is steadier on a shared machine).
  void print_ratios() const {
    std::printf("\nThroughput relative to regular decoding (same process; > 1 is faster), wall / CPU time:\n");
    for (const char* kind : {"Decode", "Prefill"}) {
      for (const std::string arg : {"/1", "/4", ""}) {
        const std::string suffix =
            arg + "/iterations:" + (std::strcmp(kind, "Decode") == 0 ? "12" : "1") + "/process_time/real_time";
        const auto base = seconds_.find(std::string("BM_Llava") + kind + "Regular" + suffix);
        if (base == seconds_.end()) continue;
        std::printf("  %-7s streams %-2s regular 1.00", kind, arg.empty() ? "1" : arg.c_str() + 1);
        for (const char* mode : {"AglaSequential", "AglaBatched"}) {
          const auto it = seconds_.find(std::string("BM_Llava") + kind + mode + suffix);
          if (it == seconds_.end()) continue;
          std::printf("  %s %.2f / %.2f", mode, base->second.first / it->second.first,
                      base->second.second / it->second.second);
        }
        std::printf("\n");
      }
    }
  }

 private:
  std::map<std::string, std::pair<double, double>> seconds_;  // name -> {wall, CPU} seconds per iteration
};

}  // namespace

int main(int argc, char** argv) {
  RatioReporter reporter;
  return agla::bench::run_benchmarks(argc, argv, 0, &reporter, [](const char* arg) {
    if (std::strcmp(arg, "--llava-small") != 0) return false;
    g_small = true;
    return true;
  });
}
