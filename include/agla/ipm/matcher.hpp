#pragma once
/// \file
/// `ImagePromptMatcher<Itm>`: image + prompt(s) -> GradCAM relevance, ITC similarity, adaptive
/// mask and AGLA's augmented (local) view, as AGLA's `eval/augmentation.py` computes them, over
/// any model that meets the ITM contract (docs/design.md §4):
///
/// ```
/// struct Itm {                       // all const
///   at::Tensor encode_image(const at::Tensor& pixel_values) const;          // [B,3,S,S] -> [B,N,D]
///   TextBatch encode_text(const std::vector<std::string>& prompts) const;  // .input_ids ([CLS] first),
///                                    // .itm_input_ids ([ENC] first), .attention_mask, each [P, L]
///   ItmScore score_itm(const at::Tensor& image_embeds,   // [1,N,D] (broadcast) or [P,N,D]
///                      const at::Tensor& itm_input_ids, const at::Tensor& attention_mask,
///                      int64_t attention_layer) const;   // .logits [P,2] (col 1 = match),
///                                    // .attention [P,H,L,N]: that layer's cross-attention probs,
///                                    // an autograd leaf the logits depend on
///   at::Tensor itc_similarity(const at::Tensor& image_embeds, const at::Tensor& input_ids,
///                             const at::Tensor& attention_mask) const;      // [B_img, P]
///   int64_t num_text_layers() const; int64_t patch_grid() const; int64_t image_size() const;
///   at::Device device() const; at::ScalarType dtype() const;
///   std::array<float, 3> image_mean() const; std::array<float, 3> image_std() const;
/// };
/// ```
///
/// Cost: the image is encoded once without gradients (`encode` keeps it for later calls, e.g. every
/// question about one image), all prompts are scored as one batch, and
/// the only gradient taken is that of the summed match logit with respect to the one attention
/// tensor (`torch::autograd::grad`), never into the parameters (the reference runs a full
/// `backward()` into every parameter).

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/ipm/gradcam.hpp"
#include "agla/ipm/mask.hpp"

namespace agla::ipm {

/// Options of `ImagePromptMatcher`.
struct MatcherOptions {
  /// Text layer whose cross-attention GradCAM reads (0-based). Unset: `num_text_layers / 2`,
  /// i.e. 6 for the 12-layer BLIP text encoder as in the reference (`block_num=6`).
  std::optional<int64_t> block;
  /// ITC similarity -> kept share of pixels. Default: AGLA's `1 - itc / 2`, capped at `1 - 1e-5`.
  KeepRule keep_rule = reference_keep_ratio;
  /// false (reference): mask and augmented image at the model's input size (the S x S resized
  /// RGB image); true: at the original image's resolution.
  bool original_resolution = false;
  /// Gaussian sigma as a fraction of the longer side of the mask (LAVIS: 0.02).
  double blur_sigma_fraction = 0.02;
};

/// Wall-clock milliseconds of the stages of one `match` call (for a batch: of the whole batch).
struct MatchTimings {
  double encode = 0;       ///< image resize + normalise + vision encoder + text tokenisation
  double itm_gradcam = 0;  ///< ITM forward with attention capture, attention gradient, GradCAM
  double itc = 0;          ///< ITC similarity
  double postprocess = 0;  ///< resize, blur, threshold, mask, augmented image (all prompts)
  double total = 0;        ///< the whole call
};

/// An image encoded once for any number of `ImagePromptMatcher::match` calls (e.g. every question
/// about it): matching against it gives exactly what matching against the image gives.
struct EncodedImage {
  at::Tensor image;         ///< `[H, W, 3]` uint8 (CPU): the image as given
  at::Tensor resized;       ///< `[S, S, 3]` uint8 (CPU): the model-input view
  at::Tensor image_embeds;  ///< `[1, N, D]`: the vision encoder's output (model device and dtype)
  double encode_ms = 0;     ///< wall-clock milliseconds of resize, normalise and vision encoder
};

/// The result for one (image, prompt) pair. Tensors are on the CPU.
struct Match {
  std::string prompt;
  /// `[2]` float: ITM logits (no-match, match).
  at::Tensor itm_logits;
  /// softmax(itm_logits)[1].
  double itm_probability = 0;
  /// ITC cosine similarity of the image and the prompt.
  double itc = 0;
  /// `[g, g]` float: the averaged GradCAM map (the relevance grid AGLA uses).
  at::Tensor grid;
  /// `[L, g, g]` float: GradCAM per text token (L = the prompt's real tokens incl. `[ENC]`/`[SEP]`).
  at::Tensor per_token;
  /// `[h, w]` float32: relevance at mask resolution (blurred, normalised; all NaN for a flat grid).
  at::Tensor relevance;
  /// The kept share the rule produced from `itc`.
  KeepRatio keep;
  /// Share of the pixels the rule asks to mask: `1 - keep.keep` (reference: `itc / 2`, >= 1e-5).
  double mask_ratio = 0;
  /// Threshold position in the descending map and its value (NaN for a flat map).
  int64_t threshold_index = 0;
  float threshold = 0;
  /// `[h, w]` bool: true = pixel kept.
  at::Tensor mask;
  /// `[h, w, 3]` uint8: the image the mask applies to, with masked pixels set to 0 (AGLA's view).
  at::Tensor augmented;
  /// Share of pixels actually kept (ties with the threshold are kept).
  double kept_fraction = 0;
  /// Stage timings of the call that produced this match.
  MatchTimings timings;
};

/// Image-prompt matching over an ITM model `Itm` (see the file comment for the contract). Holds a
/// reference to the model, which must outlive the matcher.
template <typename Itm>
class ImagePromptMatcher {
 public:
  /// Validates the options against `model` (layer in range, square patch grid).
  explicit ImagePromptMatcher(const Itm& model, MatcherOptions options = {})
      : model_(&model), options_(std::move(options)) {
    const int64_t layers = model.num_text_layers();
    block_ = options_.block.value_or(layers / 2);
    check<InvalidArgument>(block_ >= 0 && block_ < layers, "agla::ipm::ImagePromptMatcher: block must be in [0, ",
                           layers, ") for this model's ", layers, " text layers; got ", block_);
    grid_ = model.patch_grid();  // the model throws for a non-square grid
    check<ShapeError>(grid_ > 0, "agla::ipm::ImagePromptMatcher: the model's patch grid must be positive; got ", grid_);
    image_size_ = model.image_size();
    check<InvalidArgument>(static_cast<bool>(options_.keep_rule),
                           "agla::ipm::ImagePromptMatcher: keep_rule must be set");
    check<InvalidArgument>(options_.blur_sigma_fraction > 0,
                           "agla::ipm::ImagePromptMatcher: blur_sigma_fraction must be > 0; got ",
                           options_.blur_sigma_fraction);
  }

  /// The text layer GradCAM reads.
  int64_t block() const { return block_; }
  /// Side g of the patch grid.
  int64_t grid() const { return grid_; }
  /// Side S of the model's square input image.
  int64_t image_size() const { return image_size_; }
  /// The options in use.
  const MatcherOptions& options() const { return options_; }

  /// `image` `[H, W, 3]` uint8 (CPU) -> the model-input view `[S, S, 3]` uint8 (Pillow bicubic).
  at::Tensor resize_for_model(const at::Tensor& image) const {
    check_image(image);
    return io::resize_bicubic(image.to(at::kCPU).contiguous(), image_size_, image_size_);
  }

  /// `resized` `[S, S, 3]` uint8 -> normalised pixel values `[1, 3, S, S]` on the model's device/dtype.
  at::Tensor pixel_values(const at::Tensor& resized) const {
    return io::normalize_image(resized, model_->image_mean(), model_->image_std())
        .unsqueeze(0)
        .to(model_->device(), model_->dtype());
  }

  /// Encodes `image` `[H, W, 3]` uint8 once (resize, normalise, vision encoder) for later `match`
  /// calls with any prompts.
  EncodedImage encode(const at::Tensor& image) const {
    check_image(image);
    const auto start = Clock::now();
    EncodedImage encoded;
    encoded.image = image.to(at::kCPU).contiguous();
    encoded.resized = resize_for_model(encoded.image);
    {
      at::NoGradGuard no_grad;
      encoded.image_embeds = model_->encode_image(pixel_values(encoded.resized));
    }
    synchronize(encoded.image_embeds);
    encoded.encode_ms = ms(start, Clock::now());
    return encoded;
  }

  /// Matches one prompt against `image` `[H, W, 3]` uint8.
  Match match(const at::Tensor& image, const std::string& prompt) const {
    return std::move(match(image, std::vector<std::string>{prompt}).front());
  }

  /// Matches one prompt against an image encoded before (equal to matching against the image).
  Match match(const EncodedImage& image, const std::string& prompt) const {
    return std::move(match(image, std::vector<std::string>{prompt}).front());
  }

  /// Matches several prompts against one `image` `[H, W, 3]` uint8: the image is encoded once and
  /// the prompts are scored as one batch. Results in prompt order; equal to one call per prompt
  /// up to float rounding (the prompts are padded to one length).
  std::vector<Match> match(const at::Tensor& image, const std::vector<std::string>& prompts) const {
    check<InvalidArgument>(!prompts.empty(), "agla::ipm::ImagePromptMatcher::match: need at least one prompt");
    return match_encoded(encode(image), prompts, true);
  }

  /// Matches several prompts against an image encoded before, as one batch; `timings.encode` counts
  /// the text tokenisation only (the image's cost is `image.encode_ms`).
  std::vector<Match> match(const EncodedImage& image, const std::vector<std::string>& prompts) const {
    return match_encoded(image, prompts, false);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double ms(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  }

  // The batched match; `count_encoding` adds the image's encoding time to the timings.
  std::vector<Match> match_encoded(const EncodedImage& encoded, const std::vector<std::string>& prompts,
                                   bool count_encoding) const {
    check<InvalidArgument>(!prompts.empty(), "agla::ipm::ImagePromptMatcher::match: need at least one prompt");
    check<InvalidArgument>(encoded.image_embeds.defined() && encoded.resized.defined() && encoded.image.defined(),
                           "agla::ipm::ImagePromptMatcher::match: the encoded image is empty; make it with encode()");
    const at::Tensor& image = encoded.image;
    const at::Tensor& resized = encoded.resized;
    const at::Tensor& image_embeds = encoded.image_embeds;
    const double prior = count_encoding ? encoded.encode_ms : 0.0;
    const auto start = Clock::now();

    // Encode all prompts (the tokenizer throws on a prompt empty after pre-processing).
    const auto text = model_->encode_text(prompts);
    const int64_t count = static_cast<int64_t>(prompts.size());
    check<ShapeError>(text.itm_input_ids.dim() == 2 && text.itm_input_ids.size(0) == count,
                      "agla::ipm::ImagePromptMatcher::match: encode_text must give [", count, ", L] ids; got ",
                      text.itm_input_ids.sizes());
    const auto tokenized = Clock::now();

    // ITM + GradCAM: gradient of the summed match logit w.r.t. the one attention tensor (Eq. 2).
    at::Tensor logits;
    GradCamMaps maps;
    {
      at::AutoGradMode enable_grad(true);
      const auto score = model_->score_itm(image_embeds, text.itm_input_ids, text.attention_mask, block_);
      check<ShapeError>(score.logits.dim() == 2 && score.logits.size(0) == count && score.logits.size(1) == 2,
                        "agla::ipm::ImagePromptMatcher::match: score_itm logits must be [", count, ", 2]; got ",
                        score.logits.sizes());
      check<InvalidArgument>(score.attention.requires_grad(),
                             "agla::ipm::ImagePromptMatcher::match: score_itm must return an attention tensor "
                             "the logits are differentiable with respect to");
      const at::Tensor match_logit = score.logits.select(1, 1).sum();
      const at::Tensor gradient = torch::autograd::grad({match_logit}, {score.attention}).at(0);
      maps = gradcam(score.attention.detach(), gradient, text.attention_mask);
      logits = score.logits.detach().to(at::kCPU, at::kFloat);
    }
    check<ShapeError>(maps.average.size(1) == grid_, "agla::ipm::ImagePromptMatcher::match: the attention covers a ",
                      maps.average.size(1), "x", maps.average.size(1), " grid; the model reports ", grid_, "x", grid_);
    const at::Tensor grids = maps.average.to(at::kCPU, at::kFloat);
    const at::Tensor per_token = maps.per_token.to(at::kCPU, at::kFloat);
    const auto scored = Clock::now();

    at::Tensor itc;
    {
      at::NoGradGuard no_grad;
      itc = model_->itc_similarity(image_embeds, text.input_ids, text.attention_mask).to(at::kCPU, at::kDouble);
    }
    check<ShapeError>(itc.dim() == 2 && itc.size(0) == 1 && itc.size(1) == count,
                      "agla::ipm::ImagePromptMatcher::match: itc_similarity must give [1, ", count, "]; got ",
                      itc.sizes());
    const auto contrasted = Clock::now();

    // Post-processing per prompt, at the model's input size (reference) or the original size.
    const at::Tensor canvas = options_.original_resolution ? image : resized;
    const int64_t height = canvas.size(0);
    const int64_t width = canvas.size(1);
    const at::Tensor probabilities = at::softmax(logits, 1);
    std::vector<Match> results(prompts.size());
    for (int64_t p = 0; p < count; ++p) {
      Match& m = results[static_cast<size_t>(p)];
      m.prompt = prompts[static_cast<size_t>(p)];
      m.itm_logits = logits[p].clone();
      m.itm_probability = probabilities[p][1].item<double>();
      m.itc = itc[0][p].item<double>();
      m.grid = grids[p].clone();
      m.per_token = per_token[p].narrow(0, 0, maps.token_counts[static_cast<size_t>(p)] + 2).clone();
      m.relevance = relevance_map(m.grid, height, width, options_.blur_sigma_fraction);
      m.keep = options_.keep_rule(m.itc);
      m.mask_ratio = 1.0 - m.keep.keep;
      Threshold cut = threshold_map(m.relevance, m.keep);
      m.threshold_index = cut.index;
      m.threshold = cut.value;
      m.kept_fraction = cut.kept_fraction;
      m.augmented = apply_mask(canvas, cut.mask);
      m.mask = std::move(cut.mask);
    }
    const auto done = Clock::now();

    const MatchTimings timings{prior + ms(start, tokenized), ms(tokenized, scored), ms(scored, contrasted),
                               ms(contrasted, done), prior + ms(start, done)};
    for (Match& m : results) m.timings = timings;
    return results;
  }

  static void check_image(const at::Tensor& image) {
    check<ShapeError>(image.defined() && image.dim() == 3 && image.size(2) == 3 && image.size(0) > 0 &&
                          image.size(1) > 0 && image.scalar_type() == at::kByte,
                      "agla::ipm::ImagePromptMatcher: image must be [H, W, 3] uint8 (RGB, HWC); got ",
                      image.defined() ? image.sizes() : at::IntArrayRef{}, " ",
                      image.defined() ? image.scalar_type() : at::kByte);
  }

  // Waits for queued device work so stage timings are real (a no-op on the CPU).
  static void synchronize(const at::Tensor& t) {
    if (t.defined() && !t.is_cpu()) (void)t.sum().item<double>();
  }

  const Itm* model_;
  MatcherOptions options_;
  int64_t block_ = 0;
  int64_t grid_ = 0;
  int64_t image_size_ = 0;
};

}  // namespace agla::ipm
