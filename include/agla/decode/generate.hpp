#pragma once
/// \file
/// `agla::generate`: the token loop around `agla::decode_step` for a batch of streams, with
/// per-stream EOS, stop token sequences, a streaming callback and the released-behaviour switch.

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "agla/decode/options.hpp"
#include "agla/decode/session.hpp"
#include "agla/decode/step.hpp"
#include "agla/error.hpp"

namespace agla {

/// Limits and stop conditions of `agla::generate`.
struct GenerateOptions {
  std::int64_t max_new_tokens = 64;         ///< >= 0 tokens generated per stream at most.
  std::vector<std::int64_t> eos_token_ids;  ///< Any of them ends a stream (it is kept in the output).
  std::int64_t pad_token_id = 0;            ///< Emitted by, and fed back to, finished streams.
  /// A stream also ends when its generated tokens end with one of these (kept in the output).
  std::vector<std::vector<std::int64_t>> stop_sequences;

  /// Throws `agla::InvalidArgument` on a negative limit or an empty stop sequence.
  void validate() const {
    check<InvalidArgument>(max_new_tokens >= 0, "agla::GenerateOptions: max_new_tokens must be >= 0; got ",
                           max_new_tokens);
    for (const auto& sequence : stop_sequences)
      check<InvalidArgument>(!sequence.empty(), "agla::GenerateOptions: stop sequences must be non-empty");
  }
};

/// What `agla::generate` produced.
struct GenerateResult {
  /// `[B, N]` int64 on the CPU, N <= max_new_tokens; positions after a stream ended hold the pad id.
  at::Tensor tokens;
  /// Per stream: tokens generated up to and including its EOS or stop sequence (N if it never ended).
  std::vector<std::int64_t> lengths;
  /// Per stream: whether it ended by EOS or a stop sequence.
  std::vector<bool> finished;
};

/// The callback `generate` uses when none is given.
struct NoTokenCallback {
  /// Ignores the step.
  void operator()(std::int64_t /*step*/, const std::vector<std::int64_t>& /*tokens*/) const {}
};

/// Generates up to `limits.max_new_tokens` tokens per stream from `prompt` `[B, T]` int64 (the
/// first step's tokens; the functor has seen nothing before): a loop over an `agla::DecodeSession`,
/// so the augmented view runs for the first `policies.local_view_tokens` steps only. After each step,
/// `on_token(step, tokens)` gets the step index and the `B` tokens of that step (the pad id for
/// streams that had already finished); its signature is
/// `void(std::int64_t step, const std::vector<std::int64_t>& tokens)`. Reads the chosen tokens on
/// the host once per step, to stop streams and the loop.
template <typename Forward, typename Fusion, typename Cutoff, typename Warper, typename Sampler,
          typename OnToken = NoTokenCallback>
GenerateResult generate(Forward&& forward, const at::Tensor& prompt,
                        const DecodePolicies<Fusion, Cutoff, Warper, Sampler>& policies,
                        const GenerateOptions& limits, const at::Generator& generator = {},
                        OnToken&& on_token = {}) {
  static_assert(std::is_invocable_v<OnToken&, std::int64_t, const std::vector<std::int64_t>&>,
                "agla::generate: the on_token callback must be callable as "
                "on_token(std::int64_t step, const std::vector<std::int64_t>& tokens)");
  limits.validate();
  check<ShapeError>(prompt.defined() && prompt.dim() == 2 && prompt.scalar_type() == at::kLong &&
                        prompt.size(0) > 0 && prompt.size(1) > 0,
                    "agla::generate: prompt must be non-empty [B, T] int64; got ",
                    prompt.defined() ? prompt.sizes() : at::IntArrayRef{});
  const std::int64_t batch = prompt.size(0);
  std::vector<std::vector<std::int64_t>> history(static_cast<size_t>(batch));
  GenerateResult result;
  result.lengths.assign(static_cast<size_t>(batch), 0);
  result.finished.assign(static_cast<size_t>(batch), false);
  std::vector<std::int64_t> step_host(static_cast<size_t>(batch));
  std::vector<at::Tensor> columns;
  at::Tensor step_tokens = prompt;
  at::Tensor finished_mask;  // [B] bool on the model's device, defined once a stream has ended
  std::int64_t active = batch;

  auto ends_with = [](const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& tail) {
    return tokens.size() >= tail.size() && std::equal(tail.rbegin(), tail.rend(), tokens.rbegin());
  };

  DecodeSession<DecodePolicies<Fusion, Cutoff, Warper, Sampler>> session(policies);
  for (std::int64_t step = 0; step < limits.max_new_tokens && active > 0; ++step) {
    at::Tensor next = session.step(forward, step_tokens, generator);
    if (finished_mask.defined())
      next = at::where(finished_mask, at::full_like(next, limits.pad_token_id), next);
    const at::Tensor host = next.to(at::kCPU).contiguous();
    std::copy_n(host.data_ptr<std::int64_t>(), batch, step_host.begin());
    columns.push_back(host);
    bool newly_finished = false;
    for (std::int64_t b = 0; b < batch; ++b) {
      if (result.finished[b]) continue;
      const std::int64_t token = step_host[b];
      history[b].push_back(token);
      result.lengths[b] = step + 1;
      bool ended = std::find(limits.eos_token_ids.begin(), limits.eos_token_ids.end(), token) !=
                   limits.eos_token_ids.end();
      for (const auto& sequence : limits.stop_sequences) ended = ended || ends_with(history[b], sequence);
      if (ended) {
        result.finished[b] = true;
        newly_finished = true;
        --active;
      }
    }
    on_token(step, step_host);
    if (newly_finished) {
      std::vector<std::uint8_t> mask(result.finished.begin(), result.finished.end());
      finished_mask = at::tensor(at::ArrayRef<std::uint8_t>(mask)).to(at::kBool).to(next.device());
    }
    step_tokens = next.unsqueeze(1);
  }
  result.tokens = columns.empty() ? at::empty({batch, 0}, at::kLong) : at::stack(columns, 1);
  return result;
}

/// `generate` with the policies `options` describes (validated), including its
/// `local_view_tokens` schedule.
template <typename Forward, typename OnToken = NoTokenCallback>
GenerateResult generate(Forward&& forward, const at::Tensor& prompt, const DecodeOptions& options,
                        const GenerateOptions& limits, const at::Generator& generator = {},
                        OnToken&& on_token = {}) {
  return generate(std::forward<Forward>(forward), prompt, policies_from(options), limits, generator,
                  std::forward<OnToken>(on_token));
}

}  // namespace agla
