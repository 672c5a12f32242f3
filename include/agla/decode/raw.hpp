#pragma once
/// \file
/// The AGLA decoding step over raw `float` logits, for engines that hand out plain buffers
/// (llama.cpp, ONNX Runtime, TensorRT). Same semantics as the libtorch path -- fusion, adaptive
/// plausibility cutoff, Hugging Face warpers, sampling -- in Eigen and the standard library only:
/// this header includes no libtorch header. After the first step of a given size, a step
/// allocates nothing.
///
/// Work is proportional to the vocabulary only for one vectorised pass over each view (the row
/// maximum per 64-token block, and the NaN check); fusion, warpers and sampling then touch only
/// the tokens that pass the cutoff, usually a handful.

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "agla/decode/fusion.hpp"
#include "agla/decode/mt19937.hpp"
#include "agla/decode/options.hpp"
#include "agla/error.hpp"

namespace agla::raw {

namespace detail {

/// One pass over a row: the maximum of each `kBlock`-token block of `a` into `block_max`, and, per
/// `kMode`, running sums of `a` (mode >= 1) and `b` (mode 2). A sum is NaN or +inf only if its row
/// holds a NaN or +inf (or both infinities), so it is a one-pass sentinel that tolerates -inf.
/// Uses Eigen's packet primitives with several accumulators to stay at memory speed.
template <int kMode, std::int64_t kBlock>
float scan_row(const float* a, const float* b, std::int64_t count, float* block_max, float& sum_a,
               float& sum_b) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<float>::type;
  constexpr std::int64_t kLanes = ei::packet_traits<float>::size;
  constexpr std::int64_t kStep = 4 * kLanes;
  static_assert(kBlock % kStep == 0, "block must hold whole unrolled steps");
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  const Packet zero = ei::pset1<Packet>(0.0f);
  Packet sa0 = zero, sa1 = zero, sb0 = zero, sb1 = zero;
  float row_max = neg_inf;
  float tail_a = 0.0f;
  float tail_b = 0.0f;
  for (std::int64_t begin = 0; begin < count; begin += kBlock) {
    const std::int64_t end = std::min(count, begin + kBlock);
    Packet m0 = ei::pset1<Packet>(neg_inf), m1 = m0, m2 = m0, m3 = m0;
    std::int64_t i = begin;
    for (; i + kStep <= end; i += kStep) {
      const Packet x0 = ei::ploadu<Packet>(a + i);
      const Packet x1 = ei::ploadu<Packet>(a + i + kLanes);
      const Packet x2 = ei::ploadu<Packet>(a + i + 2 * kLanes);
      const Packet x3 = ei::ploadu<Packet>(a + i + 3 * kLanes);
      m0 = ei::pmax(m0, x0);
      m1 = ei::pmax(m1, x1);
      m2 = ei::pmax(m2, x2);
      m3 = ei::pmax(m3, x3);
      if constexpr (kMode >= 1) {
        sa0 = ei::padd(sa0, ei::padd(x0, x1));
        sa1 = ei::padd(sa1, ei::padd(x2, x3));
      }
      if constexpr (kMode >= 2) {
        const Packet y0 = ei::ploadu<Packet>(b + i);
        const Packet y1 = ei::ploadu<Packet>(b + i + kLanes);
        const Packet y2 = ei::ploadu<Packet>(b + i + 2 * kLanes);
        const Packet y3 = ei::ploadu<Packet>(b + i + 3 * kLanes);
        sb0 = ei::padd(sb0, ei::padd(y0, y1));
        sb1 = ei::padd(sb1, ei::padd(y2, y3));
      }
    }
    float m = ei::predux_max(ei::pmax(ei::pmax(m0, m1), ei::pmax(m2, m3)));
    for (; i < end; ++i) {
      m = a[i] > m ? a[i] : m;
      if constexpr (kMode >= 1) tail_a += a[i];
      if constexpr (kMode >= 2) tail_b += b[i];
    }
    block_max[begin / kBlock] = m;
    row_max = m > row_max ? m : row_max;
  }
  if constexpr (kMode >= 1) sum_a = ei::predux(ei::padd(sa0, sa1)) + tail_a;
  if constexpr (kMode >= 2) sum_b = ei::predux(ei::padd(sb0, sb1)) + tail_b;
  return row_max;
}

/// True unless `sum` flags a NaN or +inf (see `scan_row`).
inline bool clean_sum(float sum) { return !(std::isnan(sum) || sum == std::numeric_limits<float>::infinity()); }

/// First position of a NaN or +inf in `row`, or `count` when there is none.
inline std::int64_t find_non_finite(const float* row, std::int64_t count) {
  std::int64_t v = 0;
  while (v < count && !(std::isnan(row[v]) || row[v] == std::numeric_limits<float>::infinity())) ++v;
  return v;
}

}  // namespace detail

/// The tokens of one row that survived the cutoff and the warpers, in ascending token order.
struct KeptRow {
  std::int64_t vocab = 0;                 ///< V of the row.
  std::int64_t size = 0;                  ///< Number of kept tokens, >= 1.
  const std::int32_t* tokens = nullptr;   ///< `[size]` ascending token ids.
  const float* scores = nullptr;          ///< `[size]` final (warped) scores, finite.
  const float* probs = nullptr;           ///< `[size]` float32 softmax over the row.
};

/// Per-row diagnostics of the last step (the quantities the decode fixtures list).
struct RowStats {
  float cutoff = 0.0f;                ///< `log(beta) + max l`, or -inf without cutoff.
  std::int64_t n_plausible = 0;       ///< Finite scores after fusion and cutoff.
  std::int64_t n_after_top_k = -1;    ///< Finite scores after top-k; -1 when inactive.
  std::int64_t n_after_top_p = -1;    ///< Finite scores after top-p; -1 when inactive.
  std::int64_t n_kept = 0;            ///< Finite scores at the end.
};

/// Greedy selection: the highest final score, the lowest token id among exact ties.
struct GreedySampler {
  /// Kept tokens of one row -> chosen token id.
  std::int64_t operator()(const KeptRow& row) const {
    std::int64_t best = 0;
    for (std::int64_t i = 1; i < row.size; ++i)
      if (row.scores[i] > row.scores[best]) best = i;
    return row.tokens[best];
  }
};

/// Fast multinomial sampling: one uniform draw per row from its own generator, inverted through
/// the cumulative probabilities of the kept tokens. Not draw-compatible with PyTorch.
template <typename Engine = std::mt19937_64>
class FastSampler {
 public:
  /// Seeds the owned generator.
  explicit FastSampler(std::uint64_t seed) : engine_(seed) {}

  /// Kept tokens of one row -> sampled token id.
  std::int64_t operator()(const KeptRow& row) {
    double total = 0.0;
    for (std::int64_t i = 0; i < row.size; ++i) total += row.probs[i];
    const double target = std::generate_canonical<double, 53>(engine_) * total;
    double cumulative = 0.0;
    for (std::int64_t i = 0; i < row.size; ++i) {
      cumulative += row.probs[i];
      if (cumulative > target && row.probs[i] > 0.0f) return row.tokens[i];
    }
    std::int64_t last = row.size - 1;
    while (last > 0 && row.probs[last] == 0.0f) --last;
    return row.tokens[last];
  }

  /// The owned generator.
  Engine& engine() { return engine_; }

 private:
  Engine engine_;
};

/// Multinomial sampling that reproduces `torch.multinomial(probs, 1, generator=g)` of a CPU
/// libtorch built without MKL, for `g` seeded with the same seed, call after call (decode fixture
/// README, "Draws"): per element of `[B, V]` in row-major order two MT19937 outputs `hi`, `lo`,
/// `u = ((hi << 32 | lo) & (2^53 - 1)) * 2^-53`, `q = float(-log(1 - u))`, token =
/// `argmax float(p / q)`, first index on ties. Removed tokens (p = 0) only advance the generator;
/// the one case this skips is torch's `0 / 0` NaN winner, which needs `u == 0` exactly (2^-53 odds).
class TorchSampler {
 public:
  /// Seeds like `at::make_generator<at::CPUGeneratorImpl>(seed)`.
  explicit TorchSampler(std::uint64_t seed) : engine_(seed) {}

  /// Kept tokens of one row -> sampled token id; consumes `2 * row.vocab` outputs. Rows must be
  /// passed in batch order (as `Decoder::step` does).
  std::int64_t operator()(const KeptRow& row) {
    std::int64_t consumed = 0;
    std::int64_t best = -1;
    float best_ratio = 0.0f;
    for (std::int64_t i = 0; i < row.size; ++i) {
      const std::int64_t token = row.tokens[i];
      engine_.discard(static_cast<std::uint64_t>(2 * (token - consumed)));
      const float q = torch_exponential(engine_);
      consumed = token + 1;
      const float ratio = row.probs[i] / q;
      if (std::isnan(ratio)) {
        if (best < 0 || !std::isnan(best_ratio)) {
          best = token;
          best_ratio = ratio;
        }
      } else if (best < 0 || (!std::isnan(best_ratio) && ratio > best_ratio)) {
        best = token;
        best_ratio = ratio;
      }
    }
    engine_.discard(static_cast<std::uint64_t>(2 * (row.vocab - consumed)));
    return best;
  }

  /// The owned generator.
  Mt19937& engine() { return engine_; }

 private:
  Mt19937 engine_;
};

/// The decoding step over raw float logits, with the policies of an `agla::DecodeOptions`. The
/// fusion is either the options' own (`MethodFusion`, the default: any number K of extra views,
/// every `FusionMethod`, logits or log-probabilities) or a custom elementwise two-view fusion
/// (`float(float l, float l_aug)`; the `agla` two-view policies qualify). Owns its workspace; one
/// `Decoder` per thread. Like `agla::DecodeSession` it is a per-generation session: it counts its
/// steps and applies the local-view schedule (`local_view_tokens`) and M3ID's step weights itself:
/// `runs_local_view()` tells whether the next step needs the extra views' logits, which the caller
/// may then skip computing; `reset()` starts a new generation. The sampler is the caller's choice
/// per step (`GreedySampler`, `FastSampler`, `TorchSampler` or any `int64(const KeptRow&)`), so
/// `options.greedy` is not consulted.
template <typename Fusion = MethodFusion>
class Decoder {
 public:
  /// Policies and fusion from `options` (validated).
  explicit Decoder(const DecodeOptions& options) : Decoder(options, Fusion{options.method, options.alpha}) {}

  /// Warpers, cutoff and checks from `options` (validated), two-view fusion given (K must be 1).
  Decoder(const DecodeOptions& options, Fusion fusion) : options_(options), fusion_(fusion) {
    options_.validate();
    log_beta_ = std::log(static_cast<float>(options_.beta));
    const std::vector<ViewFusion> terms = options_.view_terms();
    extra_views_ = static_cast<std::int64_t>(terms.size());
    if constexpr (std::is_same_v<Fusion, MethodFusion>) {
      for (const ViewFusion& term : terms)
        terms_.push_back(MethodFusion{term.method, term.alpha, options_.m3id_lambda, options_.m3id_first_t});
    } else {
      check<InvalidArgument>(extra_views_ <= 1 && options_.space == FusionSpace::Logits,
                             "agla::raw::Decoder: a custom fusion fuses two views in logit space; these options "
                             "fuse ", extra_views_, " extra views in ",
                             options_.space == FusionSpace::Logits ? "logit" : "log-probability", " space");
    }
    extras_.assign(static_cast<size_t>(std::max<std::int64_t>(extra_views_, 1)), nullptr);
    log_sums_.assign(extras_.size() + 1, 0.0f);
    maxima_.assign(extras_.size() + 1, 0.0f);
  }

  /// Sizes the workspace for `batch` rows of `vocab` tokens, so later steps allocate nothing.
  void reserve(std::int64_t batch, std::int64_t vocab) {
    const auto v = static_cast<size_t>(vocab);
    if (tokens_.size() < v) {
      tokens_.resize(v);
      scores_.resize(v);
      probs_.resize(v);
      order_.resize(v);
      scratch_.resize(v);
      block_max_.resize((v + static_cast<size_t>(kBlock) - 1) / static_cast<size_t>(kBlock));
    }
    if (stats_.size() < static_cast<size_t>(batch)) stats_.resize(static_cast<size_t>(batch));
  }

  /// One step of a two-view method: `logits` and `logits_aug` row-major `[batch, vocab]` ->
  /// `tokens[batch]` (see the K-view `step`).
  template <typename Sampler>
  void step(const float* logits, const float* logits_aug, std::int64_t batch, std::int64_t vocab,
            Sampler& sampler, std::int64_t* tokens, float* log_probs = nullptr) {
    step(logits, &logits_aug, extra_views_ == 0 ? 0 : 1, batch, vocab, sampler, tokens, log_probs);
  }

  /// One step: `logits` and the `num_views` extra views' `extra_views[k]`, each row-major
  /// `[batch, vocab]` -> `tokens[batch]`. The extra views are read only on steps that run them
  /// (`runs_local_view()`), where all K are required; on the others they may be null and the
  /// original logits stand in for them. Optionally writes `log_probs` `[batch, vocab]`
  /// (`log_softmax` of the final scores, -inf where removed). Rows are sampled in order with
  /// `sampler(const KeptRow&) -> token`. A step that throws is not counted.
  template <typename Sampler>
  void step(const float* logits, const float* const* extra_views, std::int64_t num_views, std::int64_t batch,
            std::int64_t vocab, Sampler& sampler, std::int64_t* tokens, float* log_probs = nullptr) {
    check<ShapeError>(batch > 0 && vocab > 0 && vocab <= std::numeric_limits<std::int32_t>::max(),
                      "agla::raw::Decoder::step: need batch >= 1 and 1 <= vocab < 2^31; got batch ",
                      batch, ", vocab ", vocab);
    check<InvalidArgument>(logits != nullptr && tokens != nullptr,
                           "agla::raw::Decoder::step: logits and tokens must not be null");
    const bool local = runs_local_view();
    if (local) {
      check<InvalidArgument>(num_views == extra_views_ && extra_views != nullptr, "agla::raw::Decoder::step: step ",
                             steps_, " runs the ", extra_views_, " extra view(s), so they must be given; got ",
                             num_views);
      for (std::int64_t k = 0; k < num_views; ++k)
        check<InvalidArgument>(extra_views[k] != nullptr, "agla::raw::Decoder::step: step ", steps_,
                               " runs the local view, so the logits of extra view ", k + 1, " must not be null");
    }
    reserve(batch, vocab);
    for (MethodFusion& term : terms_) term.t = steps_ + options_.m3id_first_t;
    for (std::int64_t b = 0; b < batch; ++b) {
      const float* row = logits + b * vocab;
      for (size_t k = 0; k < extras_.size(); ++k)
        extras_[k] = local && static_cast<std::int64_t>(k) < num_views ? extra_views[k] + b * vocab : row;
      const KeptRow kept = decode_row(row, b, vocab, stats_[static_cast<size_t>(b)]);
      tokens[b] = sampler(kept);
      if (log_probs != nullptr) write_log_probs(kept, log_probs + b * vocab);
    }
    ++steps_;
  }

  /// Whether the next step runs the extra views (reads their logits) under the schedule.
  bool runs_local_view() const {
    return options_.method != FusionMethod::Plain && steps_ < options_.local_view_tokens;
  }
  /// Steps taken since construction or `reset()`.
  std::int64_t steps() const { return steps_; }
  /// Starts a new generation: the next step is step 0 again.
  void reset() { steps_ = 0; }

  /// Diagnostics of row `b` of the last step.
  const RowStats& stats(std::int64_t b) const { return stats_.at(static_cast<size_t>(b)); }

  /// The options in use.
  const DecodeOptions& options() const { return options_; }

 private:
  static constexpr std::int64_t kBlock = 256;

  [[noreturn]] static void throw_non_finite(const float* row, std::int64_t b, std::int64_t v,
                                            const char* what) {
    throw NumericError(agla::detail::concat("agla::raw::Decoder::step: ", what, " of stream ", b,
                                      " at token ", v, " is ", row[v],
                                      "; expected finite values or -inf"));
  }

  bool checks() const { return options_.finite_check != FiniteCheck::Never; }

  // max and log(sum(exp(x - max))) of a row, as ATen's log_softmax forms them.
  static void log_sum(const float* row, std::int64_t vocab, float& max, float& log_sum) {
    float m = -std::numeric_limits<float>::infinity();
    for (std::int64_t v = 0; v < vocab; ++v) m = row[v] > m ? row[v] : m;
    float sum = 0.0f;
    for (std::int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - m);
    max = m;
    log_sum = std::log(sum);
  }

  // The fused score of token v: the options' chain over the extra views (in their space), or the
  // custom two-view fusion.
  float fuse(const float* row, std::int64_t v) const {
    if constexpr (std::is_same_v<Fusion, MethodFusion>) {
      if (options_.space == FusionSpace::LogProbs) {
        float fused = (row[v] - maxima_[0]) - log_sums_[0];
        for (size_t k = 0; k < terms_.size(); ++k)
          fused = terms_[k](fused, (extras_[k][v] - maxima_[k + 1]) - log_sums_[k + 1]);
        return fused;
      }
      float fused = row[v];
      for (size_t k = 0; k < terms_.size(); ++k) fused = terms_[k](fused, extras_[k][v]);
      return fused;
    } else {
      return fusion_(row[v], extras_[0][v]);
    }
  }

  KeptRow decode_row(const float* row, std::int64_t b, std::int64_t vocab, RowStats& stats) {
    constexpr float inf = std::numeric_limits<float>::infinity();
    const std::int64_t blocks = (vocab + kBlock - 1) / kBlock;
    float* block_max = block_max_.data();
    const float* row_aug = extras_[0];
    float sum = 0.0f;
    float sum_aug = 0.0f;
    float row_max = 0.0f;
    if (!checks()) {
      row_max = detail::scan_row<0, kBlock>(row, row_aug, vocab, block_max, sum, sum_aug);
    } else if (row_aug == row) {
      row_max = detail::scan_row<1, kBlock>(row, row_aug, vocab, block_max, sum, sum_aug);
    } else {
      row_max = detail::scan_row<2, kBlock>(row, row_aug, vocab, block_max, sum, sum_aug);
    }
    if (checks()) {
      // The sums flag NaN / +inf in one pass; only then is the row searched.
      if (!detail::clean_sum(sum)) {
        const std::int64_t v = detail::find_non_finite(row, vocab);
        if (v < vocab) throw_non_finite(row, b, v, "original logits");
      }
      check<NumericError>(row_max > -inf, "agla::raw::Decoder::step: original logits of stream ",
                          b, " are all -inf; no token can be chosen");
      if (row_aug != row && !detail::clean_sum(sum_aug)) {
        const std::int64_t v = detail::find_non_finite(row_aug, vocab);
        if (v < vocab) throw_non_finite(row_aug, b, v, extra_views_ == 1 ? "augmented logits" : "logits of view 1");
      }
      for (size_t k = 1; k < extras_.size(); ++k) {
        if (extras_[k] == row) continue;
        const std::int64_t v = detail::find_non_finite(extras_[k], vocab);
        if (v < vocab) throw_non_finite(extras_[k], b, v, k == 1 ? "logits of view 2" : "logits of an extra view");
      }
    }
    // Paper Eqs. 4-5 with the reference's float32 arithmetic: log(float(beta)) + max, on the
    // original view's scores in the fusion's space (log_softmax's maximum is -log(sum)).
    const bool cut = options_.method != FusionMethod::Plain;
    const bool in_log_probs = options_.space == FusionSpace::LogProbs;
    if (in_log_probs) {
      log_sum(row, vocab, maxima_[0], log_sums_[0]);
      for (size_t k = 0; k < extras_.size(); ++k) log_sum(extras_[k], vocab, maxima_[k + 1], log_sums_[k + 1]);
    }
    const float cutoff = !cut ? -inf : in_log_probs ? log_beta_ + (-log_sums_[0]) : log_beta_ + row_max;
    // Blocks are skipped on the logits; in log-probability space with a margin for the rounding of
    // (x - max) - log_sum against the cutoff.
    const float block_cutoff = !cut ? -inf : in_log_probs ? log_beta_ + row_max - 1e-3f : cutoff;
    stats.cutoff = cutoff;

    std::int64_t size = 0;
    for (std::int64_t k = 0; k < blocks; ++k) {
      if (!(block_max_[static_cast<size_t>(k)] >= block_cutoff)) continue;
      const std::int64_t end = std::min(vocab, (k + 1) * kBlock);
      for (std::int64_t v = k * kBlock; v < end; ++v) {
        const float plausible = in_log_probs ? (row[v] - maxima_[0]) - log_sums_[0] : row[v];
        if (plausible < cutoff) continue;
        const float fused = fuse(row, v);
        if (fused == -inf) continue;
        if (checks() && (std::isnan(fused) || fused == inf))
          throw NumericError(agla::detail::concat("agla::raw::Decoder::step: fusion gave ", fused,
                                            " for stream ", b, " at token ", v, " (logit ", row[v],
                                            ", first extra view ", row_aug[v], ")"));
        tokens_[static_cast<size_t>(size)] = static_cast<std::int32_t>(v);
        scores_[static_cast<size_t>(size)] = fused;
        ++size;
      }
    }
    check<NumericError>(size > 0, "agla::raw::Decoder::step: no finite score is left for stream ", b,
                        " after fusion and cutoff");
    stats.n_plausible = size;
    size = warp(size, vocab, stats);
    stats.n_kept = size;
    softmax(size);
    return KeptRow{vocab, size, tokens_.data(), scores_.data(), probs_.data()};
  }

  // Keeps the entries whose score is finite, in order.
  std::int64_t compact(std::int64_t size) {
    std::int64_t out = 0;
    for (std::int64_t i = 0; i < size; ++i) {
      if (scores_[static_cast<size_t>(i)] == -std::numeric_limits<float>::infinity()) continue;
      tokens_[static_cast<size_t>(out)] = tokens_[static_cast<size_t>(i)];
      scores_[static_cast<size_t>(out)] = scores_[static_cast<size_t>(i)];
      ++out;
    }
    return out;
  }

  // Hugging Face warpers (transformers v4.31 `_get_logits_warper` order and activation rule) on
  // the kept entries; removed tokens are -inf in the full row, which the rules account for.
  std::int64_t warp(std::int64_t size, std::int64_t vocab, RowStats& stats) {
    constexpr float neg_inf = -std::numeric_limits<float>::infinity();
    float* scores = scores_.data();
    if (options_.temperature_active()) {
      const float temperature = static_cast<float>(options_.temperature);
      for (std::int64_t i = 0; i < size; ++i) scores[i] = scores[i] / temperature;
    }
    stats.n_after_top_k = -1;
    if (options_.top_k_active()) {
      // The k-th largest of the full row counts -inf entries: with fewer than k finite scores it
      // is -inf and nothing is removed.
      const std::int64_t k = std::min(std::max(options_.top_k, options_.min_tokens_to_keep), vocab);
      if (k <= size) {
        std::copy(scores, scores + size, scratch_.begin());
        std::nth_element(scratch_.begin(), scratch_.begin() + (k - 1), scratch_.begin() + size,
                         std::greater<float>());
        const float kth = scratch_[static_cast<size_t>(k - 1)];
        for (std::int64_t i = 0; i < size; ++i)
          if (scores[i] < kth) scores[i] = neg_inf;
        size = compact(size);
      }
      stats.n_after_top_k = size;
    }
    stats.n_after_top_p = -1;
    if (options_.top_p_active()) {
      // Ascending sort; the -inf entries of the full row come first with probability 0, so the
      // cumulative sums over the kept entries are those of the full row.
      std::int32_t* order = order_.data();
      for (std::int64_t i = 0; i < size; ++i) order[i] = static_cast<std::int32_t>(i);
      std::sort(order, order + size, [scores](std::int32_t a, std::int32_t b) {
        return scores[a] < scores[b] || (scores[a] == scores[b] && a < b);
      });
      const float top = scores[order[size - 1]];
      float sum = 0.0f;
      for (std::int64_t i = 0; i < size; ++i) {
        scratch_[static_cast<size_t>(i)] = std::exp(scores[order[i]] - top);
        sum += scratch_[static_cast<size_t>(i)];
      }
      const float threshold = static_cast<float>(1.0 - options_.top_p);
      const std::int64_t protected_from = size - std::min(options_.min_tokens_to_keep, size);
      double cumulative = 0.0;  // CPU cumsum: double accumulator, float partial sums
      for (std::int64_t i = 0; i < protected_from; ++i) {
        cumulative += static_cast<double>(scratch_[static_cast<size_t>(i)] / sum);
        if (static_cast<float>(cumulative) <= threshold) scores[order[i]] = neg_inf;
      }
      size = compact(size);
      stats.n_after_top_p = size;
    }
    return size;
  }

  // Float32 softmax over the kept entries (exp(s - max) * (1 / sum), as ATen's CPU kernel).
  void softmax(std::int64_t size) {
    const float* scores = scores_.data();
    float* probs = probs_.data();
    float top = scores[0];
    for (std::int64_t i = 1; i < size; ++i) top = std::max(top, scores[i]);
    float sum = 0.0f;
    for (std::int64_t i = 0; i < size; ++i) {
      probs[i] = std::exp(scores[i] - top);
      sum += probs[i];
    }
    const float inverse = 1.0f / sum;
    for (std::int64_t i = 0; i < size; ++i) probs[i] *= inverse;
    top_ = top;
    log_sum_ = std::log(sum);
  }

  void write_log_probs(const KeptRow& kept, float* out) const {
    std::fill(out, out + kept.vocab, -std::numeric_limits<float>::infinity());
    for (std::int64_t i = 0; i < kept.size; ++i)
      out[kept.tokens[i]] = kept.scores[i] - top_ - log_sum_;
  }

  DecodeOptions options_;
  Fusion fusion_;
  std::int64_t extra_views_ = 0;
  std::vector<MethodFusion> terms_;       // the options' chain (MethodFusion decoders)
  std::vector<const float*> extras_;      // this row's extra views (the original where they are off)
  std::vector<float> maxima_, log_sums_;  // per view: row max and log(sum(exp(x - max)))
  float log_beta_ = 0.0f;
  float top_ = 0.0f;
  float log_sum_ = 0.0f;
  std::vector<std::int32_t> tokens_;
  std::vector<float> scores_;
  std::vector<float> probs_;
  std::vector<std::int32_t> order_;
  std::vector<float> scratch_;
  std::vector<float> block_max_;
  std::vector<RowStats> stats_;
  std::int64_t steps_ = 0;
};

}  // namespace agla::raw
