#pragma once
/// \file
/// RITUAL's pool of random image transformations (sangminwoo/RITUAL, `eval_bench/pope_eval_llava.py`,
/// torchvision.transforms.v2 with their default parameter distributions), applied to the RGB image
/// before the LVLM's own preprocessing, as the reference applies them to the PIL image:
///
/// | transform | parameters |
/// |---|---|
/// | horizontal flip | always |
/// | vertical flip | always |
/// | rotation | angle ~ U[-180, 180] degrees, counter-clockwise about the centre, nearest, corners black |
/// | colour jitter | brightness, contrast, saturation ~ U[0, 2], hue ~ U[-0.5, 0.5], the four in random order |
/// | Gaussian blur | kernel 13, sigma ~ U[1.5, 2], reflected borders |
/// | random resized crop | area ~ U[0.08, 1] of the image, aspect ~ logU[3/4, 4/3], resized to 336 x 336 (bilinear) |
///
/// RITUAL draws one transformation per sample, uniformly (`draw_transform`); VACoDe-style selection
/// draws from the same pool. Every random number comes from the caller's generator, so a seed
/// reproduces the view. The pixel arithmetic follows torchvision's tensor kernels on float values
/// rounded back to uint8; it is not bit-identical to Pillow's integer filters.

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/names.hpp"

namespace agla::views {

/// One of RITUAL's transformations.
enum class Transform { HorizontalFlip, VerticalFlip, Rotation, ColorJitter, GaussianBlur, ResizedCrop };

/// RITUAL's six transformations, in the reference's dictionary order.
inline const std::vector<Transform>& ritual_pool() {
  static const std::vector<Transform> pool = {Transform::HorizontalFlip, Transform::VerticalFlip,
                                              Transform::Rotation,       Transform::ColorJitter,
                                              Transform::GaussianBlur,   Transform::ResizedCrop};
  return pool;
}

/// The reference's name of `transform` ("horizontal flip", ..., "crop").
inline const char* transform_name(Transform transform) {
  static constexpr NamedValue<Transform> kNames[] = {
      {Transform::HorizontalFlip, "horizontal flip"}, {Transform::VerticalFlip, "vertical flip"},
      {Transform::Rotation, "rotation"}, {Transform::ColorJitter, "color jitter"},
      {Transform::GaussianBlur, "gaussian blur"}, {Transform::ResizedCrop, "crop"}};
  return name_of(transform, kNames);
}

namespace detail {

inline void check_image(const at::Tensor& image, const char* fn) {
  check<ShapeError>(image.defined() && image.dim() == 3 && image.size(2) == 3 && image.scalar_type() == at::kByte &&
                        image.size(0) > 0 && image.size(1) > 0,
                    fn, ": image must be RGB uint8 [H, W, 3] with H, W > 0; got ",
                    image.defined() ? image.sizes() : at::IntArrayRef{}, " ",
                    image.defined() ? image.scalar_type() : at::ScalarType::Undefined);
}

/// A uniform draw in [low, high) from `generator` (CPU).
inline double uniform(at::Generator& generator, double low, double high) {
  return at::empty({1}, at::kDouble).uniform_(low, high, generator).item<double>();
}

/// `[H, W, 3]` float in [0, 255] -> uint8, rounded and clamped.
inline at::Tensor to_byte(const at::Tensor& values) { return values.round().clamp(0, 255).to(at::kByte).contiguous(); }

/// ITU-R 601-2 luma of `[H, W, 3]` float values, `[H, W, 1]`.
inline at::Tensor grayscale(const at::Tensor& rgb) {
  return (rgb.select(2, 0) * 0.299 + rgb.select(2, 1) * 0.587 + rgb.select(2, 2) * 0.114).unsqueeze(2);
}

/// `a * factor + b * (1 - factor)`, clamped to [0, 255] (torchvision's `_blend`).
inline at::Tensor blend(const at::Tensor& a, const at::Tensor& b, double factor) {
  return (a * factor + b * (1.0 - factor)).clamp(0, 255);
}

/// Hue shift by `shift` of a turn (torchvision `adjust_hue` through HSV) of `[H, W, 3]` values in [0, 255].
inline at::Tensor shift_hue(const at::Tensor& rgb255, double shift) {
  const at::Tensor rgb = rgb255 / 255.0;
  const at::Tensor r = rgb.select(2, 0), g = rgb.select(2, 1), b = rgb.select(2, 2);
  const at::Tensor maxc = std::get<0>(rgb.max(2)), minc = std::get<0>(rgb.min(2));
  const at::Tensor delta = maxc - minc;
  const at::Tensor safe = at::where(delta > 0, delta, at::ones_like(delta));
  const at::Tensor s = at::where(maxc > 0, delta / at::where(maxc > 0, maxc, at::ones_like(maxc)), at::zeros_like(maxc));
  at::Tensor h = at::where(maxc == r, (g - b) / safe, at::where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe));
  h = at::where(delta > 0, h / 6.0, at::zeros_like(h));
  h = (h + shift).remainder(1.0);
  const at::Tensor v = maxc;
  const at::Tensor i = (h * 6.0).floor();
  const at::Tensor f = h * 6.0 - i;
  const at::Tensor p = v * (1.0 - s), q = v * (1.0 - s * f), t = v * (1.0 - s * (1.0 - f));
  const at::Tensor sector = i.remainder(6.0);
  auto pick = [&](const std::array<at::Tensor, 6>& options) {
    at::Tensor out = options[5];
    for (int k = 4; k >= 0; --k) out = at::where(sector == k, options[static_cast<size_t>(k)], out);
    return out;
  };
  const at::Tensor red = pick({v, q, p, p, t, v}), green = pick({t, v, v, q, p, p}), blue = pick({p, p, t, v, v, q});
  return at::stack({red, green, blue}, 2) * 255.0;
}

}  // namespace detail

/// Flips `image` `[H, W, 3]` uint8 left-right.
inline at::Tensor horizontal_flip(const at::Tensor& image) {
  detail::check_image(image, "agla::views::horizontal_flip");
  return image.flip({1}).contiguous();
}

/// Flips `image` `[H, W, 3]` uint8 top-bottom.
inline at::Tensor vertical_flip(const at::Tensor& image) {
  detail::check_image(image, "agla::views::vertical_flip");
  return image.flip({0}).contiguous();
}

/// Rotates `image` `[H, W, 3]` uint8 by `degrees` counter-clockwise about its centre, keeping its
/// size; nearest neighbour, black where no source pixel lands (torchvision `rotate`, expand=False).
inline at::Tensor rotate(const at::Tensor& image, double degrees) {
  detail::check_image(image, "agla::views::rotate");
  const int64_t h = image.size(0), w = image.size(1);
  const double theta = degrees * M_PI / 180.0, c = std::cos(theta), s = std::sin(theta);
  const at::Tensor ys = at::arange(h, at::kDouble).add_(0.5 - h / 2.0).view({h, 1});
  const at::Tensor xs = at::arange(w, at::kDouble).add_(0.5 - w / 2.0).view({1, w});
  // Output pixel centre -> source point: the inverse of a counter-clockwise turn with y pointing down.
  const at::Tensor src_x = (xs * c - ys * s + w / 2.0).floor().to(at::kLong);
  const at::Tensor src_y = (xs * s + ys * c + h / 2.0).floor().to(at::kLong);
  const at::Tensor inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h);
  const at::Tensor flat = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view({-1});
  const at::Tensor gathered = image.reshape({h * w, 3}).index_select(0, flat).view({h, w, 3});
  return at::where(inside.unsqueeze(2), gathered, at::zeros_like(gathered)).contiguous();
}

/// Colour jitter with the given factors, applied in `order` (a permutation of 0 brightness, 1
/// contrast, 2 saturation, 3 hue), each step rounded back to uint8 as on a uint8 image.
inline at::Tensor color_jitter(const at::Tensor& image, double brightness, double contrast, double saturation,
                               double hue, const std::array<int64_t, 4>& order = {0, 1, 2, 3}) {
  detail::check_image(image, "agla::views::color_jitter");
  check<InvalidArgument>(brightness >= 0 && contrast >= 0 && saturation >= 0 && hue >= -0.5 && hue <= 0.5,
                         "agla::views::color_jitter: brightness, contrast and saturation must be >= 0 and hue in "
                         "[-0.5, 0.5]; got ",
                         brightness, ", ", contrast, ", ", saturation, ", ", hue);
  at::Tensor x = image.to(at::kFloat);
  for (int64_t op : order) {
    if (op == 0) {
      x = detail::blend(x, at::zeros_like(x), brightness);
    } else if (op == 1) {
      const at::Tensor mean = detail::grayscale(x).mean();
      x = detail::blend(x, mean.expand_as(x), contrast);
    } else if (op == 2) {
      x = detail::blend(x, detail::grayscale(x).expand_as(x), saturation);
    } else if (op == 3) {
      x = detail::shift_hue(x, hue);
    }
    x = detail::to_byte(x).to(at::kFloat);
  }
  return detail::to_byte(x);
}

/// Gaussian blur of `image` `[H, W, 3]` uint8 with an odd `kernel` width and `sigma` (torchvision
/// `gaussian_blur`: normalised separable kernel, reflected borders).
inline at::Tensor gaussian_blur(const at::Tensor& image, int64_t kernel, double sigma) {
  detail::check_image(image, "agla::views::gaussian_blur");
  check<InvalidArgument>(kernel >= 1 && kernel % 2 == 1 && sigma > 0, "agla::views::gaussian_blur: kernel must be "
                         "odd and >= 1 and sigma > 0; got ", kernel, ", ", sigma);
  const int64_t half = kernel / 2;
  const at::Tensor x = at::linspace(-static_cast<double>(half), static_cast<double>(half), kernel, at::kFloat);
  at::Tensor weights = (x.pow(2) / (-2.0 * sigma * sigma)).exp();
  weights = weights / weights.sum();
  const int64_t h = image.size(0), w = image.size(1);
  // Reflection needs the padding below each side; smaller images are padded by replication.
  const bool reflect = half < h && half < w;
  at::Tensor planes = image.permute({2, 0, 1}).to(at::kFloat).unsqueeze(0);  // [1, 3, H, W]
  planes = reflect ? at::reflection_pad2d(planes, {half, half, half, half})
                   : at::replication_pad2d(planes, {half, half, half, half});
  const at::Tensor horizontal = weights.view({1, 1, 1, kernel}).expand({3, 1, 1, kernel}).contiguous();
  const at::Tensor vertical = weights.view({1, 1, kernel, 1}).expand({3, 1, kernel, 1}).contiguous();
  planes = at::conv2d(planes, horizontal, at::Tensor(), at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, 3);
  planes = at::conv2d(planes, vertical, at::Tensor(), at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, 3);
  return detail::to_byte(planes.squeeze(0).permute({1, 2, 0}));
}

/// Crops rows `[top, top + height)`, columns `[left, left + width)` of `image` and resizes the crop
/// to `size` x `size` (bilinear, antialiased).
inline at::Tensor resized_crop(const at::Tensor& image, int64_t top, int64_t left, int64_t height, int64_t width,
                               int64_t size) {
  detail::check_image(image, "agla::views::resized_crop");
  check<InvalidArgument>(top >= 0 && left >= 0 && height > 0 && width > 0 && top + height <= image.size(0) &&
                             left + width <= image.size(1) && size > 0 && size <= (int64_t{1} << 14),
                         "agla::views::resized_crop: the crop must lie inside the ", image.size(0), "x",
                         image.size(1), " image and size be in [1, 16384]; got top ", top, ", left ", left,
                         ", height ", height, ", width ", width, ", size ", size);
  const at::Tensor crop = image.narrow(0, top, height).narrow(1, left, width).permute({2, 0, 1}).to(at::kFloat);
  const at::Tensor resized =
      at::_upsample_bilinear2d_aa(crop.unsqueeze(0), {size, size}, /*align_corners=*/false).squeeze(0);
  return detail::to_byte(resized.permute({1, 2, 0}));
}

/// RITUAL's transformation `transform` of `image` `[H, W, 3]` uint8 with its random parameters
/// drawn from `generator` (CPU) as torchvision v2 draws them.
inline at::Tensor apply_transform(Transform transform, const at::Tensor& image, at::Generator& generator) {
  detail::check_image(image, "agla::views::apply_transform");
  switch (transform) {
    case Transform::HorizontalFlip:
      return horizontal_flip(image);
    case Transform::VerticalFlip:
      return vertical_flip(image);
    case Transform::Rotation:
      return rotate(image, detail::uniform(generator, -180.0, 180.0));
    case Transform::ColorJitter: {
      const at::Tensor permutation = at::randperm(4, generator, at::kLong);
      std::array<int64_t, 4> order{};
      for (int64_t k = 0; k < 4; ++k) order[static_cast<size_t>(k)] = permutation[k].item<int64_t>();
      const double brightness = detail::uniform(generator, 0.0, 2.0);
      const double contrast = detail::uniform(generator, 0.0, 2.0);
      const double saturation = detail::uniform(generator, 0.0, 2.0);
      const double hue = detail::uniform(generator, -0.5, 0.5);
      return color_jitter(image, brightness, contrast, saturation, hue, order);
    }
    case Transform::GaussianBlur:
      return gaussian_blur(image, 13, detail::uniform(generator, 1.5, 2.0));
    case Transform::ResizedCrop: {
      const int64_t h = image.size(0), w = image.size(1);
      const double area = static_cast<double>(h) * static_cast<double>(w);
      for (int attempt = 0; attempt < 10; ++attempt) {
        const double target = area * detail::uniform(generator, 0.08, 1.0);
        const double aspect = std::exp(detail::uniform(generator, std::log(3.0 / 4.0), std::log(4.0 / 3.0)));
        const auto cw = static_cast<int64_t>(std::llround(std::sqrt(target * aspect)));
        const auto ch = static_cast<int64_t>(std::llround(std::sqrt(target / aspect)));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
          const int64_t top = at::randint(0, h - ch + 1, {1}, generator, at::kLong).item<int64_t>();
          const int64_t left = at::randint(0, w - cw + 1, {1}, generator, at::kLong).item<int64_t>();
          return resized_crop(image, top, left, ch, cw, 336);
        }
      }
      // Fallback of torchvision: the central crop with the aspect clamped to [3/4, 4/3].
      const double ratio = static_cast<double>(w) / static_cast<double>(h);
      int64_t cw = w, ch = h;
      if (ratio < 3.0 / 4.0) ch = static_cast<int64_t>(std::llround(w / (3.0 / 4.0)));
      if (ratio > 4.0 / 3.0) cw = static_cast<int64_t>(std::llround(h * (4.0 / 3.0)));
      return resized_crop(image, (h - ch) / 2, (w - cw) / 2, ch, cw, 336);
    }
  }
  return image;
}

/// One transformation drawn uniformly from `pool` (RITUAL's `random.choice`) with `generator`.
inline Transform draw_transform(const std::vector<Transform>& pool, at::Generator& generator) {
  check<InvalidArgument>(!pool.empty(), "agla::views::draw_transform: the pool is empty");
  const int64_t index =
      at::randint(0, static_cast<int64_t>(pool.size()), {1}, generator, at::kLong).item<int64_t>();
  return pool[static_cast<size_t>(index)];
}

}  // namespace agla::views
