#pragma once
/// \file
/// The two views of AGLA and the tags by which the library asks an LVLM forward functor for them
/// (DESIGN section 4).
///
/// An LVLM forward functor offers one or both of these call forms:
///   plain:   `at::Tensor operator()(const at::Tensor& step_tokens, agla::View view)`
///            -> next-token logits `[B, V]` of that view;
///   batched: `at::Tensor operator()(const at::Tensor& step_tokens, agla::BothViews)`
///            -> `[2B, V]`: rows `[0, B)` are the original view, rows `[B, 2B)` the augmented one.
/// `step_tokens` is `[B, T]` int64 on the model's device: the tokens new to this step (the prompt
/// at the first step, then the one token chosen last step). The functor owns its KV caches, one per
/// stream and view, and advances the caches of exactly the views it is asked for.
///
/// `agla::decode_step` detects the forms at compile time (`agla::is_plain_forward_v`,
/// `agla::is_batched_forward_v`) and uses the batched one whenever both views run. Once the local
/// view is off (`DecodeOptions::local_view_tokens`) it asks for `View::Original` only, through the
/// plain form when offered (else the batched form, discarding the augmented rows), so a functor
/// offering both forms must serve them from the same per-view caches. Logits are float32; streams
/// that finished keep being fed the pad id and their rows are ignored.

namespace agla {

/// Which image a forward pass conditions on: the original `v` or the augmented (local) `v_aug`.
enum class View { Original, Augmented };

/// Tag asking a functor for both views in one batched forward (`[2B, V]` logits).
struct BothViews {};

}  // namespace agla
