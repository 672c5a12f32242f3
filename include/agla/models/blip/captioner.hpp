#pragma once
/// \file
/// BLIP captioning (`BlipForConditionalGeneration` weights, e.g. `Salesforce/blip-image-captioning-large`)
/// as an LVLM forward functor for `agla::decode_step` (contract in `agla/decode/view.hpp`): per
/// generation it holds the image tokens of the original and (optionally) the augmented view and one
/// KV cache per view, covering all B streams; each call feeds only the new tokens.
///
/// Hugging Face's `BlipForConditionalGeneration.generate` starts from `[DEC]` (`bos_token_id`) plus
/// the prompt's word pieces without `[SEP]`, and stops at `sep_token_id` (`stop_id()` here), not at
/// `eos_token_id`.

#include <torch/nn/module.h>
#include <ATen/core/grad_mode.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "agla/decode/view.hpp"
#include "agla/error.hpp"
#include "agla/io/checkpoint.hpp"
#include "agla/io/module_loader.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/blip/itm.hpp"
#include "agla/models/blip/text.hpp"
#include "agla/models/blip/tokenizer.hpp"
#include "agla/models/blip/vision.hpp"

namespace agla::blip {

/// The `BlipForConditionalGeneration` module: `vision_model` and `text_decoder` (`bert` + `cls`).
class BlipCaptionModelImpl : public torch::nn::Module {
 public:
  explicit BlipCaptionModelImpl(const BlipConfig& c) : config_(c) {
    c.validate();
    vision_model = register_module("vision_model", BlipVisionModel(c.vision));
    text_decoder = register_module("text_decoder", BlipTextLMHeadModel(c.text));
  }

  /// The configuration the module was built from.
  const BlipConfig& config() const { return config_; }

  BlipVisionModel vision_model{nullptr};
  BlipTextLMHeadModel text_decoder{nullptr};

 private:
  BlipConfig config_;
};
TORCH_MODULE(BlipCaptionModel);

/// BLIP captioner: an LVLM forward functor with one KV cache per view (see file comment).
class BlipCaptioner {
 public:
  /// Loads `dir` (`config.json`, weights, optional `vocab.txt`) onto `device` in `dtype`. The LM-head
  /// matrix `text_decoder.cls.predictions.decoder.weight` falls back to the word embeddings when a
  /// checkpoint lacks it (the original BLIP ties them). Throws `agla::FormatError` listing
  /// missing/unexpected names.
  static BlipCaptioner load(const std::string& dir, at::Device device = at::kCPU, at::ScalarType dtype = at::kFloat) {
    io::LoadHooks hooks;
    hooks.key_for = [](const std::string& name, const io::StateDict& dict) {
      const std::string decoder = "text_decoder.cls.predictions.decoder.weight";
      if (name == decoder && dict.count(decoder) == 0)
        return std::string("text_decoder.bert.embeddings.word_embeddings.weight");
      return name;
    };
    BlipCaptionModel model =
        detail::load_blip_module<BlipCaptionModel>("agla::blip::BlipCaptioner::load", dir, device, dtype, hooks);
    return BlipCaptioner(model, detail::tokenizer_for(dir), device, dtype);
  }

  /// Wraps a built module; moves it to `device`/`dtype` and freezes it.
  BlipCaptioner(BlipCaptionModel model, WordPieceTokenizer tokenizer, at::Device device = at::kCPU,
                at::ScalarType dtype = at::kFloat)
      : model_(std::move(model)),
        tokenizer_(std::make_shared<WordPieceTokenizer>(std::move(tokenizer))),
        device_(device),
        dtype_(dtype) {
    detail::prepare_for_inference("agla::blip::BlipCaptioner", model_, *tokenizer_, device, dtype);
  }

  /// Normalised pixels `[B, 3, S, S]` -> image tokens `[B, N, D]` (model dtype/device, no autograd).
  at::Tensor encode_image(const at::Tensor& pixel_values) const {
    at::NoGradGuard no_grad;
    return model_->vision_model->forward(pixel_values.to(device_, dtype_));
  }

  /// Starts a generation on `original` and optionally `augmented` normalised pixels `[B, 3, S, S]`
  /// (same B): encodes them and clears every cache.
  void begin(const at::Tensor& original, const at::Tensor& augmented = at::Tensor()) {
    begin_with_embeddings(encode_image(original), augmented.defined() ? encode_image(augmented) : at::Tensor());
  }

  /// `begin` with image tokens already encoded (`[B, N, D]` each).
  void begin_with_embeddings(const at::Tensor& original, const at::Tensor& augmented = at::Tensor()) {
    const char* fn = "agla::blip::BlipCaptioner::begin";
    const int64_t d = config().vision.hidden_size;
    check<ShapeError>(original.defined() && original.dim() == 3 && original.size(2) == d, fn,
                      ": original image tokens must be [B, N, ", d, "]; got ",
                      original.defined() ? original.sizes() : at::IntArrayRef{});
    check<ShapeError>(!augmented.defined() || augmented.sizes() == original.sizes(), fn,
                      ": augmented image tokens must match the original's ", original.sizes(), "; got ",
                      augmented.defined() ? augmented.sizes() : at::IntArrayRef{});
    views_[0] = ViewState{original.to(device_, dtype_).detach(), TextCache{}};
    views_[1] = ViewState{augmented.defined() ? augmented.to(device_, dtype_).detach() : at::Tensor(), TextCache{}};
    joint_ = TextCache{};
    joint_active_ = false;
  }

  /// Next-token logits `[B, V]` float32 of `view` after feeding `step_tokens` `[B, T]` int64 (the
  /// prompt first, then one token per step); extends that view's cache by T.
  at::Tensor operator()(const at::Tensor& step_tokens, View view) {
    const size_t v = view == View::Original ? 0 : 1;
    const char* fn = "agla::blip::BlipCaptioner::operator()";
    check<InvalidArgument>(views_[v].image.defined(), fn, ": no ", v == 0 ? "original" : "augmented",
                           " image; call begin() with it first");
    check_tokens(fn, step_tokens, views_[v].image.size(0));
    split_joint();
    at::NoGradGuard no_grad;
    return model_->text_decoder->forward(step_tokens.to(device_), views_[v].image, &views_[v].cache, true)
        .select(1, 0)
        .to(at::kFloat);
  }

  /// Both views in one batched forward: `[2B, V]` float32, rows `[0, B)` original, `[B, 2B)` augmented.
  /// Both views' caches must be at the same length (they are unless plain calls advanced one alone).
  at::Tensor operator()(const at::Tensor& step_tokens, BothViews) {
    const char* fn = "agla::blip::BlipCaptioner::operator()(BothViews)";
    check<InvalidArgument>(views_[0].image.defined() && views_[1].image.defined(), fn,
                           ": needs the original and the augmented image; call begin(original, augmented) first");
    const int64_t batch = views_[0].image.size(0);
    check_tokens(fn, step_tokens, batch);
    if (!joint_active_) {
      check<InvalidArgument>(views_[0].cache.length == views_[1].cache.length, fn,
                             ": the views' caches differ in length (original ", views_[0].cache.length, ", augmented ",
                             views_[1].cache.length, "); use the plain form for the lagging view");
      joint_ = concat_caches(views_[0].cache, views_[1].cache);
      joint_image_ = at::cat({views_[0].image, views_[1].image}, 0);
      joint_active_ = true;
    }
    at::NoGradGuard no_grad;
    const at::Tensor tokens = step_tokens.to(device_).repeat({2, 1});
    return model_->text_decoder->forward(tokens, joint_image_, &joint_, true).select(1, 0).to(at::kFloat);
  }

  /// Positions already fed to `view` (0 right after `begin`).
  int64_t cache_length(View view) const {
    if (joint_active_) return joint_.length;
    return views_[view == View::Original ? 0 : 1].cache.length;
  }

  /// Uncached reference path: logits `[B, L, V]` (model dtype) of the whole `input_ids` `[B, L]` over
  /// `image_embeds` `[B or 1, N, D]` (HF `BlipForConditionalGeneration.forward(...).logits`).
  at::Tensor logits_full(const at::Tensor& image_embeds, const at::Tensor& input_ids) const {
    at::NoGradGuard no_grad;
    check_tokens("agla::blip::BlipCaptioner::logits_full", input_ids, -1);
    return model_->text_decoder->forward(input_ids.to(device_), image_embeds.to(device_, dtype_));
  }

  /// Captioning input for `prompt`: `[DEC]` + its word pieces (no `[SEP]`), repeated for `batch`
  /// streams -> `[batch, T]` int64 on the model's device (HF `generate`'s swap of `[CLS]` for bos).
  at::Tensor prompt_ids(const std::string& prompt, int64_t batch = 1) const {
    check<InvalidArgument>(batch >= 1, "agla::blip::BlipCaptioner::prompt_ids: batch must be >= 1; got ", batch);
    std::vector<int64_t> ids = tokenizer_->encode(prompt, static_cast<size_t>(config().text.max_position_embeddings));
    ids.front() = config().text.bos_token_id;
    ids.pop_back();
    return at::tensor(ids, at::kLong).view({1, -1}).repeat({batch, 1}).to(device_);
  }

  /// Text of generated ids (special tokens skipped).
  std::string decode(const std::vector<int64_t>& ids) const { return tokenizer_->decode(ids); }

  /// `[DEC]`, the first input token.
  int64_t bos_id() const { return config().text.bos_token_id; }
  /// The token at which Hugging Face's BLIP generation stops (`sep_token_id`, `[SEP]`).
  int64_t stop_id() const { return config().text.sep_token_id; }
  /// `eos_token_id` of the config (kept for completeness; generation does not stop on it).
  int64_t eos_id() const { return config().text.eos_token_id; }
  /// `[PAD]`, what finished streams may be fed.
  int64_t pad_id() const { return config().text.pad_token_id; }
  /// Vocabulary size V.
  int64_t vocab_size() const { return config().text.vocab_size; }
  /// Device of the parameters.
  at::Device device() const { return device_; }
  /// Dtype of the parameters.
  at::ScalarType dtype() const { return dtype_; }
  /// Input side S of `encode_image`.
  int64_t image_size() const { return config().vision.image_size; }
  /// BLIP's normalisation mean (RGB).
  std::array<float, 3> image_mean() const { return kImageMean; }
  /// BLIP's normalisation standard deviation (RGB).
  std::array<float, 3> image_std() const { return kImageStd; }
  /// The configuration.
  const BlipConfig& config() const { return model_->config(); }
  /// The tokenizer.
  const WordPieceTokenizer& tokenizer() const { return *tokenizer_; }
  /// The underlying module (a holder sharing it; frozen, eval mode).
  BlipCaptionModel module() const { return model_; }

 private:
  struct ViewState {
    at::Tensor image;  ///< `[B, N, D]` image tokens of the view
    TextCache cache;
  };

  void check_tokens(const char* fn, const at::Tensor& tokens, int64_t batch) const {
    check<ShapeError>(tokens.defined() && tokens.dim() == 2 && tokens.size(1) >= 1 &&
                          tokens.scalar_type() == at::kLong && (batch < 0 || tokens.size(0) == batch),
                      fn, ": tokens must be [", batch < 0 ? std::string("B") : std::to_string(batch),
                      ", T >= 1] int64; got ", tokens.defined() ? tokens.sizes() : at::IntArrayRef{}, " ",
                      tokens.defined() ? tokens.scalar_type() : at::ScalarType::Undefined);
  }

  /// Stacks two caches of equal length along the batch (first rows = `a`).
  static TextCache concat_caches(const TextCache& a, const TextCache& b) {
    TextCache out;
    out.length = a.length;
    if (a.empty()) return out;
    out.layers.resize(a.layers.size());
    for (size_t i = 0; i < a.layers.size(); ++i) {
      out.layers[i].self_key = at::cat({a.layers[i].self_key, b.layers[i].self_key}, 0);
      out.layers[i].self_value = at::cat({a.layers[i].self_value, b.layers[i].self_value}, 0);
      out.layers[i].cross_key = at::cat({a.layers[i].cross_key, b.layers[i].cross_key}, 0);
      out.layers[i].cross_value = at::cat({a.layers[i].cross_value, b.layers[i].cross_value}, 0);
    }
    return out;
  }

  /// After batched calls, hands each view its half of the joint cache (views into it, no copy).
  void split_joint() {
    if (!joint_active_) return;
    const int64_t batch = views_[0].image.size(0);
    for (size_t v = 0; v < 2; ++v) {
      TextCache& cache = views_[v].cache;
      cache.length = joint_.length;
      cache.layers.resize(joint_.layers.size());
      const int64_t start = static_cast<int64_t>(v) * batch;
      for (size_t i = 0; i < joint_.layers.size(); ++i) {
        cache.layers[i].self_key = joint_.layers[i].self_key.narrow(0, start, batch);
        cache.layers[i].self_value = joint_.layers[i].self_value.narrow(0, start, batch);
        cache.layers[i].cross_key = joint_.layers[i].cross_key.narrow(0, start, batch);
        cache.layers[i].cross_value = joint_.layers[i].cross_value.narrow(0, start, batch);
      }
    }
    joint_ = TextCache{};
    joint_image_ = at::Tensor();
    joint_active_ = false;
  }

  mutable BlipCaptionModel model_;
  std::shared_ptr<const WordPieceTokenizer> tokenizer_;
  at::Device device_;
  at::ScalarType dtype_;
  std::array<ViewState, 2> views_;
  TextCache joint_;
  at::Tensor joint_image_;
  bool joint_active_ = false;
};

}  // namespace agla::blip
