#pragma once
/// \file
/// LLaVA-1.5 image preprocessing. The llava-hf checkpoints (and the AGLA reference, which calls the
/// CLIP image processor directly) use `CLIPImageProcessor`: resize the shortest side to the tower's
/// input size (336) with Pillow bicubic, centre-crop a square, rescale by 1/255, normalise with
/// CLIP's mean/std. The original LLaVA-1.5 evaluation scripts (`image_aspect_ratio = "pad"`) first
/// pad the image to a square filled with the mean colour (`expand2square`), so nothing is cropped
/// away; `AspectMode::PadToSquare` offers that.

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/image.hpp"

namespace agla::llava {

/// How a non-square image becomes square.
enum class AspectMode {
  CenterCrop,   ///< `CLIPImageProcessor`: shortest side to the input size, then centre crop (llava-hf, AGLA reference)
  PadToSquare,  ///< original LLaVA `expand2square`: pad with the CLIP mean colour first, then resize
};

/// The fill colour of `expand2square`: `int(255 * mean)` per channel of CLIP's mean, {122, 116, 104}.
inline std::array<uint8_t, 3> clip_mean_fill() {
  std::array<uint8_t, 3> fill{};
  for (size_t c = 0; c < 3; ++c) fill[c] = static_cast<uint8_t>(std::floor(255.0 * io::kClipMean[c]));
  return fill;
}

/// RGB uint8 `[H, W, 3]` (CPU) -> float32 `[3, size, size]` (CPU), the vision tower's input for one
/// image; `size` is `vision_config.image_size` (336 for LLaVA-1.5).
inline at::Tensor preprocess_image(const at::Tensor& hwc_uint8, int64_t size,
                                   AspectMode mode = AspectMode::CenterCrop) {
  check<InvalidArgument>(size > 0, "agla::llava::preprocess_image: size must be positive; got ", size);
  at::Tensor image = hwc_uint8;
  if (mode == AspectMode::PadToSquare) image = io::expand_to_square(image, clip_mean_fill());
  image = io::center_crop(io::resize_shortest_side(image, size), size, size);
  return io::normalize_image(image, io::kClipMean, io::kClipStd, io::PixelRescale::kTransformers);
}

/// RGB uint8 images `[H_i, W_i, 3]` (CPU) -> the vision tower's batch, float32 `[N, 3, size, size]` (CPU).
inline at::Tensor preprocess_images(const std::vector<at::Tensor>& images, int64_t size,
                                    AspectMode mode = AspectMode::CenterCrop) {
  check<InvalidArgument>(!images.empty(), "agla::llava::preprocess_images: no images given");
  std::vector<at::Tensor> out;
  out.reserve(images.size());
  for (const auto& image : images) out.push_back(preprocess_image(image, size, mode));
  return at::stack(out);
}

}  // namespace agla::llava
