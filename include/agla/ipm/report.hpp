#pragma once
/// \file
/// The JSON form of a match, the stable output format of the `agla_ipm` inspector (`--json`).
///
/// One object with exactly these keys:
/// - `itm_logits`: `[no_match, match]` ITM logits (2 numbers);
/// - `itm_probability`: softmax of the logits, match entry;
/// - `itc`: ITC cosine similarity;
/// - `mask_ratio`: share of pixels the ratio rule asks to mask (reference: `itc / 2`, >= 1e-5);
/// - `kept_fraction`: share of pixels actually kept;
/// - `grid`: the averaged GradCAM map, an array of g rows of g numbers;
/// - `image_size`: side S of the model's square input image (the grid covers it);
/// - `timings_ms`: `{encode, itm_gradcam, itc, postprocess, total}` in milliseconds.

#include <ATen/ATen.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "agla/ipm/matcher.hpp"

namespace agla::ipm {

/// `match` as the inspector's JSON object (see the file comment); `image_size` is the model's S.
inline nlohmann::json match_to_json(const Match& match, int64_t image_size) {
  const at::Tensor logits = match.itm_logits.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor grid = match.grid.to(at::kCPU, at::kDouble).contiguous();
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t i = 0; i < grid.size(0); ++i) {
    std::vector<double> row(static_cast<size_t>(grid.size(1)));
    for (int64_t j = 0; j < grid.size(1); ++j) row[static_cast<size_t>(j)] = grid[i][j].item<double>();
    rows.push_back(row);
  }
  nlohmann::json out;
  out["itm_logits"] = {logits[0].item<double>(), logits[1].item<double>()};
  out["itm_probability"] = match.itm_probability;
  out["itc"] = match.itc;
  out["mask_ratio"] = match.mask_ratio;
  out["kept_fraction"] = match.kept_fraction;
  out["grid"] = rows;
  out["image_size"] = image_size;
  out["timings_ms"] = {{"encode", match.timings.encode},
                       {"itm_gradcam", match.timings.itm_gradcam},
                       {"itc", match.timings.itc},
                       {"postprocess", match.timings.postprocess},
                       {"total", match.timings.total}};
  return out;
}

}  // namespace agla::ipm
