#pragma once
/// \file
/// Images as CPU `at::Tensor` uint8 `[H, W, 3]` (RGB, HWC, contiguous): decoding (JPEG through
/// libjpeg exactly as Pillow, see agla/io/jpeg.hpp; PNG and BMP through stb_image), Pillow-exact
/// bicubic resizing, CLIP/LLaVA shortest-side resize, centre crop and pad-to-square, BLIP/CLIP
/// normalisation, and PNG writing through stb_image_write. docs/images.md says where decoded
/// pixels can still differ from Pillow's.
///
/// stb linkage. This header includes only stb's declarations. Their definitions are compiled once,
/// in the package's static library agla::stb (src/stb_image.cpp: PNG and BMP decoding only;
/// src/stb_image_write.cpp), which agla::agla links. A program that compiles stb's implementation
/// itself links first, so its copy serves agla too and must then decode PNG and BMP.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <stb_image.h>
#include <stb_image_write.h>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/jpeg.hpp"
#include "agla/io/limits.hpp"

namespace agla::io {

/// BLIP's image normalisation mean (= OpenAI CLIP's), RGB, for values in [0, 1].
inline constexpr std::array<float, 3> kBlipMean{0.48145466f, 0.4578275f, 0.40821073f};
/// BLIP's image normalisation standard deviation (= OpenAI CLIP's), RGB.
inline constexpr std::array<float, 3> kBlipStd{0.26862954f, 0.26130258f, 0.27577711f};
/// CLIP's mean (LLaVA's vision tower); identical to kBlipMean.
inline constexpr std::array<float, 3> kClipMean = kBlipMean;
/// CLIP's standard deviation; identical to kBlipStd.
inline constexpr std::array<float, 3> kClipStd = kBlipStd;

/// Images with more pixels than this are refused before any pixel memory is allocated. Decoding
/// holds several bytes per pixel at the peak (the decoder's buffers -- a progressive JPEG's coefficients
/// take up to 8 -- and the RGB result), so this cap still
/// allows a few GiB; a service that knows its inputs passes a lower `max_pixels` to decode_image.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;

/// How `normalize_image` maps uint8 to [0, 1] before `(x - mean) / std` (both float32).
enum class PixelRescale {
  kTorchvision,   ///< `float32(u) / 255` in float32 (torchvision `ToTensor`; LAVIS BLIP, the BLIP fixtures)
  kTransformers,  ///< `float32(u * (1/255))` computed in float64 (transformers `rescale`; HF CLIP/LLaVA processors)
};

namespace detail {

/// Checks that `image` is a uint8 `[H, W, C]` tensor with H, W >= 1 and 1 <= C <= 4.
inline void check_hwc_uint8(const at::Tensor& image, const char* where) {
  check<ShapeError>(image.defined() && image.dim() == 3 && image.scalar_type() == at::kByte && image.size(0) > 0 &&
                        image.size(1) > 0 && image.size(2) >= 1 && image.size(2) <= 4,
                    where, ": image must be a uint8 [H, W, C] tensor with H, W >= 1 and C in 1..4; got ",
                    image.defined() ? image.sizes() : at::IntArrayRef{}, " ",
                    image.defined() ? image.scalar_type() : at::ScalarType::Undefined);
}

/// Pillow `bicubic_filter` (libImaging/Resample.c), a = -0.5.
inline double pillow_bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/// Pillow's per-output-pixel taps for one axis: first input index, tap count, 22-bit fixed-point weights.
struct ResampleTaps {
  std::vector<int64_t> first;
  std::vector<int64_t> count;
  std::vector<int32_t> weights;  // [out_size * ksize]
  int64_t ksize = 0;
};

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc` for the box [0, in_size) -> out_size.
inline ResampleTaps pillow_bicubic_taps(int64_t in_size, int64_t out_size) {
  constexpr int kPrecisionBits = 32 - 8 - 2;
  const double scale = static_cast<double>(static_cast<float>(in_size)) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;  // bicubic support 2, widened when shrinking (antialiasing)
  ResampleTaps taps;
  taps.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  taps.first.resize(static_cast<size_t>(out_size));
  taps.count.resize(static_cast<size_t>(out_size));
  taps.weights.assign(static_cast<size_t>(out_size * taps.ksize), 0);
  std::vector<double> k(static_cast<size_t>(taps.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);  // C cast truncates toward zero
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double w = pillow_bicubic((static_cast<double>(x + xmin) - center + 0.5) * ss);
      k[static_cast<size_t>(x)] = w;
      ww += w;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      double w = k[static_cast<size_t>(x)];
      if (ww != 0.0) w /= ww;
      const double fixed = w * static_cast<double>(1 << kPrecisionBits);
      taps.weights[static_cast<size_t>(xx * taps.ksize + x)] = static_cast<int32_t>(w < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    taps.first[static_cast<size_t>(xx)] = xmin;
    taps.count[static_cast<size_t>(xx)] = xmax;
  }
  return taps;
}

/// Pillow `clip8`: fixed-point accumulator -> uint8.
inline uint8_t pillow_clip8(int64_t acc) {
  constexpr int kPrecisionBits = 32 - 8 - 2;
  if (acc >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (acc <= 0) return 0;
  return static_cast<uint8_t>(acc >> kPrecisionBits);
}

/// A PNG's chunks without its empty IDAT chunks, or an empty vector when it has none (or is not a
/// PNG). stb_image 2.27 copies each IDAT into a buffer it allocates on the first non-empty one; an
/// empty IDAT before that makes it call memcpy with a null destination (undefined behaviour, even
/// for 0 bytes). Empty chunks carry no data and CRCs are per chunk, so dropping them changes
/// nothing else. The walk mirrors stb's: 8-byte signature, then length, type, data and CRC.
inline std::vector<uint8_t> png_without_empty_idat(const uint8_t* data, size_t size) {
  static constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size < 8 || std::memcmp(data, kSignature, 8) != 0) return {};
  auto be32 = [&](size_t i) {
    return (uint32_t{data[i]} << 24) | (uint32_t{data[i + 1]} << 16) | (uint32_t{data[i + 2]} << 8) | data[i + 3];
  };
  std::vector<std::pair<size_t, size_t>> empty_idat;  // [begin, end) of each empty IDAT chunk
  size_t pos = 8;
  while (pos + 8 <= size) {
    const uint32_t length = be32(pos);
    const bool idat = std::memcmp(data + pos + 4, "IDAT", 4) == 0;
    const bool iend = std::memcmp(data + pos + 4, "IEND", 4) == 0;
    if (length > size - pos - 8) break;  // truncated: stb reports it
    const size_t end = std::min(size, pos + 12 + length);
    if (idat && length == 0) empty_idat.emplace_back(pos, end);
    if (iend) break;
    pos = end;
  }
  if (empty_idat.empty()) return {};
  std::vector<uint8_t> out;
  out.reserve(size);
  size_t from = 0;
  for (const auto& [begin, end] : empty_idat) {
    out.insert(out.end(), data + from, data + begin);
    from = end;
  }
  out.insert(out.end(), data + from, data + size);
  return out;
}

/// False when `data` is a BMP whose pixel rows end early. stb reads the missing bytes as zeros;
/// Pillow refuses the file ("image file is truncated"). Like Pillow's raw decoder, the rows are
/// counted from the header's pixel-data offset, and the last row needs no padding. Only for the
/// uncompressed BMPs stb decodes, after the pixel limit (so the products below cannot overflow).
inline bool bmp_rows_complete(const uint8_t* data, size_t size) {
  if (size < 2 || data[0] != 'B' || data[1] != 'M') return true;
  auto le = [&](size_t i, size_t n) {  // bytes past the end read as 0, as stb reads them
    uint32_t v = 0;
    for (size_t k = n; k-- > 0;) v = (v << 8) | (i + k < size ? data[i + k] : 0u);
    return v;
  };
  const bool os2 = le(14, 4) == 12;  // BITMAPCOREHEADER: 16-bit sizes
  // Signed 32-bit in a BITMAPINFOHEADER (a negative height means rows stored top down).
  const int64_t width = os2 ? int64_t{le(18, 2)} : int64_t{static_cast<int32_t>(le(18, 4))};
  const int64_t height = os2 ? int64_t{le(20, 2)} : int64_t{static_cast<int32_t>(le(22, 4))};
  const int64_t bits = os2 ? le(24, 2) : le(28, 2);
  const int64_t rows = height < 0 ? -height : height;
  if (width <= 0 || rows == 0 || bits == 0) return true;  // refused elsewhere
  const int64_t stride = (width * bits + 31) / 32 * 4;
  return int64_t{le(10, 4)} + stride * (rows - 1) + (width * bits + 7) / 8 <= static_cast<int64_t>(size);
}

}  // namespace detail

/// Decodes a JPEG, PNG or BMP held in memory to RGB uint8 `[H, W, 3]` (CPU), the pixels of Pillow's
/// `Image.open(f).convert("RGB")`: JPEG through libjpeg as Pillow (detail::decode_jpeg, including
/// its refusal of truncated data); grey, grey+alpha and RGBA converted to RGB (alpha dropped),
/// 16-bit PNGs reduced to 8 bits (scaled; see docs/images.md). Dimensions are read first: zero-sized
/// images and images over `max_pixels` (at most kMaxImagePixels, 2^28) are refused before
/// allocation. Unknown, truncated or corrupt data throws agla::FormatError naming `name_for_errors`.
inline at::Tensor decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors,
                               int64_t max_pixels = kMaxImagePixels) {
  const char* where = "agla::io::decode_image";
  check<InvalidArgument>(max_pixels > 0 && max_pixels <= kMaxImagePixels, where, ": max_pixels must be in [1, 2^28]; got ",
                         max_pixels);
  check<FormatError>(data != nullptr && size > 0, where, ": ", name_for_errors, ": empty input");
  check<FormatError>(size <= static_cast<size_t>(INT_MAX), where, ": ", name_for_errors, ": ", size,
                     " bytes is larger than the decoder accepts (2 GiB)");
  const std::string limit_text = max_pixels == kMaxImagePixels ? std::string("2^28") : std::to_string(max_pixels);
  if (detail::is_jpeg(data, size)) {
    return detail::decode_jpeg(data, size, name_for_errors, max_pixels, limit_text, where);
  }
  const std::vector<uint8_t> stripped = detail::png_without_empty_idat(data, size);
  if (!stripped.empty()) {
    data = stripped.data();
    size = stripped.size();
  }
  const int len = static_cast<int>(size);
  int width = 0, height = 0, channels = 0;
  if (!stbi_info_from_memory(data, len, &width, &height, &channels)) {
    throw FormatError(agla::detail::concat(where, ": ", name_for_errors, ": not a readable JPEG, PNG or BMP image (",
                                           stbi_failure_reason(), ")"));
  }
  // stb's BMP header reader reports a top-down BMP's height as stored (negative); its decoder
  // uses the absolute value. Widened first: -INT_MIN does not fit an int.
  const int64_t rows = height < 0 ? -static_cast<int64_t>(height) : height;
  check<FormatError>(width > 0 && rows > 0, where, ": ", name_for_errors, ": zero-sized image (", width, "x", rows,
                     ")");
  check<FormatError>(static_cast<int64_t>(width) * rows <= max_pixels, where, ": ", name_for_errors, ": image of ",
                     width, "x", rows, " pixels exceeds the limit of ", limit_text, " pixels");
  check<FormatError>(detail::bmp_rows_complete(data, size), where, ": ", name_for_errors,
                     ": truncated BMP (the data ends before the last row of pixels)");
  int w = 0, h = 0, file_channels = 0;
  stbi_uc* pixels = stbi_load_from_memory(data, len, &w, &h, &file_channels, 3);
  if (pixels == nullptr) {
    throw FormatError(
        agla::detail::concat(where, ": ", name_for_errors, ": corrupt image data (", stbi_failure_reason(), ")"));
  }
  if (w != width || h != rows) {
    stbi_image_free(pixels);
    throw FormatError(agla::detail::concat(where, ": ", name_for_errors, ": header says ", width, "x", rows,
                                           " but the decoder produced ", w, "x", h));
  }
  at::Tensor out = at::empty({h, w, 3}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(out.data_ptr<uint8_t>(), pixels, static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  stbi_image_free(pixels);
  return out;
}

/// Reads and decodes an image file (JPEG, PNG, BMP) to RGB uint8 `[H, W, 3]` (CPU); see decode_image.
/// The file must be a regular file of at most `kMaxImageFileBytes` (a device or directory is refused).
inline at::Tensor read_image(const std::string& path, int64_t max_pixels = kMaxImagePixels) {
  const std::string bytes = read_file(path, kMaxImageFileBytes, "agla::io::read_image: '" + path + "'");
  return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path, max_pixels);
}

/// Resizes uint8 `[H, W, C]` (CPU) to `[out_height, out_width, C]` exactly as Pillow's 8-bit
/// `Image.resize(size, BICUBIC)` (Pillow 9.4 libImaging/Resample.c): separable cubic kernel a = -0.5,
/// support widened by the reduction factor when shrinking (antialiasing), 22-bit fixed-point
/// weights, horizontal pass first into a uint8 intermediate, then vertical.
inline at::Tensor resize_bicubic(const at::Tensor& hwc_uint8, int64_t out_height, int64_t out_width) {
  const char* where = "agla::io::resize_bicubic";
  detail::check_hwc_uint8(hwc_uint8, where);
  check<InvalidArgument>(hwc_uint8.device().is_cpu(), where, ": image must be a CPU tensor; got ", hwc_uint8.device());
  // Each side is bounded before the product is formed, so the product cannot overflow.
  check<InvalidArgument>(out_height > 0 && out_width > 0 && out_height <= kMaxImagePixels &&
                             out_width <= kMaxImagePixels && out_height * out_width <= kMaxImagePixels,
                         where, ": output size must be positive and at most 2^28 pixels; got ", out_height, "x",
                         out_width);
  const at::Tensor in = hwc_uint8.contiguous();
  const int64_t in_h = in.size(0), in_w = in.size(1), c = in.size(2);
  if (in_h == out_height && in_w == out_width) return in.clone();

  const detail::ResampleTaps horiz = detail::pillow_bicubic_taps(in_w, out_width);
  detail::ResampleTaps vert = detail::pillow_bicubic_taps(in_h, out_height);
  const bool need_horizontal = in_w != out_width;
  const bool need_vertical = in_h != out_height;
  // Rows of the input that the vertical pass reads (ImagingResampleInner's ybox_first/last).
  const int64_t row_first = vert.first.front();
  const int64_t row_last = vert.first.back() + vert.count.back();

  at::Tensor temp = in;
  if (need_horizontal) {
    for (auto& f : vert.first) f -= row_first;
    temp = at::empty({row_last - row_first, out_width, c}, in.options());
    const uint8_t* src = in.data_ptr<uint8_t>();
    uint8_t* dst = temp.data_ptr<uint8_t>();
    at::parallel_for(0, row_last - row_first, 16, [&](int64_t begin, int64_t end) {
      for (int64_t y = begin; y < end; ++y) {
        const uint8_t* row = src + (y + row_first) * in_w * c;
        for (int64_t xx = 0; xx < out_width; ++xx) {
          const int32_t* k = horiz.weights.data() + xx * horiz.ksize;
          const int64_t xmin = horiz.first[static_cast<size_t>(xx)], n = horiz.count[static_cast<size_t>(xx)];
          for (int64_t ch = 0; ch < c; ++ch) {
            int64_t acc = int64_t{1} << 21;
            for (int64_t x = 0; x < n; ++x) acc += static_cast<int64_t>(row[(x + xmin) * c + ch]) * k[x];
            dst[(y * out_width + xx) * c + ch] = detail::pillow_clip8(acc);
          }
        }
      }
    });
  }
  if (!need_vertical) return temp;
  at::Tensor out = at::empty({out_height, temp.size(1), c}, in.options());
  const uint8_t* src = temp.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t row_len = temp.size(1) * c;
  at::parallel_for(0, out_height, 16, [&](int64_t begin, int64_t end) {
    for (int64_t yy = begin; yy < end; ++yy) {
      const int32_t* k = vert.weights.data() + yy * vert.ksize;
      const int64_t ymin = vert.first[static_cast<size_t>(yy)], n = vert.count[static_cast<size_t>(yy)];
      for (int64_t i = 0; i < row_len; ++i) {
        int64_t acc = int64_t{1} << 21;
        for (int64_t y = 0; y < n; ++y) acc += static_cast<int64_t>(src[(y + ymin) * row_len + i]) * k[y];
        dst[yy * row_len + i] = detail::pillow_clip8(acc);
      }
    }
  });
  return out;
}

/// Resizes uint8 `[H, W, C]` (CPU) so that its shorter side becomes `shortest_edge`, keeping the
/// aspect ratio: transformers `get_resize_output_image_size(default_to_square=False)` (the long
/// side becomes `int(shortest_edge * long / short)`), then the Pillow bicubic of resize_bicubic.
/// This is CLIPImageProcessor's resize (LLaVA-1.5: 336).
inline at::Tensor resize_shortest_side(const at::Tensor& hwc_uint8, int64_t shortest_edge) {
  const char* where = "agla::io::resize_shortest_side";
  detail::check_hwc_uint8(hwc_uint8, where);
  // The bound keeps shortest_edge * long_side below 2^56.
  check<InvalidArgument>(shortest_edge > 0 && shortest_edge <= kMaxImagePixels, where,
                         ": shortest_edge must be in [1, 2^28]; got ", shortest_edge);
  const int64_t h = hwc_uint8.size(0), w = hwc_uint8.size(1);
  const int64_t short_side = std::min(h, w), long_side = std::max(h, w);
  if (short_side == shortest_edge) return hwc_uint8.contiguous().clone();
  const int64_t new_long =
      static_cast<int64_t>(static_cast<double>(shortest_edge * long_side) / static_cast<double>(short_side));
  return w <= h ? resize_bicubic(hwc_uint8, new_long, shortest_edge)
                : resize_bicubic(hwc_uint8, shortest_edge, new_long);
}

/// Crops the centre `[crop_height, crop_width]` of uint8 `[H, W, C]` as transformers' `center_crop`:
/// top = floor((H - crop_height) / 2), left likewise; a crop larger than the image is padded with 0.
inline at::Tensor center_crop(const at::Tensor& hwc_uint8, int64_t crop_height, int64_t crop_width) {
  const char* where = "agla::io::center_crop";
  detail::check_hwc_uint8(hwc_uint8, where);
  check<InvalidArgument>(crop_height > 0 && crop_width > 0 && crop_height <= kMaxImagePixels &&
                             crop_width <= kMaxImagePixels && crop_height * crop_width <= kMaxImagePixels,
                         where, ": crop size must be positive and at most 2^28 pixels; got ", crop_height, "x",
                         crop_width);
  const int64_t h = hwc_uint8.size(0), w = hwc_uint8.size(1);
  auto floor_half = [](int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  const int64_t top = floor_half(h - crop_height), left = floor_half(w - crop_width);
  if (top >= 0 && left >= 0) {
    return hwc_uint8.slice(0, top, top + crop_height).slice(1, left, left + crop_width).contiguous();
  }
  // transformers pads to max(crop, size) with zeros, centring the image, then crops.
  const int64_t new_h = std::max(crop_height, h), new_w = std::max(crop_width, w);
  const int64_t top_pad = (new_h - h) / 2, left_pad = (new_w - w) / 2;
  at::Tensor padded = at::zeros({new_h, new_w, hwc_uint8.size(2)}, hwc_uint8.options());
  padded.slice(0, top_pad, top_pad + h).slice(1, left_pad, left_pad + w).copy_(hwc_uint8);
  const int64_t t = top + top_pad, l = left + left_pad;
  return padded.slice(0, std::max<int64_t>(0, t), std::min(new_h, t + crop_height))
      .slice(1, std::max<int64_t>(0, l), std::min(new_w, l + crop_width))
      .contiguous();
}

/// Pads uint8 `[H, W, 3]` to a square of side max(H, W) filled with `fill` (RGB), the image placed
/// at offset floor((side - size) / 2): LLaVA's `expand2square` (image_aspect_ratio "pad"), whose fill
/// is `int(255 * mean)` of the CLIP processor, i.e. {122, 116, 104}.
inline at::Tensor expand_to_square(const at::Tensor& hwc_uint8, std::array<uint8_t, 3> fill) {
  const char* where = "agla::io::expand_to_square";
  detail::check_hwc_uint8(hwc_uint8, where);
  check<ShapeError>(hwc_uint8.size(2) == 3, where, ": image must be RGB [H, W, 3]; got ", hwc_uint8.sizes());
  const int64_t h = hwc_uint8.size(0), w = hwc_uint8.size(1);
  if (h == w) return hwc_uint8.contiguous().clone();
  const int64_t side = std::max(h, w);
  at::Tensor out = at::empty({side, side, 3}, hwc_uint8.options());
  for (int64_t ch = 0; ch < 3; ++ch) out.select(2, ch).fill_(static_cast<int64_t>(fill[static_cast<size_t>(ch)]));
  const int64_t top = (side - h) / 2, left = (side - w) / 2;
  out.slice(0, top, top + h).slice(1, left, left + w).copy_(hwc_uint8);
  return out;
}

/// uint8 `[H, W, 3]` (any device) -> float32 `[3, H, W]` on the same device, `((u / 255) - mean) / std`
/// per channel in float32 (see PixelRescale for the two published ways of computing u / 255).
inline at::Tensor normalize_image(const at::Tensor& hwc_uint8, std::array<float, 3> mean = kBlipMean,
                                  std::array<float, 3> std = kBlipStd,
                                  PixelRescale rescale = PixelRescale::kTorchvision) {
  const char* where = "agla::io::normalize_image";
  detail::check_hwc_uint8(hwc_uint8, where);
  check<ShapeError>(hwc_uint8.size(2) == 3, where, ": image must be RGB [H, W, 3]; got ", hwc_uint8.sizes());
  for (float s : std) check<InvalidArgument>(s != 0.0f && std::isfinite(s), where, ": std must be finite and nonzero");
  const auto device = hwc_uint8.device();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const at::Tensor chw = hwc_uint8.permute({2, 0, 1});
  // Divisors are device tensors, not Scalars, so that CUDA divides instead of multiplying by a
  // rounded reciprocal; every operation stays one IEEE float32 operation like the references.
  at::Tensor x = rescale == PixelRescale::kTorchvision ? chw.to(at::kFloat).div(at::full({1, 1, 1}, 255.0f, f32))
                                                       : chw.to(at::kDouble).mul(1.0 / 255.0).to(at::kFloat);
  const at::Tensor m = at::tensor(std::vector<float>(mean.begin(), mean.end())).view({3, 1, 1}).to(device);
  const at::Tensor s = at::tensor(std::vector<float>(std.begin(), std.end())).view({3, 1, 1}).to(device);
  return x.sub(m).div(s).contiguous();
}

/// Writes uint8 `[H, W, C]` (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; any device) as a PNG file.
inline void write_png(const std::string& path, const at::Tensor& hwc_uint8) {
  const char* where = "agla::io::write_png";
  detail::check_hwc_uint8(hwc_uint8, where);
  const at::Tensor img = hwc_uint8.to(at::kCPU).contiguous();
  check<InvalidArgument>(
      img.size(0) <= INT_MAX / 4 && img.size(1) <= INT_MAX / 4 && img.size(0) * img.size(1) <= kMaxImagePixels, where,
      ": image of ", img.size(1), "x", img.size(0), " pixels is too large to write");
  std::string bytes;
  auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  const int w = static_cast<int>(img.size(1)), h = static_cast<int>(img.size(0)), c = static_cast<int>(img.size(2));
  check<FormatError>(stbi_write_png_to_func(append, &bytes, w, h, c, img.data_ptr<uint8_t>(), w * c) != 0, where,
                     ": PNG encoding failed for '", path, "'");
  std::ofstream out(path, std::ios::binary);
  check<FormatError>(out.good(), where, ": cannot create '", path, "'");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  check<FormatError>(out.good(), where, ": failed writing '", path, "'");
}

}  // namespace agla::io
