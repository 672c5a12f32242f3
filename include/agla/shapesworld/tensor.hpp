#pragma once
/// \file
/// ShapesWorld scenes as ATen tensors (CPU copies): images, label maps and presence targets for
/// training and evaluation code. The rest of ShapesWorld does not need libtorch.

#include <ATen/ATen.h>

#include <vector>

#include "agla/error.hpp"
#include "agla/shapesworld/world.hpp"

namespace agla::shapesworld {

/// The image as uint8 `[H, W, 3]` (CPU, a copy).
inline at::Tensor image_tensor(const Scene& scene) {
  return at::from_blob(const_cast<std::uint8_t*>(scene.rgb.data()), {scene.height, scene.width, 3}, at::kByte).clone();
}

/// The images as float `[B, 3, H, W]` in [0, 1] (CPU); all scenes must have the same size.
inline at::Tensor image_batch(const std::vector<Scene>& scenes) {
  check<InvalidArgument>(!scenes.empty(), "agla::shapesworld::image_batch: no scenes");
  std::vector<at::Tensor> images;
  images.reserve(scenes.size());
  for (const Scene& s : scenes) {
    check<ShapeError>(s.height == scenes[0].height && s.width == scenes[0].width,
                      "agla::shapesworld::image_batch: scenes must share one size; got ", s.height, "x", s.width,
                      " and ", scenes[0].height, "x", scenes[0].width);
    images.push_back(image_tensor(s));
  }
  return at::stack(images).permute({0, 3, 1, 2}).to(at::kFloat).div_(255.0f).contiguous();
}

/// The label map as int8 `[H, W]` (object index or -1).
inline at::Tensor label_tensor(const Scene& scene) {
  return at::from_blob(const_cast<std::int8_t*>(scene.labels.data()), {scene.height, scene.width}, at::kChar).clone();
}

/// Multi-hot class presence, float `[kNumShapes]`.
inline at::Tensor presence_tensor(const Scene& scene) {
  at::Tensor out = at::zeros({kNumShapes}, at::kFloat);
  for (const SceneObject& o : scene.objects) out[o.shape] = 1.0f;
  return out;
}

/// Fraction of each patch covered by each class on a `grid x grid` grid, float
/// `[grid, grid, kNumShapes]` (dense per-patch targets; grid must divide the image size).
inline at::Tensor patch_coverage_tensor(const Scene& scene, int grid) {
  const std::vector<int> counts = patch_class_pixels(scene, grid);
  const double patch = static_cast<double>(scene.height / grid) * (scene.width / grid);
  return at::tensor(std::vector<int>(counts), at::kInt).reshape({grid, grid, kNumShapes}).to(at::kFloat).div_(patch);
}

}  // namespace agla::shapesworld
