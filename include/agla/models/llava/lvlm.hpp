#pragma once
/// \file
/// LLaVA-1.5 as an LVLM forward functor for AGLA decoding (`agla/decode/view.hpp`, DESIGN section 4):
/// one generation at a time, B streams, one KV cache per stream and view, and both views in one
/// batched forward when asked (`[2B, V]`).
///
/// Padding rule for prompts of different lengths: left-pad them to a common length L and pass the
/// `[B, L]` mask to `begin` (0 = padding). Each row still holds exactly one image token; padded
/// slots are masked out of attention and real tokens take positions `cumsum(mask) - 1` over the
/// merged sequence, as transformers v4.37.2 does for left-padded batches. Without a mask every
/// prompt token is real.

#include <ATen/ATen.h>

#include <array>
#include <initializer_list>
#include <utility>

#include "agla/decode/view.hpp"
#include "agla/error.hpp"
#include "agla/models/llava/llama.hpp"
#include "agla/models/llava/model.hpp"

namespace agla::llava {

/// LVLM forward functor over a `LlavaModel`: call `begin` per generation, then the library calls
/// `operator()` with the prompt first and one new token per stream after that. The caches of all
/// streams and views share one `KvCache` (rows `[0, B)` original view, `[B, 2B)` augmented), so a
/// batched call reads contiguous rows while plain calls advance each view independently.
class LlavaLvlm {
 public:
  /// Wraps `model` (shared, not copied).
  explicit LlavaLvlm(LlavaModel model) : model_(std::move(model)) {}

  /// Starts a generation. `prompt_ids` `[B, L]` int64 (one image token per row), `original_pixels`
  /// and `augmented_pixels` `[B, 3, S, S]` float (the augmented view may be undefined when only the
  /// original is decoded), `prompt_mask` `[B, L]` (0 = left padding; undefined = none).
  /// `max_new_tokens` sizes the KV caches up front (they grow when exceeded). Drops earlier state.
  void begin(const at::Tensor& prompt_ids, const at::Tensor& original_pixels, const at::Tensor& augmented_pixels = {},
             const at::Tensor& prompt_mask = {}, int64_t max_new_tokens = 64) {
    const char* fn = "agla::llava::LlavaLvlm::begin: ";
    cache_ = KvCache();  // a failed begin leaves no stale generation behind
    check<ShapeError>(prompt_ids.dim() == 2 && prompt_ids.scalar_type() == at::kLong && prompt_ids.size(0) > 0 &&
                          prompt_ids.size(1) > 0,
                      fn, "prompt_ids must be int64 [B, L] with B, L > 0; got ", prompt_ids.sizes(), " ",
                      prompt_ids.scalar_type());
    const auto b = prompt_ids.size(0);
    const auto& vision = model_->config().vision;
    auto check_pixels = [&](const at::Tensor& pixels, const char* name) {
      check<ShapeError>(pixels.dim() == 4 && pixels.size(0) == b && pixels.size(1) == vision.num_channels &&
                            pixels.size(2) == vision.image_size && pixels.size(3) == vision.image_size &&
                            at::isFloatingType(pixels.scalar_type()),
                        fn, name, " must be float [", b, ", ", vision.num_channels, ", ", vision.image_size, ", ",
                        vision.image_size, "]; got ", pixels.sizes(), " ", pixels.scalar_type());
    };
    check_pixels(original_pixels, "original_pixels");
    if (augmented_pixels.defined()) check_pixels(augmented_pixels, "augmented_pixels");
    check<InvalidArgument>(max_new_tokens >= 0, fn, "max_new_tokens must be >= 0; got ", max_new_tokens);
    // Validates ids, mask and the one image token per row now rather than at the first step.
    model_->merge(prompt_ids, at::zeros({b, 1, model_->config().text.hidden_size}, model_->dtype()), prompt_mask);
    prompt_ = prompt_ids.to(model_->device());
    prompt_mask_ = prompt_mask;
    pixels_ = {original_pixels, augmented_pixels};
    const auto& c = model_->config().text;
    const int64_t merged = prompt_ids.size(1) - 1 + model_->config().image_tokens();
    const int64_t views = augmented_pixels.defined() ? 2 : 1;
    cache_ = KvCache(c.num_hidden_layers, views * b, c.num_key_value_heads, c.head_dim(), merged + max_new_tokens,
                     at::TensorOptions().dtype(model_->dtype()).device(model_->device()));
    batch_ = b;
    past_ = {0, 0};
    merged_mask_ = at::Tensor();
    next_position_ = at::Tensor();
  }

  /// Next-token logits of one view, float32 `[B, V]`: the first call of a view takes the prompt
  /// (`step_tokens` equal to `begin`'s `prompt_ids`), later calls `[B, T]` new tokens.
  at::Tensor operator()(const at::Tensor& step_tokens, View view) {
    const int v = view == View::Original ? 0 : 1;
    check<InvalidArgument>(cache_.defined(), "agla::llava::LlavaLvlm: call begin() before decoding");
    check<InvalidArgument>(
        v == 0 || pixels_[1].defined(),
        "agla::llava::LlavaLvlm: the augmented view was requested but begin() got no augmented image");
    if (past_[v] == 0) {
      check_prompt(step_tokens);
      return prefill(pixels_[v], v * batch_, batch_, {v});
    }
    return step(step_tokens, v * batch_, batch_, {v});
  }

  /// Next-token logits of both views in one batched forward, float32 `[2B, V]` (rows `[0, B)` original,
  /// `[B, 2B)` augmented). Both views must be at the same step.
  at::Tensor operator()(const at::Tensor& step_tokens, BothViews) {
    check<InvalidArgument>(cache_.defined(), "agla::llava::LlavaLvlm: call begin() before decoding");
    check<InvalidArgument>(pixels_[1].defined(),
                           "agla::llava::LlavaLvlm: both views were requested but begin() got no augmented image");
    check<InvalidArgument>(past_[0] == past_[1],
                           "agla::llava::LlavaLvlm: both views must be at the same step for a batched call; cached "
                           "lengths are ",
                           past_[0], " (original) and ", past_[1], " (augmented)");
    if (past_[0] == 0) {
      check_prompt(step_tokens);
      return prefill(at::cat({pixels_[0].to(model_->device()), pixels_[1].to(model_->device())}), 0, 2 * batch_,
                     {0, 1});
    }
    return step(step_tokens.repeat({2, 1}), 0, 2 * batch_, {0, 1});
  }

  /// Positions cached so far for `view` (0 before its prefill).
  int64_t cached_length(View view) const { return past_[view == View::Original ? 0 : 1]; }
  /// The wrapped model.
  const LlavaModel& model() const { return model_; }

 private:
  void check_prompt(const at::Tensor& tokens) const {
    check<InvalidArgument>(tokens.sizes() == prompt_.sizes() && tokens.scalar_type() == at::kLong &&
                               at::equal(tokens.to(prompt_.device()), prompt_),
                           "agla::llava::LlavaLvlm: the first step of a view must pass the prompt given to begin() (",
                           prompt_.sizes(), " int64); got ", tokens.sizes(), " ", tokens.scalar_type());
  }

  at::Tensor last_logits(const at::Tensor& hidden) {
    return model_->language_model->logits(hidden.select(1, hidden.size(1) - 1));
  }

  at::Tensor prefill(const at::Tensor& pixels, int64_t row_begin, int64_t rows, std::initializer_list<int> views) {
    const auto repeat = rows / batch_;
    const auto ids = prompt_.repeat({repeat, 1});
    const auto mask = prompt_mask_.defined() ? prompt_mask_.repeat({repeat, 1}) : at::Tensor();
    const auto merged = model_->merge(ids, model_->image_features(pixels), mask);
    const auto m = merged.inputs_embeds.size(1);
    if (merged.padded) merged_mask_ = merged.attention_mask.narrow(0, 0, batch_);
    next_position_ = merged.position_ids.narrow(0, 0, batch_).select(1, m - 1) + 1;
    cache_.reserve(m);
    KvSlot slot{&cache_, row_begin, 0};
    const auto hidden = model_->language_model->model(merged.inputs_embeds, merged.position_ids,
                                                      merged.padded ? merged.attention_mask : at::Tensor(), &slot);
    for (int v : views) past_[v] = m;
    return last_logits(hidden);
  }

  at::Tensor step(const at::Tensor& tokens, int64_t row_begin, int64_t rows, std::initializer_list<int> views) {
    check<ShapeError>(
        tokens.dim() == 2 && tokens.size(0) == rows && tokens.size(1) > 0 && tokens.scalar_type() == at::kLong,
        "agla::llava::LlavaLvlm: step_tokens must be int64 [", batch_, ", T] with T > 0; got ", tokens.sizes(), " ",
        tokens.scalar_type());
    const int64_t past = past_[*views.begin()];
    const int64_t t = tokens.size(1);
    const int64_t merged_len = model_->config().image_tokens() + prompt_.size(1) - 1;
    const auto offsets = at::arange(t, next_position_.options()).view({1, t});
    const auto positions =
        (next_position_.view({batch_, 1}) + (past - merged_len) + offsets).repeat({rows / batch_, 1});
    at::Tensor key_mask;
    if (merged_mask_.defined()) {
      key_mask = at::cat({merged_mask_, at::ones({batch_, past + t - merged_len}, merged_mask_.options())}, 1)
                     .repeat({rows / batch_, 1});
    }
    cache_.reserve(past + t);
    KvSlot slot{&cache_, row_begin, past};
    const auto hidden = model_->language_model->model(model_->embed(tokens), positions, key_mask, &slot);
    for (int v : views) past_[v] = past + t;
    return last_logits(hidden);
  }

  LlavaModel model_;
  at::Tensor prompt_, prompt_mask_;
  std::array<at::Tensor, 2> pixels_;
  KvCache cache_;
  int64_t batch_ = 0;
  std::array<int64_t, 2> past_{0, 0};
  at::Tensor merged_mask_;    // [B, M] when the prompt is padded, else undefined
  at::Tensor next_position_;  // [B] position of the first generated token
};

}  // namespace agla::llava
