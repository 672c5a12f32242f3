#pragma once
/// \file
/// Command-line plumbing shared by the example programs: an argument cursor, checked number and
/// id-list parsing, and the default data locations. Every malformed value throws
/// `agla::InvalidArgument` naming the program, the option and the text that came.

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "agla/error.hpp"

namespace agla::examples {

/// Walks a program's arguments (without argv[0]); `value()` takes the next one as an option's value.
class ArgCursor {
 public:
  /// Arguments as given on the command line; `program` prefixes error messages.
  ArgCursor(std::vector<std::string> args, std::string program)
      : args_(std::move(args)), program_(std::move(program)) {}

  /// True while arguments remain.
  bool more() const { return index_ < args_.size(); }
  /// The next argument (an option name), advancing past it.
  const std::string& next() { return args_.at(index_++); }
  /// The value of option `option`, advancing past it; throws when none is left.
  std::string value(const std::string& option) {
    check<InvalidArgument>(more(), program_, ": ", option, " needs a value");
    return args_[index_++];
  }
  /// The program name used in messages.
  const std::string& program() const { return program_; }

 private:
  std::vector<std::string> args_;
  std::string program_;
  std::size_t index_ = 0;
};

/// `text` as a decimal integer in `[low, high]`.
inline int64_t parse_integer(const std::string& program, const std::string& option, const std::string& text,
                             int64_t low = INT64_MIN, int64_t high = INT64_MAX) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  check<InvalidArgument>(!text.empty() && *end == '\0' && errno == 0, program, ": ", option,
                         " expects an integer; got '", text, "'");
  check<InvalidArgument>(value >= low && value <= high, program, ": ", option, " must be in [", low, ", ", high,
                         "]; got ", value);
  return static_cast<int64_t>(value);
}

/// `text` as a finite decimal number (ranges are checked where the value is used, e.g. by
/// `agla::DecodeOptions::validate`).
inline double parse_number(const std::string& program, const std::string& option, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  check<InvalidArgument>(!text.empty() && *end == '\0' && errno == 0 && std::isfinite(value), program, ": ", option,
                         " expects a finite number; got '", text, "'");
  return value;
}

/// A comma-separated list of non-negative token ids ("101, 2023,2003"); at least one id.
inline std::vector<int64_t> parse_id_list(const std::string& program, const std::string& option,
                                          const std::string& text) {
  std::vector<int64_t> ids;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto first = item.find_first_not_of(" \t");
    const auto last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? std::string() : item.substr(first, last - first + 1);
    check<InvalidArgument>(!item.empty(), program, ": ", option,
                           " expects comma-separated token ids like '101,2023,2003'; got '", text, "'");
    ids.push_back(parse_integer(program, option + " (token id)", item, 0));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return ids;
}

/// `--threads` value: 0 = all cores, at most 4096.
inline int parse_threads(const std::string& program, const std::string& text) {
  return static_cast<int>(parse_integer(program, "--threads", text, 0, 4096));
}

/// The examples' data folder (`examples/data`: sample image, shipped models).
inline std::string data_dir() {
#if defined(AGLA_DATA_DIR)
  return AGLA_DATA_DIR;
#elif defined(AGLA_SOURCE_DIR)
  return std::string(AGLA_SOURCE_DIR) + "/examples/data";
#else
  return "examples/data";
#endif
}

/// The random-weight BLIP test models (`tests/data/blip`), the fallback when no trained model ships.
inline std::string fixture_model_dir() {
  return (std::filesystem::path(data_dir()) / ".." / ".." / "tests" / "data" / "blip").lexically_normal().string();
}

/// Creates `dir` (and parents); throws `agla::FormatError` when that fails.
inline void make_directory(const std::string& program, const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  check<FormatError>(!error, program, ": cannot create output directory '", dir, "': ", error.message());
}

}  // namespace agla::examples
