#pragma once
/// \file
/// Fusion policies: how the next-token logits of the original view `l` and of a second view
/// `l_aug` become one score vector. Each policy is a cheap value type whose `operator()` is a
/// template, so the same object works on `at::Tensor` `[B, V]` (any device, float32) and on single
/// `float`s (the raw path, `agla/decode/raw.hpp`). Free of libtorch.
///
/// AGLA and VCD are orthogonal: a fusion is any callable `(l, l_aug) -> fused`, so policies nest,
/// e.g. VCD after AGLA with a third, distorted view `l_noise`:
/// `ContrastFusion{b}(AssemblyFusion{a}(l, l_aug), l_noise)`.

#include <type_traits>

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

/// No fusion: the original view's logits unchanged (plain decoding). Returns `logits` itself.
struct NoFusion {
  /// `[B, V]` tensor (or float) -> `logits`.
  template <typename T>
  T operator()(const T& logits, const T& /*logits_aug*/) const {
    return logits;
  }
};

/// The fusion an `agla::DecodeOptions` names (`method`, `alpha`), chosen at run time.
struct MethodFusion {
  FusionMethod method = FusionMethod::Assembly;  ///< Which formula.
  double alpha = 2.0;                            ///< Its alpha.

  /// `[B, V]` float32 tensors (or floats) -> fused scores.
  template <typename T>
  T operator()(const T& logits, const T& logits_aug) const {
    switch (method) {
      case FusionMethod::Assembly: return AssemblyFusion{alpha}(logits, logits_aug);
      case FusionMethod::Contrast: return ContrastFusion{alpha}(logits, logits_aug);
      case FusionMethod::Plain: break;
    }
    return NoFusion{}(logits, logits_aug);
  }
};

}  // namespace agla
