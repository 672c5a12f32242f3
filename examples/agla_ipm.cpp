// agla_ipm: the image-prompt matching inspector. Runs AGLA's IPM (BLIP ITM GradCAM + ITC ratio +
// mask) on one image and prompt, and shows what the augmented view keeps.
//
//   agla_ipm --itm DIR --image PATH --prompt TEXT [--block N] [--out DIR] [--json] [--threads N]
//
// DIR is a Hugging Face BLIP ITM directory (config.json, model.safetensors, vocab.txt), e.g.
// Salesforce/blip-itm-large-coco; the image size and grid come from its config. With --out the
// tool writes DIR/heatmap.png (relevance overlaid on the model-input image with the jet colour map,
// like LAVIS getAttMap), DIR/mask.png (white = kept) and DIR/augmented.png (AGLA's local view).
// With --json it prints exactly one JSON object (format: agla/ipm/report.hpp); otherwise a short
// text summary. Any bad input prints the library's message on stderr and exits with status 1.
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/ipm.hpp"
#include "agla/models/blip.hpp"
#include "agla/runtime.hpp"

namespace {

void usage(std::ostream& out) {
  out << "usage: agla_ipm --itm DIR --image PATH --prompt TEXT [--block N] [--out DIR] [--json] [--threads N]\n"
         "  --itm DIR      BLIP ITM model directory (config.json, model.safetensors, vocab.txt)\n"
         "  --image PATH   input image (PNG, JPEG, BMP)\n"
         "  --prompt TEXT  the prompt to match\n"
         "  --block N      text layer whose cross-attention GradCAM reads (default: layers / 2, 6 for BLIP)\n"
         "  --out DIR      write heatmap.png, mask.png and augmented.png there\n"
         "  --json         print one JSON object (itm_logits, itm_probability, itc, mask_ratio,\n"
         "                 kept_fraction, grid, image_size, timings_ms)\n"
         "  --threads N    intra-op threads (0 = all cores; default 0)\n";
}

struct Options {
  std::string itm;
  std::string image;
  std::optional<std::string> prompt;
  std::optional<int64_t> block;
  std::string out;
  bool json = false;
  int threads = 0;
};

int64_t parse_integer(const std::string& option, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  agla::check<agla::InvalidArgument>(!text.empty() && *end == '\0' && errno == 0, "agla_ipm: ", option,
                                     " expects an integer; got '", text, "'");
  return static_cast<int64_t>(value);
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      agla::check<agla::InvalidArgument>(i + 1 < argc, "agla_ipm: ", arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      usage(std::cout);
      std::exit(0);
    } else if (arg == "--itm") {
      options.itm = value();
    } else if (arg == "--image") {
      options.image = value();
    } else if (arg == "--prompt") {
      options.prompt = value();
    } else if (arg == "--block") {
      options.block = parse_integer(arg, value());
    } else if (arg == "--out") {
      options.out = value();
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--threads") {
      const int64_t threads = parse_integer(arg, value());
      agla::check<agla::InvalidArgument>(threads >= 0 && threads <= 4096,
                                         "agla_ipm: --threads must be in [0, 4096]; got ", threads);
      options.threads = static_cast<int>(threads);
    } else {
      usage(std::cerr);
      throw agla::InvalidArgument("agla_ipm: unknown option '" + arg + "'");
    }
  }
  agla::check<agla::InvalidArgument>(!options.itm.empty(), "agla_ipm: --itm DIR is required");
  agla::check<agla::InvalidArgument>(!options.image.empty(), "agla_ipm: --image PATH is required");
  agla::check<agla::InvalidArgument>(options.prompt.has_value(), "agla_ipm: --prompt TEXT is required");
  return options;
}

int run(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  agla::configure_threads(options.threads);
  if (auto warning = agla::blas_warning()) std::cerr << *warning << "\n";

  const agla::blip::BlipItm model = agla::blip::BlipItm::load(options.itm);
  agla::ipm::MatcherOptions matcher_options;
  matcher_options.block = options.block;
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(model, matcher_options);
  const at::Tensor image = agla::io::read_image(options.image);
  const agla::ipm::Match match = matcher.match(image, *options.prompt);

  if (!options.out.empty()) {
    std::error_code error;
    std::filesystem::create_directories(options.out, error);
    agla::check<agla::FormatError>(!error, "agla_ipm: cannot create output directory '", options.out,
                                   "': ", error.message());
    const at::Tensor resized = matcher.resize_for_model(image);
    agla::io::write_png(options.out + "/heatmap.png", agla::ipm::heatmap_overlay(resized, match.relevance));
    agla::io::write_png(options.out + "/mask.png", match.mask.to(at::kByte).mul(255).unsqueeze(2).contiguous());
    agla::io::write_png(options.out + "/augmented.png", match.augmented);
  }

  if (options.json) {
    std::cout << agla::ipm::match_to_json(match, matcher.image_size()).dump() << std::endl;
  } else {
    std::cout << "prompt:          " << match.prompt << "\n"
              << "block:           " << matcher.block() << " of " << model.num_text_layers() << " text layers\n"
              << "grid:            " << matcher.grid() << "x" << matcher.grid() << " over " << matcher.image_size()
              << "x" << matcher.image_size() << " px\n"
              << "itm logits:      " << match.itm_logits[0].item<double>() << " " << match.itm_logits[1].item<double>()
              << " (match probability " << match.itm_probability << ")\n"
              << "itc:             " << match.itc << "\n"
              << "mask ratio:      " << match.mask_ratio << " (kept " << match.kept_fraction << ")\n"
              << "timings (ms):    encode " << match.timings.encode << ", itm+gradcam " << match.timings.itm_gradcam
              << ", itc " << match.timings.itc << ", postprocess " << match.timings.postprocess << ", total "
              << match.timings.total << "\n";
    if (!options.out.empty()) std::cout << "wrote:           " << options.out << "/{heatmap,mask,augmented}.png\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const agla::Error& error) {
    std::cerr << error.what() << "\n";
  } catch (const std::exception& error) {
    std::cerr << "agla_ipm: " << error.what() << "\n";
  }
  return 1;
}
