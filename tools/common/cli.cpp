#include "common/cli.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "agla/error.hpp"
#include "common/data.hpp"

namespace agla::tools {

int run_guarded(const std::string& program, std::ostream& err, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    err << e.what() << "\n";
  } catch (const std::exception& e) {
    err << program << ": " << e.what() << "\n";
  }
  return 1;
}

ArgCursor::ArgCursor(std::vector<std::string> args, std::string program)
    : args_(std::move(args)), program_(std::move(program)) {}

std::string ArgCursor::value(const std::string& option) {
  check<InvalidArgument>(more(), program_, ": ", option, " needs a value");
  return args_[index_++];
}

namespace detail {
// Defined in the build's help_texts.cpp (tools/help/embed.cmake).
const std::vector<std::pair<std::string, std::string>>& help_texts();
}  // namespace detail

namespace {

const std::string& help_text(const std::string& name) {
  for (const auto& [program, text] : detail::help_texts())
    if (program == name) return text;
  throw std::logic_error("agla::tools::print_help: no help text for '" + name + "' in tools/help");
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

}  // namespace

int print_help(const std::string& program, std::ostream& out) {
  std::string text = help_text(program);
  std::string methods = help_text("method_options");
  if (!methods.empty() && methods.back() == '\n') methods.pop_back();
  replace_all(text, "{method options}", methods);
  replace_all(text, "{data directory}", data_dir_help());
  out << text;
  return 0;
}

void OptionParser::add(const std::string& option) {
  if (values_.count(option) || flags_.count(option))
    throw std::logic_error("agla::tools::OptionParser: " + program_ + " registers " + option + " twice");
}

OptionParser& OptionParser::value(const std::string& option, Store store) {
  add(option);
  values_.emplace(option, std::move(store));
  return *this;
}

OptionParser& OptionParser::flag(const std::string& option, std::function<void()> set) {
  add(option);
  flags_.emplace(option, std::move(set));
  return *this;
}

OptionParser& OptionParser::directory(const std::string& option, std::string& target) {
  return value(option, [program = program_, option, &target](const std::string& v) {
    check<InvalidArgument>(!v.empty(), program, ": ", option, " needs a directory");
    target = v;
  });
}

OptionParser& OptionParser::seed(std::uint64_t& target) {
  return value("--seed", [program = program_, &target](const std::string& v) {
    target = parse_seed(program, "--seed", v);
  });
}

OptionParser& OptionParser::threads(int& target) {
  return value("--threads", [program = program_, &target](const std::string& v) { target = parse_threads(program, v); });
}

OptionParser& OptionParser::group(Group group) {
  groups_.push_back(std::move(group));
  return *this;
}

bool OptionParser::parse(const std::vector<std::string>& args) {
  bool help = false;
  ArgCursor cursor(args, program_);
  while (cursor.more()) {
    const std::string option = cursor.next();
    given_.insert(option);
    if (option == "--help" || option == "-h") {
      help = true;
    } else if (const auto v = values_.find(option); v != values_.end()) {
      v->second(cursor.value(option));
    } else if (const auto f = flags_.find(option); f != flags_.end()) {
      f->second();
    } else {
      bool taken = false;
      for (const Group& group : groups_)
        if ((taken = group(option, cursor))) break;
      check<InvalidArgument>(taken, program_, ": unknown option '", option, "' (see --help)");
    }
  }
  return !help;
}

std::int64_t parse_integer(const std::string& program, const std::string& option, const std::string& text,
                           std::int64_t low, std::int64_t high) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  check<InvalidArgument>(!text.empty() && *end == '\0' && errno == 0, program, ": ", option, " expects an integer in [",
                         low, ", ", high, "]; got '", text, "'");
  check<InvalidArgument>(value >= low && value <= high, program, ": ", option, " must be in [", low, ", ", high,
                         "]; got ", value);
  return static_cast<std::int64_t>(value);
}

double parse_number(const std::string& program, const std::string& option, const std::string& text, double low,
                    double high, bool low_open) {
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  const char open = low_open ? '(' : '[';
  check<InvalidArgument>(!text.empty() && *end == '\0' && errno == 0 && std::isfinite(value), program, ": ", option,
                         " expects a finite number in ", open, low, ", ", high, "]; got '", text, "'");
  check<InvalidArgument>((low_open ? value > low : value >= low) && value <= high, program, ": ", option,
                         " must be in ", open, low, ", ", high, "]; got ", value);
  return value;
}

std::vector<std::int64_t> parse_id_list(const std::string& program, const std::string& option,
                                        const std::string& text) {
  constexpr std::size_t kMaxIds = 4096;
  std::vector<std::int64_t> ids;
  std::size_t start = 0;
  while (start <= text.size()) {
    check<InvalidArgument>(ids.size() < kMaxIds, program, ": ", option, " takes at most ", kMaxIds, " token ids");
    const std::size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto first = item.find_first_not_of(" \t");
    const auto last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? std::string() : item.substr(first, last - first + 1);
    check<InvalidArgument>(!item.empty(), program, ": ", option,
                           " expects comma-separated token ids like '101,2023,2003'; got '", text, "'");
    ids.push_back(parse_integer(program, option + " (token id)", item, 0, std::numeric_limits<std::int32_t>::max()));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return ids;
}

int parse_threads(const std::string& program, const std::string& text) {
  return static_cast<int>(parse_integer(program, "--threads", text, 0, kMaxThreads));
}

std::uint64_t parse_seed(const std::string& program, const std::string& option, const std::string& text) {
  return static_cast<std::uint64_t>(parse_integer(program, option, text, 0, std::numeric_limits<std::int64_t>::max()));
}

void require_file(const std::string& program, const std::string& option, const std::string& path) {
  check<InvalidArgument>(!path.empty(), program, ": ", option, " needs a file path; got an empty one");
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  check<InvalidArgument>(std::filesystem::exists(status), program, ": ", option, " '", path, "' does not exist");
  check<InvalidArgument>(!std::filesystem::is_directory(status), program, ": ", option, " '", path,
                         "' is a directory; expected a file");
  check<InvalidArgument>(std::filesystem::is_regular_file(status), program, ": ", option, " '", path,
                         "' is not a regular file");
}

void make_directory(const std::string& program, const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  check<FormatError>(!error, program, ": cannot create output directory '", dir, "': ", error.message());
  check<FormatError>(std::filesystem::is_directory(dir), program, ": output directory '", dir,
                     "' exists and is not a directory");
}

}  // namespace agla::tools
