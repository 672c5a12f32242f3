#pragma once
/// \file
/// Plausibility, warper and sampler policies of the decoding step on `at::Tensor` (any device).
/// Each is a cheap value type with `operator()`; none modifies its inputs. The order of a step is
/// fusion (`agla/decode/fusion.hpp`) -> plausibility -> warpers -> sampler, as in the reference
/// (AGLA `eval/sample.py`, a patched Hugging Face `sample()`).

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>

#include "agla/decode/mt19937.hpp"
#include "agla/decode/options.hpp"
#include "agla/error.hpp"

namespace agla {

namespace detail {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// `argmax(probs / q)` per row with `q` the Exp(1) variates ATen's CPU `exponential_` (no MKL)
/// draws from `generator` for a tensor shaped like `probs` -- the exact draw of
/// `torch.multinomial(probs, 1)` -- but computing `q` only where `probs != 0` and skipping the
/// generator over the rest (a zero probability cannot win). `probs`: `[B, V]` float32 CPU.
inline at::Tensor cpu_exponential_race(const at::Tensor& probs, const at::Generator& generator) {
  const at::Tensor dense = probs.contiguous();
  const std::int64_t rows = dense.size(0);
  const std::int64_t vocab = dense.size(1);
  at::Tensor tokens = at::empty({rows}, dense.options().dtype(at::kLong));
  std::int64_t* out = tokens.data_ptr<std::int64_t>();
  auto* impl = at::check_generator<at::CPUGeneratorImpl>(generator);
  std::lock_guard<std::mutex> lock(impl->mutex_);
  at::mt19937 engine = impl->engine();
  at::mt19937_data_pod pod = engine.data();
  raw::Mt19937 mt;
  // at::mt19937 counts `left_` down to a twist at 1; `next_` indexes the state.
  mt.set_state(pod.state_.data(), pod.left_ <= 1 ? 624u : pod.next_);
  for (std::int64_t b = 0; b < rows; ++b) {
    const float* p = dense.data_ptr<float>() + b * vocab;
    std::int64_t consumed = 0;
    std::int64_t best = 0;
    float best_ratio = 0.0f;
    bool nan_won = false;  // torch's argmax ranks NaN above everything, first NaN wins
    for (std::int64_t v = 0; v < vocab; ++v) {
      if (p[v] == 0.0f) continue;
      mt.discard(static_cast<std::uint64_t>(2 * (v - consumed)));
      const float ratio = p[v] / raw::torch_exponential(mt);
      consumed = v + 1;
      if (nan_won) continue;
      if (std::isnan(ratio)) {
        best = v;
        nan_won = true;
      } else if (ratio > best_ratio) {
        best = v;
        best_ratio = ratio;
      }
    }
    mt.discard(static_cast<std::uint64_t>(2 * (vocab - consumed)));
    out[b] = best;
  }
  std::copy(mt.words(), mt.words() + 624, pod.state_.begin());
  pod.next_ = mt.position();
  pod.left_ = static_cast<int>(625 - mt.position());
  engine.set_data(pod);
  impl->set_engine(engine);
  return tokens;
}

}  // namespace detail

/// Adaptive plausibility constraint, paper Eqs. 4-5: tokens whose original-view logit is below
/// `log(beta) + max_w l(w)` are removed (set to -inf) from the fused scores.
struct BetaCutoff {
  double beta = 0.5;  ///< In (0, 1]; 1 keeps only the maximum and its ties.

  /// `log(beta)` as the reference computes it: `torch.log(torch.tensor(beta))`, in float32.
  float log_beta() const { return std::log(static_cast<float>(beta)); }

  /// `[B, V]` float32 original logits -> `[B, 1]` float32 cutoff on the same device.
  at::Tensor cutoff(const at::Tensor& logits) const {
    return logits.amax(-1, /*keepdim=*/true).add_(log_beta());
  }

  /// Original logits `[B, V]` and fused scores `[B, V]` -> fused scores with every token whose
  /// original logit is strictly below the cutoff set to -inf (also where fusion made NaN).
  at::Tensor operator()(const at::Tensor& logits, const at::Tensor& fused) const {
    return fused.masked_fill(logits < cutoff(logits), detail::kNegInf);
  }
};

/// No plausibility constraint: returns the fused scores unchanged.
struct NoCutoff {
  /// `[B, V]` original logits (unused) and fused scores -> `fused`.
  at::Tensor operator()(const at::Tensor& /*logits*/, const at::Tensor& fused) const { return fused; }
};

/// Hugging Face `TemperatureLogitsWarper`: `scores / temperature` in float32.
struct TemperatureWarper {
  double temperature = 1.0;  ///< > 0.

  /// `[B, V]` float32 scores -> scaled scores.
  at::Tensor operator()(const at::Tensor& scores) const {
    return scores / static_cast<float>(temperature);
  }
};

/// Hugging Face `TopKLogitsWarper` (v4.31): keeps every score >= the k-th largest of its row,
/// `k = min(max(top_k, min_tokens_to_keep), V)`; ties with the k-th value all survive and -inf
/// entries count as entries, so a row with fewer than k finite scores loses nothing.
struct TopKWarper {
  std::int64_t top_k = 50;               ///< >= 1.
  std::int64_t min_tokens_to_keep = 1;   ///< >= 1.

  /// `[B, V]` float32 scores -> scores with the removed tokens at -inf.
  at::Tensor operator()(const at::Tensor& scores) const {
    check<InvalidArgument>(top_k >= 1 && min_tokens_to_keep >= 1,
                           "agla::TopKWarper: top_k and min_tokens_to_keep must be >= 1; got top_k ",
                           top_k, ", min_tokens_to_keep ", min_tokens_to_keep);
    const std::int64_t vocab = scores.size(-1);
    const std::int64_t k = std::min(std::max(top_k, min_tokens_to_keep), vocab);
    const at::Tensor kth = std::get<0>(scores.topk(k, -1)).narrow(-1, k - 1, 1);
    return scores.masked_fill(scores < kth, detail::kNegInf);
  }
};

/// Hugging Face `TopPLogitsWarper` (v4.31): sorts each row ascending, removes the positions whose
/// cumulative probability is <= `1 - top_p` (the threshold rounded to float32), never the last
/// `min_tokens_to_keep`. CPU `cumsum` accumulates in double and rounds each partial sum to float,
/// which is the reference behaviour.
struct TopPWarper {
  double top_p = 1.0;                    ///< In (0, 1].
  std::int64_t min_tokens_to_keep = 1;   ///< >= 1.

  /// `[B, V]` float32 scores -> scores with the removed tokens at -inf.
  at::Tensor operator()(const at::Tensor& scores) const {
    check<InvalidArgument>(top_p > 0.0 && top_p <= 1.0 && min_tokens_to_keep >= 1,
                           "agla::TopPWarper: top_p must be in (0, 1] and min_tokens_to_keep >= 1; "
                           "got top_p ", top_p, ", min_tokens_to_keep ", min_tokens_to_keep);
    const std::int64_t vocab = scores.size(-1);
    auto sorted = scores.sort(-1, /*descending=*/false);
    const at::Tensor cumulative = std::get<0>(sorted).softmax(-1).cumsum(-1);
    at::Tensor remove = cumulative <= static_cast<float>(1.0 - top_p);
    const std::int64_t keep = std::min(min_tokens_to_keep, vocab);
    remove.narrow(-1, vocab - keep, keep).fill_(false);
    const at::Tensor remove_tokens = remove.scatter(-1, std::get<1>(sorted), remove);
    return scores.masked_fill(remove_tokens, detail::kNegInf);
  }
};

/// Identity warper.
struct NoWarper {
  /// `[B, V]` scores -> `scores`.
  at::Tensor operator()(const at::Tensor& scores) const { return scores; }
};

/// Applies warpers left to right; a chain is itself a warper.
template <typename... Warpers>
struct WarperChain {
  std::tuple<Warpers...> warpers;  ///< Applied in order.

  /// `[B, V]` scores -> scores after every warper.
  at::Tensor operator()(at::Tensor scores) const {
    std::apply([&](const auto&... warper) { ((scores = warper(scores)), ...); }, warpers);
    return scores;
  }
};

/// Builds a `WarperChain` from warper values: `chain(TemperatureWarper{0.7}, TopKWarper{40})`.
template <typename... Warpers>
WarperChain<Warpers...> chain(Warpers... warpers) {
  return WarperChain<Warpers...>{std::tuple<Warpers...>(std::move(warpers)...)};
}

/// The warpers of Hugging Face `_get_logits_warper` (v4.31) under its activation rule: temperature
/// if != 1, top-k if != 0, top-p if < 1, applied in that order.
struct HfWarpers {
  double temperature = 1.0;              ///< > 0.
  std::int64_t top_k = 0;                ///< >= 0; 0 = inactive.
  double top_p = 1.0;                    ///< In (0, 1]; 1 = inactive.
  std::int64_t min_tokens_to_keep = 1;   ///< >= 1.

  /// The warpers an `agla::DecodeOptions` selects.
  static HfWarpers from(const DecodeOptions& options) {
    return {options.temperature, options.top_k, options.top_p, options.min_tokens_to_keep};
  }

  /// `[B, V]` float32 scores -> warped scores.
  at::Tensor operator()(at::Tensor scores) const {
    if (temperature != 1.0) scores = TemperatureWarper{temperature}(scores);
    if (top_k != 0) scores = TopKWarper{top_k, min_tokens_to_keep}(scores);
    if (top_p < 1.0) scores = TopPWarper{top_p, min_tokens_to_keep}(scores);
    return scores;
  }
};

/// Multinomial sampling from `softmax(scores)` with the caller's generator, by the algorithm of
/// `torch.multinomial(probs, 1)` (ATen `multinomial_out`: the exponential race
/// `argmax(probs / q)`, `q ~ Exp(1)`), without its validity checks that read values on the host.
/// On the CPU the variates are drawn as ATen's non-MKL `exponential_` draws them (decode fixture
/// README, "Draws"), only for tokens with nonzero probability, so the draws equal
/// `torch.multinomial` of a libtorch built without MKL for the same seed, on every build. On other
/// devices the device's own `exponential_` is used.
struct MultinomialSampler {
  /// `[B, V]` float32 final scores, generator on their device -> `[B]` int64 tokens, same device.
  at::Tensor operator()(const at::Tensor& scores, const at::Generator& generator) const {
    check<InvalidArgument>(generator.defined(),
                           "agla::MultinomialSampler: sampling needs a generator; got an undefined "
                           "at::Generator (pass e.g. at::make_generator<at::CPUGeneratorImpl>(seed))");
    check<InvalidArgument>(generator.device().type() == scores.device().type(),
                           "agla::MultinomialSampler: the generator must be on the scores' device "
                           "type; got a ", generator.device(), " generator for ", scores.device(),
                           " scores");
    const at::Tensor probs = scores.softmax(-1);
    if (probs.is_cpu() && probs.scalar_type() == at::kFloat && probs.dim() == 2 &&
        generator.device().is_cpu())
      return detail::cpu_exponential_race(probs, generator);
    at::Tensor race = at::empty_like(probs).exponential_(1.0, generator);
    at::div_out(race, probs, race);
    return race.argmax(-1);
  }
};

/// Greedy selection: the highest final score per row, the lowest token id among exact ties.
/// The argmax is taken over the scores rather than `softmax(scores)`: the same token except where
/// rounding in `exp` would make two different scores equal probabilities.
struct GreedySampler {
  /// `[B, V]` float32 final scores (generator unused) -> `[B]` int64 tokens, same device.
  at::Tensor operator()(const at::Tensor& scores, const at::Generator& /*generator*/ = {}) const {
    return scores.argmax(-1);
  }
};

}  // namespace agla
