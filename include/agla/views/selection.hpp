#pragma once
/// \file
/// VACoDe-style view selection (Kim et al. 2024, "VACoDe: Visual Augmented Contrastive Decoding";
/// no official code): from a pool of augmented views, the one whose next-token distribution at the
/// first step is farthest from the original's (L2 distance of the softmax distributions) is the
/// view to contrast with for the whole generation. docs/decoding.md says what is and is not
/// verified about the published method.

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "agla/error.hpp"

namespace agla::views {

/// L2 distances `||softmax(l_0) - softmax(l_k)||_2` of the first step's logits `views` = `[l_0, l_1,
/// ..., l_K]` (each `[B, V]` float32, one device) -> `[B, K]` float32.
inline at::Tensor softmax_distances(const std::vector<at::Tensor>& views) {
  check<InvalidArgument>(views.size() >= 2, "agla::views::softmax_distances: need the original and at least one "
                         "candidate view; got ", views.size(), " logit tensors");
  for (const at::Tensor& view : views)
    check<ShapeError>(view.defined() && view.dim() == 2 && view.sizes() == views[0].sizes() &&
                          view.scalar_type() == at::kFloat,
                      "agla::views::softmax_distances: every view must be [B, V] float like the original ",
                      views[0].sizes(), "; got ", view.defined() ? view.sizes() : at::IntArrayRef{});
  const at::Tensor original = views[0].softmax(-1);
  std::vector<at::Tensor> distances;
  for (std::size_t k = 1; k < views.size(); ++k) distances.push_back((views[k].softmax(-1) - original).norm(2, -1));
  return at::stack(distances, 1);
}

/// Per stream, the 1-based index of the candidate view farthest from the original (lowest index
/// on ties): `[B]` int64, for `views` as in `softmax_distances`.
inline at::Tensor farthest_view(const std::vector<at::Tensor>& views) {
  return softmax_distances(views).argmax(1) + 1;
}

}  // namespace agla::views
