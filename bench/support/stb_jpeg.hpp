// stb_image's JPEG decoder, kept for comparison only: agla decodes JPEG with libjpeg as Pillow does,
// and its agla::stb library is built without stb's JPEG code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace agla::bench {

/// Decodes a JPEG with stb_image to RGB (row-major, 3 bytes per pixel); empty on failure.
std::vector<uint8_t> stb_decode_jpeg(const uint8_t* data, size_t size, int* width, int* height);

}  // namespace agla::bench
