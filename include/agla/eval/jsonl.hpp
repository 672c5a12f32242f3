#pragma once
/// \file
/// JSON-lines files as the POPE/LLaVA tooling writes them: one JSON object per line. Errors name
/// the file and the 1-based line.

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agla/error.hpp"

namespace agla::eval {

/// One parsed line of a jsonl file and its 1-based line number.
struct JsonLine {
  std::size_t line = 0;
  nlohmann::json value;
};

/// Reads every non-blank line of `path` as a JSON object; throws `FormatError` naming the file
/// and line on unreadable files, bad JSON or non-objects. `who` prefixes the messages.
inline std::vector<JsonLine> read_jsonl(const std::string& path, const std::string& who) {
  std::ifstream in(path, std::ios::binary);
  check<FormatError>(in.good(), who, ": cannot open '", path, "'");
  std::vector<JsonLine> lines;
  std::string text;
  for (std::size_t number = 1; std::getline(in, text); ++number) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    JsonLine line;
    line.line = number;
    try {
      line.value = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      throw FormatError(agla::detail::concat(who, ": ", path, ":", number, ": not valid JSON (", e.what(), ")"));
    }
    check<FormatError>(line.value.is_object(), who, ": ", path, ":", number, ": expected a JSON object; got ",
                       line.value.type_name());
    lines.push_back(std::move(line));
  }
  return lines;
}

/// The string field `key` of a jsonl line; throws `FormatError` naming file and line when it is
/// missing or not a string.
inline std::string string_field(const JsonLine& line, const std::string& key, const std::string& path,
                                const std::string& who) {
  const auto it = line.value.find(key);
  check<FormatError>(it != line.value.end(), who, ": ", path, ":", line.line, ": missing field \"", key, "\"");
  check<FormatError>(it->is_string(), who, ": ", path, ":", line.line, ": field \"", key, "\" must be a string; got ",
                     it->type_name());
  return it->get<std::string>();
}

/// A question id as a matching key: integers as their decimal text, strings as they are (so the
/// id 12 and the id "12" match); throws `FormatError` for other types or a missing id.
inline std::string id_field(const JsonLine& line, const std::string& path, const std::string& who,
                            const std::string& key = "question_id") {
  const auto it = line.value.find(key);
  check<FormatError>(it != line.value.end(), who, ": ", path, ":", line.line, ": missing field \"", key, "\"");
  if (it->is_number_integer()) return std::to_string(it->get<long long>());
  if (it->is_string()) return it->get<std::string>();
  throw FormatError(agla::detail::concat(who, ": ", path, ":", line.line, ": field \"", key,
                                         "\" must be an integer or a string; got ", it->type_name()));
}

/// Reads `path` into one `T` per line, keyed by question id: sets `item.line` and `item.id`, then
/// `fill(line, item)` reads the rest. Throws `FormatError` naming file and line for bad lines and
/// for an id that repeats an earlier line's. `who` prefixes the messages.
template <class T, class Fill>
std::vector<T> read_keyed_lines(const std::string& path, const std::string& who, Fill fill) {
  std::vector<T> items;
  std::map<std::string, std::size_t> seen;
  for (const JsonLine& line : read_jsonl(path, who)) {
    T item;
    item.line = line.line;
    item.id = id_field(line, path, who);
    fill(line, item);
    const auto [previous, fresh] = seen.emplace(item.id, line.line);
    check<FormatError>(fresh, who, ": ", path, ":", line.line, ": question_id ", item.id, " repeats line ",
                       previous->second);
    items.push_back(std::move(item));
  }
  return items;
}

/// `a / b`, or 0 when `b` is 0 (the metrics' convention for an empty denominator).
inline double ratio_or_zero(long long a, long long b) {
  return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b);
}

}  // namespace agla::eval
