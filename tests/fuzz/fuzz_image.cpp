// Fuzzes the image path a service runs on an uploaded file: agla::io::decode_image (JPEG through
// libjpeg with agla's source, error and progress managers; PNG and BMP through stb), then the
// Pillow-exact resize to a size that varies with the input, the CLIP shortest-side resize, centre
// crop and normalisation. Every input must decode and process or throw agla::Error.
//
// The pixel limit is 2^20 here instead of the default 2^28: larger images are legal, but decoding
// them only costs time and memory (the decoders size their buffers from the header) and exercises
// no other code. The refusal above 2^28 pixels is tested in tests/bad_input_test.cpp.
#include <cstddef>
#include <cstdint>

#include "agla/error.hpp"
#include "agla/io/image.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > (1u << 20)) return 0;
  try {
    const at::Tensor image = agla::io::decode_image(data, size, "fuzz input", int64_t{1} << 20);
    if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != at::kByte) __builtin_trap();
    const int64_t out_h = 1 + static_cast<int64_t>(size % 37);
    const int64_t out_w = 1 + static_cast<int64_t>((size / 37) % 41);
    const at::Tensor resized = agla::io::resize_bicubic(image, out_h, out_w);
    if (resized.size(0) != out_h || resized.size(1) != out_w) __builtin_trap();
    // On the small resized image: an elongated input would otherwise ask for a legal but huge output.
    const at::Tensor shortest = agla::io::resize_shortest_side(resized, 1 + static_cast<int64_t>(size % 19));
    const at::Tensor cropped = agla::io::center_crop(shortest, 1 + static_cast<int64_t>(size % 23), 7);
    const at::Tensor square = agla::io::expand_to_square(resized, {122, 116, 104});
    const at::Tensor pixels = agla::io::normalize_image(square);
    volatile float sink = pixels.sum().item<float>() + static_cast<float>(cropped.sum().item<int64_t>());
    (void)sink;
  } catch (const agla::Error&) {
  }
  return 0;
}
