// agla_caption: regular and AGLA (or another method's) captions of one image, side by side (same
// seed), their decoding speed (median of repeated runs), and IPM's heat-map, mask and augmented view
// as PNG files.

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/ipm/heatmap.hpp"
#include "agla/runtime.hpp"
#include "common/cli.hpp"
#include "common/data.hpp"
#include "common/methods.hpp"
#include "common/models.hpp"
#include "common/programs.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

const std::string kProgram = "agla_caption";

struct Options {
  std::string image;                      // empty: data/sample.png
  std::optional<std::string> prompt;      // captioning instruction
  std::optional<std::string> itm_prompt;  // IPM's text
  std::string itm, lvlm;                  // empty: the shipped models
  std::optional<std::vector<std::int64_t>> prompt_ids;
  std::vector<std::int64_t> qformer_prompt_ids;
  Method method = Method::Agla;
  SamplingSettings sampling;
  MethodSettings method_settings;
  std::uint64_t seed = 1;
  std::int64_t max_new_tokens = 30;
  std::optional<int> timing_runs;
  std::string out = "agla_caption_out";
  bool json = false;
  int threads = 0;
};

/// The options of a run; nullopt for --help.
std::optional<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  OptionParser parser(kProgram);
  parser.text("--image", o.image).text("--prompt", o.prompt).text("--itm-prompt", o.itm_prompt);
  parser.text("--itm", o.itm).text("--lvlm", o.lvlm).ids("--prompt-ids", o.prompt_ids);
  parser.ids("--qformer-prompt-ids", o.qformer_prompt_ids).seed(o.seed).directory("--out", o.out);
  parser.value("--method", [&](const std::string& name) { o.method = parse_method(name); });
  parser.integer("--max-new-tokens", o.max_new_tokens, 1, 4096).integer("--timing-runs", o.timing_runs, 1, 100);
  parser.flag("--json", o.json).threads(o.threads);
  parser.group([&](const std::string& arg, ArgCursor& cursor) { return parse_sampling_option(arg, cursor, o.sampling); });
  parser.group(
      [&](const std::string& arg, ArgCursor& cursor) { return parse_method_option(arg, cursor, o.method_settings); });
  if (!parser.parse(args)) return std::nullopt;
  check<InvalidArgument>(!(o.prompt && o.prompt_ids), kProgram,
                         ": give --prompt or --prompt-ids, not both (ids are used as given)");
  check<InvalidArgument>(o.qformer_prompt_ids.empty() || o.prompt_ids, kProgram,
                         ": --qformer-prompt-ids goes with --prompt-ids (a checkpoint without a tokenizer)");
  check_method_settings(kProgram, o.method, o.method_settings);
  check_sampling_settings(kProgram, o.method, o.sampling);
  method_options(o.method, o.sampling, o.method_settings);  // combinations the ranges allow but the method does not
  return o;
}

/// One mode's caption and its decoding speed over the timing runs.
struct CaptionRun {
  std::vector<std::int64_t> ids;  // generated ids (up to and including the stop id)
  std::string text;
  std::vector<double> seconds;  // one per timing run

  double median_seconds() const {
    std::vector<double> s = seconds;
    std::sort(s.begin(), s.end());
    return s.size() % 2 == 1 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  }
  double tokens_per_second(double secs) const { return secs > 0 ? static_cast<double>(ids.size()) / secs : 0.0; }
  double median_tokens_per_second() const { return tokens_per_second(median_seconds()); }
};

nlohmann::json run_json(const CaptionRun& run) {
  const auto [fastest, slowest] = std::minmax_element(run.seconds.begin(), run.seconds.end());
  return nlohmann::json{
      {"ids", run.ids},
      {"text", run.text},
      {"tokens", run.ids.size()},
      {"seconds", run.median_seconds()},
      {"tokens_per_second", run.median_tokens_per_second()},
      {"timing_runs", run.seconds.size()},
      {"tokens_per_second_range", {run.tokens_per_second(*slowest), run.tokens_per_second(*fastest)}}};
}

/// Warns on `err` about words the model reads as [UNK]; returns them for the JSON report.
std::vector<std::string> warn_unknown(std::ostream& err, const std::vector<std::string>& unknown, const char* what) {
  if (!unknown.empty()) {
    err << "agla_caption: warning: " << what << " has words outside the model's vocabulary, read as [UNK]:";
    for (const auto& word : unknown) err << " '" << word << "'";
    err << "\n";
  }
  return unknown;
}

int run(const Options& o, std::ostream& out, std::ostream& err) {
  const std::string image_path = o.image.empty() ? data_dir(kProgram) + "/sample.png" : o.image;
  require_file(kProgram, "--image", image_path);
  const std::string itm_dir = o.itm.empty() ? shipped_model(kProgram, "shapesworld-itm", "--itm") : o.itm;
  const std::string lvlm_dir = o.lvlm.empty() ? shipped_model(kProgram, "shapesworld-lvlm", "--lvlm") : o.lvlm;
  const int threads = use_threads(o.threads, weight_bytes(itm_dir) + weight_bytes(lvlm_dir));
  if (auto warning = agla::blas_warning()) err << *warning << "\n";

  const at::Tensor image = io::read_image(image_path);
  const blip::BlipItm itm = load_itm(itm_dir);
  AnyLvlm lvlm = load_lvlm(lvlm_dir, LvlmSettings{});

  std::vector<std::string> prompt_unknown;
  if (!o.prompt_ids && o.prompt)
    prompt_unknown = warn_unknown(err, check_lvlm_text(kProgram, "--prompt", lvlm, *o.prompt), "--prompt");
  const Prompt prompt = o.prompt_ids ? lvlm_prompt_from_ids(kProgram, lvlm, *o.prompt_ids, o.qformer_prompt_ids)
                                     : lvlm_prompt(lvlm, o.prompt.value_or(std::string()));
  const std::optional<std::string> instruction =
      o.prompt_ids ? std::nullopt : std::optional<std::string>(o.prompt.value_or(std::string()));
  const std::string itm_prompt =
      o.itm_prompt ? *o.itm_prompt : (o.prompt && !o.prompt->empty() ? *o.prompt : std::string(kCaptionItmText));
  const std::vector<std::string> itm_unknown = warn_unknown(
      err, check_itm_text(kProgram, o.itm_prompt ? "--itm-prompt" : "the IPM text", itm, itm_prompt), "the IPM text");

  // IPM once for the pictures; the method's views once, shared by every timing run.
  const ViewBuilder views(&itm, lvlm, o.method_settings.noise_step_value());
  const at::Tensor original = lvlm_pixels(lvlm, image);
  const AugmentedView view = views.build(LocalView::IpmMask, image, itm_prompt, original, seeded_generator(o.seed));
  const MethodViews method_views = views.build_views(o.method, o.method_settings, image, itm_prompt, prompt,
                                                     instruction, original, seeded_generator(o.seed), kProgram);

  const DecodeOptions regular_options = method_options(Method::Regular, SamplingSettings{
      std::nullopt, std::nullopt, o.sampling.temperature, o.sampling.top_k, o.sampling.top_p, o.sampling.greedy});
  const DecodeOptions agla_options = method_options(o.method, o.sampling, o.method_settings);
  const bool pai_applied =
      o.method == Method::Pai && lvlm_set_pai_attention(lvlm, o.method_settings.pai_attention());
  const nlohmann::json parameters = method_parameters(o.method, agla_options, o.method_settings, pai_applied);
  CaptionRun regular, assembled;
  const auto decode = [&](const DecodeOptions& options, CaptionRun& run) {
    const auto start = std::chrono::steady_clock::now();
    // PAI's attention boost belongs to the method's run only.
    if (pai_applied) lvlm_set_pai_attention(lvlm, &run == &regular ? std::nullopt : o.method_settings.pai_attention());
    std::vector<std::int64_t> ids = lvlm_generate(lvlm, prompt, original, method_views.views, options,
                                                  o.max_new_tokens, seeded_generator(o.seed), kProgram);
    run.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (run.seconds.size() == 1) run.ids = std::move(ids);  // the same seed gives the same ids every run
  };
  // Runs alternate between the modes, so a change in the machine's load hits both alike; the median
  // of several runs is what is reported (one run of a few milliseconds is noise on a shared machine).
  const auto timing_start = std::chrono::steady_clock::now();
  for (int r = 0;; ++r) {
    decode(regular_options, regular);
    decode(agla_options, assembled);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - timing_start).count();
    const int done = r + 1;
    if (o.timing_runs ? done >= *o.timing_runs
                      : (done == 1 && elapsed >= 2.0) || done >= 15 || (done >= 3 && elapsed >= 1.0))
      break;
  }
  regular.text = lvlm_decode(lvlm, regular.ids);
  assembled.text = lvlm_decode(lvlm, assembled.ids);

  make_directory(kProgram, o.out);
  const std::string heatmap = o.out + "/heatmap.png", augmented = o.out + "/augmented.png", mask = o.out + "/mask.png";
  io::write_png(heatmap, ipm::heatmap_overlay(views.matcher()->resize_for_model(image), view.match->relevance));
  io::write_png(augmented, view.image);
  io::write_png(mask, view.match->mask.to(at::kByte).mul(255).unsqueeze(2).contiguous());

  if (o.json) {
    nlohmann::json j{{"image", image_path},
                     {"lvlm", {{"dir", lvlm_dir}, {"kind", lvlm_family_name(lvlm)}}},
                     {"itm", {{"dir", itm_dir}}},
                     {"prompt_ids", prompt.ids},
                     {"method", method_name(o.method)},
                     {"parameters", parameters},
                     {"views", method_views.record},
                     {"prompt_unknown_words", prompt_unknown},
                     {"itm_prompt", itm_prompt},
                     {"itm_unknown_words", itm_unknown},
                     {"seed", o.seed},
                     {"threads", threads},
                     {"omp_wait_policy", omp_wait_policy()},
                     {"decoding",
                      {{"alpha", agla_options.alpha},
                       {"beta", agla_options.beta},
                       {"temperature", agla_options.temperature},
                       {"top_k", agla_options.top_k},
                       {"top_p", agla_options.top_p},
                       {"greedy", agla_options.greedy},
                       {"max_new_tokens", o.max_new_tokens}}},
                     {"ipm",
                      {{"itc", view.itc},
                       {"itm_probability", view.match->itm_probability},
                       {"mask_ratio", view.match->mask_ratio},
                       {"kept_fraction", view.kept_fraction},
                       {"milliseconds", view.ipm_ms}}},
                     {"regular", run_json(regular)},
                     {method_name(o.method), run_json(assembled)},
                     {"files", {{"heatmap", heatmap}, {"augmented", augmented}, {"mask", mask}}}};
    if (o.prompt) j["prompt"] = *o.prompt;
    if (!prompt.instruction_ids.empty()) j["qformer_prompt_ids"] = prompt.instruction_ids;
    out << j.dump() << std::endl;
    return 0;
  }
  out << "lvlm:      " << lvlm_dir << " (" << lvlm_family_name(lvlm) << ")\n"
      << "itm:       " << itm_dir << "\n"
      << "image:     " << image_path << " (" << image.size(1) << "x" << image.size(0) << ")\n"
      << "prompt:    " << (o.prompt_ids ? "(token ids)" : "'" + o.prompt.value_or("") + "'") << ", IPM text '"
      << itm_prompt << "'\n"
      << "decoding:  " << (agla_options.greedy ? "greedy" : "sampling") << ", seed " << o.seed << ", temperature "
      << agla_options.temperature << ", top-k " << agla_options.top_k << ", top-p " << agla_options.top_p
      << "; " << method_name(o.method) << " alpha " << agla_options.alpha << ", beta " << agla_options.beta
      << ", views " << method_views.record.dump() << "\n"
      << "IPM:       itc " << view.itc << ", match probability " << view.match->itm_probability << ", kept "
      << view.kept_fraction << " of the pixels, " << std::fixed << std::setprecision(1) << view.ipm_ms << " ms\n"
      << "threads:   " << threads << "\n\n";
  out << std::left << std::setw(12) << "mode" << std::right << std::setw(10) << "tokens/s"
      << "  caption\n";
  const auto row = [&](const char* name, const CaptionRun& run) {
    out << std::left << std::setw(12) << name << std::right << std::setw(10) << std::fixed << std::setprecision(1)
        << run.median_tokens_per_second() << "  " << run.text << "\n";
  };
  row("regular", regular);
  row(o.method == Method::Agla ? "AGLA" : method_name(o.method), assembled);
  out << "(tokens/s: median of " << regular.seconds.size() << " runs per mode, prompt prefill included, IPM not)\n";
  out << "\nwrote:     " << heatmap << ", " << augmented << ", " << mask << "\n";
  return 0;
}

}  // namespace

int run_caption(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_program(kProgram, args, out, err, parse_options, run);
}

}  // namespace agla::tools
