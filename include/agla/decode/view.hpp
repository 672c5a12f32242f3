#pragma once
/// \file
/// The views a decoding step conditions on, and the tags by which the library asks an LVLM forward
/// functor for them (the forward-functor contract, docs/design.md §4).
///
/// A view is an index: 0 is the original input (image `v`, prompt `t`), 1..K are the extra views a
/// method adds (AGLA's augmented image is view 1). An LVLM forward functor offers one or both of
/// these call forms:
///   plain:   `at::Tensor operator()(const at::Tensor& step_tokens, agla::View view)`
///            -> next-token logits `[B, V]` of that view;
///   batched: `at::Tensor operator()(const at::Tensor& step_tokens, agla::AllViews)`
///            -> `[(1 + K) B, V]`, view-major: rows `[k B, (k + 1) B)` are view k.
/// `step_tokens` is `[B, T]` int64 on the model's device: the tokens new to this step (the prompt
/// at the first step, then the one token chosen last step). The functor owns its KV caches, one per
/// stream and view, and advances the caches of exactly the views it is asked for.
///
/// The decoding step (`agla::decode_step`, `agla::DecodeSession`) detects the forms at compile time
/// (`agla::is_plain_forward_v`, `agla::is_batched_forward_v`) and uses the batched one whenever every
/// view runs. On steps where the schedule runs the original view only
/// (`DecodeOptions::local_view_tokens`) it asks for `View::Original` through the plain form when
/// offered (else the batched form, discarding the other rows), so a functor offering both forms must
/// serve them from the same per-view caches. Logits are float32; streams that finished keep being
/// fed the pad id and their rows are ignored.

#include <cstdint>

namespace agla {

/// Which input a forward pass conditions on: `View::Original` (index 0) or extra view `index`
/// (1..K; `View::Augmented` is AGLA's local view, index 1).
struct View {
  std::int32_t index = 0;  ///< 0 = original, k >= 1 = extra view k.

  static const View Original;   ///< The original image and prompt.
  static const View Augmented;  ///< The first extra view (AGLA's augmented image).

  /// Extra view `k` (1-based, as in `[(1 + K) B, V]` row blocks).
  static constexpr View extra(std::int32_t k) { return View{k}; }
  /// True for view 0.
  constexpr bool is_original() const { return index == 0; }

  friend constexpr bool operator==(View a, View b) { return a.index == b.index; }
  friend constexpr bool operator!=(View a, View b) { return a.index != b.index; }
};

inline constexpr View View::Original{0};
inline constexpr View View::Augmented{1};

/// Tag asking a functor for every view in one batched forward (`[(1 + K) B, V]`, view-major).
struct AllViews {};

/// The two-view name of `AllViews`: with AGLA's one extra view the batched form returns `[2B, V]`.
using BothViews = AllViews;

}  // namespace agla
