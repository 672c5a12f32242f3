#pragma once
/// \file
/// GradCAM over one cross-attention layer of an image-text-matching model (paper Eq. 2):
/// `cor(j) = 1/H * sum_h max(0, d sim / d C_ij^(h)) * C_ij^(h)` per text token i, then averaged
/// over the prompt tokens. Mirrors LAVIS `compute_gradcam`
/// (lavis/models/blip_models/blip_image_text_matching.py, the copy vendored by AGLA).

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "agla/error.hpp"

namespace agla::ipm {

/// GradCAM maps of a batch of P prompts against one image, on the device of the inputs.
struct GradCamMaps {
  /// `[P, L, g, g]` float: per text token, heads averaged (rows of padded tokens are 0).
  at::Tensor per_token;
  /// `[P, g, g]` float: the map AGLA uses, `per_token[p, 1:T+1].sum(0) / T`, T = real tokens - 2.
  at::Tensor average;
  /// The T of each prompt (real tokens between the first token and `[SEP]`).
  std::vector<int64_t> token_counts;
};

/// Side g of the square patch grid behind `patches` image tokens (CLS excluded); throws
/// `agla::ShapeError` naming `caller` when `patches` is not a perfect square.
inline int64_t square_grid_side(int64_t patches, const char* caller) {
  int64_t side = 0;
  while ((side + 1) * (side + 1) <= patches) ++side;
  check<ShapeError>(side > 0 && side * side == patches, caller, ": the image patches must form a square grid; got ",
                    patches, " patch tokens");
  return side;
}

/// GradCAM (Eq. 2) from cross-attention probabilities `attention` `[P, H, L, N]` (N = 1 + g*g,
/// column 0 the image CLS token), their gradients `gradients` (same shape) of the summed "match"
/// logit, and the text `attention_mask` `[P, L]` (0/1, any integer or float dtype). As LAVIS: CLS
/// column dropped, gradients clamped at 0, both factors multiplied by the mask, mean over heads;
/// the average runs over rows 1..T with T = mask.sum() - 2 and divides by T.
inline GradCamMaps gradcam(const at::Tensor& attention, const at::Tensor& gradients, const at::Tensor& attention_mask) {
  check<ShapeError>(attention.defined() && attention.dim() == 4 && at::isFloatingType(attention.scalar_type()),
                    "agla::ipm::gradcam: attention must be [P, H, L, N] floating point; got ",
                    attention.defined() ? attention.sizes() : at::IntArrayRef{}, " ",
                    attention.defined() ? attention.scalar_type() : at::kFloat);
  check<ShapeError>(gradients.defined() && gradients.sizes() == attention.sizes(),
                    "agla::ipm::gradcam: gradients must have the attention's shape ", attention.sizes(), "; got ",
                    gradients.defined() ? gradients.sizes() : at::IntArrayRef{});
  const int64_t prompts = attention.size(0);
  const int64_t heads = attention.size(1);
  const int64_t length = attention.size(2);
  check<ShapeError>(attention_mask.defined() && attention_mask.dim() == 2 && attention_mask.size(0) == prompts &&
                        attention_mask.size(1) == length,
                    "agla::ipm::gradcam: attention_mask must be [", prompts, ", ", length, "]; got ",
                    attention_mask.defined() ? attention_mask.sizes() : at::IntArrayRef{});
  const int64_t side = square_grid_side(attention.size(3) - 1, "agla::ipm::gradcam");

  // LAVIS: cams[:, :, :, 1:].reshape(B, H, -1, g, g) * mask; grads[...,1:].clamp(0)... * mask.
  const at::Tensor mask =
      attention_mask.to(attention.device(), attention.scalar_type()).view({prompts, 1, length, 1, 1});
  const at::Tensor cams = attention.narrow(3, 1, side * side).reshape({prompts, heads, length, side, side}) * mask;
  const at::Tensor grads =
      gradients.narrow(3, 1, side * side).clamp_min(0).reshape({prompts, heads, length, side, side}) * mask;

  GradCamMaps maps;
  maps.per_token = (cams * grads).mean(1);
  const at::Tensor lengths = attention_mask.to(at::kCPU, at::kLong).sum(1);
  std::vector<at::Tensor> averages;
  averages.reserve(static_cast<size_t>(prompts));
  for (int64_t p = 0; p < prompts; ++p) {
    const int64_t tokens = lengths[p].item<int64_t>() - 2;
    check<InvalidArgument>(tokens >= 1 && tokens + 1 <= length, "agla::ipm::gradcam: prompt ", p,
                           " must have at least one token between its first token and [SEP]; its mask holds ",
                           tokens + 2, " tokens of ", length);
    maps.token_counts.push_back(tokens);
    averages.push_back(maps.per_token[p].narrow(0, 1, tokens).sum(0) / static_cast<double>(tokens));
  }
  maps.average = at::stack(averages);
  return maps;
}

/// The per-image list entry LAVIS `compute_gradcam` returns for prompt `p`: `[L + 1, g, g]` =
/// `cat(per_token[p, 0:1], average[p][None], per_token[p, 1:])` (index 1 is AGLA's map).
inline at::Tensor lavis_layout(const GradCamMaps& maps, int64_t p) {
  check<InvalidArgument>(maps.per_token.defined() && p >= 0 && p < maps.per_token.size(0),
                         "agla::ipm::lavis_layout: prompt index ", p, " out of range");
  const at::Tensor tokens = maps.per_token[p];
  return at::cat({tokens.narrow(0, 0, 1), maps.average[p].unsqueeze(0), tokens.narrow(0, 1, tokens.size(0) - 1)});
}

}  // namespace agla::ipm
