#include "common/methods.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>

#include "agla/error.hpp"
#include "agla/ipm/mask.hpp"
#include "agla/views/noise.hpp"

namespace agla::tools {

const std::vector<Method>& all_methods() {
  static const std::vector<Method> methods = {Method::Regular,        Method::Greedy,      Method::Sharpened,
                                              Method::CutoffOnly,     Method::Vcd,         Method::Agla,
                                              Method::AglaRandomMask, Method::AglaReleased};
  return methods;
}

const char* method_name(Method method) {
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

Method parse_method(const std::string& name) {
  std::string names;
  for (Method m : all_methods()) {
    if (name == method_name(m)) return m;
    names += names.empty() ? "" : "|";
    names += method_name(m);
  }
  throw InvalidArgument(
      detail::concat("agla::tools::parse_method: --method must be one of ", names, "; got '", name, "'"));
}

LocalView method_view(Method method) {
  switch (method) {
    case Method::Vcd:
      return LocalView::Noise;
    case Method::Agla:
    case Method::AglaReleased:
      return LocalView::IpmMask;
    case Method::AglaRandomMask:
      return LocalView::RandomMask;
    default:
      return LocalView::None;
  }
}

bool method_needs_itm(Method method) {
  const LocalView view = method_view(method);
  return view == LocalView::IpmMask || view == LocalView::RandomMask;
}

bool parse_sampling_option(const std::string& arg, ArgCursor& cursor, SamplingSettings& sampling) {
  const std::string& program = cursor.program();
  if (arg == "--alpha") {
    sampling.alpha = parse_number(program, arg, cursor.value(arg), 0.0, kMaxAlpha);
  } else if (arg == "--beta") {
    sampling.beta = parse_number(program, arg, cursor.value(arg), 0.0, 1.0, true);
  } else if (arg == "--temperature") {
    sampling.temperature = parse_number(program, arg, cursor.value(arg), kMinTemperature, kMaxTemperature);
  } else if (arg == "--top-k") {
    sampling.top_k = parse_integer(program, arg, cursor.value(arg), 0, kMaxTopK);
  } else if (arg == "--top-p") {
    sampling.top_p = parse_number(program, arg, cursor.value(arg), 0.0, 1.0, true);
  } else if (arg == "--greedy") {
    sampling.greedy = true;
  } else {
    return false;
  }
  return true;
}

DecodeOptions method_options(Method method, const SamplingSettings& settings) {
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
      o.local_view_tokens = 1;  // the released code's cache defect (DecodeOptions::llava_reference)
      break;
  }
  o.validate();
  return o;
}

at::Tensor random_mask(std::int64_t grid, std::int64_t height, std::int64_t width, double kept_fraction,
                       const at::Generator& generator, double blur_sigma_fraction) {
  const at::Tensor noise = at::rand({grid, grid}, generator, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor map = ipm::relevance_map(noise, height, width, blur_sigma_fraction);
  return ipm::threshold_map(map, ipm::KeepRatio{kept_fraction, false}).mask;
}

ViewBuilder::ViewBuilder(const blip::BlipItm* itm, const AnyLvlm& lvlm, std::int64_t noise_step)
    : lvlm_(&lvlm), noise_step_(noise_step) {
  if (itm != nullptr) matcher_.emplace(*itm);
}

AugmentedView ViewBuilder::build(LocalView kind, const at::Tensor& image, const std::string& itm_prompt,
                                 const at::Tensor& original_pixels, const at::Generator& generator) const {
  const auto start = std::chrono::steady_clock::now();
  AugmentedView view;
  if (kind == LocalView::Noise) {
    view.pixels = views::add_diffusion_noise(original_pixels, generator, noise_step_);
  } else if (kind == LocalView::IpmMask || kind == LocalView::RandomMask) {
    check<InvalidArgument>(matcher_.has_value(), "agla::tools::ViewBuilder: the ",
                           kind == LocalView::IpmMask ? "IPM" : "random", " mask needs an ITM model (--itm DIR)");
    ipm::Match match = matcher_->match(image, itm_prompt);
    view.itc = match.itc;
    if (kind == LocalView::IpmMask) {
      view.image = match.augmented;
      view.kept_fraction = match.kept_fraction;
    } else {
      const at::Tensor canvas = matcher_->resize_for_model(image);
      const at::Tensor mask = random_mask(matcher_->grid(), canvas.size(0), canvas.size(1), match.kept_fraction,
                                          generator, matcher_->options().blur_sigma_fraction);
      view.image = ipm::apply_mask(canvas, mask);
      view.kept_fraction = mask.to(at::kDouble).mean().item<double>();
    }
    view.pixels = lvlm_pixels(*lvlm_, view.image);
    view.match = std::move(match);
  }
  view.ipm_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return view;
}

at::Generator seeded_generator(std::uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

std::uint64_t question_seed(std::uint64_t seed, std::uint64_t index) {
  // splitmix64 of (seed, index): well-mixed, platform-independent.
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace agla::tools
