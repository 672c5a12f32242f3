// What the tests that drive agla::generate share: generation limits, the greedy settings they
// compare, and the cache-free recomputation that greedy AGLA decoding must reproduce.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "agla/decode.hpp"

namespace agla::test {

/// Generation limits of at most `n` new tokens.
inline agla::GenerateOptions max_new_tokens(std::int64_t n) {
  agla::GenerateOptions limits;
  limits.max_new_tokens = n;
  return limits;
}

/// Greedy decoding of the original view alone (regular decoding: the augmented view never runs).
inline agla::DecodeOptions greedy_regular() {
  agla::DecodeOptions options;
  options.method = agla::FusionMethod::Plain;
  options.greedy = true;
  return options;
}

/// Greedy AGLA decoding with the default alpha and beta.
inline agla::DecodeOptions greedy_agla() {
  agla::DecodeOptions options;
  options.greedy = true;
  return options;
}

/// Expects the first `steps` of `tokens` [1, N] to be greedy AGLA (Eq. 3 with the plausibility
/// cutoff of Eqs. 4-5) recomputed without a cache from the prompt `ids` [1, T]:
/// `last_logits(seq, augmented)` is the model's last-position logits [V] for `seq` under the
/// original or the augmented view.
template <typename LastLogits>
void expect_cache_free_agla(const at::Tensor& tokens, std::int64_t steps, const at::Tensor& ids,
                            const agla::DecodeOptions& options, LastLogits&& last_logits,
                            const std::string& what = "") {
  at::Tensor seq = ids;
  for (std::int64_t k = 0; k < steps; ++k) {
    const at::Tensor l = last_logits(seq, false);
    const at::Tensor l_aug = last_logits(seq, true);
    const double cutoff = std::log(options.beta) + l.max().item<double>();
    const at::Tensor token = (l + options.alpha * l_aug).masked_fill(l < cutoff, -INFINITY).argmax();
    ASSERT_EQ(tokens[0][k].item<std::int64_t>(), token.item<std::int64_t>()) << what << " step " << k;
    seq = at::cat({seq, token.view({1, 1})}, 1);
  }
}

}  // namespace agla::test
