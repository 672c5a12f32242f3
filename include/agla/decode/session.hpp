#pragma once
/// \file
/// `agla::DecodeSession`: the stateful per-token decoder. It owns the decoding policies (or the
/// `DecodeOptions` they come from) and counts the tokens generated so far, so the local-view
/// schedule (`DecodeOptions::local_view_tokens`) is applied the same way however the loop is
/// written. `agla::generate` is a loop over a session; a hand-written per-token loop over
/// `session.step(...)` gives exactly the tokens `generate` gives.

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "agla/decode/options.hpp"
#include "agla/decode/step.hpp"

namespace agla {

/// One generation's decoder: policies plus the step counter the schedule reads. Cheap to build;
/// one per generation (or `reset()` between generations). Not thread-safe: one per thread.
template <typename Policies = OptionsPolicies>
class DecodeSession {
 public:
  /// A session with the policies `options` describes (validated; `OptionsPolicies` only).
  explicit DecodeSession(const DecodeOptions& options) : DecodeSession(Policies(policies_from(options))) {}
  /// A session over explicit policies (`agla::DecodePolicies{fusion, cutoff, warper, sampler}`).
  explicit DecodeSession(Policies policies) : policies_(std::move(policies)) {}

  /// One token per stream: runs `forward` on `step_tokens` `[B, T]` int64 (the prompt at the first
  /// step, then the token chosen last step) for the views this step needs, then fuses, cuts, warps
  /// and samples. Returns `[B]` int64 on the logits' device. `log_probs`, when set, receives the
  /// `[B, V]` log-softmax of the final scores. A step that throws is not counted.
  template <typename Forward>
  at::Tensor step(Forward&& forward, const at::Tensor& step_tokens, const at::Generator& generator = {},
                  at::Tensor* log_probs = nullptr) {
    StepControl control;
    control.step = steps_;
    control.log_probs = log_probs;
    at::Tensor tokens = decode_step(std::forward<Forward>(forward), step_tokens, policies_, generator, control);
    ++steps_;
    return tokens;
  }

  /// `step` on logits the caller already computed for this step's views: `views` = `[l_0, l_1, ...,
  /// l_K]`, each `[B, V]` (the extra views are ignored, and may be left out, when
  /// `runs_local_view()` is false).
  at::Tensor step_logits(const std::vector<at::Tensor>& views, const at::Generator& generator = {},
                         at::Tensor* log_probs = nullptr) {
    const bool local = runs_local_view();
    const auto extra = detail::extra_views_of(policies_);
    check<InvalidArgument>(!views.empty(), "agla::DecodeSession::step_logits: no logits given");
    check<InvalidArgument>(!local || static_cast<std::int64_t>(views.size()) == 1 + extra,
                           "agla::DecodeSession::step_logits: step ", steps_, " runs the ", extra,
                           " extra view(s), so it needs ", 1 + extra, " logit tensors; got ", views.size());
    StepControl control;
    control.step = steps_;
    control.log_probs = log_probs;
    at::Tensor tokens = decode_views(local ? views : std::vector<at::Tensor>{views[0]}, policies_, generator, control);
    ++steps_;
    return tokens;
  }

  /// Whether the next step runs the extra (augmented) view under the schedule.
  bool runs_local_view() const {
    return schedule_runs_local_view(policies_.local_view_tokens, steps_, "agla::DecodeSession");
  }
  /// Tokens generated so far (the index of the next step).
  std::int64_t steps() const { return steps_; }
  /// Starts a new generation: the next step is step 0 again.
  void reset() { steps_ = 0; }
  /// The policies in use.
  const Policies& policies() const { return policies_; }

 private:
  Policies policies_;
  std::int64_t steps_ = 0;
};

DecodeSession(const DecodeOptions&) -> DecodeSession<OptionsPolicies>;
template <typename Fusion, typename Cutoff, typename Warper, typename Sampler>
DecodeSession(DecodePolicies<Fusion, Cutoff, Warper, Sampler>)
    -> DecodeSession<DecodePolicies<Fusion, Cutoff, Warper, Sampler>>;

}  // namespace agla
