#pragma once
/// \file
/// From a GradCAM map and an ITC score to AGLA's pixel mask and augmented image, exactly as the
/// reference: `getAttMap(img, map, blur=True, overlap=False)` of LAVIS (lavis/common/gradcam.py)
/// and AGLA's `eval/augmentation.py`. The arithmetic follows the libraries upstream calls:
/// scikit-image 0.19 `resize(order=3, mode="constant")` (= SciPy `ndimage.zoom(order=3,
/// mode="grid-constant", grid_mode=True)`), SciPy 1.10 `ndimage.gaussian_filter` and NumPy's
/// float32 element-wise steps, with double accumulation and float32 storage where they have them,
/// so masks match bit for bit (tests/data/augment/README.md).
///
/// These maps are small (one 2-D map per prompt); they are computed on the CPU in double and
/// returned as CPU tensors, whatever device the GradCAM map came from.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "agla/error.hpp"

namespace agla::ipm {

namespace detail {

/// The single pole `sqrt(3) - 2` of the cubic B-spline prefilter (SciPy ni_splines.c).
constexpr double kCubicPole = -0.267949192431122706472553658494127633;
/// Zeros SciPy pads on each side before a `grid-constant` spline filter (`_prepad_for_spline_filter`).
constexpr int64_t kSplinePad = 12;

/// Cubic B-spline prefilter of one line in place, SciPy's `apply_filter` with the mirror
/// initialisation (`_init_causal_mirror`, `_init_anticausal_mirror`).
inline void spline_prefilter_line(double* c, int64_t n) {
  const double z = kCubicPole;
  const double gain = 1.0 * ((1.0 - z) * (1.0 - 1.0 / z));
  for (int64_t i = 0; i < n; ++i) c[i] *= gain;
  if (n < 2) return;
  double z_i = z;
  const double z_n_1 = std::pow(z, static_cast<double>(n - 1));
  c[0] = c[0] + z_n_1 * c[n - 1];
  for (int64_t i = 1; i < n - 1; ++i) {
    c[0] += z_i * (c[i] + z_n_1 * c[n - 1 - i]);
    z_i *= z;
  }
  c[0] /= 1 - z_n_1 * z_n_1;
  for (int64_t i = 1; i < n; ++i) c[i] += z * c[i - 1];
  c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1);
  for (int64_t i = n - 2; i >= 0; --i) c[i] = z * (c[i + 1] - c[i]);
}

/// Per output sample of one axis: first coefficient index and the four cubic weights
/// (SciPy `NI_ZoomShift` coordinates with `grid_mode`, `get_spline_interpolation_weights`).
struct SplineTaps {
  std::vector<int64_t> start;
  std::vector<double> weights;  // 4 per output sample
};

inline SplineTaps spline_taps(int64_t in, int64_t out) {
  SplineTaps taps;
  taps.start.resize(static_cast<size_t>(out));
  taps.weights.resize(static_cast<size_t>(out) * 4);
  const double zoom = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t o = 0; o < out; ++o) {
    double cc = static_cast<double>(o);
    cc += 0.5;
    cc *= zoom;
    cc -= 0.5;
    cc += static_cast<double>(kSplinePad);
    const double base = std::floor(cc);
    taps.start[static_cast<size_t>(o)] = static_cast<int64_t>(base) - 1;
    const double x = cc - base;
    const double y = x;
    const double z = 1.0 - x;
    double* w = &taps.weights[static_cast<size_t>(o) * 4];
    w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
    w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
    w[0] = z * z * z / 6.0;
    w[3] = 1.0;
    for (int i = 0; i < 3; ++i) w[3] -= w[i];
  }
  return taps;
}

/// NumPy's pairwise summation of a contiguous double array (`pairwise_sum`, 8-way unrolled blocks).
inline double numpy_pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = 0.;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_pairwise_sum(a, n2) + numpy_pairwise_sum(a + n2, n - n2);
}

/// Half-sample symmetric ("reflect") index for any offset: `... c b a | a b c | c b a ...`.
inline int64_t reflect_index(int64_t i, int64_t n) {
  const int64_t period = 2 * n;
  int64_t m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - m - 1;
}

/// A contiguous float32 CPU copy of a 2-D map, with a checked shape.
inline at::Tensor cpu_float_map(const at::Tensor& map, const char* caller) {
  check<ShapeError>(
      map.defined() && map.dim() == 2 && map.size(0) > 0 && map.size(1) > 0 && at::isFloatingType(map.scalar_type()),
      caller, ": map must be a non-empty [H, W] floating-point tensor; got ",
      map.defined() ? map.sizes() : at::IntArrayRef{}, " ", map.defined() ? map.scalar_type() : at::kFloat);
  return map.detach().to(at::kCPU, at::kFloat).contiguous();
}

/// NumPy's float32 `x -= x.min(); x /= x.max()` in place (NaN propagates as in NumPy; 0/0 gives
/// NaN). Plain loops: these maps are small, and a serial pass beats thread hand-offs here.
inline void subtract_min_divide_max(float* x, int64_t n) {
  const auto extreme = [&](bool want_max) {
    float best = x[0];
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(x[i])) return x[i];
      if (want_max ? x[i] > best : x[i] < best) best = x[i];
    }
    return best;
  };
  const float low = extreme(false);
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] - low;
  const float high = extreme(true);
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / high;
}

}  // namespace detail

/// Step 1 of the reference: `A -= A.min(); if A.max() > 0: A /= A.max()` in float32.
/// `map` `[H, W]` floating point, any device; returns a float32 CPU copy.
inline at::Tensor normalize_min_max(const at::Tensor& map) {
  at::Tensor a = detail::cpu_float_map(map, "agla::ipm::normalize_min_max").clone();
  a.sub_(a.min());
  const at::Tensor top = a.max();
  if (top.item<float>() > 0) a.div_(top);
  return a;
}

/// Cubic-spline resize as scikit-image 0.19 `resize(map, (height, width), order=3,
/// mode="constant")` (no anti-aliasing; meant for up-sampling): 12 zeros padded per side, B-spline
/// prefilter per axis in double, tensor-product evaluation in SciPy's summation order, stored as
/// float32 and clipped to `[min(map), max(map)]`. `map` `[h, w]` float; returns `[height, width]`
/// float32 on the CPU.
inline at::Tensor spline_resize(const at::Tensor& map, int64_t height, int64_t width) {
  const at::Tensor input = detail::cpu_float_map(map, "agla::ipm::spline_resize");
  check<InvalidArgument>(height > 0 && width > 0, "agla::ipm::spline_resize: output size must be positive; got ",
                         height, "x", width);
  const int64_t in_h = input.size(0);
  const int64_t in_w = input.size(1);
  const int64_t pad = detail::kSplinePad;
  const int64_t rows = in_h + 2 * pad;
  const int64_t cols = in_w + 2 * pad;

  // Coefficients: zero-padded input, prefiltered along axis 0, then axis 1 (SciPy spline_filter).
  std::vector<double> coeffs(static_cast<size_t>(rows * cols), 0.0);
  const float* src = input.data_ptr<float>();
  for (int64_t i = 0; i < in_h; ++i)
    for (int64_t j = 0; j < in_w; ++j)
      coeffs[static_cast<size_t>((i + pad) * cols + j + pad)] = static_cast<double>(src[i * in_w + j]);
  std::vector<double> line(static_cast<size_t>(rows));
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t i = 0; i < rows; ++i) line[static_cast<size_t>(i)] = coeffs[static_cast<size_t>(i * cols + j)];
    detail::spline_prefilter_line(line.data(), rows);
    for (int64_t i = 0; i < rows; ++i) coeffs[static_cast<size_t>(i * cols + j)] = line[static_cast<size_t>(i)];
  }
  for (int64_t i = 0; i < rows; ++i) detail::spline_prefilter_line(&coeffs[static_cast<size_t>(i * cols)], cols);

  const detail::SplineTaps taps_r = detail::spline_taps(in_h, height);
  const detail::SplineTaps taps_c = detail::spline_taps(in_w, width);
  const float lo = input.min().item<float>();
  const float hi = input.max().item<float>();
  at::Tensor output = at::empty({height, width}, at::kFloat);
  float* dst = output.data_ptr<float>();
  at::parallel_for(0, height, 16, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t r0 = taps_r.start[static_cast<size_t>(o)];
      const double* wr = &taps_r.weights[static_cast<size_t>(o) * 4];
      for (int64_t q = 0; q < width; ++q) {
        const int64_t c0 = taps_c.start[static_cast<size_t>(q)];
        const double* wc = &taps_c.weights[static_cast<size_t>(q) * 4];
        double t = 0.0;
        for (int a = 0; a < 4; ++a) {
          const double* row = &coeffs[static_cast<size_t>((r0 + a) * cols + c0)];
          for (int b = 0; b < 4; ++b) {
            double coeff = row[b];
            coeff *= wr[a];
            coeff *= wc[b];
            t += coeff;
          }
        }
        const float value = static_cast<float>(t);
        // np.clip(out, min, max): NaN stays NaN.
        dst[o * width + q] = value < lo ? lo : (value > hi ? hi : value);
      }
    }
  });
  return output;
}

/// The normalised 1-D Gaussian SciPy 1.10 `_gaussian_kernel1d(sigma, 0, radius)` builds:
/// `exp(-0.5 / sigma^2 * x^2)` for x = -radius..radius, divided by its NumPy sum (double).
inline std::vector<double> gaussian_kernel(double sigma, int64_t radius) {
  check<InvalidArgument>(sigma > 0 && radius >= 0,
                         "agla::ipm::gaussian_kernel: sigma must be > 0 and radius >= 0; got ", sigma, ", ", radius);
  const double sigma2 = sigma * sigma;
  std::vector<double> phi(static_cast<size_t>(2 * radius + 1));
  for (int64_t x = -radius; x <= radius; ++x)
    phi[static_cast<size_t>(x + radius)] = std::exp(-0.5 / sigma2 * static_cast<double>(x * x));
  const double total = detail::numpy_pairwise_sum(phi.data(), static_cast<int64_t>(phi.size()));
  for (double& w : phi) w = w / total;
  return phi;
}

/// Gaussian blur as SciPy 1.10 `ndimage.gaussian_filter(map, sigma, truncate=truncate)` with
/// mode "reflect": radius `int(truncate * sigma + 0.5)`, axis 0 then axis 1, each output sample
/// accumulated in double in SciPy's symmetric order and stored as float32 (so the intermediate is
/// float32 too). `map` `[H, W]` float; returns `[H, W]` float32 on the CPU.
inline at::Tensor gaussian_blur(const at::Tensor& map, double sigma, double truncate = 4.0) {
  const at::Tensor input = detail::cpu_float_map(map, "agla::ipm::gaussian_blur");
  check<InvalidArgument>(sigma > 0 && truncate > 0 && std::isfinite(sigma) && std::isfinite(truncate),
                         "agla::ipm::gaussian_blur: sigma and truncate must be positive and finite; got ", sigma, ", ",
                         truncate);
  const int64_t radius = static_cast<int64_t>(truncate * sigma + 0.5);
  const std::vector<double> weights = gaussian_kernel(sigma, radius);
  const double* fw = weights.data() + radius;  // fw[jj] for jj in [-radius, radius]
  const int64_t h = input.size(0);
  const int64_t w = input.size(1);

  // Axis 0: out[i][c] = in[i][c] * fw[0] + sum_{jj=-r..-1} (in[i+jj][c] + in[i-jj][c]) * fw[jj].
  at::Tensor middle = at::empty({h, w}, at::kFloat);
  {
    const float* src = input.data_ptr<float>();
    float* dst = middle.data_ptr<float>();
    at::parallel_for(0, h, 8, [&](int64_t begin, int64_t end) {
      std::vector<double> acc(static_cast<size_t>(w));
      for (int64_t i = begin; i < end; ++i) {
        const float* center = src + i * w;
        for (int64_t c = 0; c < w; ++c) acc[static_cast<size_t>(c)] = static_cast<double>(center[c]) * fw[0];
        for (int64_t jj = -radius; jj < 0; ++jj) {
          const float* up = src + detail::reflect_index(i + jj, h) * w;
          const float* down = src + detail::reflect_index(i - jj, h) * w;
          const double weight = fw[jj];
          for (int64_t c = 0; c < w; ++c)
            acc[static_cast<size_t>(c)] += (static_cast<double>(up[c]) + static_cast<double>(down[c])) * weight;
        }
        for (int64_t c = 0; c < w; ++c) dst[i * w + c] = static_cast<float>(acc[static_cast<size_t>(c)]);
      }
    });
  }
  // Axis 1 on the float32 intermediate, one extended double line per row.
  at::Tensor output = at::empty({h, w}, at::kFloat);
  {
    const float* src = middle.data_ptr<float>();
    float* dst = output.data_ptr<float>();
    at::parallel_for(0, h, 8, [&](int64_t begin, int64_t end) {
      std::vector<double> extended(static_cast<size_t>(w + 2 * radius));
      for (int64_t i = begin; i < end; ++i) {
        const float* row = src + i * w;
        for (int64_t k = -radius; k < w + radius; ++k)
          extended[static_cast<size_t>(k + radius)] = static_cast<double>(row[detail::reflect_index(k, w)]);
        for (int64_t c = 0; c < w; ++c) {
          const double* x = extended.data() + c + radius;
          double acc = x[0] * fw[0];
          for (int64_t jj = -radius; jj < 0; ++jj) acc += (x[jj] + x[-jj]) * fw[jj];
          dst[i * w + c] = static_cast<float>(acc);
        }
      }
    });
  }
  return output;
}

/// Steps 1-4 of the reference (LAVIS `getAttMap` with `blur=True`): min-max normalise `gradcam`
/// `[g, g]`, spline-resize to `[height, width]`, blur with sigma `sigma_fraction * max(height,
/// width)`, min-max normalise again in float32 (0/0 gives an all-NaN map for a constant input, as
/// upstream). Returns `[height, width]` float32 on the CPU.
inline at::Tensor relevance_map(const at::Tensor& gradcam, int64_t height, int64_t width,
                                double sigma_fraction = 0.02) {
  check<InvalidArgument>(sigma_fraction > 0, "agla::ipm::relevance_map: sigma_fraction must be > 0; got ",
                         sigma_fraction);
  const at::Tensor resized = spline_resize(normalize_min_max(gradcam), height, width);
  at::Tensor blurred = gaussian_blur(resized, sigma_fraction * static_cast<double>(std::max(height, width)));
  detail::subtract_min_divide_max(blurred.data_ptr<float>(), blurred.numel());
  return blurred;
}

/// The share of pixels a mask keeps, and how its threshold index is computed.
struct KeepRatio {
  /// Fraction of the pixels kept (the pixel at index `int(pixels * keep)` of the descending map
  /// is the threshold).
  double keep = 1.0;
  /// True: `keep` is a float32 value and the index is `int(float32(pixels) * float32(keep))`, as
  /// upstream's tensor arithmetic; false: the product is taken in double.
  bool single_precision = false;
};

/// A rule mapping the ITC similarity to the kept share.
using KeepRule = std::function<KeepRatio(double itc)>;

/// AGLA's rule (eval/augmentation.py): `ratio = 1 - itc / 2` in float32, then
/// `min(ratio, 1 - 1e-5)`, which returns the double 0.99999 when the float32 ratio exceeds
/// float32(0.99999). A higher similarity masks a larger share.
inline KeepRatio reference_keep_ratio(double itc) {
  const float ratio = 1.0f - static_cast<float>(itc) / 2.0f;
  const double cap = 1.0 - 1e-5;
  if (ratio > static_cast<float>(cap)) return KeepRatio{cap, false};
  return KeepRatio{static_cast<double>(ratio), true};
}

/// The threshold step's outcome.
struct Threshold {
  /// Index into the descending-sorted map.
  int64_t index = 0;
  /// The map value at `index` (NaN when the map is NaN there).
  float value = 0;
  /// `[H, W]` bool CPU: true = pixel kept (`!(map < value)`).
  at::Tensor mask;
  /// `mask.sum()` and `mask.mean()`.
  int64_t kept_pixels = 0;
  double kept_fraction = 0;
};

/// Index of the threshold pixel for `pixels` pixels and `ratio` (clamped to the last pixel).
inline int64_t threshold_index(int64_t pixels, const KeepRatio& ratio) {
  check<InvalidArgument>(pixels > 0 && std::isfinite(ratio.keep) && ratio.keep >= 0,
                         "agla::ipm::threshold_index: need pixels > 0 and a finite keep ratio >= 0; got ", pixels, ", ",
                         ratio.keep);
  const int64_t index = ratio.single_precision
                            ? static_cast<int64_t>(static_cast<float>(pixels) * static_cast<float>(ratio.keep))
                            : static_cast<int64_t>(static_cast<double>(pixels) * ratio.keep);
  // Upstream would index out of range for keep >= 1; the last pixel is the nearest valid choice.
  return std::min(index, pixels - 1);
}

/// Steps 5-7 of the reference: the threshold is element `index` of `map` `[H, W]` flattened and
/// sorted descending with NaN before every number (torch.sort), and the mask is
/// `!(map < threshold)`, so ties are kept and a NaN threshold keeps every pixel.
inline Threshold threshold_map(const at::Tensor& map, const KeepRatio& ratio) {
  const at::Tensor values = detail::cpu_float_map(map, "agla::ipm::threshold_map");
  const int64_t pixels = values.numel();
  Threshold result;
  result.index = threshold_index(pixels, ratio);
  const float* data = values.data_ptr<float>();
  std::vector<float> numbers;
  numbers.reserve(static_cast<size_t>(pixels));
  for (int64_t i = 0; i < pixels; ++i)
    if (!std::isnan(data[i])) numbers.push_back(data[i]);
  const int64_t nans = pixels - static_cast<int64_t>(numbers.size());
  if (result.index < nans) {
    result.value = std::numeric_limits<float>::quiet_NaN();
  } else {
    const auto nth = numbers.begin() + (result.index - nans);
    std::nth_element(numbers.begin(), nth, numbers.end(), std::greater<float>());
    result.value = *nth;
  }
  result.mask = at::empty(values.sizes(), at::kBool);
  bool* keep = result.mask.data_ptr<bool>();
  for (int64_t i = 0; i < pixels; ++i) {
    keep[i] = !(data[i] < result.value);
    result.kept_pixels += keep[i] ? 1 : 0;
  }
  result.kept_fraction = static_cast<double>(result.kept_pixels) / static_cast<double>(pixels);
  return result;
}

/// Sets the pixels outside `mask` `[H, W]` (bool or 0/1) to 0 in `image` `[H, W, C]` uint8 (CPU):
/// the reference's `ToPILImage(ToTensor(image) * mask)`, which for uint8 input equals
/// `image * mask` exactly. Returns a new `[H, W, C]` uint8 CPU tensor.
inline at::Tensor apply_mask(const at::Tensor& image, const at::Tensor& mask) {
  check<ShapeError>(image.defined() && image.dim() == 3 && image.scalar_type() == at::kByte,
                    "agla::ipm::apply_mask: image must be [H, W, C] uint8; got ",
                    image.defined() ? image.sizes() : at::IntArrayRef{}, " ",
                    image.defined() ? image.scalar_type() : at::kByte);
  check<ShapeError>(mask.defined() && mask.dim() == 2 && mask.size(0) == image.size(0) && mask.size(1) == image.size(1),
                    "agla::ipm::apply_mask: mask must be [", image.size(0), ", ", image.size(1), "]; got ",
                    mask.defined() ? mask.sizes() : at::IntArrayRef{});
  const at::Tensor keep = mask.to(at::kCPU).ne(0).contiguous();
  const at::Tensor source = image.to(at::kCPU).contiguous();
  at::Tensor out = at::empty_like(source);
  const bool* k = keep.data_ptr<bool>();
  const uint8_t* src = source.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t pixels = keep.numel();
  const int64_t channels = source.size(2);
  for (int64_t i = 0; i < pixels; ++i)
    for (int64_t c = 0; c < channels; ++c) dst[i * channels + c] = k[i] ? src[i * channels + c] : uint8_t{0};
  return out;
}

}  // namespace agla::ipm
