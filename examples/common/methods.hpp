#pragma once
/// \file
/// The decoding methods the benchmark compares (DESIGN section 5), as decoding options plus the
/// augmented view each one needs, and the builder of those views (AGLA's IPM mask, a random mask
/// of the same kept fraction, VCD's diffusion noise).

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "agla/decode.hpp"
#include "agla/error.hpp"
#include "agla/ipm.hpp"
#include "agla/views.hpp"
#include "agla/models/blip.hpp"
#include "cli.hpp"
#include "lvlm.hpp"

namespace agla::examples {

/// A decoding method of the benchmark table.
enum class Method {
  Regular,         ///< plain sampling (the reference baselines: temperature 1, top_p 1)
  Greedy,          ///< plain argmax
  Sharpened,       ///< AGLA's fusion and cutoff with the augmented view replaced by the original:
                   ///< softmax((1 + alpha) l) under the beta cutoff
  CutoffOnly,      ///< the beta cutoff alone on plain logits (fusion with alpha 0)
  Vcd,             ///< VCD: (1 + alpha) l - alpha l_noised, beta cutoff; diffusion-noised view
  Agla,            ///< AGLA (Eq. 3-5), IPM's augmented view on every token
  AglaRandomMask,  ///< AGLA with a random mask keeping the same fraction of pixels as IPM's
  AglaReleased,    ///< AGLA as the released code behaves: the local view shapes the first token only
};

/// Every method, in table order.
inline const std::vector<Method>& all_methods() {
  static const std::vector<Method> methods = {Method::Regular,        Method::Greedy,      Method::Sharpened,
                                              Method::CutoffOnly,     Method::Vcd,         Method::Agla,
                                              Method::AglaRandomMask, Method::AglaReleased};
  return methods;
}

/// The command-line name of `method`.
inline const char* method_name(Method method) {
  switch (method) {
    case Method::Regular:
      return "regular";
    case Method::Greedy:
      return "greedy";
    case Method::Sharpened:
      return "sharpened";
    case Method::CutoffOnly:
      return "cutoff-only";
    case Method::Vcd:
      return "vcd";
    case Method::Agla:
      return "agla";
    case Method::AglaRandomMask:
      return "agla-random-mask";
    case Method::AglaReleased:
      return "agla-released";
  }
  return "?";
}

/// The method called `name`; throws `agla::InvalidArgument` listing the valid names.
inline Method parse_method(const std::string& name) {
  std::string names;
  for (Method m : all_methods()) {
    if (name == method_name(m)) return m;
    names += names.empty() ? "" : "|";
    names += method_name(m);
  }
  throw InvalidArgument(
      detail::concat("agla::examples::parse_method: --method must be one of ", names, "; got '", name, "'"));
}

/// Which augmented view a method decodes with.
enum class ViewKind {
  None,        ///< no augmented forward
  IpmMask,     ///< AGLA's image-prompt-matching mask
  RandomMask,  ///< a random mask of IPM's kept fraction
  Noise,       ///< VCD's diffusion noise on the normalised pixels
};

/// The view `method` needs.
inline ViewKind method_view(Method method) {
  switch (method) {
    case Method::Vcd:
      return ViewKind::Noise;
    case Method::Agla:
    case Method::AglaReleased:
      return ViewKind::IpmMask;
    case Method::AglaRandomMask:
      return ViewKind::RandomMask;
    default:
      return ViewKind::None;
  }
}

/// Whether `method` needs the ITM model (its view, or the kept fraction its view copies, comes from IPM).
inline bool method_needs_itm(Method method) {
  const ViewKind view = method_view(method);
  return view == ViewKind::IpmMask || view == ViewKind::RandomMask;
}

/// IPM's text for free captioning when no prompt is given: the ITM needs a text, and a caption
/// request names no object, so a neutral one (whose words the ShapesWorld vocabulary has).
inline constexpr const char* kCaptionItmText = "the image";

/// Sampling settings shared by all methods, and per-run overrides of a method's alpha and beta.
struct SamplingSettings {
  std::optional<double> alpha;  ///< unset: the method's default (VCD 1, others 2)
  std::optional<double> beta;   ///< unset: the method's default (VCD 0.1, others 0.5)
  double temperature = 1.0;     ///< the reference runs: 1
  int64_t top_k = 0;            ///< the reference LLaVA runs passed top_k=None: off
  double top_p = 1.0;           ///< the reference runs: 1 (off)
  bool greedy = false;          ///< argmax for every method (greedy decoding of each fusion)
};

/// Consumes `arg` when it is one of the sampling options both programs share (`--alpha`, `--beta`,
/// `--temperature`, `--top-k`, `--top-p`, `--greedy`) and stores its value; false otherwise.
inline bool parse_sampling_option(const std::string& program, const std::string& arg, ArgCursor& cursor,
                                  SamplingSettings& sampling) {
  if (arg == "--alpha") {
    sampling.alpha = parse_number(program, arg, cursor.value(arg));
  } else if (arg == "--beta") {
    sampling.beta = parse_number(program, arg, cursor.value(arg));
  } else if (arg == "--temperature") {
    sampling.temperature = parse_number(program, arg, cursor.value(arg));
  } else if (arg == "--top-k") {
    sampling.top_k = parse_integer(program, arg, cursor.value(arg), 0);
  } else if (arg == "--top-p") {
    sampling.top_p = parse_number(program, arg, cursor.value(arg));
  } else if (arg == "--greedy") {
    sampling.greedy = true;
  } else {
    return false;
  }
  return true;
}

/// VCD's own defaults (DAMO-NLP-SG/VCD `eval/object_hallucination_vqa_llava.py`: cd_alpha 1, cd_beta 0.1).
inline constexpr double kVcdAlpha = 1.0, kVcdBeta = 0.1;
/// AGLA's defaults (the reference runs: alpha 2, beta 0.5).
inline constexpr double kAglaAlpha = 2.0, kAglaBeta = 0.5;

/// The decoding options of `method` under `settings` (validated).
inline DecodeOptions method_options(Method method, const SamplingSettings& settings) {
  DecodeOptions o;
  o.temperature = settings.temperature;
  o.top_k = settings.top_k;
  o.top_p = settings.top_p;
  o.greedy = settings.greedy;
  o.alpha = settings.alpha.value_or(method == Method::Vcd ? kVcdAlpha : kAglaAlpha);
  o.beta = settings.beta.value_or(method == Method::Vcd ? kVcdBeta : kAglaBeta);
  switch (method) {
    case Method::Regular:
      o.method = FusionMethod::Plain;
      break;
    case Method::Greedy:
      o.method = FusionMethod::Plain;
      o.greedy = true;
      break;
    case Method::Sharpened:
      o.method = FusionMethod::Assembly;
      o.local_view_tokens = 0;  // the original logits stand in for the augmented ones: l + alpha l
      break;
    case Method::CutoffOnly:
      o.method = FusionMethod::Assembly;
      o.alpha = 0.0;  // fused = l; only the beta cutoff acts
      o.local_view_tokens = 0;
      break;
    case Method::Vcd:
      o.method = FusionMethod::Contrast;
      break;
    case Method::Agla:
    case Method::AglaRandomMask:
      o.method = FusionMethod::Assembly;
      break;
    case Method::AglaReleased:
      o.method = FusionMethod::Assembly;
      o.local_view_tokens = 1;  // DESIGN section 2: the released cache defect
      break;
  }
  o.validate();
  return o;
}

/// The augmented view of one (image, prompt) pair and what IPM measured for it.
struct AugmentedView {
  at::Tensor image;   ///< `[S, S, 3]` uint8 masked image (mask views), undefined otherwise
  at::Tensor pixels;  ///< `[1, 3, S', S']` LVLM input of the view, undefined for `ViewKind::None`
  double itc = std::numeric_limits<double>::quiet_NaN();            ///< ITC similarity (mask views)
  double kept_fraction = std::numeric_limits<double>::quiet_NaN();  ///< pixels kept (mask views)
  double ipm_ms = 0;                                                ///< time to build the view
  std::optional<ipm::Match> match;                                  ///< IPM's result (mask views)
};

/// A random relevance grid `[g, g]` (uniform, from `generator`) through IPM's own resize and blur,
/// thresholded to keep `kept_fraction` of the pixels: a mask with IPM's kept share and blob shape
/// but no relation to the prompt. Returns the mask `[h, w]` bool.
inline at::Tensor random_mask(int64_t grid, int64_t height, int64_t width, double kept_fraction,
                              const at::Generator& generator, double blur_sigma_fraction = 0.02) {
  const at::Tensor noise = at::rand({grid, grid}, generator, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor map = ipm::relevance_map(noise, height, width, blur_sigma_fraction);
  return ipm::threshold_map(map, ipm::KeepRatio{kept_fraction, false}).mask;
}

/// Builds the augmented views of the methods over one ITM model and one LVLM.
class ViewBuilder {
 public:
  /// `itm` may be null when no method that needs it is run; `noise_step` is VCD's diffusion step.
  ViewBuilder(const blip::BlipItm* itm, const Lvlm& lvlm, int64_t noise_step = 500)
      : lvlm_(&lvlm), noise_step_(noise_step) {
    if (itm != nullptr) matcher_.emplace(*itm);
  }

  /// The view `kind` of `image` `[H, W, 3]` uint8 for ITM prompt `itm_prompt`; `original_pixels`
  /// is the LVLM input of the image; `generator` draws the random mask or the noise.
  AugmentedView build(ViewKind kind, const at::Tensor& image, const std::string& itm_prompt,
                      const at::Tensor& original_pixels, const at::Generator& generator) const {
    const auto start = std::chrono::steady_clock::now();
    AugmentedView view;
    if (kind == ViewKind::Noise) {
      view.pixels = views::add_diffusion_noise(original_pixels, generator, noise_step_);
    } else if (kind == ViewKind::IpmMask || kind == ViewKind::RandomMask) {
      check<InvalidArgument>(matcher_.has_value(), "agla::examples::ViewBuilder: the ",
                             kind == ViewKind::IpmMask ? "IPM" : "random", " mask needs an ITM model (--itm DIR)");
      ipm::Match match = matcher_->match(image, itm_prompt);
      view.itc = match.itc;
      if (kind == ViewKind::IpmMask) {
        view.image = match.augmented;
        view.kept_fraction = match.kept_fraction;
      } else {
        const at::Tensor canvas = matcher_->resize_for_model(image);
        const at::Tensor mask = random_mask(matcher_->grid(), canvas.size(0), canvas.size(1), match.kept_fraction,
                                            generator, matcher_->options().blur_sigma_fraction);
        view.image = ipm::apply_mask(canvas, mask);
        view.kept_fraction = mask.to(at::kDouble).mean().item<double>();
      }
      view.pixels = lvlm_->pixel_values(view.image);
      view.match = std::move(match);
    }
    view.ipm_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return view;
  }

  /// The matcher (when an ITM model was given).
  const std::optional<ipm::ImagePromptMatcher<blip::BlipItm>>& matcher() const { return matcher_; }

 private:
  const Lvlm* lvlm_;
  int64_t noise_step_;
  std::optional<ipm::ImagePromptMatcher<blip::BlipItm>> matcher_;
};

/// A CPU generator seeded with `seed` (the same seed gives the same draws).
inline at::Generator seeded_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

/// The seed of question `index` of a run with seed `seed`: each question draws from its own
/// generator, so a run split into chunks gives the same answers as the whole run.
inline uint64_t question_seed(uint64_t seed, uint64_t index) {
  // splitmix64 of (seed, index): well-mixed, platform-independent.
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace agla::examples
