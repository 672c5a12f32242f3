#pragma once
/// \file
/// The language-model side of an LVLM generation with B streams and 1 + K views (the contract of
/// `agla/models/lvlm.hpp`), shared by the LLaMA-based LVLMs (`llava::LlavaLvlm`,
/// `instructblip::InstructBlipLvlm`): one `KvCache` with `(1 + K) B` rows, view-major, so that any
/// run of consecutive views can go through one batched forward.
///
/// At its prefill every row (a view's merged input for one stream: image rows and prompt embeddings,
/// whatever the family splices) is left-padded to one length M, the padding is masked out of
/// attention, and positions are `cumsum(mask) - 1` (padded slots 1), as transformers v4.37.2 does
/// for left-padded batches. So every view has the same cached length and the views can be batched
/// at any later step.
///
/// Shared prefixes: a row may start with a prefix whose keys and values were computed once
/// (`PrefixKv`, unpadded, one row, e.g. LLaVA's system prompt and image tokens) and are copied into
/// the row's cache. Such a row is laid out as `[prefix][padding][rest]` instead of
/// `[padding][prefix][rest]`: the prefix keeps positions `0..P-1` in slots `0..P-1`, the rest is
/// right-aligned to M as before, positions stay `cumsum(mask) - 1`, and the key mask hides the
/// padding wherever it sits, so the row attends to the same keys at the same positions as the
/// uncached layout and only the rest goes through the model.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agla/decode/view.hpp"
#include "agla/error.hpp"
#include "agla/models/llama/model.hpp"

namespace agla::llama {

/// PAI's attention part (LALBJ/PAI `attention.py`, README defaults for LLaVA-1.5): in layers
/// `[start_layer, end_layer)` the last query row's pre-softmax scores on the image positions become
/// `a + alpha |a|`; rows without image positions are not boosted, as upstream runs its no-image
/// pass without the intervention.
struct PaiAttention {
  double alpha = 0.2;       ///< Boost, in [0, 100].
  int64_t start_layer = 2;  ///< First boosted decoder layer.
  int64_t end_layer = 32;   ///< One past the last boosted layer (clipped to the model's layers).
};

/// Throws `agla::InvalidArgument` naming `who` unless `pai` is off or has alpha in [0, 100] and
/// 0 <= start_layer <= end_layer.
inline void check_pai_attention(const std::optional<PaiAttention>& pai, const std::string& who) {
  if (!pai) return;
  check<InvalidArgument>(pai->alpha >= 0 && pai->alpha <= 100 && pai->start_layer >= 0 &&
                             pai->start_layer <= pai->end_layer,
                         who, ": alpha must be in [0, 100] and 0 <= start_layer <= end_layer; got alpha ", pai->alpha,
                         ", layers [", pai->start_layer, ", ", pai->end_layer, ")");
}

/// Image positions of one unpadded prefill row: `[first, first + count)`; `count` 0 for none.
struct ImageSpan {
  int64_t first = 0;
  int64_t count = 0;
};

/// Keys and values of one unpadded prompt prefix (one row, positions `0..P-1`), computed once and
/// copied into the cache rows of every generation that starts with it (see the file comment).
class PrefixKv {
 public:
  PrefixKv() = default;

  /// Runs `lm` over `embeds` `[P, D]` (P > 0, the model dtype on its device) at positions
  /// `0..P-1` without padding or PAI's boost (which only touches a prefill's last query row, never
  /// a prefix position) and keeps every layer's keys and values.
  static PrefixKv encode(LlamaForCausalLM lm, const at::Tensor& embeds) {
    const auto& c = lm->model->config();
    check<ShapeError>(embeds.defined() && embeds.dim() == 2 && embeds.size(0) > 0 && embeds.size(1) == c.hidden_size,
                      "agla::llama::PrefixKv::encode: embeds must be [P, ", c.hidden_size, "] with P > 0; got ",
                      embeds.defined() ? embeds.sizes() : at::IntArrayRef{});
    at::NoGradGuard no_grad;
    const int64_t p = embeds.size(0);
    PrefixKv prefix;
    prefix.cache_ = KvCache(c.num_hidden_layers, 1, c.num_key_value_heads, c.head_dim(), p, embeds.options());
    KvSlot slot{&prefix.cache_, 0, 0};
    const at::Tensor positions = at::arange(p, at::TensorOptions().dtype(at::kLong).device(embeds.device())).view({1, p});
    lm->model(embeds.unsqueeze(0), positions, at::Tensor(), &slot);
    return prefix;
  }

  /// Whether keys and values were computed.
  bool defined() const { return cache_.defined(); }
  /// Number of prefix positions P.
  int64_t length() const { return cache_.capacity(); }
  /// The keys and values: one row, capacity P.
  const KvCache& cache() const { return cache_; }
  /// Bytes the keys and values take.
  int64_t bytes() const {
    int64_t total = 0;
    for (int64_t l = 0; l < cache_.layers(); ++l) total += 2 * cache_.keys(l).numel() * cache_.keys(l).element_size();
    return total;
  }

  /// Copies the prefix into positions `[0, P)` of row `row` of `cache` (same layers, heads, dtype).
  void copy_into(const KvCache& cache, int64_t row) const {
    check<InvalidArgument>(defined() && cache.layers() == cache_.layers() && row >= 0 && row < cache.rows() &&
                               cache.capacity() >= length(),
                           "agla::llama::PrefixKv::copy_into: a prefix of ", cache_.layers(), " layers and ", length(),
                           " positions does not fit row ", row, " of a cache with ", cache.layers(), " layers, ",
                           cache.rows(), " rows and capacity ", cache.capacity());
    for (int64_t l = 0; l < cache_.layers(); ++l) {
      cache.keys(l)[row].narrow(1, 0, length()).copy_(cache_.keys(l)[0]);
      cache.values(l)[row].narrow(1, 0, length()).copy_(cache_.values(l)[0]);
    }
  }

 private:
  KvCache cache_;
};

/// One row of a prefill: the merged embeddings after an optional cached prefix.
struct PrefillRow {
  at::Tensor embeds;                        ///< `[len, D]`, len > 0: the row after the prefix (the whole row without one)
  std::shared_ptr<const PrefixKv> prefix;   ///< The row's first positions, computed before; null for none.
  ImageSpan image;                          ///< Image positions in the whole row (prefix included), for PAI.
};

/// KV cache and positions of every view of one generation, and the prefill/step forwards over them
/// (see the file comment).
class ViewDecoder {
 public:
  ViewDecoder() = default;

  /// Sets up `views` views of the B streams of `prompt` (int64 `[B, L]`, the first step's tokens)
  /// whose merged prefill rows are at most `merged_length` long, with cache room for
  /// `max_new_tokens` more positions (it grows when exceeded), in the dtype and on the device of `lm`.
  ViewDecoder(LlamaForCausalLM lm, const at::Tensor& prompt, int64_t views, int64_t merged_length,
              int64_t max_new_tokens, std::optional<PaiAttention> pai = std::nullopt)
      : lm_(std::move(lm)), views_(views), merged_length_(merged_length), pai_(pai) {
    check<InvalidArgument>(prompt.defined() && prompt.dim() == 2 && prompt.size(0) > 0 && views > 0 &&
                               merged_length > 0 && max_new_tokens >= 0,
                           "agla::llama::ViewDecoder: a [B, L] prompt with B > 0, positive views and merged_length, "
                           "and max_new_tokens >= 0 are needed; got ",
                           prompt.defined() ? prompt.sizes() : at::IntArrayRef{}, ", ", views, ", ", merged_length,
                           ", ", max_new_tokens);
    const auto& c = lm_->model->config();
    const at::Tensor& w = lm_->model->embed_tokens->weight;
    batch_ = prompt.size(0);
    prompt_ = prompt.to(w.device());
    cache_ = KvCache(c.num_hidden_layers, views * batch_, c.num_key_value_heads, c.head_dim(),
                     merged_length + max_new_tokens, at::TensorOptions().dtype(w.scalar_type()).device(w.device()));
    past_.assign(static_cast<size_t>(views), 0);
  }

  /// Whether a generation was set up.
  bool defined() const { return cache_.defined(); }
  /// The first step's tokens `[B, L]` on the model's device (what `begin` returns).
  const at::Tensor& prompt() const { return prompt_; }
  /// Number of views 1 + K.
  int64_t num_views() const { return views_; }
  /// Number of streams B.
  int64_t batch() const { return batch_; }
  /// Length M every row is left-padded to at its prefill.
  int64_t merged_length() const { return merged_length_; }
  /// Positions cached so far for `view` (0 before its prefill).
  int64_t cached_length(int64_t view) const {
    check<InvalidArgument>(view >= 0 && view < views_, "agla::llama::ViewDecoder: view ", view, " is outside the ",
                           views_, " views set up");
    return past_[static_cast<size_t>(view)];
  }

  /// The LVLM contract's forward of views `[first, first + count)` (`who` names the LVLM in errors):
  /// on their first call `step_tokens` must be the prompt and `prefill_rows(first, count)` computes
  /// the logits (building the merged rows and calling `prefill`); later `step_tokens` `[B, T]` are
  /// new tokens, embedded by `embed` (int64 `[count * B, T]` -> `[count * B, T, D]`) and appended
  /// with `step`. Several views must be at the same step. Returns float32 `[count * B, V]`.
  template <typename PrefillRows, typename Embed>
  at::Tensor forward(const std::string& who, const at::Tensor& step_tokens, int64_t first, int64_t count,
                     PrefillRows&& prefill_rows, Embed&& embed) {
    check<InvalidArgument>(defined(), who, ": call begin() before decoding");
    check<InvalidArgument>(first >= 0 && count > 0 && first + count <= views_, who, ": view ",
                           first + count - 1, " was requested but begin() set up views 0..", views_ - 1);
    for (int64_t v = first + 1; v < first + count; ++v)
      check<InvalidArgument>(past_[static_cast<size_t>(v)] == past_[static_cast<size_t>(first)], who,
                             ": every view must be at the same step for a batched call; view ", v, " has ",
                             past_[static_cast<size_t>(v)], " cached positions, view ", first, " has ",
                             past_[static_cast<size_t>(first)]);
    if (past_[static_cast<size_t>(first)] == 0) {
      check<InvalidArgument>(step_tokens.defined() && step_tokens.sizes() == prompt_.sizes() &&
                                 step_tokens.scalar_type() == at::kLong &&
                                 at::equal(step_tokens.to(prompt_.device()), prompt_),
                             who, ": the first step of a view must pass the prompt begin() returned (",
                             prompt_.sizes(), " int64); got ",
                             step_tokens.defined() ? step_tokens.sizes() : at::IntArrayRef{}, " ",
                             step_tokens.defined() ? step_tokens.scalar_type() : at::kLong);
      return prefill_rows(first, count);
    }
    check<ShapeError>(step_tokens.defined() && step_tokens.dim() == 2 && step_tokens.size(0) == batch_ &&
                          step_tokens.size(1) > 0 && step_tokens.scalar_type() == at::kLong,
                      who, ": step_tokens must be int64 [", batch_, ", T] with T > 0; got ",
                      step_tokens.defined() ? step_tokens.sizes() : at::IntArrayRef{});
    return step(first, count, embed(step_tokens.to(prompt_.device()).repeat({count, 1})));
  }

  /// Prefills views `[first, first + count)` from `rows`: `count * B` merged inputs `[len_i, D]`
  /// (view-major, 0 < len_i <= M) in the model dtype on its device; `images` (empty, or one span
  /// per row) says where each row's image positions are, for PAI. Returns the float32 logits of
  /// each row's last position, `[count * B, V]`.
  at::Tensor prefill(int64_t first, int64_t count, const std::vector<at::Tensor>& rows,
                     const std::vector<ImageSpan>& images = {}) {
    check<InvalidArgument>(images.empty() || images.size() == rows.size(), "agla::llama::ViewDecoder::prefill: ",
                           rows.size(), " image spans (or none) expected; got ", images.size());
    std::vector<PrefillRow> prefill_rows;
    for (size_t r = 0; r < rows.size(); ++r)
      prefill_rows.push_back(PrefillRow{rows[r], nullptr, images.empty() ? ImageSpan{} : images[r]});
    return prefill(first, count, prefill_rows);
  }

  /// Prefills views `[first, first + count)` from `rows` (`count * B`, view-major; prefix length
  /// plus `embeds` length at most M), copying each row's prefix into its cache and running the
  /// model over the rest only: consecutive rows with equal prefix lengths share one forward. Returns
  /// the float32 logits of each row's last position, `[count * B, V]`.
  at::Tensor prefill(int64_t first, int64_t count, const std::vector<PrefillRow>& rows) {
    const char* fn = "agla::llama::ViewDecoder::prefill: ";
    check_range(first, count);
    check<InvalidArgument>(static_cast<int64_t>(rows.size()) == count * batch_, fn, count * batch_,
                           " rows expected; got ", rows.size());
    const auto device = cache_.keys(0).device();
    const int64_t n = count * batch_;
    std::vector<int64_t> prefix_lengths;
    at::Tensor mask = at::zeros({n, merged_length_}, at::kLong);
    at::Tensor image_keys = at::zeros({n, merged_length_}, at::kBool);
    for (int64_t r = 0; r < n; ++r) {
      const PrefillRow& row = rows[static_cast<size_t>(r)];
      const int64_t p = row.prefix ? row.prefix->length() : 0;
      const int64_t len = row.embeds.defined() && row.embeds.dim() == 2 ? row.embeds.size(0) : 0;
      const int64_t pad = merged_length_ - p - len;
      check<InvalidArgument>(len > 0 && pad >= 0 && (!row.prefix || row.prefix->defined()), fn, "row ", r, " of ",
                             p, " cached and ", len, " new positions does not fit the merged length ", merged_length_,
                             " (new positions must be > 0)");
      prefix_lengths.push_back(p);
      if (p > 0) mask[r].narrow(0, 0, p).fill_(1);
      mask[r].narrow(0, p + pad, len).fill_(1);
      const ImageSpan& span = row.image;
      if (span.count > 0) {
        check<InvalidArgument>(span.first >= 0 && span.first + span.count <= p + len, fn, "image positions [",
                               span.first, ", ", span.first + span.count, ") lie outside a row of ", p + len);
        // Slot of row position i: i in the prefix, i + pad after it.
        const int64_t in_prefix = std::max<int64_t>(0, std::min(span.first + span.count, p) - span.first);
        if (in_prefix > 0) image_keys[r].narrow(0, span.first, in_prefix).fill_(true);
        if (span.count > in_prefix)
          image_keys[r].narrow(0, span.first + in_prefix + pad, span.count - in_prefix).fill_(true);
      }
    }
    const at::Tensor full_mask = mask.to(device);
    const at::Tensor positions = (full_mask.cumsum(-1) - 1).masked_fill_(full_mask == 0, 1);
    // Kept for the later steps of these rows (all views share M, so row blocks line up).
    if (!merged_mask_.defined()) {
      merged_mask_ = at::ones({views_ * batch_, merged_length_}, full_mask.options());
      next_position_ = at::zeros({views_ * batch_}, full_mask.options());
      image_keys_ = at::zeros({views_ * batch_, merged_length_}, at::TensorOptions().dtype(at::kBool).device(device));
    }
    merged_mask_.narrow(0, first * batch_, n).copy_(full_mask);
    image_keys_.narrow(0, first * batch_, n).copy_(image_keys);
    next_position_.narrow(0, first * batch_, n).copy_(positions.select(1, merged_length_ - 1) + 1);
    cache_.reserve(merged_length_);
    std::vector<at::Tensor> logits;
    for (int64_t begin = 0; begin < n;) {
      const int64_t p = prefix_lengths[static_cast<size_t>(begin)];
      int64_t end = begin + 1;
      while (end < n && prefix_lengths[static_cast<size_t>(end)] == p) ++end;
      const int64_t t = merged_length_ - p, rows_here = end - begin, row0 = first * batch_ + begin;
      std::vector<at::Tensor> padded_rows;
      for (int64_t r = begin; r < end; ++r) {
        const PrefillRow& row = rows[static_cast<size_t>(r)];
        if (row.prefix) row.prefix->copy_into(cache_, row0 + (r - begin));
        const int64_t pad = t - row.embeds.size(0);
        padded_rows.push_back(pad > 0 ? at::cat({at::zeros({pad, row.embeds.size(1)}, row.embeds.options()), row.embeds})
                                      : row.embeds);
      }
      const at::Tensor group_mask = full_mask.narrow(0, begin, rows_here);
      const bool padded = !bool(group_mask.all().item<bool>());
      any_padding_ = any_padding_ || padded;
      KvSlot slot{&cache_, row0, p};
      const auto boost = attention_boost_rows(row0, rows_here, 0);
      const auto hidden = lm_->model(at::stack(padded_rows), positions.narrow(0, begin, rows_here).narrow(1, p, t),
                                     padded ? group_mask : at::Tensor(), &slot, nullptr, boost ? &*boost : nullptr);
      logits.push_back(last_logits(hidden));
      begin = end;
    }
    for (int64_t v = first; v < first + count; ++v) past_[static_cast<size_t>(v)] = merged_length_;
    return logits.size() == 1 ? logits[0] : at::cat(logits);
  }

  /// Appends T new positions to views `[first, first + count)`, which must be prefilled and at the
  /// same step: `inputs_embeds` `[count * B, T, D]` (view-major). Returns the float32 logits of the
  /// last new position, `[count * B, V]`.
  at::Tensor step(int64_t first, int64_t count, const at::Tensor& inputs_embeds) {
    check_range(first, count);
    const int64_t past = past_[static_cast<size_t>(first)];
    for (int64_t v = first; v < first + count; ++v)
      check<InvalidArgument>(past_[static_cast<size_t>(v)] == past && past > 0,
                             "agla::llama::ViewDecoder::step: views ", first, "..", first + count - 1,
                             " must be prefilled and at the same step; view ", v, " has ",
                             past_[static_cast<size_t>(v)], " cached positions, view ", first, " has ", past);
    const int64_t rows = count * batch_;
    check<ShapeError>(inputs_embeds.dim() == 3 && inputs_embeds.size(0) == rows && inputs_embeds.size(1) > 0,
                      "agla::llama::ViewDecoder::step: inputs_embeds must be [", rows, ", T, D] with T > 0; got ",
                      inputs_embeds.sizes());
    const int64_t t = inputs_embeds.size(1);
    const auto offsets = at::arange(t, next_position_.options()).view({1, t});
    const auto positions =
        next_position_.narrow(0, first * batch_, rows).view({rows, 1}) + (past - merged_length_) + offsets;
    at::Tensor key_mask;
    if (any_padding_) {
      key_mask = at::cat({merged_mask_.narrow(0, first * batch_, rows),
                          at::ones({rows, past + t - merged_length_}, merged_mask_.options())},
                         1);
    }
    cache_.reserve(past + t);
    KvSlot slot{&cache_, first * batch_, past};
    const auto boost = attention_boost(first, count, past + t - merged_length_);
    const auto hidden = lm_->model(inputs_embeds, positions, key_mask, &slot, nullptr, boost ? &*boost : nullptr);
    for (int64_t v = first; v < first + count; ++v) past_[static_cast<size_t>(v)] = past + t;
    return last_logits(hidden);
  }

  /// The KV cache (rows view-major: view k's streams are rows `[k B, (k + 1) B)`).
  const KvCache& cache() const { return cache_; }

 private:
  void check_range(int64_t first, int64_t count) const {
    check<InvalidArgument>(defined() && first >= 0 && count > 0 && first + count <= views_,
                           "agla::llama::ViewDecoder: views [", first, ", ", first + count, ") are outside the ",
                           views_, " views set up");
  }

  at::Tensor last_logits(const at::Tensor& hidden) { return lm_->logits(hidden.select(1, hidden.size(1) - 1)); }

  // PAI's boost for views [first, first + count) whose keys are the merged prompt plus `generated`
  // positions (never image positions); none when PAI is off.
  std::optional<AttentionBoost> attention_boost(int64_t first, int64_t count, int64_t generated) const {
    return attention_boost_rows(first * batch_, count * batch_, generated);
  }

  // The same for cache rows [row0, row0 + rows).
  std::optional<AttentionBoost> attention_boost_rows(int64_t row0, int64_t rows, int64_t generated) const {
    if (!pai_) return std::nullopt;
    at::Tensor keys = image_keys_.narrow(0, row0, rows);
    if (generated > 0) keys = at::cat({keys, at::zeros({rows, generated}, keys.options())}, 1);
    return AttentionBoost{pai_->alpha, pai_->start_layer, pai_->end_layer, keys};
  }

  LlamaForCausalLM lm_{nullptr};
  int64_t views_ = 0, batch_ = 0, merged_length_ = 0;
  at::Tensor prompt_;
  KvCache cache_;
  std::vector<int64_t> past_;
  bool any_padding_ = false;
  at::Tensor merged_mask_;    // [(1 + K) B, M] int64 on the model's device
  at::Tensor next_position_;  // [(1 + K) B] position of each row's first generated token
  std::optional<PaiAttention> pai_;
  at::Tensor image_keys_;     // [(1 + K) B, M] bool: the image positions (PAI)
};

/// What the LLaMA-based LVLMs (LLaVA, InstructBLIP) share: the generation's per-view rows and the
/// `ViewDecoder` that runs them, the per-view and batched forward forms, reset, and PAI's attention
/// option. `Rows` holds one view's `prompts` (B CPU id rows) and `pixels` (undefined without an
/// image). `Derived` (a friend) supplies `kName`, `prefill(first, count)` (the prefill logits of
/// views [first, first + count)) and `embed_ids(ids)` (the language model's input embeddings).
template <class Derived, class Rows>
class ViewLvlm {
 public:
  /// Drops the generation's state (caches, images, prompts).
  void reset() {
    decoder_ = ViewDecoder();
    views_.clear();
  }

  /// Next-token logits of one view, float32 `[B, V]`: the first call of a view takes the prompt
  /// (`step_tokens` equal to the prompt `begin` returned), later calls `[B, T]` new tokens.
  at::Tensor operator()(const at::Tensor& step_tokens, View view) { return run(step_tokens, view.index, 1); }

  /// Next-token logits of every view in one batched forward, float32 `[(1 + K) B, V]`, view-major.
  /// Every view must be at the same step.
  at::Tensor operator()(const at::Tensor& step_tokens, AllViews) { return run(step_tokens, 0, num_views()); }

  /// Positions cached so far for `view` (0 before its prefill).
  int64_t cached_length(View view) const { return decoder_.cached_length(view.index); }
  /// Number of views (1 + K) of the current generation.
  int64_t num_views() const { return decoder_.num_views(); }
  /// The language model's KV cache of the current generation (rows view-major).
  const KvCache& cache() const { return decoder_.cache(); }

  /// Turns PAI's attention intervention on (for the next `begin`) or off (`std::nullopt`).
  void set_pai_attention(std::optional<PaiAttention> pai) {
    check_pai_attention(pai, std::string(Derived::kName) + "::set_pai_attention");
    pai_ = pai;
  }
  /// PAI's attention intervention, when on.
  const std::optional<PaiAttention>& pai_attention() const { return pai_; }

 protected:
  /// Starts a generation of `views` (the original first) for the B streams of `prompt` (int64
  /// `[B, L]`): the KV cache holds the longest prefill row (`merged(row, with_image)` positions)
  /// and `max_new_tokens` more. Returns the first step's tokens on the model's device.
  template <class Merged>
  at::Tensor start(LlamaForCausalLM lm, const at::Tensor& prompt, std::vector<Rows> views, int64_t max_new_tokens,
                   Merged merged) {
    int64_t longest = 0;
    for (const Rows& view : views)
      for (const at::Tensor& row : view.prompts) longest = std::max(longest, merged(row, view.pixels.defined()));
    decoder_ =
        ViewDecoder(std::move(lm), prompt, static_cast<int64_t>(views.size()), longest, max_new_tokens, pai_);
    views_ = std::move(views);
    return decoder_.prompt();
  }

  std::vector<Rows> views_;  ///< the current generation's views, the original first
  ViewDecoder decoder_;
  std::optional<PaiAttention> pai_;

 private:
  // The step of views [first, first + count): prefill on their first call, else one step.
  at::Tensor run(const at::Tensor& step_tokens, int64_t first, int64_t count) {
    Derived& self = static_cast<Derived&>(*this);
    return decoder_.forward(
        Derived::kName, step_tokens, first, count, [&self](int64_t f, int64_t c) { return self.prefill(f, c); },
        [&self](const at::Tensor& ids) { return self.embed_ids(ids); });
  }
};

}  // namespace agla::llama
