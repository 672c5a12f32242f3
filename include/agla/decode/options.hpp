#pragma once
/// \file
/// Options of the AGLA decoding step with the reference defaults, their validation, and presets
/// that reproduce the settings of the reference runs. Free of libtorch, so the raw-float path
/// (`agla/decode/raw.hpp`) shares it.

#include <cmath>
#include <cstdint>
#include <limits>

#include "agla/error.hpp"

namespace agla {

/// How the two views' next-token logits `l` (original) and `l_aug` (augmented) are combined.
enum class FusionMethod {
  Assembly,  ///< AGLA, paper Eq. 3: `l + alpha * l_aug`.
  Contrast,  ///< VCD: `(1 + alpha) * l - alpha * l_aug`.
  Plain,     ///< Regular decoding: `l` alone, no plausibility cutoff, no augmented forward.
};

/// When the decoding step checks logits for NaN / +inf (a check reads the values on the host).
enum class FiniteCheck {
  Auto,    ///< Check tensors that live on the CPU (costs one reduction, no device sync).
  Always,  ///< Check on every device; synchronises with an accelerator once per step.
  Never,   ///< Trust the model.
};

/// Hyper-parameters of one AGLA decoding step (paper Eqs. 3-5) and the Hugging Face warpers.
///
/// Warpers follow the Hugging Face activation rule (transformers v4.31 `_get_logits_warper`):
/// temperature only if != 1, top-k only if != 0, top-p only if < 1. A `top_k=None` in Python
/// maps to `top_k = 0` here.
struct DecodeOptions {
  /// Sentinel of `local_view_tokens`: the augmented view contributes to every generated token.
  static constexpr std::int64_t kEveryToken = std::numeric_limits<std::int64_t>::max();

  FusionMethod method = FusionMethod::Assembly;  ///< AGLA assembly by default.
  double alpha = 2.0;               ///< Weight of the augmented view, >= 0 (`cd_alpha` upstream).
  double beta = 0.5;                ///< Adaptive plausibility threshold (Eqs. 4-5), in (0, 1].
  double temperature = 1.0;         ///< > 0; 1 leaves the scores unchanged.
  std::int64_t top_k = 0;           ///< >= 0; 0 = off.
  double top_p = 1.0;               ///< In (0, 1]; 1 = off.
  bool greedy = false;              ///< Argmax instead of multinomial sampling.
  std::int64_t min_tokens_to_keep = 1;  ///< >= 1; the floor of top-k and top-p, as in HF.
  /// How many generated tokens the augmented view shapes; afterwards no augmented forward is
  /// made and the original logits stand in for it. `kEveryToken` is the paper's method. 1
  /// reproduces the released code, whose augmented branch reused the original branch's KV cache
  /// from the second token on (DESIGN section 2); 0 gives "sharpened" decoding.
  std::int64_t local_view_tokens = kEveryToken;
  FiniteCheck finite_check = FiniteCheck::Auto;  ///< NaN / +inf detection policy.

  /// True when temperature scaling is active under the HF rule.
  bool temperature_active() const { return temperature != 1.0; }
  /// True when top-k filtering is active under the HF rule.
  bool top_k_active() const { return top_k != 0; }
  /// True when top-p filtering is active under the HF rule.
  bool top_p_active() const { return top_p < 1.0; }
  /// True when the step with `generated` tokens already produced runs the augmented view.
  bool uses_local_view(std::int64_t generated) const {
    return method != FusionMethod::Plain && generated < local_view_tokens;
  }

  /// Throws `agla::InvalidArgument` naming the first option outside its range.
  void validate() const {
    auto bad = [](const char* name, double value, const char* range) {
      throw InvalidArgument(detail::concat("agla::DecodeOptions: ", name, " must be ", range,
                                           "; got ", value));
    };
    if (!(alpha >= 0.0) || !std::isfinite(alpha)) bad("alpha", alpha, "finite and >= 0");
    if (!(beta > 0.0 && beta <= 1.0)) bad("beta", beta, "in (0, 1]");
    if (!(temperature > 0.0) || !std::isfinite(temperature))
      bad("temperature", temperature, "finite and > 0");
    if (top_k < 0) bad("top_k", static_cast<double>(top_k), ">= 0 (0 = off)");
    if (!(top_p > 0.0 && top_p <= 1.0)) bad("top_p", top_p, "in (0, 1] (1 = off)");
    if (min_tokens_to_keep < 1)
      bad("min_tokens_to_keep", static_cast<double>(min_tokens_to_keep), ">= 1");
    if (local_view_tokens < 0)
      bad("local_view_tokens", static_cast<double>(local_view_tokens), ">= 0");
  }

  /// The released AGLA LLaVA-1.5 runs exactly (`eval/run_llava.py`): alpha 2, beta 0.5,
  /// temperature 1, top_p 1 and `top_k=None` passed to `generate`, which overwrote the
  /// generation-config default of 50 with None: no warper was active at all. The local view
  /// shapes only the first token (the released cache defect).
  static DecodeOptions llava_reference() {
    DecodeOptions options;
    options.local_view_tokens = 1;
    return options;
  }

  /// The released AGLA InstructBLIP runs exactly (`eval/run_instructblip.py` via LAVIS): as
  /// `llava_reference()` but `top_k` was not passed, so Hugging Face's default top_k = 50 applied.
  static DecodeOptions instructblip_reference() {
    DecodeOptions options = llava_reference();
    options.top_k = 50;
    return options;
  }

  /// The same settings decoding the paper's method (each view keeps its own state every token).
  DecodeOptions with_local_view_everywhere() const {
    DecodeOptions options = *this;
    options.local_view_tokens = kEveryToken;
    return options;
  }
};

}  // namespace agla
