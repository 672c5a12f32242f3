#pragma once
/// \file
/// Command-line plumbing of the agla programs: the option parser, the --help texts, an argument
/// cursor, bounded number and id-list parsing, and checks of the paths an option names. Every malformed or out-of-range value throws
/// `agla::InvalidArgument` naming the program, the option, the accepted range and the text that came.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
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

/// What a program's `run_*` does: `parse(args)` gives its options (nullopt for --help, which is
/// then printed) and `body(options, out, err)` its exit status; errors become status 1 as in
/// `run_guarded`.
template <class Parse, class Body>
int run_program(const std::string& program, const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err, Parse parse, Body body);

/// Writes the --help text of `program` (tools/help/<program>.txt, with the method options and the
/// data directory filled in) to `out`; returns 0, the exit status of a help request.
int print_help(const std::string& program, std::ostream& out);

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

template <class Parse, class Body>
int run_program(const std::string& program, const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err, Parse parse, Body body) {
  return run_guarded(program, err, [&] {
    const auto options = parse(args);
    return options ? body(*options, out, err) : print_help(program, out);
  });
}

/// A program's options, each registered once with what its value does; `parse` walks the
/// arguments, records the options named (`given`), answers --help/-h and refuses an unknown option
/// or a missing value with `agla::InvalidArgument` naming the program and the option.
class OptionParser {
 public:
  /// Stores the value of an option.
  using Store = std::function<void(const std::string& value)>;
  /// A group of options parsed elsewhere (sampling, method, run options): true when it took `option`
  /// (and its value from `cursor`).
  using Group = std::function<bool(const std::string& option, ArgCursor& cursor)>;

  /// The parser of `program`'s options (the name prefixes messages).
  explicit OptionParser(std::string program) : program_(std::move(program)) {}

  /// `option VALUE`: `store(VALUE)`.
  OptionParser& value(const std::string& option, Store store);
  /// `option` without a value: `set()`.
  OptionParser& flag(const std::string& option, std::function<void()> set);
  /// `option` sets `target` to `value`.
  OptionParser& flag(const std::string& option, bool& target, bool value = true) {
    return flag(option, [&target, value] { target = value; });
  }
  /// `option TEXT` into `target` (a string or an optional one).
  template <class Text>
  OptionParser& text(const std::string& option, Text& target) {
    return value(option, [&target](const std::string& v) { target = v; });
  }
  /// `option DIR`: a directory to write, not empty.
  OptionParser& directory(const std::string& option, std::string& target);
  /// `option N`: an integer in `[low, high]` into `target` (an integer or an optional one).
  template <class Int>
  OptionParser& integer(const std::string& option, Int& target, std::int64_t low, std::int64_t high) {
    return value(option, [program = program_, option, &target, low, high](const std::string& v) {
      target = static_cast<typename Stored<Int>::type>(parse_integer(program, option, v, low, high));
    });
  }
  /// `option IDS`: comma-separated token ids (`parse_id_list`) into `target` (or an optional one).
  template <class Ids>
  OptionParser& ids(const std::string& option, Ids& target) {
    return value(option, [program = program_, option, &target](const std::string& v) {
      target = parse_id_list(program, option, v);
    });
  }
  /// `--seed N` (`parse_seed`).
  OptionParser& seed(std::uint64_t& target);
  /// `--threads N` (`parse_threads`).
  OptionParser& threads(int& target);
  /// Options that `group` parses, tried after the registered ones in the order the groups came.
  OptionParser& group(Group group);

  /// Parses `args` (without the program name); false when --help or -h was among them (the caller
  /// prints the help and checks nothing more).
  bool parse(const std::vector<std::string>& args);
  /// The options named on the command line (they override a protocol's settings).
  const std::set<std::string>& given() const { return given_; }
  /// Whether `option` was named on the command line.
  bool named(const std::string& option) const { return given_.count(option) > 0; }

 private:
  template <class T>
  struct Stored {
    using type = T;
  };
  template <class T>
  struct Stored<std::optional<T>> {
    using type = T;
  };

  void add(const std::string& option);

  std::string program_;
  std::map<std::string, Store> values_;
  std::map<std::string, std::function<void()>> flags_;
  std::vector<Group> groups_;
  std::set<std::string> given_;
};

}  // namespace agla::tools
