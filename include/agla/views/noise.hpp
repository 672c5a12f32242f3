#pragma once
/// \file
/// VCD's distorted view (DAMO-NLP-SG/VCD, `vcd_utils/vcd_add_noise.py`): forward diffusion of the
/// *normalised* image tensor with a sigmoid beta schedule, `x_t = sqrt(abar_t) x_0 +
/// sqrt(1 - abar_t) eps` (docs/decoding.md). A linear schedule would leave almost pure noise at
/// step 500; this one keeps abar ~ 0.745.

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>

#include "agla/error.hpp"

namespace agla::views {

/// The diffusion coefficients of one noise step.
struct DiffusionCoefficients {
  /// `sqrt(abar_t)`, the factor of the clean image.
  double signal = 1.0;
  /// `sqrt(1 - abar_t)`, the factor of the Gaussian noise.
  double noise = 0.0;
};

/// VCD's schedule, computed in float32 on the CPU as upstream: `betas = sigmoid(linspace(-6, 6,
/// steps)) * (0.5e-2 - 1e-5) + 1e-5`, `abar = cumprod(1 - betas)`, taken at `step` (0-based).
inline DiffusionCoefficients diffusion_coefficients(int64_t step, int64_t steps = 1000) {
  check<InvalidArgument>(steps > 0 && step >= 0 && step < steps,
                         "agla::views::diffusion_coefficients: step must be in [0, ", steps, "); got ", step,
                         " (steps = ", steps, ")");
  const at::Tensor betas = at::sigmoid(at::linspace(-6, 6, steps, at::kFloat)) * (0.5e-2 - 1e-5) + 1e-5;
  const at::Tensor abar = at::cumprod(1 - betas, 0);
  return DiffusionCoefficients{at::sqrt(abar)[step].item<float>(), at::sqrt(1 - abar)[step].item<float>()};
}

/// VCD's `add_diffusion_noise`: `pixel_values` (normalised, floating point, any shape and
/// device) noised to diffusion step `step` of `steps` (default 500 of 1000, abar ~ 0.745) with
/// standard-normal noise drawn from `generator` on the input's device and dtype. Returns a new
/// tensor of the input's shape, dtype and device.
inline at::Tensor add_diffusion_noise(const at::Tensor& pixel_values, at::Generator generator, int64_t step = 500,
                                      int64_t steps = 1000) {
  check<ShapeError>(pixel_values.defined() && at::isFloatingType(pixel_values.scalar_type()),
                    "agla::views::add_diffusion_noise: pixel_values must be a floating-point tensor; got ",
                    pixel_values.defined() ? pixel_values.scalar_type() : at::kByte);
  const DiffusionCoefficients k = diffusion_coefficients(step, steps);
  const at::Tensor noise = at::randn(pixel_values.sizes(), generator, pixel_values.options());
  return pixel_values * k.signal + noise * k.noise;
}

/// VCD's view builder: the distorted copy of normalised pixel values.
struct DiffusionNoiseView {
  /// Diffusion step (VCD's `noise_step`), 0-based, below `steps`.
  int64_t step = 500;
  /// Length of the schedule.
  int64_t steps = 1000;

  /// `pixel_values` `[..., 3, S, S]` normalised -> the distorted view, same shape/dtype/device.
  at::Tensor operator()(const at::Tensor& pixel_values, at::Generator generator) const {
    return add_diffusion_noise(pixel_values, std::move(generator), step, steps);
  }
};

}  // namespace agla::views
