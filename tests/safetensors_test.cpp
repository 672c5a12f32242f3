// safetensors: reading the BLIP fixture files, writing and reading back, and a matrix of broken files
// that must each be refused with an agla::FormatError naming the file and the tensor. Model
// directories: every checkpoint layout load_checkpoint accepts, and inconsistent shard indexes.
#include "agla/io/checkpoint.hpp"
#include "agla/io/safetensors.hpp"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/expect.hpp"

namespace {

const std::string kData = AGLA_TEST_DATA_DIR;

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "/agla_st_" + name; }

// Writes `length` (little-endian) + `header` + `data` verbatim.
std::string write_raw(const std::string& name, uint64_t length, const std::string& header,
                      const std::string& data = std::string()) {
  const std::string path = temp_path(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xff));
  out << header << data;
  return path;
}

std::string write_file(const std::string& name, const std::string& header, const std::string& data) {
  return write_raw(name, header.size(), header, data);
}

// Opens `path` and returns the FormatError message ("" when no error was thrown).
std::string open_error(const std::string& path) {
  return agla::test::error_message([&] { agla::io::SafetensorsFile::open(path); });
}

}  // namespace

TEST(SafetensorsTest, ReadsFixtureWeightsWithShapesAndMetadata) {
  const auto file = agla::io::SafetensorsFile::open(kData + "/blip/itm/model.safetensors");
  ASSERT_TRUE(file.has("vision_model.embeddings.class_embedding"));
  const auto& info = file.info("vision_model.embeddings.patch_embedding.weight");
  EXPECT_EQ(info.dtype, "F32");
  EXPECT_EQ(info.shape, (std::vector<int64_t>{32, 3, 8, 8}));
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_TRUE(file.has("itm_head.weight"));
  EXPECT_FALSE(file.has("text_encoder.embeddings.position_ids"));
  const at::Tensor qkv = file.tensor("vision_model.encoder.layers.0.self_attn.qkv.weight");
  EXPECT_EQ(qkv.sizes(), (at::IntArrayRef{96, 32}));
  EXPECT_EQ(qkv.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(qkv).all().item<bool>());
  EXPECT_THROW(file.tensor("no.such.tensor"), agla::InvalidArgument);
}

TEST(SafetensorsTest, ReadsFixtureIdsAndBytes) {
  const agla::io::StateDict fixtures = agla::io::read_safetensors(kData + "/blip/fixtures.safetensors");
  const at::Tensor ids = fixtures.at("inputs.prompt0.input_ids");
  EXPECT_EQ(ids.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(ids, at::tensor(std::vector<int64_t>{2, 5, 39, 9, 5, 61, 62, 3})));
  const at::Tensor pixels = fixtures.at("inputs.images_uint8");
  EXPECT_EQ(pixels.scalar_type(), at::kByte);
  EXPECT_EQ(pixels.sizes(), (at::IntArrayRef{2, 32, 32, 3}));
  // The normalised pixels are ((uint8 / 255) - mean) / std, so they pin down the bytes' meaning.
  const at::Tensor mean = at::tensor({0.48145466f, 0.4578275f, 0.40821073f}).view({1, 3, 1, 1});
  const at::Tensor stdev = at::tensor({0.26862954f, 0.26130258f, 0.27577711f}).view({1, 3, 1, 1});
  const at::Tensor normalised = (pixels.permute({0, 3, 1, 2}).to(at::kFloat) / 255 - mean) / stdev;
  EXPECT_TRUE(at::allclose(normalised, fixtures.at("inputs.pixel_values"), 0, 1e-5));
}

TEST(SafetensorsTest, TensorsOutliveTheFileObjectAndNeverWriteTheFile) {
  const std::string path = temp_path("outlive.safetensors");
  agla::io::write_safetensors(path, {{"x", at::arange(6, at::kFloat).view({2, 3})}});
  at::Tensor x;
  {
    const auto file = agla::io::SafetensorsFile::open(path);
    x = file.tensor("x");
    EXPECT_EQ(x.data_ptr(), file.tensor("x").data_ptr());  // zero-copy: same mapped bytes
  }
  EXPECT_FLOAT_EQ(x[1][2].item<float>(), 5.0f);
  x.add_(100);  // copy-on-write mapping: private pages change, the file does not
  EXPECT_FLOAT_EQ(x[1][2].item<float>(), 105.0f);
  EXPECT_TRUE(at::equal(agla::io::read_safetensors(path).at("x"), at::arange(6, at::kFloat).view({2, 3})));
  std::remove(path.c_str());
}

TEST(SafetensorsTest, RoundTripKeepsEveryDtypeShapeAndMetadata) {
  const std::string path = temp_path("roundtrip.safetensors");
  const at::Tensor base = at::linspace(-3, 3, 24, at::kDouble).view({2, 3, 4});
  agla::io::StateDict dict = {
      {"f64", base},
      {"f32", base.to(at::kFloat)},
      {"f16", base.to(at::kHalf)},
      {"bf16", base.to(at::kBFloat16).transpose(0, 2)},  // non-contiguous input
      {"i64", at::arange(-5, 5, at::kLong)},
      {"i32", at::arange(-5, 5, at::kInt).view({2, 5})},
      {"i16", at::arange(-5, 5, at::kShort)},
      {"i8", at::arange(-5, 5, at::kChar)},
      {"u8", at::arange(0, 250, 7, at::kByte)},
      {"bool", at::arange(7, at::kLong).remainder(2).to(at::kBool)},
      {"scalar", at::scalar_tensor(2.5, at::kFloat)},
      {"empty", at::zeros({0, 3}, at::kFloat)},
  };
  agla::io::write_safetensors(path, dict, {{"format", "pt"}, {"note", "round trip"}});
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  EXPECT_EQ(len[0] % 8, 0) << "header padded to a multiple of 8";
  const auto file = agla::io::SafetensorsFile::open(path);
  EXPECT_EQ(file.size(), dict.size());
  EXPECT_EQ(file.metadata().at("note"), "round trip");
  EXPECT_EQ(file.info("bf16").dtype, "BF16");
  EXPECT_EQ(file.info("bool").dtype, "BOOL");
  for (const auto& entry : dict) {
    const at::Tensor back = file.tensor(entry.first);
    EXPECT_EQ(back.scalar_type(), entry.second.scalar_type()) << entry.first;
    EXPECT_EQ(back.sizes(), entry.second.sizes()) << entry.first;
    EXPECT_TRUE(at::equal(back, entry.second)) << entry.first;
  }
  std::remove(path.c_str());
}

TEST(SafetensorsTest, MisalignedDataIsCopiedToAlignedMemory) {
  // Header length 61 puts the data section at byte 69; the F32 tensor starts one byte further in.
  std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  const float values[2] = {1.5f, -2.25f};
  std::string data(1, '\x07');
  data.append(reinterpret_cast<const char*>(values), sizeof(values));
  const std::string path = write_file("misaligned.safetensors", header, data);
  const auto file = agla::io::SafetensorsFile::open(path);
  const at::Tensor b = file.tensor("b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data_ptr()) % 4, 0u);
  EXPECT_FLOAT_EQ(b[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(b[1].item<float>(), -2.25f);
  EXPECT_EQ(file.tensor("a").item<uint8_t>(), 7);
  std::remove(path.c_str());
}

TEST(SafetensorsTest, RefusesBrokenFilesWithMessagesNamingFileAndTensor) {
  struct Case {
    std::string name;
    std::string path;
    std::vector<std::string> expected;  // substrings of the message
  };
  const std::string eight(8, '\0');
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<Case> cases;
  {
    const std::string path = temp_path("short.safetensors");
    std::ofstream(path, std::ios::binary) << "abc";
    cases.push_back({"truncated length field", path, {"truncated", "3 bytes"}});
  }
  cases.push_back({"truncated header",
                   write_raw("trunc_header.safetensors", ok.size(), ok.substr(0, 20)),
                   {"runs past the end of the file"}});
  cases.push_back(
      {"length past end", write_raw("past_end.safetensors", 4096, ok, eight), {"runs past the end of the file"}});
  cases.push_back({"length over cap", write_raw("cap.safetensors", uint64_t{1} << 40, ok, eight), {"exceeds the cap"}});
  // Valid length fields and `eight` data bytes, with headers that lie: name, file stem, header, fragments.
  struct BadHeader {
    std::string name, file, header;
    std::vector<std::string> expected;
  };
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');  // nesting must not recurse
  const std::vector<BadHeader> bad_headers = {
      {"bad json", "bad_json", R"({"w":{"dtype":"F32",)", {"not valid JSON"}},
      {"json not object", "array", "[1,2,3]", {"JSON object"}},
      {"unknown dtype", "dtype", R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})",
       {"tensor 'w'", "unsupported dtype 'C64'"}},
      {"shape bytes mismatch", "mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
       {"tensor 'w'", "needs 12"}},
      {"offsets past end", "offsets", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
       {"tensor 'w'", "past the end of the data section"}},
      {"end before begin", "reversed", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}})",
       {"tensor 'w'", "end before begin"}},
      {"overlap", "overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       {"tensor 'b'", "overlaps tensor 'a'"}},
      {"duplicate name", "dup",
       R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       {"tensor 'w'", "twice"}},
      {"negative dim", "negdim", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
       {"tensor 'w'", "non-negative"}},
      {"overflowing shape", "overflow", R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
       {"tensor 'w'", "overflows"}},
      {"missing offsets", "nooffsets", R"({"w":{"dtype":"F32","shape":[2]}})", {"tensor 'w'", "data_offsets"}},
      {"deeply nested shape", "deep", R"({"w":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,8]}})",
       {"tensor 'w'", "an array of 1 elements"}},
  };
  for (const BadHeader& b : bad_headers)
    cases.push_back({b.name, write_file(b.file + ".safetensors", b.header, eight), b.expected});
  cases.push_back({"bad metadata",
                   write_file("meta.safetensors", R"({"__metadata__":{"format":1}})", ""),
                   {"__metadata__", "format"}});
  cases.push_back({"missing file", temp_path("does_not_exist.safetensors"), {"cannot open"}});
  for (const Case& c : cases) {
    const std::string message = open_error(c.path);
    ASSERT_FALSE(message.empty()) << c.name << ": no FormatError";
    EXPECT_NE(message.find(c.path), std::string::npos) << c.name << ": " << message;
    agla::test::expect_contains(message, c.expected, c.name + ": ");
    std::remove(c.path.c_str());
  }
}

TEST(SafetensorsTest, RefusesBoolTensorWithBytesOtherThanZeroOrOne) {
  const std::string path = write_file("bool.safetensors", R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                                      std::string("\x01\x02", 2));
  const auto file = agla::io::SafetensorsFile::open(path);
  try {
    file.tensor("m");
    ADD_FAILURE() << "no FormatError";
  } catch (const agla::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'m'"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
}

TEST(SafetensorsTest, WriteRefusesUnsupportedInput) {
  EXPECT_THROW(agla::io::write_safetensors(temp_path("c.safetensors"), {{"c", at::zeros({2}, at::kComplexFloat)}}),
               agla::InvalidArgument);
  EXPECT_THROW(agla::io::write_safetensors(temp_path("m.safetensors"), {{"__metadata__", at::zeros({2})}}),
               agla::InvalidArgument);
}

namespace {

std::string make_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/agla_ckpt_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void copy_to(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
}

void expect_same(const agla::io::StateDict& a, const agla::io::StateDict& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) {
    ASSERT_EQ(b.count(name), 1u) << name;
    EXPECT_TRUE(at::equal(tensor, b.at(name))) << name;
  }
}

}  // namespace

TEST(CheckpointTest, LoadsEveryLayoutOfAModelDirectory) {
  const std::string pt = kData + "/pytorch_checkpoint";
  // pytorch_model.bin
  const std::string bin_dir = make_dir("bin");
  copy_to(pt + "/basic.pt", bin_dir + "/pytorch_model.bin");
  expect_same(agla::io::load_checkpoint(bin_dir), agla::io::read_pytorch_checkpoint(pt + "/basic.pt"));
  // pytorch_model.bin.index.json with its shards
  const std::string shard_dir = make_dir("bin_shards");
  copy_to(pt + "/shard.bin.index.json", shard_dir + "/pytorch_model.bin.index.json");
  copy_to(pt + "/shard-00001-of-00002.bin", shard_dir + "/shard-00001-of-00002.bin");
  copy_to(pt + "/shard-00002-of-00002.bin", shard_dir + "/shard-00002-of-00002.bin");
  const agla::io::StateDict sharded = agla::io::load_checkpoint(shard_dir);
  EXPECT_EQ(sharded.size(), 3u);
  // model.safetensors wins over pytorch_model.bin, as in transformers.
  agla::io::write_safetensors(bin_dir + "/model.safetensors", sharded);
  expect_same(agla::io::load_checkpoint(bin_dir), sharded);
  // Sharded safetensors.
  const std::string st_dir = make_dir("st_shards");
  agla::io::write_safetensors(st_dir + "/part1.safetensors", {{"a", sharded.at("a")}, {"b", sharded.at("b")}});
  agla::io::write_safetensors(st_dir + "/part2.safetensors", {{"c", sharded.at("c")}});
  const std::string index = st_dir + "/model.safetensors.index.json";
  std::ofstream(index)
      << R"({"metadata": {}, "weight_map": {"a": "part1.safetensors", "b": "part1.safetensors", "c": "part2.safetensors"}})";
  expect_same(agla::io::load_checkpoint(st_dir), sharded);
  for (const std::string& dir : {bin_dir, shard_dir, st_dir}) std::filesystem::remove_all(dir);
}

TEST(CheckpointTest, RefusesInconsistentShardIndexes) {
  const std::string dir = make_dir("bad_index");
  agla::io::write_safetensors(dir + "/part1.safetensors", {{"a", at::ones({2})}, {"b", at::ones({3})}});
  const std::string index = dir + "/model.safetensors.index.json";
  auto message = [&](const std::string& json) {
    std::ofstream(index, std::ios::trunc) << json;
    return agla::test::error_message([&] { agla::io::load_checkpoint(dir); });
  };
  EXPECT_NE(message(R"({"weight_map": {"a": "part1.safetensors"}})").find("'b' is not listed"), std::string::npos);
  EXPECT_NE(message(R"({"weight_map": {"a": "part1.safetensors", "b": "part1.safetensors", "z": "part1.safetensors"}})")
                .find("'z'"),
            std::string::npos);
  EXPECT_NE(message(R"({"weight_map": {"a": "../part1.safetensors"}})").find("invalid shard name"), std::string::npos);
  EXPECT_NE(message(R"({"weight_map": {"a": "part9.safetensors"}})").find("part9.safetensors"), std::string::npos);
  EXPECT_NE(message(R"({"weight": {}})").find("weight_map"), std::string::npos);
  EXPECT_NE(message("{not json").find("not valid JSON"), std::string::npos);
  std::filesystem::remove(index);
  std::filesystem::remove(dir + "/part1.safetensors");
  try {
    agla::io::load_checkpoint(dir);
    ADD_FAILURE() << "no FormatError for an empty directory";
  } catch (const agla::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("holds no"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}
