// Cost of image-prompt matching at BLIP-large size (ViT-L/16 at 384 px + BERT-base text encoder
// with cross-attention, random weights, float32, CPU), all measured in this one process:
//   BM_IpmPlainItm       one plain ITM forward: preprocess, vision encoder, text encoder, ITM head;
//   BM_IpmMatcher        the full IPM of ImagePromptMatcher: encode once, ITM with the attention as
//                        the only gradient target, GradCAM, ITC, mask and augmented image;
//   BM_IpmReferenceWay   the reference's way (LAVIS compute_gradcam + AGLA augmentation.py): forward
//                        with gradients on, backward() into every parameter, then a separate ITC
//                        forward that encodes the image again, then the same mask;
//   BM_IpmRatios         prints matcher / plain (target <= 1.5) and reference / plain;
//   BM_IpmPostprocess    the mask step alone (24x24 map -> 384x384 mask and augmented image).
// One iteration each (a forward takes seconds on a small CPU). `--threads N` sets the intra-op
// threads (default: all cores). Ratios are printed for wall time and for process CPU time
// (all threads); on a shared machine the CPU-time ratio is the stable one.
#include <benchmark/benchmark.h>
#include <torch/utils.h>

#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "agla/io/image.hpp"
#include "agla/ipm.hpp"
#include "agla/models/blip.hpp"
#include "support/harness.hpp"
#include "support/model_shapes.hpp"

namespace {

const agla::blip::BlipItm& model() {
  static const agla::blip::BlipItm instance = [] {
    torch::manual_seed(0);
    agla::blip::BlipItmModel module(agla::bench::blip_large_config());
    agla::models::init_parameters(*module);
    return agla::blip::BlipItm(module, agla::text::WordPieceTokenizer::bert_base_uncased());
  }();
  return instance;
}

const at::Tensor& image() {
  static const at::Tensor instance = [] {
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
    return at::randint(0, 256, {480, 640, 3}, generator, at::kByte);
  }();
  return instance;
}

const std::string kPrompt = "Is there a dog in the image? Please answer this question with one word.";

// Wall and process-CPU seconds of the one timed iteration of each benchmark, for the ratios.
using Cost = agla::bench::Clocks;

std::map<std::string, Cost>& costs() {
  static std::map<std::string, Cost> table;
  return table;
}

// Measures the scope's wall and process CPU time into costs()[name].
class Stopwatch {
 public:
  explicit Stopwatch(std::string name) : name_(std::move(name)), start_(Cost::now()) {}
  ~Stopwatch() { costs()[name_] = Cost::now() - start_; }

 private:
  std::string name_;
  Cost start_;
};

double plain_itm(const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm>& matcher) {
  const at::Tensor pixels = matcher.pixel_values(matcher.resize_for_model(image()));
  const at::Tensor embeds = model().encode_image(pixels);
  const auto text = model().encode_text({kPrompt});
  return model().itm_logits(embeds, text.itm_input_ids, text.attention_mask)[0][1].item<double>();
}

void BM_IpmPlainItm(benchmark::State& state) {
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(model());
  benchmark::DoNotOptimize(plain_itm(matcher));  // warm-up: first-touch allocations, thread pool
  for (auto _ : state) {
    const Stopwatch watch("plain");
    benchmark::DoNotOptimize(plain_itm(matcher));
  }
}
BENCHMARK(BM_IpmPlainItm)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_IpmMatcher(benchmark::State& state) {
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(model());
  for (auto _ : state) {
    agla::ipm::Match match;
    {
      const Stopwatch watch("matcher");
      match = matcher.match(image(), kPrompt);
    }
    benchmark::DoNotOptimize(match.kept_fraction);
    state.counters["encode_ms"] = match.timings.encode;
    state.counters["itm_gradcam_ms"] = match.timings.itm_gradcam;
    state.counters["itc_ms"] = match.timings.itc;
    state.counters["postprocess_ms"] = match.timings.postprocess;
  }
}
BENCHMARK(BM_IpmMatcher)->Iterations(1)->Unit(benchmark::kMillisecond);

// LAVIS compute_gradcam + AGLA augmentation.py: gradients into every parameter.
double reference_way(const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm>& matcher) {
  agla::blip::BlipItmModel module = model().module();
  const at::Tensor resized = matcher.resize_for_model(image());
  const at::Tensor pixels = matcher.pixel_values(resized);
  const auto text = model().encode_text({kPrompt});
  module->zero_grad();
  torch::AutoGradMode grad(true);
  const at::Tensor embeds = module->vision_model->forward(pixels);
  agla::blip::TextRun run;
  run.attention_mask = text.attention_mask;
  run.encoder_hidden_states = embeds;
  at::Tensor attention;
  run.capture_layer = matcher.block();
  run.captured = &attention;
  const at::Tensor hidden = module->text_encoder->forward(text.itm_input_ids, run);
  const at::Tensor logits = module->itm_head->forward(hidden.select(1, 0));
  logits.select(1, 1).sum().backward();
  const agla::ipm::GradCamMaps maps = agla::ipm::gradcam(attention.detach(), attention.grad(), text.attention_mask);
  // match_head="itc" re-encodes the image (no gradient needed there).
  const double itc =
      model().itc_similarity(model().encode_image(pixels), text.input_ids, text.attention_mask)[0][0].item<double>();
  const at::Tensor relevance = agla::ipm::relevance_map(maps.average[0], resized.size(0), resized.size(1));
  const agla::ipm::Threshold cut = agla::ipm::threshold_map(relevance, agla::ipm::reference_keep_ratio(itc));
  return static_cast<double>(agla::ipm::apply_mask(resized, cut.mask).sum().item<int64_t>());
}

void BM_IpmReferenceWay(benchmark::State& state) {
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(model());
  agla::blip::BlipItmModel module = model().module();
  for (auto& parameter : module->parameters()) parameter.requires_grad_(true);
  for (auto _ : state) {
    const Stopwatch watch("reference");
    benchmark::DoNotOptimize(reference_way(matcher));
  }
  module->zero_grad();
  for (auto& parameter : module->parameters()) parameter.requires_grad_(false);
}
BENCHMARK(BM_IpmReferenceWay)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_IpmRatios(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(costs().size());
  const auto& t = costs();
  if (t.count("plain") == 0 || t.count("matcher") == 0 || t.count("reference") == 0) {
    state.SkipWithError("run all BM_Ipm* benchmarks together (no --benchmark_filter) to get the ratios");
    return;
  }
  const Cost plain = t.at("plain"), matcher = t.at("matcher"), reference = t.at("reference");
  state.counters["matcher_over_plain_wall"] = matcher.wall / plain.wall;
  state.counters["matcher_over_plain_cpu"] = matcher.cpu / plain.cpu;
  state.counters["reference_over_plain_wall"] = reference.wall / plain.wall;
  state.counters["reference_over_plain_cpu"] = reference.cpu / plain.cpu;
  for (const auto& [what, plain_s, matcher_s, reference_s] :
       {std::tuple<const char*, double, double, double>{"wall", plain.wall, matcher.wall, reference.wall},
        {"process CPU", plain.cpu, matcher.cpu, reference.cpu}})
    std::fprintf(stderr,
                 "ipm_bench (%s): plain ITM %.0f ms, matcher %.0f ms = %.2fx plain (target <= 1.5), reference way "
                 "%.0f ms = %.2fx plain, %.2fx the matcher\n",
                 what, 1e3 * plain_s, 1e3 * matcher_s, matcher_s / plain_s, 1e3 * reference_s, reference_s / plain_s,
                 reference_s / matcher_s);
}
BENCHMARK(BM_IpmRatios)->Iterations(1);

void BM_IpmPostprocess(benchmark::State& state) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor grid = at::rand({24, 24}, generator);
  const at::Tensor resized = at::randint(0, 256, {384, 384, 3}, generator, at::kByte);
  for (auto _ : state) {
    const at::Tensor relevance = agla::ipm::relevance_map(grid, 384, 384);
    const agla::ipm::Threshold cut = agla::ipm::threshold_map(relevance, agla::ipm::reference_keep_ratio(0.3));
    benchmark::DoNotOptimize(agla::ipm::apply_mask(resized, cut.mask).data_ptr());
  }
}
BENCHMARK(BM_IpmPostprocess)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return agla::bench::run_benchmarks(argc, argv, 0); }
