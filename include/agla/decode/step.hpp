#pragma once
/// \file
/// `agla::decode_step`: one token per stream from an LVLM forward functor (docs/design.md §4), and
/// `agla::decode_logits`, the same step on logits the caller already has.

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "agla/decode/fusion.hpp"
#include "agla/decode/options.hpp"
#include "agla/decode/policies.hpp"
#include "agla/decode/view.hpp"
#include "agla/error.hpp"

namespace agla {

/// The policies of one decoding step: fusion -> plausibility -> warpers -> sampler, plus how many
/// generated tokens the extra views shape (see `DecodeOptions::local_view_tokens`) and when
/// logits are checked for NaN / +inf. A two-view fusion is any `(l, l_aug) -> fused`; a K-view
/// fusion is `agla::ViewsFusion`.
template <typename Fusion, typename Cutoff, typename Warper, typename Sampler>
struct DecodePolicies {
  Fusion fusion;    ///< `(l [B,V], l_aug [B,V]) -> fused [B,V]`, or a `ViewsFusion`.
  Cutoff cutoff;    ///< `(l [B,V], fused [B,V]) -> scores [B,V]` with implausible tokens at -inf.
  Warper warper;    ///< `scores [B,V] -> scores [B,V]`.
  Sampler sampler;  ///< `(scores [B,V], at::Generator) -> tokens [B] int64`.
  std::int64_t local_view_tokens = DecodeOptions::kEveryToken;  ///< Steps that run the local view.
  FiniteCheck finite_check = FiniteCheck::Auto;                  ///< NaN / +inf detection.
};

template <typename Fusion, typename Cutoff, typename Warper, typename Sampler>
DecodePolicies(Fusion, Cutoff, Warper, Sampler) -> DecodePolicies<Fusion, Cutoff, Warper, Sampler>;

namespace detail {

/// The plausibility cutoff an `agla::DecodeOptions` selects (none for `FusionMethod::Plain`).
struct MethodCutoff {
  bool enabled = true;
  double beta = 0.5;
  at::Tensor operator()(const at::Tensor& logits, const at::Tensor& fused) const {
    return enabled ? BetaCutoff{beta}(logits, fused) : fused;
  }
};

/// The sampler an `agla::DecodeOptions` selects (greedy or multinomial).
struct MethodSampler {
  bool greedy = false;
  at::Tensor operator()(const at::Tensor& scores, const at::Generator& generator) const {
    return greedy ? GreedySampler{}(scores) : MultinomialSampler{}(scores, generator);
  }
};

}  // namespace detail

/// The policy set a `DecodeOptions` describes, chosen at run time.
using OptionsPolicies =
    DecodePolicies<ViewsFusion, detail::MethodCutoff, HfWarpers, detail::MethodSampler>;

/// Validates `options` and builds the policies it describes.
inline OptionsPolicies policies_from(const DecodeOptions& options) {
  options.validate();
  const bool plain = options.method == FusionMethod::Plain;
  return OptionsPolicies{ViewsFusion::from(options),
                         detail::MethodCutoff{!plain, options.beta},
                         HfWarpers::from(options),
                         detail::MethodSampler{options.greedy},
                         plain ? 0 : options.local_view_tokens,
                         options.finite_check};
}

namespace detail {

template <typename Fusion>
struct is_views_fusion : std::is_same<std::decay_t<Fusion>, ViewsFusion> {};

/// Number K of extra views `policies` fuse: a two-view fusion fuses one.
template <typename Fusion, typename Cutoff, typename Warper, typename Sampler>
std::int64_t extra_views_of(const DecodePolicies<Fusion, Cutoff, Warper, Sampler>& policies) {
  if constexpr (is_views_fusion<Fusion>::value) {
    return policies.fusion.extra_views();
  } else {
    return 1;
  }
}

/// Whether the fusion of `policies` reads the step index (M3ID's schedule).
template <typename Fusion, typename Cutoff, typename Warper, typename Sampler>
bool fusion_reads_step(const DecodePolicies<Fusion, Cutoff, Warper, Sampler>& policies) {
  if constexpr (is_views_fusion<Fusion>::value) {
    for (const ViewFusion& term : policies.fusion.terms)
      if (term.method == FusionMethod::M3id) return true;
  }
  return false;
}

}  // namespace detail

/// Per-call controls of a decoding step.
struct StepControl {
  /// Index of the token this step generates (0 for the first), which the local-view schedule
  /// (`local_view_tokens`) reads. Required by `decode_step` whenever the schedule depends on it;
  /// `agla::DecodeSession` and `agla::generate` fill it in.
  std::optional<std::int64_t> step;
  /// When set, receives the `[B, V]` float32 `log_softmax` of the final scores (-inf where removed).
  at::Tensor* log_probs = nullptr;
};

/// Whether the step with index `step` runs the extra views under a `local_view_tokens` schedule.
/// Throws `agla::InvalidArgument` when the schedule depends on the step and none is given.
inline bool schedule_runs_local_view(std::int64_t local_view_tokens, const std::optional<std::int64_t>& step,
                                     const char* who) {
  if (local_view_tokens <= 0) return false;
  if (local_view_tokens == DecodeOptions::kEveryToken) return true;
  check<InvalidArgument>(step.has_value(), who, ": these options run the local view for the first ",
                         local_view_tokens,
                         " generated tokens only, so the step needs its index: pass StepControl::step, or "
                         "decode with agla::DecodeSession or agla::generate, which count the steps");
  check<InvalidArgument>(*step >= 0, who, ": StepControl::step must be >= 0; got ", *step);
  return *step < local_view_tokens;
}

namespace detail {

inline bool wants_check(FiniteCheck mode, const at::Tensor& tensor) {
  return mode == FiniteCheck::Always || (mode == FiniteCheck::Auto && tensor.is_cpu());
}

/// Throws `agla::NumericError` naming the first stream and token of `values` [B, V] that is NaN or
/// +inf, given its row maxima (which NaN propagates into). `what` names the tensor.
inline void report_non_finite(const at::Tensor& values, const at::Tensor& row_max, const char* what,
                              bool reject_all_neg_inf) {
  const at::Tensor host_max = row_max.reshape({-1}).to(at::kCPU, at::kFloat);
  const float* maxima = host_max.data_ptr<float>();
  for (int64_t b = 0; b < host_max.numel(); ++b) {
    const float m = maxima[b];
    if (std::isnan(m) || m == std::numeric_limits<float>::infinity()) {
      const at::Tensor row = values[b];
      const at::Tensor bad = (row.isnan() | (row == std::numeric_limits<float>::infinity())).nonzero();
      const int64_t position = bad.numel() > 0 ? bad[0][0].item<int64_t>() : -1;
      const float value = position >= 0 ? row[position].item<float>() : m;
      throw NumericError(detail::concat("agla::decode_step: ", what, " of stream ", b, " at token ",
                                        position, " is ", value, "; expected finite values or -inf"));
    }
    if (reject_all_neg_inf && m == -std::numeric_limits<float>::infinity()) {
      throw NumericError(detail::concat("agla::decode_step: ", what, " of stream ", b,
                                        " are all -inf; no token can be chosen"));
    }
  }
}

inline void check_logits(const at::Tensor& logits, const char* name) {
  check<ShapeError>(logits.defined(), "agla::decode_step: ", name, " is an undefined tensor");
  check<ShapeError>(logits.dim() == 2 && logits.scalar_type() == at::kFloat,
                    "agla::decode_step: ", name, " must be [B, V] float; got ", logits.sizes(), " ",
                    logits.scalar_type());
  check<ShapeError>(logits.size(0) > 0 && logits.size(1) > 0, "agla::decode_step: ", name,
                    " must be non-empty [B, V] with B, V >= 1; got ", logits.sizes());
}

}  // namespace detail

/// One decoding step on logits the caller already has: `views` = `[l_0, l_1, ..., l_K]`, each
/// `[B, V]` float32 on one device (the original view first; just `[l_0]` on steps whose schedule
/// runs no extra view, where the original stands in for every extra view) -> `[B]` int64 tokens on
/// that device. No host synchronisation except the NaN check that `policies.finite_check` asks for
/// (on CPU by default). `control.step` is required when the fusion reads it (M3ID).
template <typename Fusion, typename Cutoff, typename Warper, typename Sampler>
at::Tensor decode_views(const std::vector<at::Tensor>& views,
                        const DecodePolicies<Fusion, Cutoff, Warper, Sampler>& policies,
                        const at::Generator& generator = {}, const StepControl& control = {}) {
  const std::int64_t extra = detail::extra_views_of(policies);
  check<ShapeError>(!views.empty(), "agla::decode_step: no logits given");
  const at::Tensor& logits = views[0];
  detail::check_logits(logits, "logits");
  // Plain decoding reads the original view only; any extra logits given are not used.
  check<ShapeError>(extra == 0 || views.size() == 1 || static_cast<std::int64_t>(views.size()) == 1 + extra,
                    "agla::decode_step: the fusion needs the original and ", extra, " extra view(s); got ",
                    views.size(), " logit tensors");
  for (std::size_t k = 1; k < views.size(); ++k) {
    const std::string name = k == 1 && extra == 1 ? "augmented logits" : "logits of view " + std::to_string(k);
    detail::check_logits(views[k], name.c_str());
    check<ShapeError>(views[k].sizes() == logits.sizes(), "agla::decode_step: every view must have the same [B, V]; ",
                      "got original ", logits.sizes(), " and ", name, " ", views[k].sizes());
    check<ShapeError>(views[k].device() == logits.device(), "agla::decode_step: every view must be on one device; got ",
                      logits.device(), " and ", views[k].device());
  }
  check<InvalidArgument>(!detail::fusion_reads_step(policies) || control.step.has_value(),
                         "agla::decode_step: M3ID's weight depends on the generated-token index, so the step "
                         "needs it: pass StepControl::step, or decode with agla::DecodeSession or agla::generate");
  const bool checked = detail::wants_check(policies.finite_check, logits);
  if (checked) {
    detail::report_non_finite(logits, logits.amax(-1), "original logits", true);
    for (std::size_t k = 1; k < views.size(); ++k)
      if (!views[k].is_same(logits))
        detail::report_non_finite(views[k], views[k].amax(-1),
                                  extra == 1 ? "augmented logits" : "logits of an extra view", false);
  }
  at::Tensor original = logits, fused;
  if constexpr (detail::is_views_fusion<Fusion>::value) {
    const ViewsFusion& fusion = policies.fusion;
    if (fusion.space == FusionSpace::LogProbs) original = logits.log_softmax(-1);
    std::vector<at::Tensor> extras;
    for (std::int64_t k = 1; k <= extra; ++k) {
      const bool own = static_cast<std::int64_t>(views.size()) > k;  // else the original stands in
      if (!own) extras.push_back(original);
      else extras.push_back(fusion.space == FusionSpace::LogProbs ? views[k].log_softmax(-1) : views[k]);
    }
    fused = fusion(original, extras, control.step.value_or(0));
  } else {
    fused = policies.fusion(logits, views.size() > 1 ? views[1] : logits);
  }
  const at::Tensor scores = policies.warper(policies.cutoff(original, fused));
  if (checked) detail::report_non_finite(scores, scores.amax(-1), "final scores", true);
  if (control.log_probs != nullptr) *control.log_probs = scores.log_softmax(-1);
  return policies.sampler(scores, generator);
}

/// `decode_views` of two views: `logits` (original) and `logits_aug` `[B, V]`.
template <typename Fusion, typename Cutoff, typename Warper, typename Sampler>
at::Tensor decode_logits(const at::Tensor& logits, const at::Tensor& logits_aug,
                         const DecodePolicies<Fusion, Cutoff, Warper, Sampler>& policies,
                         const at::Generator& generator = {}, const StepControl& control = {}) {
  return decode_views({logits, logits_aug}, policies, generator, control);
}

/// `decode_logits` with the policies `options` describes (validated).
inline at::Tensor decode_logits(const at::Tensor& logits, const at::Tensor& logits_aug,
                                const DecodeOptions& options, const at::Generator& generator = {},
                                const StepControl& control = {}) {
  return decode_logits(logits, logits_aug, policies_from(options), generator, control);
}

/// True when `Forward` offers the plain form `forward(step_tokens, agla::View) -> at::Tensor`.
template <typename Forward, typename = void>
struct is_plain_forward : std::false_type {};
template <typename Forward>
struct is_plain_forward<Forward, std::void_t<decltype(std::declval<Forward&>()(
                                     std::declval<const at::Tensor&>(), View::Original))>>
    : std::is_convertible<decltype(std::declval<Forward&>()(std::declval<const at::Tensor&>(),
                                                            View::Original)),
                          at::Tensor> {};

/// True when `Forward` offers the batched form `forward(step_tokens, agla::AllViews{})`.
template <typename Forward, typename = void>
struct is_batched_forward : std::false_type {};
template <typename Forward>
struct is_batched_forward<Forward, std::void_t<decltype(std::declval<Forward&>()(
                                       std::declval<const at::Tensor&>(), AllViews{}))>>
    : std::is_convertible<decltype(std::declval<Forward&>()(std::declval<const at::Tensor&>(),
                                                            AllViews{})),
                          at::Tensor> {};

/// True for the plain form.
template <typename Forward>
inline constexpr bool is_plain_forward_v = is_plain_forward<std::remove_reference_t<Forward>>::value;
/// True for the batched form.
template <typename Forward>
inline constexpr bool is_batched_forward_v =
    is_batched_forward<std::remove_reference_t<Forward>>::value;

namespace detail {

/// Names what a type lacks to be a forward functor, at the call that needs one.
template <typename Forward>
constexpr void check_forward_functor() {
  using F = std::remove_reference_t<Forward>;
  using Mutable = std::remove_const_t<F>;
  constexpr bool callable = is_plain_forward_v<F> || is_batched_forward_v<F>;
  constexpr bool callable_if_mutable = is_plain_forward_v<Mutable> || is_batched_forward_v<Mutable>;
  static_assert(callable || !callable_if_mutable,
                "agla: the forward functor was passed as const, but its operator() is not const: a "
                "functor advances its KV caches, so pass it as a non-const lvalue");
  static_assert(callable || callable_if_mutable,
                "agla: the forward functor must offer "
                "`at::Tensor operator()(const at::Tensor& step_tokens, agla::View)` returning [B, V] "
                "logits, or `at::Tensor operator()(const at::Tensor& step_tokens, agla::AllViews)` "
                "returning [(1 + K) B, V] (view-major, original rows first); see agla/decode/view.hpp");
}

/// Runs the forward functor for this step on the original view and, when `extra_views > 0`, on
/// views 1..K: `[l_0, l_1, ..., l_K]`, each `[B, V]`. Prefers the batched form when the functor
/// offers it and every view runs; with `extra_views == 0` only the original view runs.
template <typename Forward>
std::vector<at::Tensor> run_views(Forward& forward, const at::Tensor& step_tokens, std::int64_t extra_views) {
  check_forward_functor<Forward>();
  constexpr bool plain = is_plain_forward_v<Forward>;
  constexpr bool batched = is_batched_forward_v<Forward>;
  const int64_t batch = step_tokens.size(0);
  auto rows = [&](const at::Tensor& logits, int64_t expected, const char* form) {
    check<ShapeError>(logits.defined() && logits.dim() == 2 && logits.size(0) == expected,
                      "agla::decode_step: the ", form, " forward must return [", expected,
                      ", V] logits for ", batch, " streams; got ",
                      logits.defined() ? logits.sizes() : at::IntArrayRef{});
  };
  std::vector<at::Tensor> views;
  if constexpr (batched) {
    if (extra_views > 0 || !plain) {
      const at::Tensor all = forward(step_tokens, AllViews{});
      const int64_t expected = extra_views > 0 ? (1 + extra_views) * batch : all.size(0);
      rows(all, expected, "batched (agla::AllViews)");
      check<ShapeError>(all.size(0) % batch == 0, "agla::decode_step: the batched (agla::AllViews) forward must ",
                        "return a multiple of ", batch, " rows; got ", all.sizes());
      for (int64_t k = 0; k <= extra_views; ++k) views.push_back(all.narrow(0, k * batch, batch));
      return views;
    }
  }
  if constexpr (plain) {
    for (int64_t k = 0; k <= extra_views; ++k) {
      views.push_back(forward(step_tokens, View{static_cast<std::int32_t>(k)}));
      rows(views.back(), batch, k == 0 ? "plain (agla::View::Original)" : "plain (agla::View::extra)");
    }
  }
  return views;
}

inline void check_step_tokens(const at::Tensor& step_tokens) {
  check<ShapeError>(step_tokens.defined() && step_tokens.dim() == 2 && step_tokens.scalar_type() == at::kLong,
                    "agla::decode_step: step_tokens must be [B, T] int64; got ",
                    step_tokens.defined() ? step_tokens.sizes() : at::IntArrayRef{}, " ",
                    step_tokens.defined() ? step_tokens.scalar_type() : at::ScalarType::Undefined);
  check<ShapeError>(step_tokens.size(0) > 0 && step_tokens.size(1) > 0,
                    "agla::decode_step: step_tokens must be non-empty [B, T]; got ", step_tokens.sizes());
}

}  // namespace detail

/// One decoding step: runs `forward` on `step_tokens` `[B, T]` int64 (the tokens new to this step)
/// for the original view and, when the schedule (`policies.local_view_tokens`, read at
/// `control.step`) runs them, the K extra views the fusion needs; then fuses, cuts, warps and
/// samples. On steps without the extra views the original logits stand in for them. Returns `[B]`
/// int64 tokens on the logits' device, without host synchronisation (beyond the CPU NaN check of
/// `FiniteCheck::Auto`). Throws `agla::InvalidArgument` when the schedule or the fusion depends on
/// the step and `control.step` is not given (`agla::DecodeSession` counts steps for you).
template <typename Forward, typename Fusion, typename Cutoff, typename Warper, typename Sampler>
at::Tensor decode_step(Forward&& forward, const at::Tensor& step_tokens,
                       const DecodePolicies<Fusion, Cutoff, Warper, Sampler>& policies,
                       const at::Generator& generator = {}, const StepControl& control = {}) {
  detail::check_step_tokens(step_tokens);
  const bool local = schedule_runs_local_view(policies.local_view_tokens, control.step, "agla::decode_step");
  check<InvalidArgument>(!detail::fusion_reads_step(policies) || control.step.has_value(),
                         "agla::decode_step: M3ID's weight depends on the generated-token index, so the step "
                         "needs it: pass StepControl::step, or decode with agla::DecodeSession or agla::generate");
  const std::vector<at::Tensor> views =
      detail::run_views(forward, step_tokens, local ? detail::extra_views_of(policies) : 0);
  return decode_views(views, policies, generator, control);
}

/// `decode_step` with the policies `options` describes (validated); `FusionMethod::Plain` makes no
/// augmented forward.
template <typename Forward>
at::Tensor decode_step(Forward&& forward, const at::Tensor& step_tokens, const DecodeOptions& options,
                       const at::Generator& generator = {}, const StepControl& control = {}) {
  return decode_step(std::forward<Forward>(forward), step_tokens, policies_from(options), generator, control);
}

}  // namespace agla
