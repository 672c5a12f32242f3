// Image I/O: JPEG decoding as Pillow's (tests/data/image_jpeg), PNG/BMP decoding (stb), Pillow-exact
// bicubic resize (fixtures of tests/data/augment and tests/data/blip, references of
// tests/data/image_resize), BLIP normalisation, PNG writing, bad files.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "agla/io/image.hpp"
#include "agla/io/npy.hpp"
#include "agla/io/safetensors.hpp"

namespace {

const std::string kData = AGLA_TEST_DATA_DIR;

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void expect_equal_images(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), at::kByte) << what;
  const int64_t differing = got.ne(want).sum().item<int64_t>();
  EXPECT_EQ(differing, 0) << what << ": max abs diff "
                          << (got.to(at::kInt) - want.to(at::kInt)).abs().max().item<int>();
}

/// PNG signature + IHDR chunk (CRC not checked by stb) for the given dimensions, RGB 8-bit.
std::vector<uint8_t> png_header(uint32_t width, uint32_t height) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (uint32_t v : {width, height})
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(v >> shift));
  for (uint8_t v : {8, 2, 0, 0, 0, 0, 0, 0, 0}) b.push_back(v);
  return b;
}

/// Expects `run` to throw agla::FormatError with `expected` in its message.
template <typename Run>
void expect_format_error(Run run, const std::string& expected) {
  try {
    run();
    ADD_FAILURE() << "no error; expected one saying: " << expected;
  } catch (const agla::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "agla_io_image_" + name; }

}  // namespace

TEST(ImageTest, ResizeMatchesPillowOnAstronaut384) {
  const at::Tensor raw = agla::io::read_image(kData + "/augment/image/astronaut.png");
  ASSERT_EQ(raw.sizes(), (std::vector<int64_t>{512, 512, 3}));
  ASSERT_TRUE(raw.is_contiguous());
  const at::Tensor want = agla::io::read_npy(kData + "/augment/image/astronaut.resized384.npy");
  expect_equal_images(agla::io::resize_bicubic(raw, 384, 384), want, "astronaut 384");
}

TEST(ImageTest, ResizeMatchesBlipFixtureImages) {
  const at::Tensor raw = agla::io::read_image(kData + "/augment/image/astronaut.png");
  const at::Tensor small = agla::io::read_image(kData + "/blip/images/astronaut_32.png");
  expect_equal_images(agla::io::resize_bicubic(raw, 32, 32), small, "astronaut 32");
  const agla::io::StateDict fixtures = agla::io::read_safetensors(kData + "/blip/fixtures.safetensors");
  const at::Tensor images = fixtures.at("inputs.images_uint8");
  expect_equal_images(small, images[0], "astronaut_32.png vs inputs.images_uint8[0]");
  expect_equal_images(agla::io::read_image(kData + "/blip/images/chelsea_32.png"), images[1],
                      "chelsea_32.png vs inputs.images_uint8[1]");
}

TEST(ImageTest, NormalizeMatchesBlipPixelValues) {
  const agla::io::StateDict fixtures = agla::io::read_safetensors(kData + "/blip/fixtures.safetensors");
  const at::Tensor want = fixtures.at("inputs.pixel_values");
  const char* files[] = {"/blip/images/astronaut_32.png", "/blip/images/chelsea_32.png"};
  for (int i = 0; i < 2; ++i) {
    const at::Tensor got = agla::io::normalize_image(agla::io::read_image(kData + files[i]));
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{3, 32, 32}));
    ASSERT_EQ(got.scalar_type(), at::kFloat);
    const double diff = (got - want[i]).abs().max().item<double>();
    EXPECT_LE(diff, 1e-5) << files[i];
  }
  const at::Tensor img = agla::io::read_image(kData + files[0]);
  const at::Tensor hf =
      agla::io::normalize_image(img, agla::io::kClipMean, agla::io::kClipStd, agla::io::PixelRescale::kTransformers);
  EXPECT_LE((hf - want[0]).abs().max().item<double>(), 1e-5);
}

TEST(ImageTest, NormalizeOnCudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const at::Tensor img = agla::io::read_image(kData + "/blip/images/chelsea_32.png");
  const at::Tensor cpu = agla::io::normalize_image(img);
  const at::Tensor cuda = agla::io::normalize_image(img.to(at::kCUDA));
  EXPECT_TRUE(cuda.is_cuda());
  EXPECT_LE((cuda.cpu() - cpu).abs().max().item<double>(), 1e-6);
}

TEST(ImageTest, ResizeMatchesPillowUpDownAndMixed) {
  const at::Tensor input = agla::io::read_npy(kData + "/image_resize/input.npy");
  const std::pair<int64_t, int64_t> sizes[] = {{50, 61}, {11, 7}, {23, 10}, {40, 37}, {1, 1}, {5, 100}};
  for (const auto& [h, w] : sizes) {
    const std::string name = "resized_" + std::to_string(h) + "x" + std::to_string(w);
    expect_equal_images(agla::io::resize_bicubic(input, h, w),
                        agla::io::read_npy(kData + "/image_resize/" + name + ".npy"), name);
  }
  expect_equal_images(agla::io::resize_bicubic(input, 23, 37), input, "identity");
  // A non-contiguous view is read through its strides.
  const at::Tensor flipped = input.flip({1}).flip({1});
  expect_equal_images(agla::io::resize_bicubic(input.permute({1, 0, 2}).permute({1, 0, 2}), 11, 7),
                      agla::io::resize_bicubic(flipped, 11, 7), "view");
}

TEST(ImageTest, ShortestSideResizeAndCenterCropMatchClipProcessor) {
  const at::Tensor input = agla::io::read_npy(kData + "/image_resize/clip_input.npy");
  const at::Tensor resized = agla::io::resize_shortest_side(input, 32);
  EXPECT_EQ(resized.sizes(), (std::vector<int64_t>{42, 32, 3}));
  expect_equal_images(agla::io::center_crop(resized, 32, 32), agla::io::read_npy(kData + "/image_resize/clip_32.npy"),
                      "clip 32");
  const at::Tensor wide = agla::io::resize_shortest_side(input.permute({1, 0, 2}), 32);
  EXPECT_EQ(wide.sizes(), (std::vector<int64_t>{32, 42, 3}));
}

TEST(ImageTest, CenterCropPadsSmallImagesWithZeros) {
  const at::Tensor img = at::full({2, 3, 3}, 7, at::kByte);
  const at::Tensor out = agla::io::center_crop(img, 4, 5);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{4, 5, 3}));
  EXPECT_EQ(out.sum().item<int64_t>(), 7 * 2 * 3 * 3);
  EXPECT_EQ(out[1][1][0].item<int>(), 7);
  EXPECT_EQ(out[0][0][0].item<int>(), 0);
  EXPECT_EQ(out[3][4][2].item<int>(), 0);
  EXPECT_EQ(agla::io::center_crop(img, 1, 1)[0][0][0].item<int>(), 7);
}

TEST(ImageTest, ExpandToSquareCentresTheImage) {
  const at::Tensor img = at::full({2, 5, 3}, 200, at::kByte);
  const at::Tensor out = agla::io::expand_to_square(img, {122, 116, 104});
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{5, 5, 3}));
  EXPECT_EQ(out[0][0][0].item<int>(), 122);
  EXPECT_EQ(out[0][0][2].item<int>(), 104);
  EXPECT_EQ(out[1][0][1].item<int>(), 200);  // rows 1..2 hold the image: offset (5 - 2) // 2
  EXPECT_EQ(out[2][4][2].item<int>(), 200);
  EXPECT_EQ(out[3][0][0].item<int>(), 122);
}

TEST(ImageTest, DecodesBmpJpegGreyAndRgbaLikePillow) {
  const std::string dir = kData + "/image_resize/";
  const at::Tensor input = agla::io::read_npy(dir + "input.npy");
  expect_equal_images(agla::io::read_image(dir + "input.bmp"), input, "bmp");
  expect_equal_images(agla::io::read_image(dir + "grey.png"), agla::io::read_npy(dir + "grey_as_rgb.npy"), "grey");
  expect_equal_images(agla::io::read_image(dir + "rgba.png"), agla::io::read_npy(dir + "rgba_as_rgb.npy"), "rgba");
  expect_equal_images(agla::io::read_image(dir + "input.jpg"), agla::io::read_npy(dir + "input_jpg_pillow.npy"), "jpg");
}

// Every JPEG of tests/data/image_jpeg decodes to exactly Pillow's pixels, or is refused where Pillow
// refuses it (cases.json, written with Pillow 9.4 / libjpeg-turbo 2.1.5 by make_jpeg_cases.py).
TEST(ImageTest, JpegDecodesExactlyAsPillow) {
  const std::string dir = kData + "/image_jpeg/";
  std::ifstream in(dir + "cases.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json cases = nlohmann::json::parse(in).at("cases");
  int decoded = 0, refused = 0;
  for (const nlohmann::json& c : cases) {
    const std::string file = c.at("file");
    const std::string what = file + " (" + c.at("kind").get<std::string>() + ")";
    if (c.at("pillow") == "ok") {
      expect_equal_images(agla::io::read_image(dir + file), agla::io::read_npy(dir + c.at("pixels").get<std::string>()),
                          what);
      ++decoded;
      continue;
    }
    // Pillow says "image file is truncated" / "Truncated File Read" or "broken data stream".
    const std::string pillow = c.at("message");
    const bool truncated = pillow.find("runcated") != std::string::npos;
    try {
      agla::io::read_image(dir + file);
      ADD_FAILURE() << what << " decoded; Pillow: " << pillow;
    } catch (const agla::FormatError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(file), std::string::npos) << message;
      EXPECT_NE(message.find(truncated ? "truncated JPEG" : "corrupt JPEG data"), std::string::npos)
          << what << ": " << message << "; Pillow: " << pillow;
      ++refused;
    }
  }
  EXPECT_EQ(decoded, 20);
  EXPECT_EQ(refused, 5);
}

// Refusals that come from the header, before any pixel memory: the caller's pixel limit (also for a
// header cut short after its frame), component counts Pillow does not read; and the scan limit.
TEST(ImageTest, JpegRefusals) {
  const std::string dir = kData + "/image_jpeg/";
  const std::string photo = dir + "photo_q75.jpg";  // 160 x 120
  EXPECT_EQ(agla::io::read_image(photo, 160 * 120).size(1), 160);
  expect_format_error([&] { agla::io::read_image(photo, 160 * 120 - 1); },
                      "photo_q75.jpg: image of 160x120 pixels exceeds the limit of 19199 pixels");
  const std::vector<uint8_t> cut = file_bytes(dir + "cut_header.jpg");
  expect_format_error([&] { agla::io::decode_image(cut.data(), cut.size(), "cut.jpg", 100); },
                      "cut.jpg: image of 77x53 pixels exceeds the limit of 100 pixels");

  // SOI, a frame of two components, a scan header, EOI: a readable header Pillow refuses too.
  const std::vector<uint8_t> two = {0xFF, 0xD8, 0xFF, 0xC0, 0, 14, 8, 0, 8, 0, 8, 2, 1, 0x11, 0, 2, 0x11, 0,
                                    0xFF, 0xDA, 0, 10, 2, 1, 0, 2, 0, 0, 63, 0, 0xFF, 0xD9};
  expect_format_error([&] { agla::io::decode_image(two.data(), two.size(), "two.jpg"); },
                      "two.jpg: JPEG with 2 components");

  // The last scan of a progressive file repeated: libjpeg warns and decodes 50 repeats; past 1000
  // scans the file is refused (each scan can cost a pass over the whole image).
  const std::vector<uint8_t> progressive = file_bytes(dir + "progressive_420_q75.jpg");
  size_t last_scan = 0;
  for (size_t i = 0; i + 1 < progressive.size(); ++i) {
    if (progressive[i] == 0xFF && progressive[i + 1] == 0xDA) last_scan = i;
  }
  ASSERT_GT(last_scan, 0u);
  auto repeated = [&](int times) {
    std::vector<uint8_t> out(progressive.begin(), progressive.end() - 2);
    for (int i = 0; i < times; ++i) out.insert(out.end(), progressive.begin() + last_scan, progressive.end() - 2);
    out.insert(out.end(), {0xFF, 0xD9});
    return out;
  };
  const std::vector<uint8_t> some = repeated(50);
  EXPECT_EQ(agla::io::decode_image(some.data(), some.size(), "some.jpg").size(0), 53);
  const std::vector<uint8_t> many = repeated(agla::io::detail::kMaxJpegScans);
  expect_format_error([&] { agla::io::decode_image(many.data(), many.size(), "many.jpg"); },
                      "many.jpg: progressive JPEG with more than 1000 scans");
}

TEST(ImageTest, WritePngRoundTrips) {
  const at::Tensor input = agla::io::read_npy(kData + "/image_resize/input.npy");
  const std::string path = temp_path("roundtrip.png");
  agla::io::write_png(path, input);
  expect_equal_images(agla::io::read_image(path), input, "rgb round trip");
  agla::io::write_png(path, input.select(2, 1).unsqueeze(2));
  expect_equal_images(agla::io::read_image(path), input.select(2, 1).unsqueeze(2).expand({23, 37, 3}), "grey");
  std::remove(path.c_str());
  EXPECT_THROW(agla::io::write_png("/nonexistent-dir/x.png", input), agla::FormatError);
  EXPECT_THROW(agla::io::write_png(path, input.to(at::kFloat)), agla::ShapeError);
}

TEST(ImageTest, BadFilesThrowFormatError) {
  EXPECT_THROW(agla::io::read_image(kData + "/image_resize/no-such-file.png"), agla::FormatError);
  EXPECT_THROW(agla::io::read_image(kData + "/tokenizer/cases.json"), agla::FormatError);
  const std::vector<uint8_t> garbage = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  EXPECT_THROW(agla::io::decode_image(garbage.data(), garbage.size(), "garbage"), agla::FormatError);
  EXPECT_THROW(agla::io::decode_image(garbage.data(), 0, "empty"), agla::FormatError);

  std::vector<uint8_t> png = file_bytes(kData + "/blip/images/astronaut_32.png");
  png.resize(png.size() / 2);
  try {
    agla::io::decode_image(png.data(), png.size(), "truncated.png");
    ADD_FAILURE() << "truncated PNG decoded";
  } catch (const agla::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated.png"), std::string::npos) << e.what();
  }
  // A corrupted compressed stream (bytes flipped in the middle of IDAT).
  std::vector<uint8_t> corrupt = file_bytes(kData + "/blip/images/astronaut_32.png");
  for (size_t i = 60; i < corrupt.size() - 20; i += 7) corrupt[i] ^= 0x5A;
  EXPECT_THROW(agla::io::decode_image(corrupt.data(), corrupt.size(), "corrupt.png"), agla::FormatError);

  // A JPEG Huffman table with more than 256 codes (libjpeg refuses it; stb 2.27 wrote past its tables).
  std::vector<uint8_t> jpg = file_bytes(kData + "/image_resize/input.jpg");
  size_t dht = 0;
  while (dht + 1 < jpg.size() && !(jpg[dht] == 0xFF && jpg[dht + 1] == 0xC4)) ++dht;
  ASSERT_LT(dht + 21, jpg.size());
  for (size_t i = 0; i < 16; ++i) jpg[dht + 5 + i] = 0xFF;
  try {
    agla::io::decode_image(jpg.data(), jpg.size(), "dht.jpg");
    ADD_FAILURE() << "oversized Huffman table accepted";
  } catch (const agla::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("Huffman"), std::string::npos) << e.what();
  }

  const std::vector<uint8_t> zero = png_header(0, 10);
  EXPECT_THROW(agla::io::decode_image(zero.data(), zero.size(), "zero.png"), agla::FormatError);
  // 17000 x 17000 passes stb's own PNG limits (2^30 bytes) but exceeds 2^28 pixels: refused from the header.
  const std::vector<uint8_t> huge = png_header(17000, 17000);
  try {
    agla::io::decode_image(huge.data(), huge.size(), "huge.png");
    ADD_FAILURE() << "huge PNG header accepted";
  } catch (const agla::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("2^28"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("huge.png"), std::string::npos) << e.what();
  }
}

// stb reads a BMP's missing rows as zeros; Pillow refuses the file unless only the last row's
// padding is missing (its raw decoder reads rows without their trailing padding).
TEST(ImageTest, TruncatedBmpIsRefusedAsByPillow) {
  const std::vector<uint8_t> bmp = file_bytes(kData + "/image_resize/input.bmp");  // 37 x 23, rows of 111 + 1 bytes
  const at::Tensor want = agla::io::read_npy(kData + "/image_resize/input.npy");
  expect_equal_images(agla::io::decode_image(bmp.data(), bmp.size() - 1, "padding.bmp"), want, "without padding");
  for (const size_t cut : {size_t{2}, size_t{112}, bmp.size() / 2}) {
    expect_format_error([&] { agla::io::decode_image(bmp.data(), bmp.size() - cut, "cut.bmp"); },
                        "cut.bmp: truncated BMP");
  }
  // The same rows declared top down (height -23): the image flipped, the same truncation rule.
  std::vector<uint8_t> top_down = bmp;
  for (size_t i = 0; i < 4; ++i) top_down[22 + i] = static_cast<uint8_t>(static_cast<uint32_t>(-23) >> (8 * i));
  expect_equal_images(agla::io::decode_image(top_down.data(), top_down.size(), "top_down.bmp"), want.flip(0),
                      "top down");
  expect_format_error([&] { agla::io::decode_image(top_down.data(), top_down.size() - 2, "cut_top_down.bmp"); },
                      "cut_top_down.bmp: truncated BMP");
  // fuzz_image's input: 2x140032 pixels in 2.7 KB, which stb decoded (slowly, under sanitizers) from zeros.
  expect_format_error([] { agla::io::read_image(std::string(AGLA_SOURCE_DIR) +
                                                "/tests/fuzz/regressions/image/bmp_truncated_2x140032.bmp"); },
                      "bmp_truncated_2x140032.bmp: truncated BMP");
}

// A caller's lower pixel limit refuses from the header too; the limit itself is validated.
TEST(ImageTest, CallerPixelLimit) {
  const std::string path = kData + "/blip/images/astronaut_32.png";  // 32 x 32
  EXPECT_EQ(agla::io::read_image(path, 32 * 32).size(0), 32);
  expect_format_error([&] { agla::io::read_image(path, 32 * 32 - 1); },
                      "image of 32x32 pixels exceeds the limit of 1023 pixels");
  EXPECT_THROW(agla::io::read_image(path, 0), agla::InvalidArgument);
  EXPECT_THROW(agla::io::read_image(path, agla::io::kMaxImagePixels + 1), agla::InvalidArgument);
}

// Empty IDAT chunks are legal PNG; stb 2.27 would memcpy into a null buffer on one that comes
// before the image data (found by fuzz_image; the input is kept in tests/fuzz/regressions/image).
TEST(ImageTest, PngWithEmptyIdatChunksDecodesLikeWithout) {
  const std::vector<uint8_t> png = file_bytes(kData + "/blip/images/astronaut_32.png");
  const at::Tensor want = agla::io::decode_image(png.data(), png.size(), "astronaut_32.png");
  // Chunk offsets: signature (8), then length / type / data / CRC; insert before and after IDAT.
  std::vector<size_t> idat_begin;
  for (size_t pos = 8; pos + 8 <= png.size();) {
    const uint32_t length = (uint32_t{png[pos]} << 24) | (uint32_t{png[pos + 1]} << 16) |
                            (uint32_t{png[pos + 2]} << 8) | png[pos + 3];
    if (std::string(png.begin() + pos + 4, png.begin() + pos + 8) == "IDAT") {
      idat_begin.push_back(pos);
      idat_begin.push_back(pos + 12 + length);
    }
    pos += 12 + length;
  }
  ASSERT_EQ(idat_begin.size(), 2u);
  const std::vector<uint8_t> empty_idat = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
  std::vector<uint8_t> with_empty(png.begin(), png.begin() + idat_begin[0]);
  with_empty.insert(with_empty.end(), empty_idat.begin(), empty_idat.end());
  with_empty.insert(with_empty.end(), empty_idat.begin(), empty_idat.end());
  with_empty.insert(with_empty.end(), png.begin() + idat_begin[0], png.begin() + idat_begin[1]);
  with_empty.insert(with_empty.end(), empty_idat.begin(), empty_idat.end());
  with_empty.insert(with_empty.end(), png.begin() + idat_begin[1], png.end());
  expect_equal_images(agla::io::decode_image(with_empty.data(), with_empty.size(), "empty-idat.png"), want,
                      "PNG with empty IDAT chunks");

  // The fuzzer's input: a 2x2 RGBA PNG whose only IDAT is empty and whose data sits in a bogus chunk.
  const std::vector<uint8_t> found = file_bytes(std::string(AGLA_SOURCE_DIR) +
                                                "/tests/fuzz/regressions/image/png_empty_idat_first.png");
  ASSERT_FALSE(found.empty());
  EXPECT_THROW(agla::io::decode_image(found.data(), found.size(), "png_empty_idat_first.png"), agla::FormatError);
}

TEST(ImageTest, BadArgumentsThrow) {
  const at::Tensor img = at::zeros({4, 4, 3}, at::kByte);
  EXPECT_THROW(agla::io::resize_bicubic(img, 0, 4), agla::InvalidArgument);
  EXPECT_THROW(agla::io::resize_bicubic(img, 1 << 15, 1 << 14), agla::InvalidArgument);
  EXPECT_THROW(agla::io::resize_bicubic(at::zeros({4, 4}, at::kByte), 2, 2), agla::ShapeError);
  EXPECT_THROW(agla::io::resize_bicubic(at::zeros({4, 4, 3}, at::kFloat), 2, 2), agla::ShapeError);
  EXPECT_THROW(agla::io::normalize_image(at::zeros({4, 4, 4}, at::kByte)), agla::ShapeError);
  EXPECT_THROW(agla::io::center_crop(img, 0, 2), agla::InvalidArgument);
  EXPECT_THROW(agla::io::resize_shortest_side(img, -1), agla::InvalidArgument);
}

TEST(ImageTest, DevicesDirectoriesAndOversizedFilesAreRefusedBeforeReading) {
  // /dev/zero would never end; a directory is no image; both are refused by name before a read.
  for (const std::string& path : std::vector<std::string>{"/dev/zero", AGLA_TEST_DATA_DIR}) {
    try {
      agla::io::read_image(path);
      ADD_FAILURE() << path << ": no FormatError";
    } catch (const agla::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(agla::io::read_image(std::string(AGLA_TEST_DATA_DIR) + "/no-such-image.png"), agla::FormatError);
}
