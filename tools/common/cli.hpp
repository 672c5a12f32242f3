#pragma once
/// \file
/// Command-line plumbing of the agla programs: an argument cursor, bounded number and id-list
/// parsing, and checks of the paths an option names. Every malformed or out-of-range value throws
/// `agla::InvalidArgument` naming the program, the option, the accepted range and the text that came.

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace agla::tools {

/// Runs a program's `body` and returns its exit status; an exception becomes status 1 with its
/// message (an `agla::Error`'s as it is, any other prefixed with `program`) on `err`.
int run_guarded(const std::string& program, std::ostream& err, const std::function<int()>& body);

/// Walks a program's arguments (without argv[0]); `value()` takes the next one as an option's value.
class ArgCursor {
 public:
  /// Arguments as given on the command line; `program` prefixes error messages.
  ArgCursor(std::vector<std::string> args, std::string program);

  /// True while arguments remain.
  bool more() const { return index_ < args_.size(); }
  /// The next argument (an option name), advancing past it.
  const std::string& next() { return args_.at(index_++); }
  /// The value of option `option`, advancing past it; throws when none is left.
  std::string value(const std::string& option);
  /// The program name used in messages.
  const std::string& program() const { return program_; }

 private:
  std::vector<std::string> args_;
  std::string program_;
  std::size_t index_ = 0;
};

/// The most intra-op threads a program accepts (`--threads`).
inline constexpr int kMaxThreads = 1024;

/// `text` as a decimal integer in `[low, high]`.
std::int64_t parse_integer(const std::string& program, const std::string& option, const std::string& text,
                           std::int64_t low, std::int64_t high);

/// `text` as a finite decimal number in `[low, high]`, or `(low, high]` when `low_open`.
double parse_number(const std::string& program, const std::string& option, const std::string& text, double low,
                    double high, bool low_open = false);

/// A comma-separated list of token ids ("101, 2023,2003"), each in `[0, 2^31)`, at least one and at
/// most 4096 of them.
std::vector<std::int64_t> parse_id_list(const std::string& program, const std::string& option, const std::string& text);

/// `--threads` value: 0 = the program's default, else 1 to `kMaxThreads`.
int parse_threads(const std::string& program, const std::string& text);

/// `--seed` value: 0 to 2^63 - 1.
std::uint64_t parse_seed(const std::string& program, const std::string& option, const std::string& text);

/// Throws `agla::InvalidArgument` naming `option` when `path` is empty, missing or not a regular
/// file (a directory passed where a file belongs).
void require_file(const std::string& program, const std::string& option, const std::string& path);

/// Creates `dir` (and parents); throws `agla::FormatError` when that fails or `dir` is a file.
void make_directory(const std::string& program, const std::string& dir);

}  // namespace agla::tools
