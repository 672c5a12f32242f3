#pragma once
/// \file
/// The decoding methods the programs compare (docs/tools.md, docs/decoding.md): decoding options plus
/// the extra views each one needs, the builder of those views (AGLA's IPM mask, a random mask of the
/// same kept fraction, VCD's diffusion noise, RITUAL's random transform, ICD's disturbed instruction,
/// the no-image view of M3ID and PAI, VACoDe's selected augmentation), the sampling and method options
/// the programs share, what a run records about them, and per-question seeds.

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agla/decode/options.hpp"
#include "agla/ipm/matcher.hpp"
#include "agla/models/llama/views.hpp"
#include "agla/models/lvlm.hpp"
#include "agla/models/blip/itm.hpp"
#include "common/cli.hpp"
#include "common/models.hpp"

namespace agla::tools {

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
  Ritual,          ///< RITUAL: l + 3 l_T, one random transform T per question, beta 0.1
  Icd,             ///< ICD: (1 + 1) l - 1 l_icd, the instruction disturbed, beta 0.1
  M3id,            ///< M3ID in log-probability space (as the paper writes it), no-image view
  M3idLogits,      ///< M3ID in raw-logit space (as the RITUAL harness computes it), no-image view
  Pai,             ///< PAI: logit part against the no-image view (plus attention on LLaMA models), greedy
  Vacode,          ///< VACoDe-style: VCD's contrast with the pool view farthest from the original
  AglaVcd,         ///< AGLA then VCD: (1 + 1) (l + 2 l_ipm) - 1 l_noise, beta 0.5
};

/// Every method, in table order.
const std::vector<Method>& all_methods();

/// The command-line name of `method`.
const char* method_name(Method method);

/// The method called `name`; throws `agla::InvalidArgument` listing the valid names.
Method parse_method(const std::string& name);

/// Where an extra view of a method comes from.
enum class LocalView {
  None,        ///< no augmented forward
  IpmMask,     ///< AGLA's image-prompt-matching mask
  RandomMask,  ///< a random mask of IPM's kept fraction
  Noise,       ///< VCD's diffusion noise on the normalised pixels
  Transform,   ///< one of RITUAL's random transforms, drawn per question
  Disturbed,   ///< the same image under ICD's disturbed instruction (a text view)
  NoImage,     ///< the prompt without the image
  Selected,    ///< VACoDe: the view of the pool (RITUAL's transforms, VCD's noise) farthest from the original
};

/// The name of `view` in results files ("ipm-mask", "noise", "transform", ...).
const char* local_view_name(LocalView view);

/// The first extra view `method` needs (`None` for none).
LocalView method_view(Method method);

/// Every extra view `method` needs, in fusion order (empty for none).
std::vector<LocalView> method_views(Method method);

/// Whether `method` needs the ITM model (its view, or the kept fraction its view copies, comes from IPM).
bool method_needs_itm(Method method);

/// IPM's text for free captioning when no prompt is given: the ITM needs a text, and a caption
/// request names no object, so a neutral one (whose words the ShapesWorld vocabulary has).
inline constexpr const char* kCaptionItmText = "the image";

/// The suffix the AGLA reference appends to every POPE question (`eval/run_llava.py`), which the
/// ShapesWorld LVLM was also trained and gated with.
inline constexpr const char* kPopeQuestionSuffix = " Please answer this question with one word.";

/// Settings of single methods (ICD's disturbance, M3ID's schedule, PAI's attention, VCD's noise
/// step); an option given for a method that has no use for it is refused (`check_method_settings`).
struct MethodSettings {
  std::optional<std::string> disturbance;  ///< ICD: unset = `views::default_icd_disturbance()`
  std::optional<double> m3id_lambda;       ///< M3ID: unset = 0.02
  std::optional<std::int64_t> m3id_first_t;  ///< M3ID: t of the first generated token, unset = 1 (paper)
  std::optional<double> pai_alpha;         ///< PAI attention boost: unset = 0.2 (0 = logit part only)
  std::optional<std::pair<std::int64_t, std::int64_t>> pai_layers;  ///< PAI layers [start, end): unset = [2, 32)
  std::optional<std::int64_t> noise_step;  ///< VCD's diffusion step (vcd, vacode, agla+vcd): unset = 500

  /// ICD's disturbance in use.
  std::string disturbance_text() const;
  /// PAI's attention settings in use (`nullopt` when the boost is 0).
  std::optional<llama::PaiAttention> pai_attention() const;
  /// VCD's noise step in use.
  std::int64_t noise_step_value() const { return noise_step.value_or(500); }
};

/// Consumes `arg` when it is a method option (`--disturbance`, `--m3id-lambda`, `--m3id-first-t`,
/// `--pai-alpha`, `--pai-layers S,E`, `--noise-step`) and stores its range-checked value; false otherwise.
bool parse_method_option(const std::string& arg, ArgCursor& cursor, MethodSettings& settings);

/// Throws `agla::InvalidArgument` naming `program` when `settings` holds an option `method` has no
/// use for (e.g. `--disturbance` without ICD): such a run would not be what its command says.
void check_method_settings(const std::string& program, Method method, const MethodSettings& settings);

/// Bounds of the sampling options: wide enough for any setting in use, narrow enough that the
/// fused and scaled logits stay finite in float32.
inline constexpr double kMaxAlpha = 1000.0, kMinTemperature = 1e-3, kMaxTemperature = 1e3;
/// Largest `--top-k`.
inline constexpr std::int64_t kMaxTopK = 1 << 20;

/// Sampling settings shared by all methods, and per-run overrides of a method's alpha and beta.
struct SamplingSettings {
  std::optional<double> alpha;  ///< unset: the method's default (VCD 1, others 2)
  std::optional<double> beta;   ///< unset: the method's default (VCD 0.1, others 0.5)
  double temperature = 1.0;     ///< the reference runs: 1
  std::int64_t top_k = 0;       ///< the reference LLaVA runs passed top_k=None: off
  double top_p = 1.0;           ///< the reference runs: 1 (off)
  bool greedy = false;          ///< argmax for every method (greedy decoding of each fusion)
};

/// Consumes `arg` when it is one of the sampling options the programs share (`--alpha`, `--beta`,
/// `--temperature`, `--top-k`, `--top-p`, `--greedy`) and stores its range-checked value; false otherwise.
bool parse_sampling_option(const std::string& arg, ArgCursor& cursor, SamplingSettings& sampling);

/// Throws `agla::InvalidArgument` naming `program` when `settings` gives `--alpha` or `--beta` to a
/// method without that weight or cutoff (regular, greedy; cutoff-only's alpha is 0, M3ID's follows its schedule).
void check_sampling_settings(const std::string& program, Method method, const SamplingSettings& settings);

/// VCD's own defaults (DAMO-NLP-SG/VCD `eval/object_hallucination_vqa_llava.py`: cd_alpha 1, cd_beta 0.1).
inline constexpr double kVcdAlpha = 1.0, kVcdBeta = 0.1;
/// AGLA's defaults (the reference runs: alpha 2, beta 0.5).
inline constexpr double kAglaAlpha = 2.0, kAglaBeta = 0.5;

/// The decoding options of `method` under `settings` (validated): the method's preset
/// (`DecodeOptions::agla()`, `vcd()`, `ritual()`, ...) with the sampling settings and overrides.
DecodeOptions method_options(Method method, const SamplingSettings& settings,
                             const MethodSettings& method_settings = {});

/// What a results line records about the decoding of `method`: fusion, weights, cutoff, space,
/// warpers, M3ID's schedule, PAI's attention (`pai_applied`: whether the model took it).
nlohmann::json method_parameters(Method method, const DecodeOptions& options, const MethodSettings& settings,
                                 bool pai_applied);

/// The extra views of one (image, prompt) pair, ready for the LVLM, and what was used to build them.
struct MethodViews {
  std::vector<ExtraView> views;     ///< in fusion order, B = 1
  nlohmann::json record = nlohmann::json::array();  ///< one object per view: kind, source, its draws
  at::Tensor ipm_image;             ///< `[S, S, 3]` uint8 masked image of a mask view, else undefined
  double itc = std::numeric_limits<double>::quiet_NaN();            ///< IPM's ITC (mask views)
  double kept_fraction = std::numeric_limits<double>::quiet_NaN();  ///< pixels kept (mask views)
  double ms = 0;                                                    ///< time to build the views
  std::optional<ipm::Match> match;                                  ///< IPM's result (mask views)
};

/// The augmented view of one (image, prompt) pair and what IPM measured for it.
struct AugmentedView {
  at::Tensor image;   ///< `[S, S, 3]` uint8 masked image (mask views), undefined otherwise
  at::Tensor pixels;  ///< `[1, 3, S', S']` LVLM input of the view, undefined for `LocalView::None`
  double itc = std::numeric_limits<double>::quiet_NaN();            ///< ITC similarity (mask views)
  double kept_fraction = std::numeric_limits<double>::quiet_NaN();  ///< pixels kept (mask views)
  double ipm_ms = 0;                                                ///< time to build the view
  std::optional<ipm::Match> match;                                  ///< IPM's result (mask views)
};

/// A random relevance grid `[g, g]` (uniform, from `generator`) through IPM's own resize and blur,
/// thresholded to keep `kept_fraction` of the pixels: a mask with IPM's kept share and blob shape
/// but no relation to the prompt. Returns the mask `[h, w]` bool.
at::Tensor random_mask(std::int64_t grid, std::int64_t height, std::int64_t width, double kept_fraction,
                       const at::Generator& generator, double blur_sigma_fraction = 0.02);

/// Builds the augmented views of the methods over one ITM model and one LVLM.
class ViewBuilder {
 public:
  /// `itm` may be null when no method that needs it is run; `noise_step` is VCD's diffusion step.
  ViewBuilder(const blip::BlipItm* itm, AnyLvlm& lvlm, std::int64_t noise_step = 500);

  /// The view `kind` of `image` `[H, W, 3]` uint8 for ITM prompt `itm_prompt`; `original_pixels`
  /// is the LVLM input of the image; `generator` draws the random mask or the noise.
  AugmentedView build(LocalView kind, const at::Tensor& image, const std::string& itm_prompt,
                      const at::Tensor& original_pixels, const at::Generator& generator) const;

  /// Every extra view of `method` for `image` `[H, W, 3]` uint8 asked with `prompt` (the original
  /// prompt; `instruction` its text, needed by ICD, whose disturbance is `settings`'s) on
  /// `original_pixels`. `generator` draws the noise, the random mask and RITUAL's transform.
  /// VACoDe runs the model's first step on every pool view to choose one. Throws
  /// `agla::InvalidArgument` naming `program` when a view cannot be built (ICD without a tokenizer).
  MethodViews build_views(Method method, const MethodSettings& settings, const at::Tensor& image,
                          const std::string& itm_prompt, const Prompt& prompt,
                          const std::optional<std::string>& instruction, const at::Tensor& original_pixels,
                          const at::Generator& generator, const std::string& program) const;

  /// The matcher (when an ITM model was given).
  const std::optional<ipm::ImagePromptMatcher<blip::BlipItm>>& matcher() const { return matcher_; }

 private:
  // IPM's encoding of `image`, computed again only when another image tensor comes (the questions
  // of one image share it; the matches equal those of `match(image, prompt)` bit for bit).
  const ipm::EncodedImage& encoded(const at::Tensor& image) const;

  AnyLvlm* lvlm_;
  std::int64_t noise_step_;
  std::optional<ipm::ImagePromptMatcher<blip::BlipItm>> matcher_;
  mutable std::optional<ipm::EncodedImage> encoded_;
  mutable at::Tensor encoded_of_;  // the tensor `encoded_` was computed from
};

/// A CPU generator seeded with `seed` (the same seed gives the same draws).
at::Generator seeded_generator(std::uint64_t seed);

/// The seed of question `index` of a run with seed `seed`: each question draws from its own
/// generator, so a run split into chunks gives the same answers as the whole run.
std::uint64_t question_seed(std::uint64_t seed, std::uint64_t index);

}  // namespace agla::tools
