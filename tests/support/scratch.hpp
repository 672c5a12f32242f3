// What the test programs that run the tools in-process or write files share: running a program's
// entry point with captured streams, a scratch folder per test process (ctest runs the tests of one
// file in parallel processes) removed at the end, whole-file and JSONL reads and writes.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "agla/eval/jsonl.hpp"

namespace agla::test {

/// The programs' shipped data folder (tools/data) and what the tests use of it: the ShapesWorld
/// models and the sample image.
inline const std::string kToolsData = std::string(AGLA_SOURCE_DIR) + "/tools/data";
inline const std::string kShippedLvlm = kToolsData + "/models/shapesworld-lvlm";
inline const std::string kShippedItm = kToolsData + "/models/shapesworld-itm";
inline const std::string kShippedSample = kToolsData + "/sample.png";

/// A program run: exit status and what it wrote to stdout and stderr.
struct Output {
  int status = 0;
  std::string out, err;
};

/// A program's entry point: arguments, stdout, stderr -> exit status.
using Program = int (*)(const std::vector<std::string>&, std::ostream&, std::ostream&);

/// Runs `program` on `args` with captured streams.
inline Output run(Program program, const std::vector<std::string>& args) {
  std::ostringstream out, err;
  Output o;
  o.status = program(args, out, err);
  o.out = out.str();
  o.err = err.str();
  return o;
}

/// This process's scratch folder, `<tmp>/<prefix>_<pid>`.
inline std::filesystem::path scratch_root(const std::string& prefix) {
  return std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(getpid()));
}

/// Removes a scratch root when the tests of this process are done.
class ScratchCleanup : public ::testing::Environment {
 public:
  explicit ScratchCleanup(std::filesystem::path root) : root_(std::move(root)) {}
  void TearDown() override { std::filesystem::remove_all(root_); }

 private:
  std::filesystem::path root_;
};

/// A fresh, empty folder `name` under `root`.
inline std::string fresh_dir(const std::filesystem::path& root, const std::string& name) {
  const std::filesystem::path dir = root / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

/// A test program's scratch folder, `<tmp>/<prefix>_<pid>` (ctest runs the tests of one file in
/// parallel processes), removed when the tests of this process are done.
class Scratch {
 public:
  explicit Scratch(const std::string& prefix) : root_(scratch_root(prefix)) {
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup(root_));
  }

  /// A fresh, empty folder `name` in it.
  std::string fresh(const std::string& name) const { return fresh_dir(root_, name); }

 private:
  std::filesystem::path root_;
};

/// Writes `text` to `path`, creating its folders.
inline void write(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

/// The bytes of `path` ("" when it cannot be read).
inline std::string read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// The JSON values of a JSONL file, in order.
inline std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  for (const auto& line : agla::eval::read_jsonl(path, "test")) lines.push_back(line.value);
  return lines;
}

}  // namespace agla::test
