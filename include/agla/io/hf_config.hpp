#pragma once
/// \file
/// Reading Hugging Face `config.json` files: typed look-ups with the upstream default for absent (or
/// `null`) keys, and `agla::FormatError` naming the file and the key for values of the wrong type.

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <initializer_list>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/limits.hpp"

namespace agla::io {

namespace detail {

/// `value` for an error message: primitives and flat arrays of up to 16 primitives as JSON (at most
/// 80 characters), anything else by kind and size. Never recurses into nested containers, so a
/// maliciously deep value cannot exhaust the stack (nlohmann's `dump` is recursive).
inline std::string describe_json(const nlohmann::json& value) {
  auto shorten = [](std::string text) { return text.size() > 80 ? text.substr(0, 77) + "..." : text; };
  if (value.is_primitive()) return shorten(value.dump());
  if (value.is_array()) {
    bool flat = value.size() <= 16;
    for (size_t i = 0; flat && i < value.size(); ++i) flat = value[i].is_primitive();
    if (flat) return shorten(value.dump());
    return "an array of " + std::to_string(value.size()) + " elements";
  }
  if (value.is_object()) return "an object of " + std::to_string(value.size()) + " keys";
  return value.type_name();
}

}  // namespace detail

/// Parses the JSON text [`begin`, `end`) strictly: at most `kMaxJsonValues` values, and no object
/// may repeat a key (nlohmann would silently keep the last one, so two readers could see two
/// different files). `where` (function and file) prefixes every message; `top_level_key` names
/// what the keys of the top-level object are ("key", "tensor", ...). Throws `agla::FormatError`.
inline nlohmann::json parse_json(const char* begin, const char* end, const std::string& where,
                                 const char* top_level_key = "key") {
  std::vector<std::unordered_set<std::string>> open_objects;
  uint64_t values = 0;
  using Event = nlohmann::json::parse_event_t;
  const nlohmann::json::parser_callback_t guard = [&](int depth, Event event, nlohmann::json& parsed) {
    if (event == Event::object_start) open_objects.emplace_back();
    if (event == Event::object_end && !open_objects.empty()) open_objects.pop_back();
    if (event != Event::object_end && event != Event::array_end) ++values;
    check<FormatError>(values <= kMaxJsonValues, where, ": more than ", kMaxJsonValues, " JSON values");
    if (event == Event::key && !open_objects.empty() && parsed.is_string() &&
        !open_objects.back().insert(parsed.get<std::string>()).second) {
      throw FormatError(agla::detail::concat(where, ": ", depth <= 1 ? top_level_key : "key", " '",
                                             parsed.get<std::string>(), "' appears twice",
                                             depth <= 1 ? "" : " in one object"));
    }
    return true;
  };
  return guard_allocation(where, [&] {
    try {
      return nlohmann::json::parse(begin, end, guard);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(agla::detail::concat(where, ": not valid JSON: ", e.what()));
    }
  });
}

/// Parses the JSON file `path` (a regular file of at most `kMaxJsonFileBytes`, see `parse_json`);
/// a missing file, a syntax error or a bound exceeded throws `agla::FormatError` naming the file.
inline nlohmann::json read_json_file(const std::string& path) {
  const std::string where = "agla::io::read_json_file: " + path;
  const std::string text = read_file(path, kMaxJsonFileBytes, where);
  return parse_json(text.data(), text.data() + text.size(), where);
}

/// Whether the Hugging Face checkpoint directory `dir` declares a model kind: its `config.json` has
/// `"model_type": model_type` or lists `architecture` in `architectures`. False when the file is
/// missing or unreadable; lets programs pick the model type of a directory argument.
inline bool checkpoint_declares(const std::string& dir, const std::string& model_type,
                                const std::string& architecture) {
  const std::string path = dir.empty() || dir.back() == '/' ? dir + "config.json" : dir + "/config.json";
  nlohmann::json json;
  try {
    json = read_json_file(path);  // bounded size, no repeated keys
  } catch (const FormatError&) {
    return false;
  }
  if (!json.is_object()) return false;
  const auto type = json.find("model_type");
  if (type != json.end() && type->is_string() && type->get<std::string>() == model_type) return true;
  const auto arch = json.find("architectures");
  if (arch == json.end() || !arch->is_array()) return false;
  for (const auto& name : *arch) {
    if (name.is_string() && name.get<std::string>() == architecture) return true;
  }
  return false;
}

/// One key of a config object and the field it fills; the field's value is the default for an
/// absent key.
struct ConfigField {
  const char* key;
  std::variant<int64_t*, double*, bool*, std::string*> field;
};

/// One JSON object of a config file with typed, defaulted look-ups. `where` (e.g.
/// `"model/config.json: text_config"`) prefixes every error message.
class JsonConfig {
 public:
  /// Views `object` (a JSON object, or null meaning "all defaults") without copying it (a copy would
  /// recurse through nested values): `object` must outlive this view and every `child` of it.
  JsonConfig(const nlohmann::json& object, std::string where) : object_(&object), where_(std::move(where)) {
    check<FormatError>(object_->is_object() || object_->is_null(), where_, ": expected a JSON object; got ",
                       object_->type_name());
  }

  /// Refuses temporaries, which would leave the view dangling.
  JsonConfig(nlohmann::json&& object, std::string where) = delete;

  /// Whether `key` is present and not null.
  bool has(const std::string& key) const {
    return object_->is_object() && object_->contains(key) && !object_->at(key).is_null();
  }

  /// Integer `key`, or `fallback` when absent/null; a non-integer value throws `agla::FormatError`.
  int64_t get_int(const std::string& key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = object_->at(key);
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return v.get<int64_t>();
    } else if (v.is_number_integer()) {
      return v.get<int64_t>();
    } else if (v.is_number_float()) {
      // Some writers emit 768.0 for integers; accept exact integral floats. The range test comes
      // first: converting a double outside [-2^63, 2^63) to int64_t is undefined behaviour.
      const double d = v.get<double>();
      if (d >= -0x1p63 && d < 0x1p63 && d == std::trunc(d)) return static_cast<int64_t>(d);
    }
    throw FormatError(agla::detail::concat(where_, ".", key, " must be an integer in the int64 range; got ",
                                           detail::describe_json(v)));
  }

  /// Number `key`, or `fallback` when absent/null.
  double get_double(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = object_->at(key);
    check<FormatError>(v.is_number(), where_, ".", key, " must be a number; got ", detail::describe_json(v));
    return v.get<double>();
  }

  /// Boolean `key`, or `fallback` when absent/null.
  bool get_bool(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = object_->at(key);
    check<FormatError>(v.is_boolean(), where_, ".", key, " must be true or false; got ", detail::describe_json(v));
    return v.get<bool>();
  }

  /// String `key`, or `fallback` when absent/null.
  std::string get_string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = object_->at(key);
    check<FormatError>(v.is_string(), where_, ".", key, " must be a string; got ", detail::describe_json(v));
    return v.get<std::string>();
  }

  /// Reads every key of `fields` into its field with the typed look-up of the field's type; a field
  /// whose key is absent or null keeps its value.
  void read(std::initializer_list<ConfigField> fields) const {
    for (const ConfigField& f : fields) {
      if (auto* i = std::get_if<int64_t*>(&f.field)) **i = get_int(f.key, **i);
      if (auto* d = std::get_if<double*>(&f.field)) **d = get_double(f.key, **d);
      if (auto* b = std::get_if<bool*>(&f.field)) **b = get_bool(f.key, **b);
      if (auto* t = std::get_if<std::string*>(&f.field)) **t = get_string(f.key, **t);
    }
  }

  /// The nested object `key` (null when absent), with `where` extended by the key.
  JsonConfig child(const std::string& key) const {
    static const nlohmann::json kNull;
    return JsonConfig(has(key) ? object_->at(key) : kNull, where_ + ": " + key);
  }

  /// Prefix used in error messages.
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json* object_;
  std::string where_;
};

}  // namespace agla::io
