#pragma once
/// \file
/// Options of the decoding step with the reference defaults, their validation, and presets for
/// AGLA and the related training-free decoders (VCD, RITUAL, ICD, M3ID, PAI, VACoDe), each with the
/// settings of its reference code (docs/decoding.md lists formula, defaults and source file of
/// each). Free of libtorch, so the raw-float path (`agla/decode/raw.hpp`) shares it.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "agla/error.hpp"

namespace agla {

/// How an extra view's next-token logits `l_k` enter the scores `s` (which start as the original
/// view's `l`); the views' terms apply in order.
enum class FusionMethod {
  Assembly,  ///< AGLA, paper Eq. 3 (and RITUAL): `s + alpha * l_k`.
  Contrast,  ///< VCD (and ICD, PAI's logit part, VACoDe): `(1 + alpha) * s - alpha * l_k`.
  M3id,      ///< M3ID: `s + (s - l_k) * (1 - g) / g`, `g = exp(-lambda * t)`, t the generated-token index.
  Plain,     ///< Regular decoding: `l` alone, no plausibility cutoff, no extra forward.
};

/// Whether the views' scores are fused as raw logits or as log-probabilities (`log_softmax` of each
/// view first). Both give the same distribution -- a linear fusion of log-probabilities differs
/// from that of logits by one constant per row, which softmax, the cutoff and the warpers ignore --
/// and differ only in float rounding; the choice pins a method to its reference code.
enum class FusionSpace {
  Logits,    ///< VCD, AGLA, RITUAL, ICD, M3ID as the RITUAL harness computes it.
  LogProbs,  ///< PAI's logit part; M3ID as its paper writes it (log p of each view).
};

/// One extra view's term of the fusion (`FusionMethod`, weight).
struct ViewFusion {
  FusionMethod method = FusionMethod::Contrast;  ///< Assembly, Contrast or M3id.
  double alpha = 1.0;                            ///< Weight (unused by M3id, whose weight follows its schedule).
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

  FusionMethod method = FusionMethod::Assembly;  ///< How view 1 enters; AGLA assembly by default.
  double alpha = 2.0;               ///< Weight of view 1, in [0, 10^4] (`cd_alpha` upstream).
  /// Views 2..K, each fused after the ones before it (e.g. AGLA then VCD:
  /// `(1 + b) (l + a l_aug) - b l_noise`). Empty for the two-view methods.
  std::vector<ViewFusion> further_views;
  FusionSpace space = FusionSpace::Logits;  ///< Raw logits or log-probabilities.
  double m3id_lambda = 0.02;        ///< M3ID's lambda, in [0, 1].
  /// M3ID's t of the first generated token: 1 as the paper's algorithm counts, 0 as the RITUAL
  /// harness does (which leaves the first token, a POPE answer, unchanged).
  std::int64_t m3id_first_t = 1;
  double beta = 0.5;                ///< Adaptive plausibility threshold (Eqs. 4-5), in (0, 1].
  double temperature = 1.0;         ///< > 0; 1 leaves the scores unchanged.
  std::int64_t top_k = 0;           ///< >= 0; 0 = off.
  double top_p = 1.0;               ///< In (0, 1]; 1 = off.
  bool greedy = false;              ///< Argmax instead of multinomial sampling.
  std::int64_t min_tokens_to_keep = 1;  ///< >= 1; the floor of top-k and top-p, as in HF.
  /// How many generated tokens the augmented view shapes; afterwards no augmented forward is
  /// made and the original logits stand in for it. `kEveryToken` is the paper's method. 1
  /// reproduces the released code, whose augmented branch reused the original branch's KV cache
  /// from the second token on (docs/design.md §3); 0 gives "sharpened" decoding.
  std::int64_t local_view_tokens = kEveryToken;
  FiniteCheck finite_check = FiniteCheck::Auto;  ///< NaN / +inf detection policy.

  /// True when temperature scaling is active under the HF rule.
  bool temperature_active() const { return temperature != 1.0; }
  /// True when top-k filtering is active under the HF rule.
  bool top_k_active() const { return top_k != 0; }
  /// True when top-p filtering is active under the HF rule.
  bool top_p_active() const { return top_p < 1.0; }
  /// Number K of extra views the method fuses (0 for plain decoding).
  std::int64_t extra_views() const {
    return method == FusionMethod::Plain ? 0 : 1 + static_cast<std::int64_t>(further_views.size());
  }
  /// Every extra view's term, view 1 first (empty for plain decoding).
  std::vector<ViewFusion> view_terms() const {
    std::vector<ViewFusion> terms;
    if (method == FusionMethod::Plain) return terms;
    terms.push_back(ViewFusion{method, alpha});
    terms.insert(terms.end(), further_views.begin(), further_views.end());
    return terms;
  }
  /// True when some view's weight depends on the generated-token index (M3ID).
  bool fusion_depends_on_step() const {
    for (const ViewFusion& term : view_terms())
      if (term.method == FusionMethod::M3id) return true;
    return false;
  }
  /// True when the step with `generated` tokens already produced runs the extra views.
  bool uses_local_view(std::int64_t generated) const {
    return method != FusionMethod::Plain && generated < local_view_tokens;
  }

  /// Throws `agla::InvalidArgument` naming the first option outside its range, or a combination
  /// that means nothing (plain decoding with further views, a plain or repeated term).
  void validate() const {
    auto bad = [](const char* name, double value, const char* range) {
      throw InvalidArgument(detail::concat("agla::DecodeOptions: ", name, " must be ", range,
                                           "; got ", value));
    };
    // Beyond these bounds the fused or warped scores overflow float32 for ordinary logits.
    constexpr double kMaxWeight = 1e4;
    if (!(alpha >= 0.0 && alpha <= kMaxWeight)) bad("alpha", alpha, "in [0, 10000]");
    if (!(beta > 0.0 && beta <= 1.0)) bad("beta", beta, "in (0, 1]");
    if (!(temperature >= 1e-4 && temperature <= 1e4)) bad("temperature", temperature, "in [1e-4, 1e4]");
    if (top_k < 0) bad("top_k", static_cast<double>(top_k), ">= 0 (0 = off)");
    if (!(top_p > 0.0 && top_p <= 1.0)) bad("top_p", top_p, "in (0, 1] (1 = off)");
    if (min_tokens_to_keep < 1)
      bad("min_tokens_to_keep", static_cast<double>(min_tokens_to_keep), ">= 1");
    if (local_view_tokens < 0)
      bad("local_view_tokens", static_cast<double>(local_view_tokens), ">= 0");
    if (!(m3id_lambda >= 0.0 && m3id_lambda <= 1.0)) bad("m3id_lambda", m3id_lambda, "in [0, 1]");
    if (m3id_first_t != 0 && m3id_first_t != 1)
      bad("m3id_first_t", static_cast<double>(m3id_first_t), "0 or 1");
    check<InvalidArgument>(method != FusionMethod::Plain || further_views.empty(),
                           "agla::DecodeOptions: plain decoding fuses no views, but further_views lists ",
                           further_views.size());
    for (std::size_t k = 0; k < further_views.size(); ++k) {
      const ViewFusion& term = further_views[k];
      check<InvalidArgument>(term.method != FusionMethod::Plain, "agla::DecodeOptions: further_views[", k,
                             "] is Plain; a view that is not fused must not be run");
      if (!(term.alpha >= 0.0 && term.alpha <= kMaxWeight))
        throw InvalidArgument(detail::concat("agla::DecodeOptions: further_views[", k,
                                             "].alpha must be in [0, 10000]; got ", term.alpha));
    }
  }

  /// One extra view fused by `method` with weight `alpha` and cutoff `beta`, every other option at
  /// its default (the presets below are such options with their references' values).
  static DecodeOptions fused(FusionMethod method, double alpha, double beta) {
    DecodeOptions options;
    options.method = method;
    options.alpha = alpha;
    options.beta = beta;
    return options;
  }

  /// AGLA, the paper's method (Eqs. 3-5): `l + 2 l_aug`, beta 0.5, sampling at temperature 1
  /// (Lackel/AGLA `eval/run_llava.py`: `--alpha 2 --beta 0.5`), the local view on every token.
  static DecodeOptions agla() { return DecodeOptions{}; }

  /// Regular decoding: the original view alone, sampling at temperature 1 (the reference baselines).
  static DecodeOptions regular() {
    DecodeOptions options;
    options.method = FusionMethod::Plain;
    return options;
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

  /// VCD: `(1 + 1) l - 1 l_noise`, beta 0.1, sampling at temperature 1, no top-k, the noised view on
  /// every token (DAMO-NLP-SG/VCD `experiments/eval/object_hallucination_vqa_llava.py` argparse:
  /// `cd_alpha 1, cd_beta 0.1, noise_step 500`; the fallbacks inside `vcd_sample.py` are 0.5 / 0.1).
  static DecodeOptions vcd() { return fused(FusionMethod::Contrast, 1.0, 0.1); }

  /// RITUAL: `l + 3 l_T` with one random transform T per sample, beta 0.1 (sangminwoo/RITUAL
  /// `ritual_utils/ritual_sample.py`: `ritual_alpha_pos 3, ritual_beta 0.1`).
  static DecodeOptions ritual() { return fused(FusionMethod::Assembly, 3.0, 0.1); }

  /// ICD: `(1 + 1) l - 1 l_icd`, the extra view being the same image under a disturbed
  /// instruction, beta 0.1 (p1k0pan/ICD `icd_utils/icd_sample_llava.py`, scripts' argparse
  /// `cd_alpha 1, cd_beta 0.1`).
  static DecodeOptions icd() { return vcd(); }

  /// M3ID: `l + (l - l_noimg) (1 - g_t) / g_t`, `g_t = exp(-0.02 t)`, t = 1 for the first generated
  /// token, with the beta 0.1 cutoff the public re-implementations use in place of the paper's
  /// confidence gate (sangminwoo/RITUAL `ritual_sample.py`, which counts t from 0: `m3id_first_t = 0`).
  static DecodeOptions m3id() { return fused(FusionMethod::M3id, DecodeOptions{}.alpha, 0.1); }

  /// PAI's logit part: `gamma (log p - log p_noimg) + log p_noimg` = `(1 + a) log p - a log p_noimg`
  /// with a = gamma - 1 = 0.1, in log-probability space, beta 0.1, greedy (LALBJ/PAI `CFG.py`,
  /// README commands: `--gamma 1.1`, no `--sample`). Its attention part is an option of the LLaVA
  /// model (`agla::llava::PaiAttention`).
  static DecodeOptions pai() {
    DecodeOptions options = fused(FusionMethod::Contrast, 0.1, 0.1);
    options.space = FusionSpace::LogProbs;
    options.greedy = true;
    return options;
  }

  /// VACoDe-style decoding (no official code): VCD's contrast `(1 + 1) l - 1 l_k` with the
  /// augmentation k whose first-step distribution is farthest from the original's, beta 0.1.
  static DecodeOptions vacode() { return vcd(); }

  /// The same settings decoding the paper's method (each view keeps its own state every token).
  DecodeOptions with_local_view_everywhere() const {
    DecodeOptions options = *this;
    options.local_view_tokens = kEveryToken;
    return options;
  }
};

}  // namespace agla
