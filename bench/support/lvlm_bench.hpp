// Decoding-speed measurements every LVLM bench program shares (llava_bench, instructblip_bench):
// regular decoding, AGLA with one forward per view, and AGLA with both views in one batched
// forward, on any LVLM of the contract in agla/models/lvlm.hpp; the same for every decoding method
// of docs/decoding.md (K = 1 or 2 extra views of each kind); and the ratio tables printed after the
// run. A program supplies its model through an `LvlmCase` and registers the benchmarks.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <torch/nn/module.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agla/decode.hpp"
#include "agla/models/lvlm.hpp"
#include "support/harness.hpp"

namespace agla::bench {

/// Random weights for a model trained by nobody: norm weights 1, norm and linear biases 0, every
/// other parameter N(0, 0.02) from `gen` (activations stay O(1) through deep stacks).
inline void init_bench_weights(torch::nn::Module& model, at::Generator& gen) {
  at::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters(true)) {
    auto p = item.value();
    std::string name = item.key();
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
    const bool norm = name.find("norm") != std::string::npos;  // layernorm, layer_norm1, pre_layrnorm, norm
    if (norm && name.find(".weight") != std::string::npos) {
      p.fill_(1.0);
    } else if (norm || (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0)) {
      p.zero_();
    } else {
      p.normal_(0.0, 0.02, gen);
    }
  }
}

/// What drawing a bench model leaves: the generator (seed 1234, after the weights) that draws its
/// inputs next, and the model's parameter count.
struct BenchDraw {
  at::Generator gen;
  std::size_t parameters = 0;
};

/// Bench weights (`init_bench_weights`, seed 1234) for `model`, in eval mode.
inline BenchDraw draw_bench_weights(torch::nn::Module& model) {
  BenchDraw draw{at::make_generator<at::CPUGeneratorImpl>(1234)};
  init_bench_weights(model, draw.gen);
  model.eval();
  for (const auto& p : model.parameters()) draw.parameters += static_cast<std::size_t>(p.numel());
  return draw;
}

/// Random language-model ids `[1, length]` in [3, 31000) (clear of the special ids) from `gen`,
/// `first` (the BOS) at position 0.
inline at::Tensor bench_prompt(int64_t length, int64_t first, at::Generator& gen) {
  at::Tensor ids = at::randint(3, 31000, {1, length}, gen, at::kLong);
  ids[0][0] = first;
  return ids;
}

/// A llava_v1-shaped prompt `[1, length]` (length > 35): BOS, 34 ids where the system prompt and
/// "USER:" stand, `image_token`, then question ids; random ids from `gen`.
inline at::Tensor llava_bench_prompt(int64_t length, int64_t image_token, at::Generator& gen) {
  at::Tensor ids = bench_prompt(length, 1, gen);
  ids[0][35] = image_token;
  return ids;
}

/// The benches' augmented view: `original` with its right half blacked out.
inline at::Tensor half_blacked_out(const at::Tensor& original) {
  at::Tensor view = original.clone();
  view.narrow(3, view.size(3) / 2, view.size(3) - view.size(3) / 2).fill_(0.0);
  return view;
}

/// `streams` copies of `prompt` `[1, L]` and `original` `[1, 3, S, S]` with `augmented` as the one
/// image view: the inputs of the AGLA cases.
inline LvlmInputs repeated_image_inputs(const at::Tensor& prompt, const at::Tensor& original,
                                        const at::Tensor& augmented, int64_t streams, int64_t max_new_tokens) {
  return LvlmInputs::images(prompt.repeat({streams, 1}), original.repeat({streams, 1, 1, 1}),
                            {augmented.repeat({streams, 1, 1, 1})}, max_new_tokens);
}

/// A flag of the harness (`run_benchmarks`' `own_flag`) that sets `on` when the argument is `flag`.
inline std::function<bool(const char*)> switch_flag(const char* flag, bool& on) {
  return [flag, &on](const char* arg) {
    if (std::strcmp(arg, flag) != 0) return false;
    on = true;
    return true;
  };
}

/// How a benchmark decodes.
enum class LvlmMode { Regular, AglaSequential, AglaBatched };

/// The reference's alpha 2, beta 0.5, sampling at temperature 1; regular decoding is `Plain`.
inline DecodeOptions lvlm_options(LvlmMode mode) {
  DecodeOptions options;
  if (mode == LvlmMode::Regular) options.method = FusionMethod::Plain;
  return options;
}

/// Exposes only the plain form of an LVLM, so that `agla::decode_step` runs one forward per view.
template <typename Lvlm>
struct SequentialViews {
  Lvlm* lvlm;
  at::Tensor operator()(const at::Tensor& tokens, View view) { return (*lvlm)(tokens, view); }
};

/// What a program measures: how to wrap its shared model in a fresh LVLM, and the inputs of a
/// generation of `streams` streams (original image plus AGLA's augmented image view). For the
/// method table also: the inputs with extra views of the given kinds, and how to turn PAI's
/// attention boost on (null for a model without it).
template <typename Lvlm>
struct LvlmCase {
  std::function<std::unique_ptr<Lvlm>()> make;
  std::function<LvlmInputs(int64_t streams, int64_t max_new_tokens)> inputs;
  std::function<LvlmInputs(int64_t streams, int64_t max_new_tokens, const std::vector<ViewKind>& kinds)> view_inputs;
  std::function<void(Lvlm&)> pai_attention;
};

/// One row of the method table: a method's decoding options and the kinds of its extra views.
struct MethodCost {
  std::string name;
  DecodeOptions options;
  std::vector<ViewKind> views;
  bool pai_attention = false;  ///< PAI: the attention boost on as well (when the model has it)
};

/// The methods of docs/decoding.md with their presets. Views of one kind cost the same whatever
/// fills them (a masked, noised or transformed image), so each method runs with a stand-in of its
/// kind; VACoDe's one-off selection forward is a prefill cost and not part of the step.
inline const std::vector<MethodCost>& method_costs() {
  static const std::vector<MethodCost> costs = [] {
    DecodeOptions agla_vcd = DecodeOptions::agla();
    agla_vcd.further_views.push_back(ViewFusion{FusionMethod::Contrast, 1.0});
    return std::vector<MethodCost>{
        {"agla", DecodeOptions::agla(), {ViewKind::Image}},
        {"vcd", DecodeOptions::vcd(), {ViewKind::Image}},
        {"ritual", DecodeOptions::ritual(), {ViewKind::Image}},
        {"vacode", DecodeOptions::vacode(), {ViewKind::Image}},
        {"icd", DecodeOptions::icd(), {ViewKind::Text}},
        {"m3id", DecodeOptions::m3id(), {ViewKind::NoImage}},
        {"pai", DecodeOptions::pai(), {ViewKind::NoImage}, true},
        {"agla_vcd", agla_vcd, {ViewKind::Image, ViewKind::Image}},
    };
  }();
  return costs;
}

/// A measured row of the method table.
struct MethodRatio {
  std::string method;
  int64_t views = 0, streams = 0;
  double regular_tokens_per_second = 0;
  double plain_wall = 0, plain_cpu = 0, batched_wall = 0, batched_cpu = 0;  ///< regular time / method time
};

/// The rows measured so far (printed by `LvlmRatioReporter`).
inline std::vector<MethodRatio>& method_ratios() {
  static std::vector<MethodRatio> rows;
  return rows;
}

/// One decoding step of `mode` generating token `step`: the tokens chosen for every stream, `[B]`.
template <typename Lvlm>
at::Tensor lvlm_step(LvlmMode mode, Lvlm& lvlm, const at::Tensor& tokens, const DecodeOptions& options,
                     const at::Generator& gen, int64_t step = 0) {
  StepControl control;
  control.step = step;  // M3ID's weight reads it
  if (mode == LvlmMode::AglaSequential)
    return decode_step(SequentialViews<Lvlm>{&lvlm}, tokens, options, gen, control);
  return decode_step(lvlm, tokens, options, gen, control);
}

/// One generated token per stream (`state.range(0)` streams) per iteration, after a prefill outside
/// the timed loop; counter `tokens/s`.
template <typename Lvlm>
void lvlm_decode_bench(benchmark::State& state, const LvlmCase<Lvlm>& c, LvlmMode mode) {
  const int64_t streams = state.range(0);
  const auto lvlm = c.make();
  const auto prompt = lvlm->begin(c.inputs(streams, 64));
  const auto options = lvlm_options(mode);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto tokens = lvlm_step(mode, *lvlm, prompt, options, gen).unsqueeze(1);
  for (auto _ : state) {
    tokens = lvlm_step(mode, *lvlm, tokens, options, gen).unsqueeze(1);
    benchmark::DoNotOptimize(tokens.data_ptr());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(streams * state.iterations()), benchmark::Counter::kIsRate);
}

/// The three modes step by step in turn (regular, sequential, batched), so that the load of a shared
/// machine falls on all of them alike; reports each AGLA mode's throughput relative to regular.
template <typename Lvlm>
void lvlm_interleaved_bench(benchmark::State& state, const LvlmCase<Lvlm>& c) {
  const int64_t streams = state.range(0);
  const std::array<LvlmMode, 3> modes{LvlmMode::Regular, LvlmMode::AglaSequential, LvlmMode::AglaBatched};
  std::vector<std::unique_ptr<Lvlm>> lvlms;
  std::vector<at::Tensor> tokens;
  std::array<Clocks, 3> spent{};
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (LvlmMode mode : modes) {
    lvlms.push_back(c.make());
    const auto prompt = lvlms.back()->begin(c.inputs(streams, 64));
    tokens.push_back(lvlm_step(mode, *lvlms.back(), prompt, lvlm_options(mode), gen).unsqueeze(1));
  }
  for (auto _ : state) {
    for (size_t i = 0; i < modes.size(); ++i) {
      const Clocks start = Clocks::now();
      tokens[i] = lvlm_step(modes[i], *lvlms[i], tokens[i], lvlm_options(modes[i]), gen).unsqueeze(1);
      const Clocks took = Clocks::now() - start;
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

/// Regular decoding, `m` with one forward per view and `m` with every view in one batched forward,
/// step by step in turn (so that the load of a shared machine falls on all three alike), after the
/// prefills; records the throughput of both forms relative to regular in `method_ratios()`.
template <typename Lvlm>
void lvlm_method_bench(benchmark::State& state, const LvlmCase<Lvlm>& c, const MethodCost& m) {
  const int64_t streams = state.range(0);
  struct Runner {
    LvlmMode mode;
    DecodeOptions options;
    std::unique_ptr<Lvlm> lvlm;
    at::Tensor tokens;
    Clocks spent{};
  };
  std::array<Runner, 3> runners{Runner{LvlmMode::Regular, DecodeOptions::regular()},
                                Runner{LvlmMode::AglaSequential, m.options}, Runner{LvlmMode::AglaBatched, m.options}};
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (Runner& r : runners) {
    r.lvlm = c.make();
    const bool regular = r.mode == LvlmMode::Regular;
    if (!regular && m.pai_attention && c.pai_attention) c.pai_attention(*r.lvlm);
    const auto prompt = r.lvlm->begin(c.view_inputs(streams, 64, regular ? std::vector<ViewKind>{} : m.views));
    r.tokens = lvlm_step(r.mode, *r.lvlm, prompt, r.options, gen).unsqueeze(1);
  }
  int64_t step = 1;
  for (auto _ : state) {
    for (Runner& r : runners) {
      const Clocks start = Clocks::now();
      r.tokens = lvlm_step(r.mode, *r.lvlm, r.tokens, r.options, gen, step).unsqueeze(1);
      const Clocks took = Clocks::now() - start;
      r.spent.wall += took.wall;
      r.spent.cpu += took.cpu;
    }
    ++step;
  }
  MethodRatio row{m.name, static_cast<int64_t>(m.views.size()), streams};
  row.regular_tokens_per_second = static_cast<double>(streams * state.iterations()) / runners[0].spent.wall;
  row.plain_wall = runners[0].spent.wall / runners[1].spent.wall;
  row.plain_cpu = runners[0].spent.cpu / runners[1].spent.cpu;
  row.batched_wall = runners[0].spent.wall / runners[2].spent.wall;
  row.batched_cpu = runners[0].spent.cpu / runners[2].spent.cpu;
  state.counters["regular_tok/s"] = row.regular_tokens_per_second;
  state.counters["plain_wall"] = row.plain_wall;
  state.counters["batched_wall"] = row.batched_wall;
  method_ratios().push_back(row);
}

/// Registers `<prefix>Method_<name>` for every method of `method_costs()` at 1 and 4 streams,
/// `iterations` tokens each (`c.view_inputs` must be set).
template <typename Lvlm>
void register_lvlm_method_benchmarks(const std::string& prefix, const LvlmCase<Lvlm>* c, int64_t iterations = 4) {
  for (const MethodCost& m : method_costs()) {
    benchmark::RegisterBenchmark((prefix + "Method_" + m.name).c_str(),
                                 [c, &m](benchmark::State& s) { lvlm_method_bench(s, *c, m); })
        ->Arg(1)
        ->Arg(4)
        ->Iterations(iterations)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
  }
}

/// The prompt step of one question (images through the vision side, the language model over the
/// prompt, `begin` included) and its first token; counter `prompts/s`.
template <typename Lvlm>
void lvlm_prefill_bench(benchmark::State& state, const LvlmCase<Lvlm>& c, LvlmMode mode) {
  const auto options = lvlm_options(mode);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto lvlm = c.make();
  const LvlmInputs inputs = c.inputs(1, 8);
  for (auto _ : state) {
    const auto prompt = lvlm->begin(inputs);
    auto token = lvlm_step(mode, *lvlm, prompt, options, gen);
    benchmark::DoNotOptimize(token.data_ptr());
  }
  state.counters["prompts/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

/// Registers `<prefix>{Decode,Prefill}{Regular,AglaSequential,AglaBatched}` and
/// `<prefix>DecodeInterleaved` for `c` (which must outlive the run), with the iteration counts the
/// ratio table expects (12 per decode run, 8 interleaved, 1 prefill).
template <typename Lvlm>
void register_lvlm_benchmarks(const std::string& prefix, const LvlmCase<Lvlm>* c) {
  const std::pair<const char*, LvlmMode> modes[] = {
      {"Regular", LvlmMode::Regular}, {"AglaSequential", LvlmMode::AglaSequential}, {"AglaBatched", LvlmMode::AglaBatched}};
  for (const auto& [name, mode] : modes) {
    benchmark::RegisterBenchmark((prefix + "Decode" + name).c_str(),
                                 [c, mode = mode](benchmark::State& s) { lvlm_decode_bench(s, *c, mode); })
        ->Arg(1)
        ->Arg(4)
        ->Iterations(12)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
  }
  benchmark::RegisterBenchmark((prefix + "DecodeInterleaved").c_str(),
                               [c](benchmark::State& s) { lvlm_interleaved_bench(s, *c); })
      ->Arg(1)
      ->Arg(4)
      ->Iterations(8)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MeasureProcessCPUTime();
  for (const auto& [name, mode] : modes) {
    benchmark::RegisterBenchmark((prefix + "Prefill" + name).c_str(),
                                 [c, mode = mode](benchmark::State& s) { lvlm_prefill_bench(s, *c, mode); })
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
  }
}

/// Console output plus, at the end, each AGLA mode's throughput relative to regular decoding for
/// the benchmarks `register_lvlm_benchmarks(prefix, ...)` registered.
class LvlmRatioReporter : public benchmark::ConsoleReporter {
 public:
  explicit LvlmRatioReporter(std::string prefix) : prefix_(std::move(prefix)) {}

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
    print_method_ratios();
  }

  // The method table: each method's tokens/s relative to regular decoding in the same benchmark,
  // with one forward per view (plain) and every view in one forward (batched); the targets are
  // batched >= 0.75 with one extra view and >= 0.6 with two (wall time).
  static void print_method_ratios() {
    if (method_ratios().empty()) return;
    std::printf("\nMethods: tokens/s relative to regular decoding in the same benchmark, wall / CPU time:\n");
    std::printf("| method | K | streams | regular tok/s | plain | batched | batched target |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    for (const MethodRatio& r : method_ratios()) {
      const double target = r.views == 1 ? 0.75 : 0.6;
      std::printf("| %s | %lld | %lld | %.2f | %.2f / %.2f | %.2f / %.2f | >= %.2f: %s |\n", r.method.c_str(),
                  static_cast<long long>(r.views), static_cast<long long>(r.streams), r.regular_tokens_per_second,
                  r.plain_wall, r.plain_cpu, r.batched_wall, r.batched_cpu, target,
                  r.batched_wall >= target ? "met" : "not met");
    }
  }

  // Ratios of wall-clock and of process CPU time (the latter is steadier on a shared machine).
  void print_ratios() const {
    std::printf("\nThroughput relative to regular decoding (same process; > 1 is faster), wall / CPU time:\n");
    for (const std::string kind : {"Decode", "Prefill"}) {
      for (const std::string arg : {"/1", "/4", ""}) {
        const std::string suffix = arg + "/iterations:" + (kind == "Decode" ? "12" : "1") + "/process_time/real_time";
        const auto base = seconds_.find(prefix_ + kind + "Regular" + suffix);
        if (base == seconds_.end()) continue;
        std::printf("  %-7s streams %-2s regular 1.00", kind.c_str(), arg.empty() ? "1" : arg.c_str() + 1);
        for (const char* mode : {"AglaSequential", "AglaBatched"}) {
          const auto it = seconds_.find(prefix_ + kind + mode + suffix);
          if (it == seconds_.end()) continue;
          std::printf("  %s %.2f / %.2f", mode, base->second.first / it->second.first,
                      base->second.second / it->second.second);
        }
        std::printf("\n");
      }
    }
  }

 private:
  std::string prefix_;
  std::map<std::string, std::pair<double, double>> seconds_;  // name -> {wall, CPU} seconds per iteration
};

}  // namespace agla::bench
