// PyTorch zip checkpoints through the weights-only unpickler: tests/data/pytorch_checkpoint
// (made by make_checkpoints.py with torch 1.13.1; values are formulas rebuilt here).

#include "agla/io/pytorch_checkpoint.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "agla/io/npy.hpp"

namespace {

const std::string kDir = std::string(AGLA_TEST_DATA_DIR) + "/pytorch_checkpoint/";

void expect_same(const at::Tensor& got, const at::Tensor& want, const std::string& name) {
  ASSERT_TRUE(got.defined()) << name;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
  ASSERT_EQ(got.sizes(), want.sizes()) << name;
  EXPECT_TRUE(at::equal(got, want)) << name << "\n" << got << "\nvs\n" << want;
}

/// Expects agla::FormatError whose message contains every one of `parts`.
template <typename F>
void expect_format_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const agla::FormatError& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(PytorchCheckpointTest, ReadsDtypesViewsAndParameters) {
  const agla::io::StateDict sd = agla::io::read_pytorch_checkpoint(kDir + "basic.pt");
  EXPECT_EQ(sd.size(), 18u);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  expect_same(sd.at("f32"), at::arange(6, f32).reshape({2, 3}) / 4, "f32");
  expect_same(sd.at("f64"), at::tensor(std::vector<double>{0.1, -2.5}), "f64");
  expect_same(sd.at("f16"), (at::arange(-4, 4, f32) / 8).to(at::kHalf), "f16");
  expect_same(sd.at("bf16"), (at::arange(5, f32) * 1.5).to(at::kBFloat16), "bf16");
  expect_same(sd.at("i64"), at::tensor(std::vector<int64_t>{-3, 0, int64_t{1} << 40}), "i64");
  expect_same(sd.at("i32"), at::tensor(std::vector<int32_t>{7, -7}), "i32");
  expect_same(sd.at("u8"), at::tensor(std::vector<uint8_t>{0, 255}), "u8");
  expect_same(sd.at("i8"), at::tensor(std::vector<int8_t>{-128, 127}), "i8");
  expect_same(sd.at("b"), at::tensor(std::vector<uint8_t>{1, 0, 1}).to(at::kBool), "b");
  expect_same(sd.at("scalar"), at::scalar_tensor(3.25, f32), "scalar");
  expect_same(sd.at("empty"), at::zeros({0, 3}, f32), "empty");
  const at::Tensor base = at::arange(12, f32).reshape({3, 4});
  expect_same(sd.at("base"), base, "base");
  expect_same(sd.at("base_t"), base.t(), "base_t");
  EXPECT_FALSE(sd.at("base_t").is_contiguous());
  EXPECT_EQ(sd.at("base_t").stride(0), 1);
  expect_same(sd.at("base_window"), base.slice(0, 1).slice(1, 1, 3), "base_window");
  EXPECT_EQ(sd.at("base_window").storage_offset(), 5);
  // Views saved from one storage share it, as after torch.load.
  EXPECT_EQ(sd.at("base_t").data_ptr(), sd.at("base").data_ptr());
  expect_same(sd.at("expanded"), at::full({4}, 5.0, f32), "expanded");
  EXPECT_EQ(sd.at("expanded").stride(0), 0);
  expect_same(sd.at("param"), at::ones({2}, f32), "param");
  EXPECT_FALSE(sd.at("param").requires_grad());
  const at::Tensor linear = agla::io::read_npy(kDir + "basic_linear.npy");
  expect_same(sd.at("weight"), linear.slice(0, 0, 6).reshape({2, 3}), "weight");
  expect_same(sd.at("bias"), linear.slice(0, 6), "bias");
}

TEST(PytorchCheckpointTest, ReadsNestedLavisLayout) {
  const agla::io::StateDict sd = agla::io::read_pytorch_checkpoint(kDir + "nested.pth");
  ASSERT_EQ(sd.size(), 2u);
  expect_same(sd.at("w"), at::arange(4, at::TensorOptions().dtype(at::kFloat)), "w");
  expect_same(sd.at("v"), at::arange(3, at::TensorOptions().dtype(at::kLong)), "v");
  EXPECT_EQ(agla::io::read_pytorch_checkpoint(kDir + "nested.pth", "model").size(), 2u);
  EXPECT_THROW(agla::io::read_pytorch_checkpoint(kDir + "nested.pth", "config"), agla::FormatError);
  EXPECT_THROW(agla::io::read_pytorch_checkpoint(kDir + "nested.pth", "missing"), agla::FormatError);

  using Kind = agla::io::PickleValue::Kind;
  const agla::io::PickleValue root = agla::io::read_pytorch_pickle(kDir + "nested.pth");
  ASSERT_TRUE(root.is(Kind::kDict));
  EXPECT_EQ(root.find("epoch")->as_int(), 3);
  const agla::io::PickleValue& config = *root.find("config");
  EXPECT_DOUBLE_EQ(config.find("lr")->as_float(), 0.1);
  EXPECT_EQ(config.find("name")->as_string(), "blip");
  EXPECT_EQ(config.find("neg")->as_int(), -5);
  EXPECT_TRUE(config.find("big")->is(Kind::kBigInt));
  const auto& flags = config.find("flags")->items();
  ASSERT_EQ(flags.size(), 3u);
  EXPECT_TRUE(flags[0].as_bool());
  EXPECT_TRUE(flags[1].is(Kind::kNone));
  EXPECT_FALSE(flags[2].as_bool());
  const agla::io::PickleValue& shape = *config.find("shape");
  ASSERT_TRUE(shape.is(Kind::kTuple));
  EXPECT_EQ(shape.items()[1].as_int(), 3);
  EXPECT_EQ(config.find("absent"), nullptr);
}

TEST(PytorchCheckpointTest, ReadsShardedIndex) {
  const agla::io::StateDict sd = agla::io::read_pytorch_checkpoint_index(kDir + "shard.bin.index.json");
  ASSERT_EQ(sd.size(), 3u);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  expect_same(sd.at("a"), at::arange(3, f32), "a");
  expect_same(sd.at("b"), at::arange(4, f32) * 2, "b");
  expect_same(sd.at("c"), at::ones({2, 2}, f32), "c");

  const std::string bad = ::testing::TempDir() + "agla_bad_index.json";
  auto write = [&](const std::string& text) { std::ofstream(bad) << text; };
  write(R"({"weight_map": {"a": "../shard-00001-of-00002.bin"}})");
  EXPECT_THROW(agla::io::read_pytorch_checkpoint_index(bad), agla::FormatError);
  write("{not json");
  EXPECT_THROW(agla::io::read_pytorch_checkpoint_index(bad), agla::FormatError);
  // One tensor listed for two shards: JSON parsers keep one of the two silently; agla refuses.
  write(R"({"weight_map": {"a": "shard-00001-of-00002.bin", "a": "shard-00002-of-00002.bin"}})");
  expect_format_error([&] { agla::io::read_pytorch_checkpoint_index(bad); }, {bad, "key 'a' appears twice"});
  std::remove(bad.c_str());
  EXPECT_THROW(agla::io::read_pytorch_checkpoint_index(kDir + "missing.index.json"), agla::FormatError);
}

TEST(PytorchCheckpointTest, TorchSaveArchivesPassTheStrictZipReader) {
  // torch.save 1.13 writes data descriptors (flag bit 3, zeros in the local headers), ZIP64 end
  // records and records aligned to 64 bytes; the strict reader accepts exactly that layout.
  for (const std::string stem : {"basic", "nested", "shard-00001-of-00002", "malicious_eval", "oob_size"}) {
    const std::string file = stem == "nested" ? "nested.pth" : stem + (stem.rfind("shard", 0) == 0 ? ".bin" : ".pt");
    const agla::io::StoredZip zip = agla::io::StoredZip::open(kDir + file, file);
    ASSERT_GE(zip.records().size(), 3u) << file;
    for (const agla::io::ZipRecord& record : zip.records()) {
      EXPECT_EQ(record.name.rfind(stem + "/", 0), 0u) << file << ": " << record.name;
      EXPECT_EQ(record.data_offset % 64, 0u) << file << ": " << record.name;
      EXPECT_LE(record.data_offset + record.size, zip.file_size()) << file << ": " << record.name;
    }
    const agla::io::ZipRecord* version = zip.find(stem + "/version");
    ASSERT_NE(version, nullptr) << file;
    EXPECT_EQ(zip.read_string(*version, 16), "3\n") << file;
    ASSERT_NE(zip.find(stem + "/data.pkl"), nullptr) << file;
  }
}

TEST(PytorchCheckpointTest, RefusesCodeExecution) {
  std::remove("/tmp/agla_pytorch_checkpoint_pwned");
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "malicious_os_system.pt"); },
                      {"malicious_os_system.pt", "refused global", "posix.system"});
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "malicious_eval.pt"); },
                      {"malicious_eval.pt", "refused global", "eval"});
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "malicious_class.pt"); },
                      {"malicious_class.pt", "refused global", "__main__.Payload"});
  std::ifstream pwned("/tmp/agla_pytorch_checkpoint_pwned");
  EXPECT_FALSE(pwned.good());
}

TEST(PytorchCheckpointTest, RefusesTensorsOutsideTheirStorage) {
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "oob_size.pt"); }, {"oob_size.pt", "storage"});
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "oob_offset.pt"); }, {"oob_offset.pt", "storage"});
}

TEST(PytorchCheckpointTest, RefusesBrokenAndForeignFiles) {
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "truncated.pt"); }, {"truncated.pt"});
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "legacy.pt"); }, {"legacy.pt", "legacy"});
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "shard.bin.index.json"); },
                      {"shard.bin.index.json", "not a zip"});
  expect_format_error([] { agla::io::read_pytorch_checkpoint(kDir + "no-such.pt"); }, {"no-such.pt"});
}

TEST(PytorchCheckpointTest, UnpicklerRefusesMalformedStreams) {
  auto run = [](const std::string& bytes) {
    agla::io::detail::WeightsOnlyUnpickler u(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test",
                                             [](const std::string&, at::ScalarType, int64_t) { return at::Tensor(); });
    return u.run();
  };
  // A list appended into itself through the memo, and a list modified after being nested.
  expect_format_error(
      [&] {
        run(
            std::string("\x80\x02]q\x00h\x00"
                        "a.",
                        8));
      },
      {"itself"});
  expect_format_error(
      [&] {
        run(
            std::string("\x80\x02]q\x00]q\x01"
                        "ah\x01K\x01"
                        "a0.",
                        16));
      },
      {"after it was placed"});
  EXPECT_THROW(run("\x80\x02"
                   "a."),
               agla::FormatError);                         // APPEND on an empty stack
  EXPECT_THROW(run("\x80\x02K"), agla::FormatError);       // truncated
  EXPECT_THROW(run("\x80\x02h\x05."), agla::FormatError);  // memo key never set
  expect_format_error(
      [&] {
        run("\x80\x02"
            "cbuiltins\nexec\n.");
      },
      {"refused global 'builtins.exec'"});
  expect_format_error(
      [&] {
        run("\x80\x02"
            "ccollections\nOrderedDict\nK\x01\x85R.");
      },
      {"no arguments"});
  EXPECT_THROW(run("\x80\x02"
                   "K\x01"
                   "K\x02."),
               agla::FormatError);                                                     // two values left at STOP
  expect_format_error([&] { run("\x80\x04\x81."); }, {"refused pickle opcode 0x81"});  // NEWOBJ
  // Deep nesting is capped.
  std::string deep = "\x80\x02";
  for (int i = 0; i < 200; ++i) deep += "]";
  for (int i = 0; i < 199; ++i) deep += "a";
  deep += ".";
  expect_format_error([&] { run(deep); }, {"nesting deeper than 100"});
  const agla::io::PickleValue ok = run(std::string("\x80\x02}q\x00(X\x01\x00\x00\x00kJ\xff\xff\xff\xffu.", 19));
  EXPECT_EQ(ok.find("k")->as_int(), -1);
}
