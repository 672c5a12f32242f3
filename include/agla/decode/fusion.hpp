#pragma once
/// \file
/// Fusion policies: how the next-token logits of the original view `l` and of extra views become
/// one score vector. Each two-view policy is a cheap value type whose `operator()` is a template,
/// so the same object works on `at::Tensor` `[B, V]` (any device, float32) and on single `float`s
/// (the raw path, `agla/decode/raw.hpp`). Free of libtorch.
///
/// AGLA and VCD are orthogonal: a fusion is any callable `(l, l_aug) -> fused`, so policies nest,
/// e.g. VCD after AGLA with a third, distorted view `l_noise`:
/// `ContrastFusion{b}(AssemblyFusion{a}(l, l_aug), l_noise)`. `ViewsFusion` is that chain for K
/// views, chosen at run time from `DecodeOptions`.

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "agla/decode/options.hpp"

namespace agla {

namespace detail {

/// Rounds a float product to float32 before it is used, so that compilers allowed to contract
/// `x * a + y` into one fused multiply-add still reproduce the two roundings of the reference.
template <typename T>
T round_product(T value) {
  if constexpr (std::is_floating_point_v<T>) {
    volatile T stored = value;
    return stored;
  } else {
    return value;
  }
}

}  // namespace detail

/// AGLA assembly, paper Eq. 3: `l + alpha * l_aug`, computed like the reference in float32 as a
/// product then a sum (AGLA `eval/sample.py`: `next_token_logits + cd_alpha * next_token_logits_cd`).
struct AssemblyFusion {
  double alpha = 2.0;  ///< Weight of the augmented view, >= 0.

  /// `[B, V]` float32 tensors (or floats) -> fused scores of the same shape, device and dtype.
  template <typename T>
  T operator()(const T& logits, const T& logits_aug) const {
    T fused = detail::round_product<T>(logits_aug * static_cast<float>(alpha));
    fused += logits;
    return fused;
  }
};

/// VCD contrast (DAMO-NLP-SG/VCD `vcd_utils/vcd_sample.py`): `(1 + alpha) * l - alpha * l_aug`,
/// three float32 operations in the reference order.
struct ContrastFusion {
  double alpha = 1.0;  ///< Weight of the contrasted (distorted or augmented) view, >= 0.

  /// `[B, V]` float32 tensors (or floats) -> fused scores of the same shape, device and dtype.
  template <typename T>
  T operator()(const T& logits, const T& logits_aug) const {
    T fused = detail::round_product<T>(logits * static_cast<float>(1.0 + alpha));
    fused -= detail::round_product<T>(logits_aug * static_cast<float>(alpha));
    return fused;
  }
};

/// M3ID (Favero et al., CVPR 2024; no official code): `l + (l - l_u) * (1 - g) / g` with
/// `g = exp(-lambda * t)`, `l_u` the logits without the image and t the generated-token index, in
/// the reference re-implementation's float32 order (sangminwoo/RITUAL `ritual_sample.py`:
/// `gamma_t = torch.exp(torch.tensor(-0.02*t))`, then `l + (l - l_u)*(1-gamma_t)/gamma_t`).
struct M3idFusion {
  double lambda = 0.02;  ///< Decay of the image weight g, >= 0.
  std::int64_t t = 1;    ///< Index of the token this step generates (as the schedule counts it).

  /// `(1 - g) / g` in float32.
  float weight() const {
    const float g = std::exp(static_cast<float>(-lambda * static_cast<double>(t)));
    return (1.0f - g) / g;
  }

  /// `[B, V]` float32 tensors (or floats) -> fused scores.
  template <typename T>
  T operator()(const T& logits, const T& logits_no_image) const {
    T fused = detail::round_product<T>((logits - logits_no_image) * weight());
    fused += logits;
    return fused;
  }
};

/// No fusion: the original view's logits unchanged (plain decoding). Returns `logits` itself.
struct NoFusion {
  /// `[B, V]` tensor (or float) -> `logits`.
  template <typename T>
  T operator()(const T& logits, const T& /*logits_aug*/) const {
    return logits;
  }
};

/// One term of a fusion chosen at run time (`method`, `alpha`); M3ID reads the step's t.
struct MethodFusion {
  FusionMethod method = FusionMethod::Assembly;  ///< Which formula.
  double alpha = 2.0;                            ///< Its alpha (Assembly, Contrast).
  double m3id_lambda = 0.02;                     ///< M3ID's lambda.
  std::int64_t t = 1;                            ///< M3ID's t of this step.

  /// `[B, V]` float32 tensors (or floats) -> fused scores.
  template <typename T>
  T operator()(const T& logits, const T& logits_aug) const {
    switch (method) {
      case FusionMethod::Assembly: return AssemblyFusion{alpha}(logits, logits_aug);
      case FusionMethod::Contrast: return ContrastFusion{alpha}(logits, logits_aug);
      case FusionMethod::M3id: return M3idFusion{m3id_lambda, t}(logits, logits_aug);
      case FusionMethod::Plain: break;
    }
    return NoFusion{}(logits, logits_aug);
  }
};

/// The fusion of K extra views an `agla::DecodeOptions` describes: the scores start as the original
/// view's and each view's term (`DecodeOptions::view_terms`) applies in order, in `space`.
struct ViewsFusion {
  std::vector<ViewFusion> terms;            ///< One per extra view, view 1 first.
  FusionSpace space = FusionSpace::Logits;  ///< Logits or log-probabilities.
  double m3id_lambda = 0.02;                ///< M3ID's lambda.
  std::int64_t m3id_first_t = 1;            ///< M3ID's t at step 0.

  /// The fusion `options` describes.
  static ViewsFusion from(const DecodeOptions& options) {
    return ViewsFusion{options.view_terms(), options.space, options.m3id_lambda, options.m3id_first_t};
  }
  /// Number K of extra views.
  std::int64_t extra_views() const { return static_cast<std::int64_t>(terms.size()); }
  /// The two-view term of extra view `k` (0-based) at decoding step `step`.
  MethodFusion term(std::size_t k, std::int64_t step) const {
    return MethodFusion{terms[k].method, terms[k].alpha, m3id_lambda, step + m3id_first_t};
  }
  /// Fuses `original` with `views[0..K)` (each already in `space`) at decoding step `step`.
  template <typename T>
  T operator()(const T& original, const std::vector<T>& views, std::int64_t step) const {
    if (terms.empty()) return original;
    T fused = term(0, step)(original, views[0]);
    for (std::size_t k = 1; k < terms.size(); ++k) fused = term(k, step)(fused, views[k]);
    return fused;
  }
};

}  // namespace agla
