#include "common/methods.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <tuple>

#include "agla/error.hpp"
#include "agla/ipm/mask.hpp"
#include "agla/names.hpp"
#include "agla/views/instruction.hpp"
#include "agla/views/noise.hpp"
#include "agla/views/transforms.hpp"

namespace agla::tools {

namespace {

// Every method once, in the order tables list them.
constexpr NamedValue<Method> kMethodNames[] = {
    {Method::Regular, "regular"},   {Method::Greedy, "greedy"},   {Method::Sharpened, "sharpened"},
    {Method::CutoffOnly, "cutoff-only"}, {Method::Vcd, "vcd"}, {Method::Agla, "agla"},
    {Method::AglaRandomMask, "agla-random-mask"}, {Method::AglaReleased, "agla-released"},
    {Method::Ritual, "ritual"}, {Method::Icd, "icd"}, {Method::M3id, "m3id"}, {Method::M3idLogits, "m3id-logits"},
    {Method::Pai, "pai"}, {Method::Vacode, "vacode"}, {Method::AglaVcd, "agla+vcd"}};

constexpr NamedValue<LocalView> kLocalViewNames[] = {
    {LocalView::None, "none"},           {LocalView::IpmMask, "ipm-mask"}, {LocalView::RandomMask, "random-mask"},
    {LocalView::Noise, "noise"},         {LocalView::Transform, "transform"},
    {LocalView::Disturbed, "disturbed-instruction"}, {LocalView::NoImage, "no-image"},
    {LocalView::Selected, "selected"}};

}  // namespace

const std::vector<Method>& all_methods() {
  static const std::vector<Method> methods = [] {
    std::vector<Method> all;
    for (const NamedValue<Method>& entry : kMethodNames) all.push_back(entry.value);
    return all;
  }();
  return methods;
}

const char* method_name(Method method) { return name_of(method, kMethodNames); }

Method parse_method(const std::string& name) {
  if (const std::optional<Method> method = value_of(name, kMethodNames)) return *method;
  throw InvalidArgument(detail::concat("agla::tools::parse_method: --method must be one of ",
                                       joined_names(kMethodNames), "; got '", name, "'"));
}

const char* local_view_name(LocalView view) { return name_of(view, kLocalViewNames); }

std::vector<LocalView> method_views(Method method) {
  switch (method) {
    case Method::Vcd:
      return {LocalView::Noise};
    case Method::Agla:
    case Method::AglaReleased:
      return {LocalView::IpmMask};
    case Method::AglaRandomMask:
      return {LocalView::RandomMask};
    case Method::Ritual:
      return {LocalView::Transform};
    case Method::Icd:
      return {LocalView::Disturbed};
    case Method::M3id:
    case Method::M3idLogits:
    case Method::Pai:
      return {LocalView::NoImage};
    case Method::Vacode:
      return {LocalView::Selected};
    case Method::AglaVcd:
      return {LocalView::IpmMask, LocalView::Noise};
    default:
      return {};
  }
}

LocalView method_view(Method method) {
  const std::vector<LocalView> views = method_views(method);
  return views.empty() ? LocalView::None : views.front();
}

bool method_needs_itm(Method method) {
  for (LocalView view : method_views(method))
    if (view == LocalView::IpmMask || view == LocalView::RandomMask) return true;
  return false;
}

std::string MethodSettings::disturbance_text() const {
  return disturbance.value_or(views::default_icd_disturbance());
}

std::optional<llama::PaiAttention> MethodSettings::pai_attention() const {
  llama::PaiAttention pai;
  pai.alpha = pai_alpha.value_or(pai.alpha);
  if (pai_layers) std::tie(pai.start_layer, pai.end_layer) = *pai_layers;
  if (pai.alpha == 0.0) return std::nullopt;
  return pai;
}

bool parse_method_option(const std::string& arg, ArgCursor& cursor, MethodSettings& settings) {
  const std::string& program = cursor.program();
  if (arg == "--disturbance") {
    settings.disturbance = cursor.value(arg);
    check<InvalidArgument>(settings.disturbance->find_first_not_of(" \t\n") != std::string::npos, program,
                           ": --disturbance needs a text");
  } else if (arg == "--m3id-lambda") {
    settings.m3id_lambda = parse_number(program, arg, cursor.value(arg), 0.0, 1.0);
  } else if (arg == "--m3id-first-t") {
    settings.m3id_first_t = parse_integer(program, arg, cursor.value(arg), 0, 1);
  } else if (arg == "--pai-alpha") {
    settings.pai_alpha = parse_number(program, arg, cursor.value(arg), 0.0, 100.0);
  } else if (arg == "--pai-layers") {
    const std::vector<std::int64_t> layers = parse_id_list(program, arg, cursor.value(arg));
    check<InvalidArgument>(layers.size() == 2 && layers[0] <= layers[1] && layers[1] <= 4096, program,
                           ": --pai-layers takes START,END with START <= END <= 4096 (layers [START, END))");
    settings.pai_layers = std::make_pair(layers[0], layers[1]);
  } else if (arg == "--noise-step") {
    settings.noise_step = parse_integer(program, arg, cursor.value(arg), 0, 999);
  } else {
    return false;
  }
  return true;
}

void check_method_settings(const std::string& program, Method method, const MethodSettings& settings) {
  const auto refuse = [&](bool given, const char* option, const char* methods) {
    check<InvalidArgument>(!given, program, ": ", option, " applies to ", methods, " only, not to --method ",
                           method_name(method));
  };
  refuse(settings.disturbance.has_value() && method != Method::Icd, "--disturbance", "icd");
  const bool m3id = method == Method::M3id || method == Method::M3idLogits;
  refuse(settings.m3id_lambda.has_value() && !m3id, "--m3id-lambda", "m3id and m3id-logits");
  refuse(settings.m3id_first_t.has_value() && !m3id, "--m3id-first-t", "m3id and m3id-logits");
  refuse(settings.pai_alpha.has_value() && method != Method::Pai, "--pai-alpha", "pai");
  refuse(settings.pai_layers.has_value() && method != Method::Pai, "--pai-layers", "pai");
  const bool noise = method == Method::Vcd || method == Method::Vacode || method == Method::AglaVcd;
  refuse(settings.noise_step.has_value() && !noise, "--noise-step", "vcd, vacode and agla+vcd");
}

void check_sampling_settings(const std::string& program, Method method, const SamplingSettings& settings) {
  const bool plain = method == Method::Regular || method == Method::Greedy;
  check<InvalidArgument>(!(settings.beta && plain), program, ": --beta sets the plausibility cutoff, which --method ",
                         method_name(method), " does not apply");
  check<InvalidArgument>(!(settings.alpha && (plain || method == Method::CutoffOnly || method == Method::M3id ||
                                              method == Method::M3idLogits)),
                         program, ": --alpha weights an extra view, which --method ", method_name(method),
                         method == Method::CutoffOnly ? " fixes at 0"
                         : plain                       ? " does not have"
                                                       : " weights by its schedule (--m3id-lambda)");
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

DecodeOptions method_options(Method method, const SamplingSettings& settings, const MethodSettings& method_settings) {
  DecodeOptions o;
  switch (method) {
    case Method::Regular:
      o = DecodeOptions::regular();
      break;
    case Method::Greedy:
      o = DecodeOptions::regular();
      o.greedy = true;
      break;
    case Method::Sharpened:
      o = DecodeOptions::agla();
      o.local_view_tokens = 0;  // the original logits stand in for the augmented ones: l + alpha l
      break;
    case Method::CutoffOnly:
      o = DecodeOptions::agla();
      o.local_view_tokens = 0;
      break;
    case Method::Vcd:
      o = DecodeOptions::vcd();
      break;
    case Method::Agla:
    case Method::AglaRandomMask:
      o = DecodeOptions::agla();
      break;
    case Method::AglaReleased:
      o = DecodeOptions::agla();
      o.local_view_tokens = 1;  // the released code's cache defect (DecodeOptions::llava_reference)
      break;
    case Method::Ritual:
      o = DecodeOptions::ritual();
      break;
    case Method::Icd:
      o = DecodeOptions::icd();
      break;
    case Method::M3id:
      o = DecodeOptions::m3id();
      o.space = FusionSpace::LogProbs;  // the paper's l_c, l_u are log-probabilities
      break;
    case Method::M3idLogits:
      o = DecodeOptions::m3id();
      o.space = FusionSpace::Logits;
      break;
    case Method::Pai:
      o = DecodeOptions::pai();
      break;
    case Method::Vacode:
      o = DecodeOptions::vacode();
      break;
    case Method::AglaVcd:
      o = DecodeOptions::agla();
      o.further_views.push_back(ViewFusion{FusionMethod::Contrast, DecodeOptions::vcd().alpha});
      break;
  }
  o.temperature = settings.temperature;
  o.top_k = settings.top_k;
  o.top_p = settings.top_p;
  o.greedy = o.greedy || settings.greedy;
  if (settings.alpha) o.alpha = *settings.alpha;
  if (settings.beta) o.beta = *settings.beta;
  if (method == Method::CutoffOnly) o.alpha = 0.0;  // fused = l; only the beta cutoff acts
  if (method_settings.m3id_lambda) o.m3id_lambda = *method_settings.m3id_lambda;
  if (method_settings.m3id_first_t) o.m3id_first_t = *method_settings.m3id_first_t;
  o.validate();
  return o;
}

namespace {

constexpr NamedValue<FusionMethod> kFusionNames[] = {
    {FusionMethod::Assembly, "assembly"}, {FusionMethod::Contrast, "contrast"}, {FusionMethod::M3id, "m3id"},
    {FusionMethod::Plain, "plain"}};

const char* fusion_name(FusionMethod method) { return name_of(method, kFusionNames); }

}  // namespace

nlohmann::json method_parameters(Method method, const DecodeOptions& options, const MethodSettings& settings,
                                 bool pai_applied) {
  nlohmann::json terms = nlohmann::json::array();
  for (const ViewFusion& term : options.view_terms())
    terms.push_back({{"fusion", fusion_name(term.method)}, {"alpha", term.alpha}});
  nlohmann::json j{{"method", method_name(method)},
                   {"fusion", fusion_name(options.method)},
                   {"view_terms", terms},
                   {"space", options.space == FusionSpace::LogProbs ? "log-probs" : "logits"},
                   {"alpha", options.alpha},
                   {"beta", options.beta},
                   {"cutoff", options.method != FusionMethod::Plain},
                   {"temperature", options.temperature},
                   {"top_k", options.top_k},
                   {"top_p", options.top_p},
                   {"greedy", options.greedy}};
  if (options.local_view_tokens != DecodeOptions::kEveryToken) j["local_view_tokens"] = options.local_view_tokens;
  if (options.fusion_depends_on_step()) {
    j["m3id_lambda"] = options.m3id_lambda;
    j["m3id_first_t"] = options.m3id_first_t;
  }
  for (LocalView view : method_views(method))
    if (view == LocalView::Noise || view == LocalView::Selected) j["noise_step"] = settings.noise_step_value();
  if (method == Method::Icd) j["disturbance"] = settings.disturbance_text();
  if (method == Method::Pai) {
    const auto pai = settings.pai_attention();
    j["pai_attention"] = pai && pai_applied ? nlohmann::json{{"alpha", pai->alpha},
                                                             {"start_layer", pai->start_layer},
                                                             {"end_layer", pai->end_layer}}
                                            : nlohmann::json(nullptr);
    if (pai && !pai_applied) j["pai_attention_note"] = "the model family has no LLaMA attention: logit part only";
  }
  return j;
}

at::Tensor random_mask(std::int64_t grid, std::int64_t height, std::int64_t width, double kept_fraction,
                       const at::Generator& generator, double blur_sigma_fraction) {
  const at::Tensor noise = at::rand({grid, grid}, generator, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor map = ipm::relevance_map(noise, height, width, blur_sigma_fraction);
  return ipm::threshold_map(map, ipm::KeepRatio{kept_fraction, false}).mask;
}

ViewBuilder::ViewBuilder(const blip::BlipItm* itm, AnyLvlm& lvlm, std::int64_t noise_step)
    : lvlm_(&lvlm), noise_step_(noise_step) {
  if (itm != nullptr) matcher_.emplace(*itm);
}

const ipm::EncodedImage& ViewBuilder::encoded(const at::Tensor& image) const {
  if (!encoded_ || !encoded_of_.is_same(image)) {
    encoded_ = matcher_->encode(image);
    encoded_of_ = image;
  }
  return *encoded_;
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
    ipm::Match match = matcher_->match(encoded(image), itm_prompt);
    view.itc = match.itc;
    if (kind == LocalView::IpmMask) {
      view.image = match.augmented;
      view.kept_fraction = match.kept_fraction;
    } else {
      const at::Tensor canvas = encoded(image).resized;
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

MethodViews ViewBuilder::build_views(Method method, const MethodSettings& settings, const at::Tensor& image,
                                     const std::string& itm_prompt, const Prompt& prompt,
                                     const std::optional<std::string>& instruction, const at::Tensor& original_pixels,
                                     const at::Generator& generator, const std::string& program) const {
  const auto start = std::chrono::steady_clock::now();
  MethodViews out;
  at::Generator draws = generator;
  const auto image_view = [&](const at::Tensor& transformed) {
    return ExtraView{ViewKind::Image, lvlm_pixels(*lvlm_, transformed), {}};
  };
  const auto noise_view = [&] {
    return ExtraView{ViewKind::Image,
                     views::add_diffusion_noise(original_pixels, draws, settings.noise_step_value()), {}};
  };
  for (LocalView kind : method_views(method)) {
    nlohmann::json record{{"source", local_view_name(kind)}};
    switch (kind) {
      case LocalView::None:
        continue;
      case LocalView::IpmMask:
      case LocalView::RandomMask: {
        AugmentedView view = build(kind, image, itm_prompt, original_pixels, draws);
        out.views.push_back(ExtraView{ViewKind::Image, view.pixels, {}});
        out.ipm_image = view.image;
        out.itc = view.itc;
        out.kept_fraction = view.kept_fraction;
        out.match = std::move(view.match);
        record["kept_fraction"] = view.kept_fraction;
        break;
      }
      case LocalView::Noise:
        out.views.push_back(noise_view());
        record["noise_step"] = settings.noise_step_value();
        break;
      case LocalView::Transform: {
        const views::Transform transform = views::draw_transform(views::ritual_pool(), draws);
        out.views.push_back(image_view(views::apply_transform(transform, image, draws)));
        record["transform"] = views::transform_name(transform);
        break;
      }
      case LocalView::Disturbed: {
        check<InvalidArgument>(instruction.has_value() && lvlm_has_tokenizer(*lvlm_), program,
                               ": icd needs the instruction as text and a tokenizer to disturb it; this prompt came "
                               "as token ids");
        const Prompt disturbed = lvlm_disturbed_prompt(*lvlm_, *instruction, settings.disturbance_text());
        out.views.push_back(ExtraView{ViewKind::Text, {}, batch_prompts({disturbed}, lvlm_tokens(*lvlm_).pad_id)});
        record["disturbance"] = settings.disturbance_text();
        record["prompt_ids"] = disturbed.ids;
        break;
      }
      case LocalView::NoImage:
        out.views.push_back(ExtraView{ViewKind::NoImage, {}, {}});
        break;
      case LocalView::Selected: {
        // VACoDe's pool: RITUAL's six transforms (their parameters drawn here) and VCD's noise.
        std::vector<ExtraView> candidates;
        std::vector<std::string> names;
        for (views::Transform transform : views::ritual_pool()) {
          candidates.push_back(image_view(views::apply_transform(transform, image, draws)));
          names.emplace_back(views::transform_name(transform));
        }
        candidates.push_back(noise_view());
        names.emplace_back("noise");
        const std::vector<double> distances = lvlm_view_distances(*lvlm_, prompt, original_pixels, candidates, program);
        // The farthest candidate, lowest index on ties (views::farthest_view's rule).
        const std::size_t chosen =
            static_cast<std::size_t>(std::max_element(distances.begin(), distances.end()) - distances.begin());
        out.views.push_back(candidates[chosen]);
        record["selected"] = names[chosen];
        nlohmann::json pool = nlohmann::json::object();
        for (std::size_t k = 0; k < names.size(); ++k) pool[names[k]] = distances[k];
        record["distances"] = pool;
        break;
      }
    }
    record["kind"] = view_kind_name(out.views.back().kind);
    out.record.push_back(std::move(record));
  }
  out.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
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
