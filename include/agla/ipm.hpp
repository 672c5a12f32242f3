#pragma once
/// \file
/// The ipm layer (image-prompt matching): GradCAM relevance over an ITM model's cross-attention,
/// the adaptive mask and AGLA's augmented view, heat-map overlays.

#include "agla/ipm/gradcam.hpp"
#include "agla/ipm/heatmap.hpp"
#include "agla/ipm/mask.hpp"
#include "agla/ipm/matcher.hpp"
#include "agla/ipm/report.hpp"
