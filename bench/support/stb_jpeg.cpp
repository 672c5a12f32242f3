// A private copy of stb_image (internal linkage, JPEG only) in its own translation unit, so that it
// cannot meet the declarations agla/io/image.hpp uses or the agla::stb library.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#include "support/stb_jpeg.hpp"

#include <stb_image.h>

#include <climits>

namespace agla::bench {

std::vector<uint8_t> stb_decode_jpeg(const uint8_t* data, size_t size, int* width, int* height) {
  int channels = 0;
  if (size > static_cast<size_t>(INT_MAX)) return {};
  stbi_uc* pixels = stbi_load_from_memory(data, static_cast<int>(size), width, height, &channels, 3);
  if (pixels == nullptr) return {};
  std::vector<uint8_t> out(pixels, pixels + static_cast<size_t>(*width) * static_cast<size_t>(*height) * 3);
  stbi_image_free(pixels);
  return out;
}

}  // namespace agla::bench
