#pragma once
/// \file
/// Relevance heat-map overlay for inspection, as LAVIS `getAttMap(img, map, overlap=True)`
/// (lavis/common/gradcam.py): `(1 - a^0.7) * img + a^0.7 * jet(a)` with matplotlib's "jet"
/// colour map (256-entry lookup table).

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "agla/error.hpp"

namespace agla::ipm {

namespace detail {

/// One channel of a matplotlib segmented colour map: (x, y0, y1) anchors.
struct Anchor {
  double x, y0, y1;
};

/// matplotlib `_create_lookup_table(N, data)` for one channel (gamma 1).
inline std::vector<double> segmented_lut(const std::vector<Anchor>& anchors, int n) {
  std::vector<double> lut(static_cast<size_t>(n));
  lut[0] = anchors.front().y1;
  lut[static_cast<size_t>(n - 1)] = anchors.back().y0;
  for (int i = 1; i < n - 1; ++i) {
    const double x = static_cast<double>(i) / static_cast<double>(n - 1);
    size_t k = 1;
    while (k < anchors.size() - 1 && anchors[k].x < x) ++k;  // np.searchsorted (left)
    const Anchor& a = anchors[k - 1];
    const Anchor& b = anchors[k];
    const double distance = (x - a.x) / (b.x - a.x);
    lut[static_cast<size_t>(i)] = std::clamp(distance * (b.y0 - a.y1) + a.y1, 0.0, 1.0);
  }
  return lut;
}

}  // namespace detail

/// matplotlib's "jet" colour map as a 256 x RGB lookup table of doubles in [0, 1].
inline const std::vector<std::array<double, 3>>& jet_colormap() {
  static const std::vector<std::array<double, 3>> table = [] {
    using detail::Anchor;
    const auto red =
        detail::segmented_lut({{0.0, 0, 0}, {0.35, 0, 0}, {0.66, 1, 1}, {0.89, 1, 1}, {1.0, 0.5, 0.5}}, 256);
    const auto green = detail::segmented_lut(
        {{0.0, 0, 0}, {0.125, 0, 0}, {0.375, 1, 1}, {0.64, 1, 1}, {0.91, 0, 0}, {1.0, 0, 0}}, 256);
    const auto blue =
        detail::segmented_lut({{0.0, 0.5, 0.5}, {0.11, 1, 1}, {0.34, 1, 1}, {0.65, 0, 0}, {1.0, 0, 0}}, 256);
    std::vector<std::array<double, 3>> rgb(256);
    for (size_t i = 0; i < 256; ++i) rgb[i] = {red[i], green[i], blue[i]};
    return rgb;
  }();
  return table;
}

/// Overlays `relevance` `[H, W]` float in [0, 1] (NaN counts as 0) on `image` `[H, W, 3]` uint8
/// as LAVIS `getAttMap(..., overlap=True)`: per pixel `(1 - a^0.7) * rgb + a^0.7 * jet(a)`,
/// rounded to uint8. Returns `[H, W, 3]` uint8 on the CPU.
inline at::Tensor heatmap_overlay(const at::Tensor& image, const at::Tensor& relevance) {
  check<ShapeError>(image.defined() && image.dim() == 3 && image.size(2) == 3 && image.scalar_type() == at::kByte,
                    "agla::ipm::heatmap_overlay: image must be [H, W, 3] uint8; got ",
                    image.defined() ? image.sizes() : at::IntArrayRef{}, " ",
                    image.defined() ? image.scalar_type() : at::kByte);
  check<ShapeError>(relevance.defined() && relevance.dim() == 2 && relevance.size(0) == image.size(0) &&
                        relevance.size(1) == image.size(1) && at::isFloatingType(relevance.scalar_type()),
                    "agla::ipm::heatmap_overlay: relevance must be [", image.size(0), ", ", image.size(1),
                    "] floating point; got ", relevance.defined() ? relevance.sizes() : at::IntArrayRef{});
  const at::Tensor rgb = image.to(at::kCPU).contiguous();
  const at::Tensor map = relevance.detach().to(at::kCPU, at::kFloat).contiguous();
  const auto& jet = jet_colormap();
  at::Tensor out = at::empty_like(rgb);
  const uint8_t* src = rgb.data_ptr<uint8_t>();
  const float* a = map.data_ptr<float>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t pixels = map.numel();
  for (int64_t i = 0; i < pixels; ++i) {
    const double value = std::isnan(a[i]) ? 0.0 : std::clamp(static_cast<double>(a[i]), 0.0, 1.0);
    const int index = std::min(static_cast<int>(value * 256.0), 255);  // matplotlib Colormap.__call__
    const double weight = std::pow(value, 0.7);
    for (int c = 0; c < 3; ++c) {
      const double blended = (1.0 - weight) * (src[i * 3 + c] / 255.0) + weight * jet[static_cast<size_t>(index)][c];
      dst[i * 3 + c] = static_cast<uint8_t>(std::lround(std::clamp(blended, 0.0, 1.0) * 255.0));
    }
  }
  return out;
}

}  // namespace agla::ipm
