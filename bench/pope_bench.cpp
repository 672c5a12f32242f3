// Evaluation throughput of a POPE-style run on a LLaVA-shaped model: six questions per image,
// one-word answers (a few new tokens), each question a generation of its own, with and without
// the image cache (`LlavaLvlm::set_image_cache`: the KV cache of the prompt through the image
// tokens computed once per image), for regular decoding, VCD (its noised view drawn once per image,
// so cached too) and AGLA (its masked view depends on the question, so only the original view is
// cached; IPM's own cost is left out: the masked views are made up front). Prints questions per
// second, the cached/uncached ratios measured in the same process, whether the answers agree token
// for token, and the time one POPE split (3,000 questions, 500 images) and MME (2,374 questions, 2
// per image) would take at these rates.
//
//   pope_bench [--threads N] [--llava-small] [--images N] [--new-tokens N] [google-benchmark flags]
//
// Run with OMP_WAIT_POLICY=PASSIVE on a shared machine (see llava_bench.cpp).

#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agla/decode.hpp"
#include "agla/models/llava.hpp"
#include "agla/views/noise.hpp"
#include "support/harness.hpp"
#include "support/model_shapes.hpp"
#include "support/lvlm_bench.hpp"

namespace {

namespace llava = agla::llava;
using agla::bench::Clocks;

bool g_small = false;
int g_images = 2;
int g_new_tokens = 2;
constexpr int kQuestionsPerImage = 6;

// The model and six POPE-length questions sharing llava_v1's prefix: BOS + 34 system-prompt and
// "USER:" ids, the image token, then 20 to 25 question ids ("\n<question> Please answer this
// question with one word. ASSISTANT:").
struct BenchModel {
  llava::LlavaModel model{nullptr};
  std::vector<at::Tensor> questions;  // kQuestionsPerImage prompts [1, L]
};

BenchModel& bench_model() {
  static BenchModel m = [] {
    BenchModel b;
    b.model = llava::LlavaModel(llava::parse_config(agla::bench::llava_bench_config(g_small)));
    auto [gen, count] = agla::bench::draw_bench_weights(*b.model);
    const at::Tensor prefix = agla::bench::llava_bench_prompt(36, b.model->config().image_token_index, gen);
    for (int q = 0; q < kQuestionsPerImage; ++q)
      b.questions.push_back(at::cat({prefix, at::randint(3, 31000, {1, 20 + q}, gen, at::kLong)}, 1));
    std::printf("LLaVA-shaped model: %.3f B parameters (float32), %lld image tokens, prompts of %lld..%lld ids "
                "(prefix through the image token: 36 ids, %lld positions)\n",
                static_cast<double>(count) / 1e9, static_cast<long long>(b.model->config().image_tokens()),
                static_cast<long long>(b.questions.front().size(1)), static_cast<long long>(b.questions.back().size(1)),
                static_cast<long long>(35 + b.model->config().image_tokens()));
    return b;
  }();
  return m;
}

enum Method { kRegular, kVcd, kAgla, kMethods };
const char* const kMethodNames[kMethods] = {"regular", "vcd", "agla"};

agla::DecodeOptions method_options(int method) {
  agla::DecodeOptions o;  // AGLA: assembly, alpha 2, beta 0.5
  o.greedy = true;        // deterministic answers, so cached and uncached runs can be compared
  if (method == kRegular) o.method = agla::FusionMethod::Plain;
  if (method == kVcd) {
    o.method = agla::FusionMethod::Contrast;
    o.alpha = 1.0;
    o.beta = 0.1;
  }
  return o;
}

// Seconds spent on first questions of an image (cache misses) and on the others (hits).
struct Spent {
  Clocks first, rest;
  int firsts = 0, rests = 0;
};

// One question: its generation from `begin` to the last token.
at::Tensor answer(llava::LlavaLvlm& lvlm, const agla::LvlmInputs& inputs, const agla::DecodeOptions& options) {
  agla::GenerateOptions limits;
  limits.max_new_tokens = g_new_tokens;
  limits.eos_token_ids = {2};
  const auto result = agla::generate(lvlm, lvlm.begin(inputs), options, limits);
  lvlm.reset();
  return result.tokens;
}

void print_projection(const char* what, double questions, double per_image, const Spent& s, bool cached) {
  // Uncached, every question costs the same; cached, an image's first question pays for the prefix.
  const double first = s.first.wall / s.firsts, rest = s.rests > 0 ? s.rest.wall / s.rests : first;
  const double seconds = cached ? questions / per_image * (first + (per_image - 1) * rest)
                                : questions * (s.first.wall + s.rest.wall) / (s.firsts + s.rests);
  std::printf("    %-16s %7.2f h", what, seconds / 3600.0);
}

// Every image in turn: each question under each method, uncached then cached, so that the load of
// a shared machine falls on all alike.
void BM_PopeInterleaved(benchmark::State& state) {
  const BenchModel& m = bench_model();
  std::vector<std::vector<llava::LlavaLvlm>> lvlms(kMethods);  // [method][uncached, cached]
  std::array<std::array<Spent, 2>, kMethods> spent{};
  for (auto& pair : lvlms) {
    pair.emplace_back(m.model);
    pair.emplace_back(m.model);
    pair[1].set_image_cache(2);
  }
  int mismatches = 0, image = 0;
  for (auto _ : state) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + image);
    const at::Tensor pixels = at::randn({1, 3, 224, 224}, gen);
    agla::ExtraView noise{agla::ViewKind::Image, agla::views::add_diffusion_noise(pixels, gen, 500), {}};
    noise.reusable = true;
    for (int q = 0; q < kQuestionsPerImage; ++q) {
      // AGLA's view of this question: the image with a question-dependent band blacked out.
      at::Tensor masked = pixels.clone();
      masked.narrow(3, 16 * q, 112).fill_(0.0);
      for (int method = 0; method < kMethods; ++method) {
        agla::LvlmInputs inputs = agla::LvlmInputs::images(m.questions[static_cast<size_t>(q)], pixels, {}, g_new_tokens);
        if (method == kVcd) inputs.views.push_back(noise);
        if (method == kAgla) inputs.views.push_back(agla::ExtraView{agla::ViewKind::Image, masked, {}});
        std::array<at::Tensor, 2> tokens;
        for (int cached = 0; cached < 2; ++cached) {
          const Clocks start = Clocks::now();
          tokens[static_cast<size_t>(cached)] = answer(lvlms[method][cached], inputs, method_options(method));
          const Clocks took = Clocks::now() - start;
          Spent& s = spent[method][cached];
          Clocks& into = q == 0 ? s.first : s.rest;
          into.wall += took.wall;
          into.cpu += took.cpu;
          (q == 0 ? s.firsts : s.rests) += 1;
        }
        mismatches += at::equal(tokens[0], tokens[1]) ? 0 : 1;
      }
    }
    ++image;
  }
  std::printf("\nPOPE-style run: %d image(s) x %d questions, %d new tokens per answer, greedy\n", image,
              kQuestionsPerImage, g_new_tokens);
  std::printf("  method   uncached q/s  cached q/s  cached/uncached wall  cpu\n");
  for (int method = 0; method < kMethods; ++method) {
    const Spent& u = spent[method][0];
    const Spent& c = spent[method][1];
    const double n = static_cast<double>(u.firsts + u.rests);
    const double uw = u.first.wall + u.rest.wall, cw = c.first.wall + c.rest.wall;
    const double uc = u.first.cpu + u.rest.cpu, cc = c.first.cpu + c.rest.cpu;
    std::printf("  %-8s %12.3f %11.3f %21.2f %5.2f\n", kMethodNames[method], n / uw, n / cw, uw / cw, uc / cc);
    state.counters[std::string(kMethodNames[method]) + "_q/s"] = n / uw;
    state.counters[std::string(kMethodNames[method]) + "_cached_q/s"] = n / cw;
  }
  std::printf("  answers identical token for token (cached vs uncached): %s (%d of %d differ)\n",
              mismatches == 0 ? "yes" : "NO", mismatches, image * kQuestionsPerImage * kMethods);
  std::printf("\nProjected time at these rates (this machine, this model; IPM not included):\n");
  for (int method = 0; method < kMethods; ++method) {
    for (int cached = 0; cached < 2; ++cached) {
      std::printf("  %-8s %-9s", kMethodNames[method], cached ? "cached" : "uncached");
      print_projection("POPE split", 3000, 6, spent[method][cached], cached == 1);
      print_projection("MME", 2374, 2, spent[method][cached], cached == 1);
      std::printf("\n");
    }
  }
  state.counters["mismatches"] = mismatches;
}

// Parses `--name N` into `value` (1..limit); false when `arg` is not `--name`.
bool count_flag(const char* name, const char* arg, const char* next, int limit, int& value) {
  if (std::strcmp(arg, name) != 0) return false;
  char* end = nullptr;
  const long parsed = next != nullptr ? std::strtol(next, &end, 10) : 0;
  if (end == nullptr || *end != '\0' || parsed < 1 || parsed > limit) {
    std::fprintf(stderr, "pope_bench: %s expects a count in [1, %d]\n", name, limit);
    std::exit(1);
  }
  value = static_cast<int>(parsed);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // --images and --new-tokens take a value; take them out before the harness sees the arguments.
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
    if (count_flag("--images", argv[i], next, 500, g_images) || count_flag("--new-tokens", argv[i], next, 16, g_new_tokens)) {
      ++i;
      continue;
    }
    args.push_back(argv[i]);
  }
  benchmark::RegisterBenchmark("BM_PopeInterleaved", BM_PopeInterleaved)
      ->Iterations(g_images)
      ->Unit(benchmark::kSecond)
      ->UseRealTime()
      ->MeasureProcessCPUTime();
  return agla::bench::run_benchmarks(static_cast<int>(args.size()), args.data(), 0, nullptr,
                                     agla::bench::switch_flag("--llava-small", g_small));
}
