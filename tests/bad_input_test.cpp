// The bad-input matrix: every malformed file, config, image, prompt, logits tensor and option a
// long-running service may be handed is refused with the documented agla::Error subclass and a
// message naming what was wrong and what was expected -- never a crash, never another exception
// type. Each matrix runs twice; the second run must leave no file descriptor open and no mapping
// of a refused file behind (heap leaks are LeakSanitizer's job in the sanitizer build).
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <typeinfo>
#include <vector>

#include "agla/decode.hpp"
#include "agla/io/checkpoint.hpp"
#include "agla/io/image.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/ipm/matcher.hpp"
#include "agla/models/blip/captioner.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/blip/itm.hpp"
#include "agla/text/wordpiece.hpp"
#include "agla/models/llava/config.hpp"
#include "support/bytes.hpp"

namespace {

using agla::test::crc32;

const std::string kData = AGLA_TEST_DATA_DIR;
const float kInf = std::numeric_limits<float>::infinity();

/// One row of the matrix: what to run, which agla::Error subclass it must throw, and fragments
/// its message must contain.
struct BadInput {
  std::string name;
  std::function<void()> run;
  std::function<bool(const agla::Error&)> has_type;
  std::string type_name;
  std::vector<std::string> fragments;
};

template <typename ErrorType>
BadInput expect(std::string name, std::function<void()> run, std::vector<std::string> fragments) {
  return {std::move(name), std::move(run),
          [](const agla::Error& e) { return dynamic_cast<const ErrorType*>(&e) != nullptr; }, typeid(ErrorType).name(),
          std::move(fragments)};
}

/// Open file descriptors and the mappings of files under `prefix` (in /proc/self/maps).
struct Resources {
  size_t fds = 0;
  std::vector<std::string> mapped;
};

Resources resources(const std::string& prefix) {
  Resources r;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++r.fds;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find(prefix) != std::string::npos) r.mapped.push_back(line);
  }
  return r;
}

// Per process: ctest runs the cases of this file as parallel processes, each cleaning up its own.
std::string temp_prefix() { return ::testing::TempDir() + "agla_bad_input_" + std::to_string(getpid()) + "_"; }
std::string temp_path(const std::string& name) { return temp_prefix() + name; }

std::string write_bytes(const std::string& name, const std::string& bytes) {
  const std::string path = temp_path(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string le64(uint64_t v) { return agla::test::le(v, 8); }

/// A safetensors file: length field `length` (default: the header's size), header, data.
std::string safetensors(const std::string& name, const std::string& header, const std::string& data,
                        std::optional<uint64_t> length = std::nullopt) {
  return write_bytes(name, le64(length.value_or(header.size())) + header + data);
}

void run_case(const BadInput& c) {
  try {
    c.run();
    ADD_FAILURE() << c.name << ": no exception; expected " << c.type_name;
  } catch (const agla::Error& e) {
    EXPECT_TRUE(c.has_type(e)) << c.name << ": expected " << c.type_name << ", got " << typeid(e).name() << ": "
                               << e.what();
    const std::string message = e.what();
    for (const std::string& fragment : c.fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos) << c.name << ": '" << fragment << "' not in: " << message;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << c.name << ": threw " << typeid(e).name() << " instead of an agla::Error: " << e.what();
  }
}

/// Runs every case, then all of them again and checks that the second pass released what it took.
void run_matrix(const std::vector<BadInput>& cases) {
  for (const BadInput& c : cases) run_case(c);
  const Resources before = resources(temp_prefix());
  for (const BadInput& c : cases) {
    try {
      c.run();
    } catch (const agla::Error&) {
    }
  }
  const Resources after = resources(temp_prefix());
  EXPECT_EQ(after.fds, before.fds) << "file descriptors leaked by refused inputs";
  EXPECT_TRUE(after.mapped.empty()) << "a refused file stays mapped: " << after.mapped.front();
}

// --- images ----------------------------------------------------------------------------------

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string png_chunk(const std::string& kind, const std::string& body) {
  return be32(static_cast<uint32_t>(body.size())) + kind + body + be32(crc32(kind + body));
}

/// A PNG signature and IHDR for an 8-bit RGB image of the given size, with no pixel data.
std::string png_header_only(uint32_t width, uint32_t height) {
  const std::string ihdr = be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) + png_chunk("IEND", "");
}

/// A baseline JPEG header (SOI, SOF0 with three components) claiming `width` x `height`.
std::string jpeg_header_only(uint16_t width, uint16_t height) {
  std::string sof = {'\xFF', '\xC0', 0, 17, 8};
  sof += {static_cast<char>(height >> 8), static_cast<char>(height), static_cast<char>(width >> 8),
          static_cast<char>(width), 3};
  sof += std::string("\x01\x11\x00\x02\x11\x00\x03\x11\x00", 9);
  return std::string("\xFF\xD8", 2) + sof + std::string("\xFF\xD9", 2);
}

/// A 24-bit BMP header (no pixels) claiming `width` x `height`.
std::string bmp_header_only(int32_t width, int32_t height) {
  auto le32 = [](uint32_t v) { return le64(v).substr(0, 4); };
  auto le16 = [](uint16_t v) { return le64(v).substr(0, 2); };
  return "BM" + le32(54) + le32(0) + le32(54) + le32(40) + le32(static_cast<uint32_t>(width)) +
         le32(static_cast<uint32_t>(height)) + le16(1) + le16(24) + le32(0) + le32(0) + le32(2835) + le32(2835) +
         le32(0) + le32(0);
}

at::Tensor decode(const std::string& bytes, const std::string& name) {
  return agla::io::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
}

// --- models ----------------------------------------------------------------------------------

const agla::blip::BlipItm& fixture_itm() {
  static const agla::blip::BlipItm model = agla::blip::BlipItm::load(kData + "/blip/itm");
  return model;
}

/// A copy of the fixture ITM directory whose weights went through `edit`.
std::string edited_itm_dir(const std::string& name, const std::function<void(agla::io::StateDict&)>& edit) {
  const std::string dir = temp_path(name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kData + "/blip/itm/config.json", dir + "/config.json");
  std::filesystem::copy_file(kData + "/blip/itm/vocab.txt", dir + "/vocab.txt");
  agla::io::StateDict weights;
  for (auto& [key, value] : agla::io::read_safetensors(kData + "/blip/itm/model.safetensors")) {
    weights.emplace(key, value.clone());
  }
  edit(weights);
  agla::io::write_safetensors(dir + "/model.safetensors", weights);
  return dir;
}

/// The fixture ITM config.json with `edit` applied to its JSON.
nlohmann::json blip_config(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json json = agla::io::read_json_file(kData + "/blip/itm/config.json");
  edit(json);
  return json;
}

nlohmann::json llava_config(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json json = agla::io::read_json_file(kData + "/llava/tiny_t/config.json");
  edit(json);
  return json;
}

/// An LVLM functor over fixed logits, in the plain form.
struct FixedLogits {
  at::Tensor original, augmented;
  at::Tensor operator()(const at::Tensor& /*step_tokens*/, agla::View view) const {
    return view == agla::View::Original ? original : augmented;
  }
};

/// An LVLM functor in the batched form that returns `rows` rows.
struct BatchedRows {
  int64_t rows = 0;
  at::Tensor operator()(const at::Tensor& /*step_tokens*/, agla::BothViews) const { return at::zeros({rows, 8}); }
};

/// Removes the files and directories the cases wrote.
class BadInputTest : public ::testing::Test {
 protected:
  void TearDown() override {
    const std::string name = std::filesystem::path(temp_prefix()).filename().string();
    for (const auto& entry : std::filesystem::directory_iterator(::testing::TempDir())) {
      if (entry.path().filename().string().rfind(name, 0) == 0) std::filesystem::remove_all(entry.path());
    }
  }
};

}  // namespace

TEST_F(BadInputTest, SafetensorsFilesAreRefusedWithFileAndTensorNamed) {
  const std::string eight(8, '\0');
  const std::string f32x2 = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<BadInput> cases;
  auto open = [](const std::string& path) { return [path] { agla::io::SafetensorsFile::open(path); }; };
  // Header lengths: empty header, truncated header, length field alone, oversize and 2^64 - 1.
  std::string p = safetensors("zero_header.safetensors", "", eight);
  cases.push_back(expect<agla::FormatError>("zero-length header", open(p), {p, "not valid JSON"}));
  p = safetensors("cut_header.safetensors", f32x2.substr(0, 30), "", f32x2.size());
  cases.push_back(expect<agla::FormatError>("header cut short", open(p), {p, "runs past the end of the file"}));
  p = write_bytes("length_only.safetensors", le64(16));
  cases.push_back(expect<agla::FormatError>("length field only", open(p), {p, "runs past the end"}));
  p = write_bytes("seven_bytes.safetensors", std::string(7, '\x01'));
  cases.push_back(expect<agla::FormatError>("shorter than the length field", open(p), {p, "truncated", "7 bytes"}));
  p = safetensors("oversize.safetensors", f32x2, eight, agla::io::kSafetensorsMaxHeaderBytes + 1);
  cases.push_back(expect<agla::FormatError>("header over the cap", open(p), {p, "exceeds the cap of 100000000"}));
  p = safetensors("max_length.safetensors", f32x2, eight, std::numeric_limits<uint64_t>::max());
  cases.push_back(expect<agla::FormatError>("length 2^64 - 1", open(p), {p, "18446744073709551615", "exceeds"}));
  // Offsets past the end, begin past the end, offsets near 2^64 and non-integer offsets.
  p = safetensors("past_end.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight);
  cases.push_back(expect<agla::FormatError>("offsets past the end", open(p),
                                            {p, "tensor 'w'", "past the end of the data section (8 bytes)"}));
  p = safetensors("begin_past_end.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4096,4104]}})",
                  eight);
  cases.push_back(
      expect<agla::FormatError>("begin past the end", open(p), {p, "tensor 'w'", "[4096, 4104]", "past the end"}));
  p = safetensors("wrap.safetensors", R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[18446744073709551612,4]}})",
                  eight);
  cases.push_back(
      expect<agla::FormatError>("offsets that wrap around", open(p), {p, "tensor 'w'", "end before begin"}));
  p = safetensors("float_offsets.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8.5]}})", eight);
  cases.push_back(
      expect<agla::FormatError>("float offsets", open(p), {p, "tensor 'w'", "data_offsets must be [begin, end]"}));
  p = safetensors("three_offsets.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", eight);
  cases.push_back(expect<agla::FormatError>("three offsets", open(p), {p, "tensor 'w'", "[0,4,8]"}));
  // Overlapping and aliased tensors.
  p = safetensors(
      "alias.safetensors",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
      eight);
  cases.push_back(
      expect<agla::FormatError>("two tensors on one span", open(p), {p, "tensor 'b'", "overlaps tensor 'a'"}));
  p = safetensors("contained.safetensors",
                  std::string(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)") +
                      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                  std::string(16, '\0'));
  cases.push_back(expect<agla::FormatError>("tensor inside another", open(p), {p, "overlaps"}));
  // Wrong dtypes.
  p = safetensors("f8.safetensors", R"({"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", eight);
  cases.push_back(
      expect<agla::FormatError>("float8 dtype", open(p), {p, "tensor 'w'", "unsupported dtype 'F8_E4M3'", "F32"}));
  p = safetensors("lower_dtype.safetensors", R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", eight);
  cases.push_back(expect<agla::FormatError>("lower-case dtype", open(p), {p, "unsupported dtype 'f32'"}));
  p = safetensors("int_dtype.safetensors", R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", eight);
  cases.push_back(
      expect<agla::FormatError>("dtype not a string", open(p), {p, "tensor 'w'", "dtype must be a string"}));
  // Shape and byte count disagree.
  p = safetensors("short_span.safetensors", R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", eight);
  cases.push_back(
      expect<agla::FormatError>("span shorter than the shape", open(p), {p, "tensor 'w'", "span 8 bytes", "needs 16"}));
  p = safetensors("long_span.safetensors", R"({"w":{"dtype":"U8","shape":[2,2],"data_offsets":[0,8]}})", eight);
  cases.push_back(expect<agla::FormatError>("span longer than the shape", open(p), {p, "needs 4"}));
  p = safetensors("shape_scalar.safetensors", R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", eight);
  cases.push_back(
      expect<agla::FormatError>("shape not an array", open(p), {p, "tensor 'w'", "shape must be an array"}));
  p = safetensors("shape_float.safetensors", R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", eight);
  cases.push_back(expect<agla::FormatError>("fractional dimension", open(p), {p, "non-negative integers"}));
  p = safetensors("shape_overflow.safetensors",
                  R"({"w":{"dtype":"F32","shape":[9223372036854775807,9223372036854775807],"data_offsets":[0,8]}})",
                  eight);
  cases.push_back(expect<agla::FormatError>("shape overflowing 64 bits", open(p), {p, "overflows 64-bit byte counts"}));
  p = safetensors("entry_array.safetensors", R"({"w":[1,2,3]})", eight);
  cases.push_back(
      expect<agla::FormatError>("entry not an object", open(p), {p, "tensor 'w'", "entry must be an object"}));
  p = safetensors("no_dtype.safetensors", R"({"w":{"shape":[2],"data_offsets":[0,8]}})", eight);
  cases.push_back(expect<agla::FormatError>("no dtype", open(p), {p, "missing \"dtype\""}));
  // Tensor names: duplicates in the header, a name that is not there, a BOOL tensor holding 2.
  p = safetensors(
      "dup.safetensors",
      R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
      eight);
  cases.push_back(expect<agla::FormatError>("duplicate name", open(p), {p, "tensor 'w' appears twice"}));
  const std::string good = safetensors("good.safetensors", f32x2, eight);
  cases.push_back(expect<agla::InvalidArgument>(
      "absent tensor", [good] { agla::io::SafetensorsFile::open(good).tensor("v"); }, {good, "no tensor named 'v'"}));
  const std::string flag = safetensors("bool.safetensors", R"({"m":{"dtype":"BOOL","shape":[8],"data_offsets":[0,8]}})",
                                       std::string("\x00\x01\x00\x02\x00\x00\x00\x00", 8));
  cases.push_back(expect<agla::FormatError>("BOOL byte 2",
                                            [flag] { agla::io::SafetensorsFile::open(flag).tensor("m"); },
                                            {flag, "BOOL tensor 'm'", "byte value 2 at element 3", "expected 0 or 1"}));
  cases.push_back(expect<agla::FormatError>("a directory", open(::testing::TempDir()), {"not a regular file"}));
  run_matrix(cases);
}

TEST_F(BadInputTest, ModelWeightsWithMissingUnexpectedOrMisshapedNamesAreListed) {
  const std::string renamed = edited_itm_dir("itm_renamed", [](agla::io::StateDict& w) {
    w.emplace("itm_head.weights", w.at("itm_head.weight"));
    w.erase("itm_head.weight");
  });
  const std::string reshaped = edited_itm_dir("itm_reshaped", [](agla::io::StateDict& w) {
    w["text_proj.weight"] = at::zeros({16, 31});
  });
  const std::string empty_dir = temp_path("itm_no_weights");
  std::filesystem::create_directories(empty_dir);
  std::filesystem::copy_file(kData + "/blip/itm/config.json", empty_dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::vector<BadInput> cases;
  cases.push_back(
      expect<agla::FormatError>("renamed tensor", [renamed] { agla::blip::BlipItm::load(renamed); },
                                {renamed, "missing (1)", "itm_head.weight", "unexpected (1)", "itm_head.weights"}));
  cases.push_back(
      expect<agla::FormatError>("misshaped tensor", [reshaped] { agla::blip::BlipItm::load(reshaped); },
                                {"shape or dtype mismatch (1)", "text_proj.weight: checkpoint [16, 31], model [16, 32]"}));
  cases.push_back(expect<agla::FormatError>("no weight file", [empty_dir] { agla::blip::BlipItm::load(empty_dir); },
                                            {empty_dir, "holds no model.safetensors"}));
  run_matrix(cases);
}

TEST_F(BadInputTest, ConfigValuesOutOfRangeAreRefusedNamingTheField) {
  using agla::blip::BlipConfig;
  auto blip = [](std::function<void(nlohmann::json&)> edit) {
    return [edit] { BlipConfig::from_json(blip_config(edit), "itm/config.json"); };
  };
  auto llava = [](std::function<void(nlohmann::json&)> edit) {
    return [edit] { agla::llava::parse_config(llava_config(edit)); };
  };
  std::vector<BadInput> cases;
  cases.push_back(expect<agla::FormatError>(
      "BLIP zero vocabulary", blip([](nlohmann::json& j) { j["text_config"]["vocab_size"] = 0; }),
      {"itm/config.json", "text_config.vocab_size must be in [1, 16777216]; got 0"}));
  cases.push_back(expect<agla::FormatError>(
      "BLIP negative layers", blip([](nlohmann::json& j) { j["vision_config"]["num_hidden_layers"] = -3; }),
      {"vision_config.num_hidden_layers", "got -3"}));
  cases.push_back(expect<agla::FormatError>(
      "BLIP huge hidden size", blip([](nlohmann::json& j) { j["text_config"]["hidden_size"] = int64_t{1} << 40; }),
      {"text_config.hidden_size must be in [1, 16777216]; got 1099511627776"}));
  cases.push_back(expect<agla::FormatError>("BLIP image side near 2^63", blip([](nlohmann::json& j) {
                                              j["vision_config"]["image_size"] = std::numeric_limits<int64_t>::max();
                                              j["vision_config"]["patch_size"] = 1;
                                            }),
                                            {"vision_config.image_size must be in"}));
  cases.push_back(expect<agla::FormatError>(
      "BLIP size given as 1e300", blip([](nlohmann::json& j) { j["text_config"]["hidden_size"] = 1e300; }),
      {"itm/config.json: text_config.hidden_size must be an integer in the int64 range; got 1e+300"}));
  cases.push_back(expect<agla::FormatError>(
      "BLIP size above INT64_MAX",
      blip([](nlohmann::json& j) { j["vision_config"]["patch_size"] = std::numeric_limits<uint64_t>::max(); }),
      {"vision_config.patch_size must be an integer in the int64 range; got 18446744073709551615"}));
  cases.push_back(expect<agla::FormatError>(
      "BLIP fractional size", blip([](nlohmann::json& j) { j["text_config"]["num_hidden_layers"] = 2.5; }),
      {"text_config.num_hidden_layers must be an integer"}));
  cases.push_back(expect<agla::FormatError>(
      "BLIP heads not dividing the width", blip([](nlohmann::json& j) { j["text_config"]["num_attention_heads"] = 5; }),
      {"text_config.hidden_size (32) must be divisible by text_config.num_attention_heads (5)"}));
  cases.push_back(expect<agla::FormatError>("BLIP patch larger than the image",
                                            blip([](nlohmann::json& j) { j["vision_config"]["patch_size"] = 64; }),
                                            {"image_size (32) must be a multiple of vision_config.patch_size (64)"}));
  cases.push_back(expect<agla::FormatError>("BLIP token id outside the vocabulary",
                                            blip([](nlohmann::json& j) { j["text_config"]["sep_token_id"] = 128; }),
                                            {"text_config.sep_token_id must be in [0, 128); got 128"}));
  cases.push_back(expect<agla::FormatError>("BLIP zero layer-norm epsilon",
                                            blip([](nlohmann::json& j) { j["vision_config"]["layer_norm_eps"] = 0.0; }),
                                            {"layer_norm_eps must be positive"}));
  cases.push_back(expect<agla::FormatError>("BLIP unsupported activation",
                                            blip([](nlohmann::json& j) { j["text_config"]["hidden_act"] = "relu"; }),
                                            {"hidden_act must be \"gelu\"", "relu"}));
  cases.push_back(expect<agla::FormatError>("BLIP wrong type",
                                            blip([](nlohmann::json& j) { j["text_config"]["vocab_size"] = "128"; }),
                                            {"text_config.vocab_size must be an integer", "\"128\""}));
  cases.push_back(expect<agla::FormatError>("BLIP sub-config not an object",
                                            blip([](nlohmann::json& j) { j["vision_config"] = 7; }),
                                            {"vision_config: expected a JSON object; got number"}));
  cases.push_back(expect<agla::FormatError>("BLIP other model type",
                                            blip([](nlohmann::json& j) { j["model_type"] = "llava"; }),
                                            {"model_type must be \"blip\"", "llava"}));
  cases.push_back(expect<agla::FormatError>(
      "LLaVA zero heads", llava([](nlohmann::json& j) { j["text_config"]["num_attention_heads"] = 0; }),
      {"agla::llava::parse_config", "text_config.num_attention_heads must be in [1, 16777216]; got 0"}));
  cases.push_back(expect<agla::FormatError>(
      "LLaVA layers near 2^63",
      llava([](nlohmann::json& j) { j["vision_config"]["num_hidden_layers"] = std::numeric_limits<int64_t>::max(); }),
      {"vision_config.num_hidden_layers must be in [1, 16777216]"}));
  cases.push_back(expect<agla::FormatError>("LLaVA size given as -1e300",
                                            llava([](nlohmann::json& j) { j["text_config"]["vocab_size"] = -1e300; }),
                                            {"text_config.vocab_size must be an integer in the int64 range; got -1e+300"}));
  cases.push_back(expect<agla::FormatError>("LLaVA feature layer out of range",
                                            llava([](nlohmann::json& j) { j["vision_feature_layer"] = -7; }),
                                            {"vision_feature_layer -7 is outside [-3, 2]"}));
  cases.push_back(
      expect<agla::FormatError>("LLaVA key/value heads not dividing",
                                llava([](nlohmann::json& j) { j["text_config"]["num_key_value_heads"] = 3; }),
                                {"num_attention_heads must be a multiple of num_key_value_heads; got 4 and 3"}));
  cases.push_back(expect<agla::FormatError>("LLaVA image token outside the vocabulary",
                                            llava([](nlohmann::json& j) { j["image_token_index"] = 96; }),
                                            {"image_token_index 96 is outside the text vocabulary [0, 96)"}));
  cases.push_back(expect<agla::FormatError>("LLaVA negative RMSNorm epsilon",
                                            llava([](nlohmann::json& j) { j["text_config"]["rms_norm_eps"] = -1e-6; }),
                                            {"rms_norm_eps", "must be positive"}));
  cases.push_back(expect<agla::FormatError>("LLaVA rope scaling", llava([](nlohmann::json& j) {
                                              j["text_config"]["rope_scaling"] = {{"type", "linear"}};
                                            }),
                                            {"rope_scaling is not supported"}));
  cases.push_back(expect<agla::FormatError>(
      "LLaVA wrong type", llava([](nlohmann::json& j) { j["text_config"]["attention_bias"] = "yes"; }),
      {"text_config.attention_bias must be true or false; got \"yes\""}));
  const std::string not_json = write_bytes("config_not_json.json", "{\"text_config\": {");
  // Deeply nested values: the messages describe them without recursing into them.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  cases.push_back(expect<agla::FormatError>(
      "LLaVA size given as a deeply nested array",
      llava([deep](nlohmann::json& j) { j["text_config"]["vocab_size"] = nlohmann::json::parse(deep); }),
      {"text_config.vocab_size must be an integer in the int64 range; got an array of 1 elements"}));
  cases.push_back(expect<agla::FormatError>(
      "LLaVA deeply nested rope scaling",
      llava([deep](nlohmann::json& j) { j["text_config"]["rope_scaling"] = nlohmann::json::parse(deep); }),
      {"text_config.rope_scaling is not supported (LLaVA-1.5 and Vicuna have none)"}));
  cases.push_back(expect<agla::FormatError>("BLIP config not JSON", [not_json] { BlipConfig::from_file(not_json); },
                                            {not_json, "not valid JSON"}));
  cases.push_back(expect<agla::FormatError>("LLaVA config not JSON", [not_json] { agla::llava::read_config(not_json); },
                                            {not_json, "not valid JSON"}));
  run_matrix(cases);
}

TEST_F(BadInputTest, NonImagesZeroSizedAndHugeImagesAreRefusedBeforeAllocation) {
  const std::string png = read_bytes(kData + "/blip/images/astronaut_32.png");
  std::vector<BadInput> cases;
  auto refused = [](std::string bytes, std::string name) { return [bytes, name] { decode(bytes, name); }; };
  cases.push_back(
      expect<agla::FormatError>("text file", refused("a photo of a cat\n", "prompt.txt"),
                                {"agla::io::decode_image: prompt.txt: not a readable JPEG, PNG or BMP image"}));
  cases.push_back(expect<agla::FormatError>(
      "safetensors file",
      refused(read_bytes(kData + "/blip/itm/model.safetensors").substr(0, 4096), "model.safetensors"),
      {"model.safetensors: not a readable JPEG, PNG or BMP image"}));
  cases.push_back(expect<agla::FormatError>("GIF (not compiled in)",
                                            refused("GIF89a\x01\x00\x01\x00\x00\x00\x00;", "x.gif"),
                                            {"x.gif: not a readable JPEG, PNG or BMP image"}));
  cases.push_back(expect<agla::FormatError>("PNG signature only", refused(png.substr(0, 8), "sig.png"),
                                            {"sig.png: not a readable JPEG, PNG or BMP image"}));
  cases.push_back(expect<agla::FormatError>("PNG cut in its pixel data",
                                            refused(png.substr(0, png.size() / 2), "cut.png"),
                                            {"cut.png: corrupt image data (Corrupt PNG)"}));
  cases.push_back(expect<agla::FormatError>("zero bytes", [] { agla::io::decode_image(nullptr, 0, "empty.png"); },
                                            {"empty.png: empty input"}));
  cases.push_back(expect<agla::FormatError>("PNG of width 0", refused(png_header_only(0, 16), "w0.png"),
                                            {"w0.png: not a readable"}));
  cases.push_back(expect<agla::FormatError>("BMP of width 0", refused(bmp_header_only(0, 16), "w0.bmp"),
                                            {"w0.bmp: zero-sized image (0x16)"}));
  cases.push_back(expect<agla::FormatError>("JPEG of height 0", refused(jpeg_header_only(16, 0), "h0.jpg"),
                                            {"h0.jpg: not a readable"}));
  // Decompression bombs: headers of a few dozen bytes that claim more than 2^28 pixels.
  cases.push_back(
      expect<agla::FormatError>("PNG just over 2^28 pixels", refused(png_header_only(16385, 16384), "bomb.png"),
                                {"bomb.png: image of 16385x16384 pixels exceeds the limit of 2^28 pixels"}));
  cases.push_back(expect<agla::FormatError>("JPEG of 20000x15000", refused(jpeg_header_only(20000, 15000), "bomb.jpg"),
                                            {"bomb.jpg: image of 20000x15000 pixels exceeds the limit"}));
  cases.push_back(expect<agla::FormatError>("JPEG of 65500x65500", refused(jpeg_header_only(65500, 65500), "huge.jpg"),
                                            {"huge.jpg: image of 65500x65500 pixels exceeds the limit"}));
  cases.push_back(expect<agla::FormatError>("top-down BMP of 30000x30000",
                                            refused(bmp_header_only(30000, -30000), "bomb.bmp"),
                                            {"bomb.bmp: image of 30000x30000 pixels exceeds the limit"}));
  cases.push_back(expect<agla::FormatError>("BMP of height -2^31", refused(bmp_header_only(1, INT32_MIN), "min.bmp"),
                                            {"min.bmp: image of 1x2147483648 pixels exceeds the limit"}));
  cases.push_back(expect<agla::FormatError>("missing file", [] { agla::io::read_image(temp_path("absent.png")); },
                                            {"cannot open file", "absent.png"}));
  const agla::blip::BlipItm& model = fixture_itm();
  cases.push_back(expect<agla::ShapeError>(
      "matcher on a float image",
      [&model] {
        agla::ipm::ImagePromptMatcher<agla::blip::BlipItm>(model).match(at::zeros({32, 32, 3}), "a cat");
      },
      {"image must be [H, W, 3] uint8", "Float"}));
  cases.push_back(expect<agla::ShapeError>(
      "matcher on an empty image",
      [&model] {
        agla::ipm::ImagePromptMatcher<agla::blip::BlipItm>(model).match(at::zeros({0, 32, 3}, at::kByte), "a cat");
      },
      {"image must be [H, W, 3] uint8", "[0, 32, 3]"}));
  cases.push_back(
      expect<agla::InvalidArgument>("resize to 2^40 pixels",
                                    [] {
                                      agla::io::resize_bicubic(at::zeros({2, 2, 3}, at::kByte), 1 << 20, 1 << 20);
                                    },
                                    {"at most 2^28 pixels", "1048576x1048576"}));
  // Output sizes whose product would overflow int64 are refused before it is formed.
  const int64_t huge = std::numeric_limits<int64_t>::max();
  const at::Tensor small = at::zeros({2, 2, 3}, at::kByte);
  cases.push_back(expect<agla::InvalidArgument>("resize to 2^63 x 2^63",
                                                [small, huge] { agla::io::resize_bicubic(small, huge, huge); },
                                                {"agla::io::resize_bicubic", "at most 2^28 pixels"}));
  cases.push_back(expect<agla::InvalidArgument>("crop of 2^63 x 2^63",
                                                [small, huge] { agla::io::center_crop(small, huge, huge); },
                                                {"agla::io::center_crop", "at most 2^28 pixels"}));
  cases.push_back(expect<agla::InvalidArgument>("shortest side 2^63",
                                                [small, huge] { agla::io::resize_shortest_side(small, huge); },
                                                {"shortest_edge must be in [1, 2^28]"}));
  run_matrix(cases);
}

TEST_F(BadInputTest, TopDownBmpDecodesLikeBottomUp) {
  // A negative BMP height means rows stored top to bottom; stb reports it negative in its header
  // read, which decode_image once refused as a zero-sized image.
  const std::string red_green = std::string("\x00\x00\xff\x00\xff\x00", 6) + std::string(2, '\0');
  const std::string blue_white = std::string("\xff\x00\x00\xff\xff\xff", 6) + std::string(2, '\0');
  const at::Tensor bottom_up = decode(bmp_header_only(2, 2) + blue_white + red_green, "bottom_up.bmp");
  const at::Tensor top_down = decode(bmp_header_only(2, -2) + red_green + blue_white, "top_down.bmp");
  ASSERT_EQ(top_down.sizes(), (at::IntArrayRef{2, 2, 3}));
  EXPECT_TRUE(at::equal(top_down, bottom_up));
  EXPECT_EQ(top_down[0][0][0].item<int>(), 255);  // first row, first pixel: red
  EXPECT_EQ(top_down[1][1][1].item<int>(), 255);  // last pixel: white
}

TEST_F(BadInputTest, PromptsEmptyInvalidUtf8OrOverLongAreRefusedAndEnormousOnesTruncated) {
  const agla::blip::BlipItm& model = fixture_itm();
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(model);
  const at::Tensor image = agla::io::read_image(kData + "/blip/images/astronaut_32.png");
  std::vector<BadInput> cases;
  for (const std::string& empty :
       {std::string(), std::string("   "), std::string(".!\"()*#:;~"), std::string("\n\n\t")}) {
    cases.push_back(expect<agla::InvalidArgument>(
        "empty prompt '" + empty + "'", [&, empty] { matcher.match(image, empty); },
        {"agla::blip::BlipItm::encode_text: prompt 0", "is empty after caption pre-processing"}));
  }
  cases.push_back(expect<agla::InvalidArgument>("empty second prompt",
                                                [&] {
                                                  matcher.match(image, std::vector<std::string>{"a cat", "  "});
                                                },
                                                {"prompt 1"}));
  cases.push_back(expect<agla::InvalidArgument>("no prompts", [&] { matcher.match(image, std::vector<std::string>{}); },
                                                {"need at least one prompt"}));
  const std::vector<std::pair<std::string, std::string>> invalid = {
      {"lone continuation byte", "a \x80 cat"}, {"overlong slash", "a\xc0\xaf"},
      {"UTF-16 surrogate", "\xed\xa0\x80"},     {"above U+10FFFF", "\xf4\x90\x80\x80"},
      {"truncated sequence", "cat \xe2\x82"},   {"0xFF byte", "\xff"}};
  for (const auto& [what, text] : invalid) {
    const std::string t = text;
    cases.push_back(expect<agla::InvalidArgument>("invalid UTF-8: " + what, [&, t] { matcher.match(image, t); },
                                                  {"agla::text::pre_caption: text is not valid UTF-8", "at byte"}));
  }
  const auto captioner = agla::blip::BlipCaptioner::load(kData + "/blip/caption");
  cases.push_back(expect<agla::InvalidArgument>("caption prompt longer than the positions",
                                                [&captioner] {
                                                  agla::blip::BlipCaptioner c = captioner;
                                                  c.begin(agla::LvlmInputs::images(at::ones({1, 65}, at::kLong),
                                                                                   at::zeros({1, 3, 32, 32})));
                                                },
                                                {"65 positions exceed max_position_embeddings 64"}));
  cases.push_back(expect<agla::InvalidArgument>("token id outside the vocabulary",
                                                [&captioner] {
                                                  agla::blip::BlipCaptioner c = captioner;
                                                  c.begin(agla::LvlmInputs::images(at::full({1, 2}, 128, at::kLong),
                                                                                   at::zeros({1, 3, 32, 32})));
                                                },
                                                {"token ids must be in [0, 128); got ids in [128, 128]"}));
  run_matrix(cases);

  // An enormous prompt is not an error: like the reference (LAVIS pre_caption, max_length=35) it
  // is cut to 50 words and 35 tokens -- with the same result as the cut prompt.
  std::string enormous;
  while (enormous.size() < (size_t{4} << 20)) enormous += "a photo of an astronaut holding a flag on the moon ";
  std::string first_words;
  for (int i = 0; i < 5; ++i) first_words += "a photo of an astronaut holding a flag on the moon ";
  const agla::ipm::Match big = matcher.match(image, enormous);
  const agla::ipm::Match cut = matcher.match(image, first_words);
  EXPECT_TRUE(at::equal(big.itm_logits, cut.itm_logits));
  EXPECT_TRUE(at::equal(big.mask, cut.mask));
  EXPECT_EQ(model.encode_text({enormous}).input_ids.size(1), 35);
}

TEST_F(BadInputTest, VocabularyMismatchBetweenModelAndTokenizerIsRefused) {
  const auto captioner = agla::blip::BlipCaptioner::load(kData + "/blip/caption");
  const agla::blip::BlipItm& itm = fixture_itm();
  std::vector<BadInput> cases;
  cases.push_back(expect<agla::FormatError>(
      "captioner with the 30524-id tokenizer",
      [&captioner] {
        agla::blip::BlipCaptioner(captioner.module(), agla::text::WordPieceTokenizer::bert_base_uncased());
      },
      {"agla::blip::BlipCaptioner", "the tokenizer has 30524 ids but the model's vocabulary has 128"}));
  cases.push_back(expect<agla::FormatError>(
      "ITM with the 30524-id tokenizer",
      [&itm] { agla::blip::BlipItm(itm.module(), agla::text::WordPieceTokenizer::bert_base_uncased()); },
      {"agla::blip::BlipItm", "30524 ids", "vocabulary has 128"}));
  cases.push_back(expect<agla::InvalidArgument>("decoding an id beyond the tokenizer",
                                                [&captioner] { captioner.tokenizer().id_to_token(128); },
                                                {"id_to_token: id must be in [0, 128); got 128"}));
  const std::string vocab = write_bytes("vocab_no_sep.txt", "[PAD]\n[UNK]\n[CLS]\n[MASK]\nhello\n");
  cases.push_back(expect<agla::FormatError>("vocabulary without [SEP]",
                                            [vocab] { agla::text::WordPieceTokenizer::from_vocab_file(vocab); },
                                            {vocab, "has no [SEP] line"}));
  run_matrix(cases);
}

TEST_F(BadInputTest, LogitsWithNanInfOrMismatchedViewsAreRefused) {
  const agla::DecodeOptions options;
  const at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor good = at::randn({2, 16}, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor step = at::ones({2, 1}, at::kLong);
  auto with = [&good](int64_t b, int64_t v, float value) {
    at::Tensor t = good.clone();
    t[b][v] = value;
    return t;
  };
  std::vector<BadInput> cases;
  auto logits = [&](at::Tensor l, at::Tensor a) {
    return [&, l, a] { agla::decode_step(FixedLogits{l, a}, step, options, generator); };
  };
  cases.push_back(expect<agla::NumericError>("NaN original", logits(with(1, 5, std::nanf("")), good),
                                             {"agla::decode_step: original logits of stream 1 at token 5 is nan"}));
  cases.push_back(expect<agla::NumericError>("+inf original", logits(with(0, 9, kInf), good),
                                             {"original logits of stream 0 at token 9 is inf"}));
  cases.push_back(expect<agla::NumericError>("NaN augmented", logits(good, with(1, 2, std::nanf(""))),
                                             {"augmented logits of stream 1 at token 2"}));
  cases.push_back(expect<agla::NumericError>("all -inf original", logits(at::full({2, 16}, -kInf), good),
                                             {"stream 0 are all -inf; no token can be chosen"}));
  cases.push_back(expect<agla::ShapeError>("views of different vocabularies", logits(good, at::randn({2, 17})),
                                           {"every view must have the same [B, V]", "[2, 16]", "[2, 17]"}));
  cases.push_back(
      expect<agla::ShapeError>("functor returning the wrong batch", logits(at::randn({3, 16}), good),
                               {"plain (agla::View::Original) forward must return [2, V] logits", "[3, 16]"}));
  cases.push_back(expect<agla::ShapeError>("half-precision logits", logits(good.to(at::kHalf), good.to(at::kHalf)),
                                           {"logits must be [B, V] float", "Half"}));
  cases.push_back(
      expect<agla::ShapeError>("3-d logits", logits(at::randn({2, 4, 16}), at::randn({2, 4, 16})), {"[2, 4, 16]"}));
  cases.push_back(expect<agla::ShapeError>(
      "batched functor with 3 rows for 2 streams", [&] { agla::decode_step(BatchedRows{3}, step, options, generator); },
      {"batched (agla::AllViews) forward must return [4, V] logits for 2 streams; got [3, 8]"}));
  cases.push_back(
      expect<agla::ShapeError>("step tokens of the wrong dtype",
                               [&] {
                                 agla::decode_step(FixedLogits{good, good}, step.to(at::kInt), options, generator);
                               },
                               {"step_tokens must be [B, T] int64", "Int"}));
  cases.push_back(expect<agla::InvalidArgument>("no generator for sampling",
                                                [&] {
                                                  agla::decode_step(FixedLogits{good, good}, step, options);
                                                },
                                                {"sampling needs a generator"}));
  run_matrix(cases);
}

TEST_F(BadInputTest, DecodeOptionsOutOfRangeAreRefusedNamingTheOption) {
  const at::Tensor logits = at::randn({1, 8});
  const at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
  std::vector<BadInput> cases;
  auto bad = [&](const char* what, std::function<void(agla::DecodeOptions&)> edit, std::vector<std::string> fragments) {
    agla::DecodeOptions options;
    edit(options);
    cases.push_back(expect<agla::InvalidArgument>(
        what, [options, logits, generator] { agla::decode_logits(logits, logits, options, generator); },
        std::move(fragments)));
  };
  const double nan = std::nan("");
  bad("alpha < 0", [](auto& o) { o.alpha = -0.5; }, {"agla::DecodeOptions: alpha must be in [0, 10000]; got -0.5"});
  bad("alpha NaN", [&](auto& o) { o.alpha = nan; }, {"alpha must be in [0, 10000]; got nan"});
  bad("alpha inf", [](auto& o) { o.alpha = HUGE_VAL; }, {"alpha must be in [0, 10000]; got inf"});
  bad("beta 0", [](auto& o) { o.beta = 0.0; }, {"beta must be in (0, 1]; got 0"});
  bad("beta > 1", [](auto& o) { o.beta = 1.5; }, {"beta must be in (0, 1]; got 1.5"});
  bad("beta NaN", [&](auto& o) { o.beta = nan; }, {"beta must be in (0, 1]; got nan"});
  bad("temperature 0", [](auto& o) { o.temperature = 0.0; }, {"temperature must be in [1e-4, 1e4]; got 0"});
  bad("temperature < 0", [](auto& o) { o.temperature = -1.0; }, {"temperature must be in [1e-4, 1e4]; got -1"});
  bad("temperature inf", [](auto& o) { o.temperature = HUGE_VAL; }, {"temperature must be in [1e-4, 1e4]; got inf"});
  bad("top_k < 0", [](auto& o) { o.top_k = -1; }, {"top_k must be >= 0 (0 = off); got -1"});
  bad("top_p 0", [](auto& o) { o.top_p = 0.0; }, {"top_p must be in (0, 1] (1 = off); got 0"});
  bad("top_p > 1", [](auto& o) { o.top_p = 1.01; }, {"top_p must be in (0, 1] (1 = off); got 1.01"});
  bad("top_p NaN", [&](auto& o) { o.top_p = nan; }, {"top_p must be in (0, 1]"});
  bad("min_tokens_to_keep 0", [](auto& o) { o.min_tokens_to_keep = 0; }, {"min_tokens_to_keep must be >= 1; got 0"});
  bad("local_view_tokens < 0", [](auto& o) { o.local_view_tokens = -2; }, {"local_view_tokens must be >= 0; got -2"});
  cases.push_back(expect<agla::InvalidArgument>("top-k warper with k 0", [logits] { agla::TopKWarper{0}(logits); },
                                                {"agla::TopKWarper: top_k and min_tokens_to_keep must be >= 1"}));
  cases.push_back(expect<agla::InvalidArgument>("top-p warper with p 2", [logits] { agla::TopPWarper{2.0}(logits); },
                                                {"agla::TopPWarper: top_p must be in (0, 1]"}));
  agla::GenerateOptions limits;
  limits.max_new_tokens = -1;
  cases.push_back(expect<agla::InvalidArgument>("negative max_new_tokens",
                                                [&] {
                                                  agla::generate(FixedLogits{logits, logits},
                                                                 at::ones({1, 1}, at::kLong), agla::DecodeOptions{},
                                                                 limits, generator);
                                                },
                                                {"max_new_tokens must be >= 0; got -1"}));
  run_matrix(cases);
}
