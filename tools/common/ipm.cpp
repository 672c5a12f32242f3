// agla_ipm: the image-prompt matching inspector. Runs AGLA's IPM (BLIP ITM GradCAM + ITC ratio +
// mask) on one image and prompt and shows what the augmented view keeps.

#include <ATen/ATen.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/ipm/heatmap.hpp"
#include "agla/ipm/matcher.hpp"
#include "agla/ipm/report.hpp"
#include "agla/runtime.hpp"
#include "common/cli.hpp"
#include "common/data.hpp"
#include "common/methods.hpp"
#include "common/models.hpp"
#include "common/programs.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

const std::string kProgram = "agla_ipm";

struct Options {
  std::string itm, image, out;
  std::optional<std::string> prompt;
  std::optional<std::int64_t> block;
  bool json = false;
  int threads = 0;
};

/// The options of a run; nullopt for --help.
std::optional<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  OptionParser parser(kProgram);
  parser.text("--itm", o.itm).text("--image", o.image).text("--prompt", o.prompt).directory("--out", o.out);
  parser.integer("--block", o.block, 0, 1000).flag("--json", o.json).threads(o.threads);
  if (!parser.parse(args)) return std::nullopt;
  check<InvalidArgument>(!o.itm.empty(), "agla_ipm: --itm DIR is required");
  check<InvalidArgument>(!o.image.empty(), "agla_ipm: --image PATH is required");
  check<InvalidArgument>(o.prompt.has_value(), "agla_ipm: --prompt TEXT is required");
  return o;
}

int run(const Options& o, std::ostream& out, std::ostream& err) {
  require_file(kProgram, "--image", o.image);
  const at::Tensor image = io::read_image(o.image);
  const int threads = use_threads(o.threads, weight_bytes(o.itm));
  if (auto warning = agla::blas_warning()) err << *warning << "\n";

  const blip::BlipItm model = load_itm(o.itm);
  const std::int64_t layers = model.num_text_layers();
  check<InvalidArgument>(!o.block || *o.block < layers, kProgram, ": --block must be in [0, ", layers - 2,
                         "] for this model (", layers, " text layers); got ", o.block.value_or(0));
  ipm::MatcherOptions matcher_options;
  matcher_options.block = o.block;
  const ipm::ImagePromptMatcher<blip::BlipItm> matcher(model, matcher_options);
  check<InvalidArgument>(matcher.block() != layers - 1, kProgram, ": ", o.block ? "--block " : "the default block ",
                         matcher.block(),
                         " is the last text layer; GradCAM is zero there by construction (only the [CLS] row "
                         "reaches the ITM head, and the map averages over the prompt tokens), so the mask would "
                         "keep everything; choose a block in [0, ",
                         layers - 2, "]");
  const std::vector<std::string> unknown = check_itm_text(kProgram, "--prompt", model, *o.prompt);
  if (!unknown.empty()) {
    err << "agla_ipm: warning: --prompt has words outside the ITM's vocabulary, read as [UNK]:";
    for (const auto& word : unknown) err << " '" << word << "'";
    err << "\n";
  }
  const ipm::Match match = matcher.match(image, *o.prompt);

  if (!o.out.empty()) {
    make_directory(kProgram, o.out);
    const at::Tensor resized = matcher.resize_for_model(image);
    io::write_png(o.out + "/heatmap.png", ipm::heatmap_overlay(resized, match.relevance));
    io::write_png(o.out + "/mask.png", match.mask.to(at::kByte).mul(255).unsqueeze(2).contiguous());
    io::write_png(o.out + "/augmented.png", match.augmented);
  }

  if (o.json) {
    nlohmann::json j = ipm::match_to_json(match, matcher.image_size());
    j["block"] = matcher.block();
    j["unknown_words"] = unknown;
    out << j.dump() << std::endl;
    return 0;
  }
  out << "prompt:          " << match.prompt << "\n"
      << "block:           " << matcher.block() << " of " << layers << " text layers\n"
      << "grid:            " << matcher.grid() << "x" << matcher.grid() << " over " << matcher.image_size() << "x"
      << matcher.image_size() << " px\n"
      << "itm logits:      " << match.itm_logits[0].item<double>() << " " << match.itm_logits[1].item<double>()
      << " (match probability " << match.itm_probability << ")\n"
      << "itc:             " << match.itc << "\n"
      << "mask ratio:      " << match.mask_ratio << " (kept " << match.kept_fraction << ")\n"
      << "timings (ms):    encode " << match.timings.encode << ", itm+gradcam " << match.timings.itm_gradcam << ", itc "
      << match.timings.itc << ", postprocess " << match.timings.postprocess << ", total " << match.timings.total << "\n"
      << "threads:         " << threads << "\n";
  if (!unknown.empty()) {
    out << "unknown words:  ";
    for (const auto& word : unknown) out << " " << word;
    out << " (read as [UNK])\n";
  }
  if (!o.out.empty()) out << "wrote:           " << o.out << "/{heatmap,mask,augmented}.png\n";
  return 0;
}

}  // namespace

int run_ipm(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_program(kProgram, args, out, err, parse_options, run);
}

}  // namespace agla::tools
