#pragma once
/// \file
/// `BlipImageProcessor` of transformers (the same pipeline as LAVIS `blip_image_eval`), which BLIP
/// captioning and InstructBLIP checkpoints use: bicubic resize to a square, rescale, OpenAI CLIP
/// mean/std.

#include <ATen/ATen.h>

#include <cstdint>

#include "agla/io/image.hpp"

namespace agla::models {

/// RGB uint8 `[H, W, 3]` (CPU) -> bicubic resize to `size` x `size` (Pillow's filter), rescale by
/// 1/255 and normalise as transformers does -> float32 `[3, size, size]` (CPU).
inline at::Tensor blip_image_processor(const at::Tensor& image, int64_t size) {
  return io::normalize_image(io::resize_bicubic(image.to(at::kCPU).contiguous(), size, size), io::kClipMean,
                             io::kClipStd, io::PixelRescale::kTransformers);
}

}  // namespace agla::models
