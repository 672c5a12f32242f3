#pragma once
/// \file
/// BLIP captioning (`BlipForConditionalGeneration` weights, e.g. `Salesforce/blip-image-captioning-large`)
/// as an LVLM (`agla/models/lvlm.hpp`): per generation it holds the image tokens of every view and
/// one KV cache per view, covering all B streams; each call feeds only the new tokens.
///
/// Hugging Face's `BlipForConditionalGeneration.generate` starts from `[DEC]` (`bos_token_id`) plus
/// the prompt's word pieces without `[SEP]`, and stops at `sep_token_id` (`stop_id()` here), not at
/// `eos_token_id`.
///
/// Image cache (`set_image_cache`): the decoder's prompt starts with `[DEC]` and then the question,
/// so no decoder prefix worth keeping is shared between questions; what depends on the image alone
/// is the vision encoder's output (the image tokens), kept per image and reused for the original
/// view and image views marked `ExtraView::reusable`.

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
#include "agla/text/wordpiece.hpp"
#include "agla/models/common/image_processing.hpp"
#include "agla/models/common/vit.hpp"
#include "agla/models/lvlm.hpp"

namespace agla::blip {

/// The `BlipForConditionalGeneration` module: `vision_model` and `text_decoder` (`bert` + `cls`).
class BlipCaptionModelImpl : public torch::nn::Module {
 public:
  explicit BlipCaptionModelImpl(const BlipConfig& c) : config_(c) {
    c.validate();
    vision_model = register_module("vision_model", models::VisionTransformer(c.vision));
    text_decoder = register_module("text_decoder", BlipTextLMHeadModel(c.text));
  }

  /// The configuration the module was built from.
  const BlipConfig& config() const { return config_; }

  models::VisionTransformer vision_model{nullptr};
  BlipTextLMHeadModel text_decoder{nullptr};

 private:
  BlipConfig config_;
};
TORCH_MODULE(BlipCaptionModel);

/// BLIP captioner: an LVLM (`agla/models/lvlm.hpp`) with one KV cache per view (see file comment).
/// Its views are images (the original and any number of image views); BLIP's decoder has no
/// prompt-only or no-image mode, so text and no-image views are refused.
class BlipCaptioner {
 public:
  /// Loads `dir` (`config.json`, weights, optional `vocab.txt`) as `options` place it. The LM-head
  /// matrix `text_decoder.cls.predictions.decoder.weight` falls back to the word embeddings when a
  /// checkpoint lacks it (the original BLIP ties them). Throws `agla::FormatError` listing
  /// missing/unexpected names.
  static BlipCaptioner load(const std::string& dir, const io::LoadOptions& options = {}) {
    io::LoadHooks hooks;
    hooks.key_for = [](const std::string& name, const io::StateDict& dict) {
      const std::string decoder = "text_decoder.cls.predictions.decoder.weight";
      if (name == decoder && dict.count(decoder) == 0)
        return std::string("text_decoder.bert.embeddings.word_embeddings.weight");
      return name;
    };
    BlipCaptionModel model =
        detail::load_blip_module<BlipCaptionModel>("agla::blip::BlipCaptioner::load", dir, options, hooks);
    return BlipCaptioner(model, detail::tokenizer_for(dir));
  }

  /// Wraps a built module (loaded, shared with another captioner, or initialised with
  /// `agla::models::init_parameters`) where its parameters are; freezes it.
  BlipCaptioner(BlipCaptionModel model, text::WordPieceTokenizer tokenizer)
      : model_(std::move(model)),
        tokenizer_(std::make_shared<text::WordPieceTokenizer>(std::move(tokenizer))),
        device_(at::kCPU),
        dtype_(at::kFloat) {
    std::tie(device_, dtype_) = detail::prepare_for_inference("agla::blip::BlipCaptioner", model_, *tokenizer_);
  }

  /// Normalised pixels `[B, 3, S, S]` -> image tokens `[B, N, D]` (model dtype/device, no autograd).
  at::Tensor encode_image(const at::Tensor& pixel_values) const {
    at::NoGradGuard no_grad;
    return model_->vision_model->forward(pixel_values.to(device_, dtype_));
  }

  /// RGB uint8 `[H, W, 3]` (CPU) -> float32 `[3, S, S]` (CPU), as `BlipImageProcessor` does.
  at::Tensor preprocess(const at::Tensor& image) const { return models::blip_image_processor(image, image_size()); }

  /// Always true: a checkpoint without `vocab.txt` uses the built-in bert-base-uncased vocabulary.
  bool has_tokenizer() const { return true; }

  /// Captioning input for `instruction`: `[DEC]` + its word pieces without `[SEP]` (Hugging Face's
  /// `generate` swaps `[CLS]` for bos); an empty instruction gives `[DEC]` alone.
  Prompt prompt(const std::string& instruction) const {
    std::vector<int64_t> ids =
        tokenizer_->encode(instruction, static_cast<size_t>(config().text.max_position_embeddings));
    ids.front() = config().text.bos_token_id;
    ids.pop_back();
    return Prompt{ids, {}};
  }

  /// Text of generated ids (special tokens skipped).
  std::string decode(const std::vector<int64_t>& ids) const { return tokenizer_->decode(ids); }

  /// `[SEP]` as the stop id (Hugging Face's BLIP generation stops there, not at `eos_token_id`),
  /// `[PAD]`, the vocabulary size.
  TokenSpec tokens() const {
    return TokenSpec{{config().text.sep_token_id}, config().text.pad_token_id, config().text.vocab_size};
  }

  /// New tokens that fit after `prompt` within `max_position_embeddings`.
  int64_t room(const PromptBatch& prompt) const {
    return config().text.max_position_embeddings - prompt.ids.size(1);
  }

  /// ICD's text view: `disturbance` before the instruction, as the decoder's prompt reads it.
  Prompt disturbed_prompt(const std::string& instruction, const std::string& disturbance) const {
    return prompt(disturbance + " " + instruction);
  }

  /// Starts a generation (dropping earlier state): encodes the original and every image view and
  /// returns the first step's tokens (`inputs.prompt.ids` on the model's device). Prompts must be
  /// unpadded (BLIP's positions are absolute). Views: `Image` (other pixels), `Text` (its own
  /// unpadded prompt on the original image), `NoImage` (the decoder without cross-attention: the
  /// text model's language prior).
  at::Tensor begin(const LvlmInputs& inputs) {
    const char* fn = "agla::blip::BlipCaptioner::begin";
    reset();
    const PromptBatch& prompt = inputs.prompt;
    check_prompt(fn, prompt, -1, "prompt");
    const int64_t b = prompt.ids.size(0);
    check_pixels(fn, inputs.pixels, b, "pixels");
    std::vector<at::Tensor> images{inputs.pixels};
    std::vector<bool> reusable{true};
    for (size_t k = 0; k < inputs.views.size(); ++k) {
      const ExtraView& view = inputs.views[k];
      if (view.kind == ViewKind::Image) {
        check_pixels(fn, view.pixels, b, "view pixels");
        images.push_back(view.pixels);
        reusable.push_back(view.reusable);
      } else if (view.kind == ViewKind::Text) {
        check_prompt(fn, view.prompt, b, "text view prompt");
      }
    }
    const at::Tensor tokens =
        images_.enabled()
            ? agla::detail::encode_image_rows(images_, images, reusable,
                                              [this](const at::Tensor& pixels) { return encode_image(pixels); })
            : encode_image(at::cat(images, 0));
    prompt_ = prompt.ids.to(device_);
    views_.push_back(ViewState{tokens.narrow(0, 0, b), prompt_, TextCache{}});
    int64_t image = 1;
    for (const ExtraView& view : inputs.views) {
      switch (view.kind) {
        case ViewKind::Image:
          views_.push_back(ViewState{tokens.narrow(0, (image++) * b, b), prompt_, TextCache{}});
          break;
        case ViewKind::Text:
          views_.push_back(ViewState{views_[0].image, view.prompt.ids.to(device_), TextCache{}});
          break;
        case ViewKind::NoImage:
          views_.push_back(ViewState{at::Tensor(), prompt_, TextCache{}});
          break;
      }
    }
    return prompt_;
  }

  /// Drops the generation's state (image tokens, caches).
  void reset() {
    views_.clear();
    joint_ = TextCache{};
    joint_image_ = at::Tensor();
    joint_active_ = false;
  }

  /// Next-token logits `[B, V]` float32 of `view` after feeding `step_tokens` `[B, T]` int64 (the
  /// prompt first -- a text view then reads its own prompt -- then one token per step); extends
  /// that view's cache.
  at::Tensor operator()(const at::Tensor& step_tokens, View view) {
    const char* fn = "agla::blip::BlipCaptioner::operator()";
    check<InvalidArgument>(view.index >= 0 && view.index < static_cast<int32_t>(views_.size()), fn, ": view ",
                           view.index, " was requested but begin() set up ", views_.size(), " view(s)");
    split_joint();
    return run_view(fn, views_[static_cast<size_t>(view.index)], step_tokens);
  }

  /// Every view in one batched forward: `[(1 + K) B, V]` float32, view-major. Image views at one
  /// cache length share one forward; text and no-image views (other lengths, no cross-attention)
  /// run on their own and their rows are stacked in view order.
  at::Tensor operator()(const at::Tensor& step_tokens, AllViews) {
    const char* fn = "agla::blip::BlipCaptioner::operator()(AllViews)";
    check<InvalidArgument>(!views_.empty(), fn, ": call begin() first");
    const int64_t batch = prompt_.size(0);
    check_tokens(fn, step_tokens, batch);
    for (const ViewState& state : views_)
      check<InvalidArgument>(state.calls == views_[0].calls, fn, ": every view must be at the same step for a "
                             "batched call; view 0 has taken ", views_[0].calls, " steps, another view ", state.calls,
                             " (use the plain form for the lagging view)");
    bool joint = joint_active_;
    if (!joint) {
      joint = true;
      for (const ViewState& state : views_)
        joint = joint && state.image.defined() && state.prompt.is_same(prompt_) &&
                state.cache.length == views_[0].cache.length;
    }
    if (!joint) {
      std::vector<at::Tensor> rows;
      for (ViewState& state : views_) rows.push_back(run_view(fn, state, step_tokens));
      return at::cat(rows, 0);
    }
    if (!joint_active_) {
      std::vector<const TextCache*> caches;
      std::vector<at::Tensor> images;
      for (const auto& state : views_) {
        caches.push_back(&state.cache);
        images.push_back(state.image);
      }
      joint_ = concat_caches(caches);
      joint_image_ = at::cat(images, 0);
      joint_active_ = true;
    }
    at::NoGradGuard no_grad;
    const at::Tensor tokens = step_tokens.to(device_).repeat({static_cast<int64_t>(views_.size()), 1});
    for (ViewState& state : views_) ++state.calls;
    return model_->text_decoder->forward(tokens, joint_image_, &joint_, true).select(1, 0).to(at::kFloat);
  }

  /// Positions already fed to `view` (0 right after `begin`).
  int64_t cache_length(View view) const {
    if (joint_active_) return joint_.length;
    return views_.at(static_cast<size_t>(view.index)).cache.length;
  }

  /// Uncached reference path: logits `[B, L, V]` (model dtype) of the whole `input_ids` `[B, L]` over
  /// `image_embeds` `[B or 1, N, D]` (HF `BlipForConditionalGeneration.forward(...).logits`).
  at::Tensor logits_full(const at::Tensor& image_embeds, const at::Tensor& input_ids) const {
    at::NoGradGuard no_grad;
    check_tokens("agla::blip::BlipCaptioner::logits_full", input_ids, -1);
    return model_->text_decoder->forward(input_ids.to(device_), image_embeds.to(device_, dtype_));
  }

  /// Device of the parameters.
  at::Device device() const { return device_; }
  /// Dtype of the parameters.
  at::ScalarType dtype() const { return dtype_; }
  /// Input side S of `encode_image`.
  int64_t image_size() const { return config().vision.image_size; }
  /// The configuration.
  const BlipConfig& config() const { return model_->config(); }
  /// The tokenizer.
  const text::WordPieceTokenizer& tokenizer() const { return *tokenizer_; }
  /// The underlying module (a holder sharing it; frozen, eval mode).
  BlipCaptionModel module() const { return model_; }

  /// Keeps the image tokens `[N, D]` of up to `entries` images across generations, least recently
  /// used dropped first (0 = off, the default; see the file comment).
  void set_image_cache(int64_t entries) { images_.resize(entries, "agla::blip::BlipCaptioner::set_image_cache"); }
  /// Hits, misses and entries of the image cache.
  ImageCacheStats image_cache_stats() const { return images_.stats(); }
  /// Drops the image cache's entries (it stays on).
  void clear_image_cache() { images_.clear(); }

 private:
  struct ViewState {
    at::Tensor image;   ///< `[B, N, D]` image tokens of the view; undefined for a no-image view
    at::Tensor prompt;  ///< `[B, L]` the view's first-step tokens
    TextCache cache;
    int64_t calls = 0;  ///< steps taken
  };

  // One view's step: its own prompt at its first call, else `step_tokens`.
  at::Tensor run_view(const char* fn, ViewState& state, const at::Tensor& step_tokens) {
    check_tokens(fn, step_tokens, prompt_.size(0));
    const at::Tensor& tokens = state.calls == 0 ? state.prompt : step_tokens;
    ++state.calls;
    at::NoGradGuard no_grad;
    return model_->text_decoder->forward(tokens.to(device_), state.image, &state.cache, true)
        .select(1, 0)
        .to(at::kFloat);
  }

  void check_prompt(const char* fn, const PromptBatch& prompt, int64_t batch, const char* name) const {
    check_tokens(fn, prompt.ids, batch);
    check<InvalidArgument>(!prompt.mask.defined() || bool(prompt.mask.all().item<bool>()), fn, ": ", name,
                           ": BLIP's positions are absolute, so prompts must have one length (no padding)");
    check<InvalidArgument>(prompt.ids.size(1) <= config().text.max_position_embeddings, fn, ": ",
                           prompt.ids.size(1), " positions exceed max_position_embeddings ",
                           config().text.max_position_embeddings);
    const auto [low, high] = at::aminmax(prompt.ids);
    check<InvalidArgument>(low.item<int64_t>() >= 0 && high.item<int64_t>() < config().text.vocab_size, fn, ": ",
                           name, ": token ids must be in [0, ", config().text.vocab_size, "); got ids in [",
                           low.item<int64_t>(), ", ", high.item<int64_t>(), "]");
  }

  void check_pixels(const char* fn, const at::Tensor& pixels, int64_t batch, const char* name) const {
    const int64_t side = image_size();
    check<ShapeError>(pixels.defined() && pixels.dim() == 4 && pixels.size(0) == batch && pixels.size(2) == side &&
                          pixels.size(3) == side && at::isFloatingType(pixels.scalar_type()),
                      fn, ": ", name, " must be float [", batch, ", 3, ", side, ", ", side, "]; got ",
                      pixels.defined() ? pixels.sizes() : at::IntArrayRef{});
  }

  void check_tokens(const char* fn, const at::Tensor& tokens, int64_t batch) const {
    check<ShapeError>(tokens.defined() && tokens.dim() == 2 && tokens.size(1) >= 1 &&
                          tokens.scalar_type() == at::kLong && (batch < 0 || tokens.size(0) == batch),
                      fn, ": tokens must be [", batch < 0 ? std::string("B") : std::to_string(batch),
                      ", T >= 1] int64; got ", tokens.defined() ? tokens.sizes() : at::IntArrayRef{}, " ",
                      tokens.defined() ? tokens.scalar_type() : at::ScalarType::Undefined);
  }

  /// Stacks caches of equal length along the batch, in order.
  static TextCache concat_caches(const std::vector<const TextCache*>& caches) {
    TextCache out;
    out.length = caches[0]->length;
    if (caches[0]->empty()) return out;
    out.layers.resize(caches[0]->layers.size());
    auto stack = [&](size_t i, at::Tensor TextLayerCache::*part) {
      std::vector<at::Tensor> parts;
      for (const TextCache* cache : caches) parts.push_back(cache->layers[i].*part);
      return at::cat(parts, 0);
    };
    for (size_t i = 0; i < out.layers.size(); ++i) {
      out.layers[i].self_key = stack(i, &TextLayerCache::self_key);
      out.layers[i].self_value = stack(i, &TextLayerCache::self_value);
      out.layers[i].cross_key = stack(i, &TextLayerCache::cross_key);
      out.layers[i].cross_value = stack(i, &TextLayerCache::cross_value);
    }
    return out;
  }

  /// After batched calls, hands each view its rows of the joint cache (views into it, no copy).
  void split_joint() {
    if (!joint_active_) return;
    const int64_t batch = prompt_.size(0);
    for (size_t v = 0; v < views_.size(); ++v) {
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
  std::shared_ptr<const text::WordPieceTokenizer> tokenizer_;
  at::Device device_;
  at::ScalarType dtype_;
  std::vector<ViewState> views_;
  at::Tensor prompt_;
  TextCache joint_;
  at::Tensor joint_image_;
  bool joint_active_ = false;
  agla::detail::ImageCache<at::Tensor> images_;
};

}  // namespace agla::blip
