#pragma once
/// \file
/// Names of enumerators as one table per enum: the name of a value and the value of a name both
/// read the same table, so a name is written once and the two directions cannot disagree.

#include <cstddef>
#include <optional>
#include <string>

namespace agla {

/// One enumerator and the name it has in files, messages and on the command line.
template <class E>
struct NamedValue {
  E value;
  const char* name;
};

/// The name of `value` in `names`; "?" for a value the table lacks (a corrupted enum).
template <class E, std::size_t N>
constexpr const char* name_of(E value, const NamedValue<E> (&names)[N]) {
  for (const NamedValue<E>& entry : names)
    if (entry.value == value) return entry.name;
  return "?";
}

/// The value named `name` in `names`; nullopt when none is.
template <class E, std::size_t N>
std::optional<E> value_of(const std::string& name, const NamedValue<E> (&names)[N]) {
  for (const NamedValue<E>& entry : names)
    if (name == entry.name) return entry.value;
  return std::nullopt;
}

/// The names of `names` joined by `separator` ("a|b|c"), for messages listing what is accepted.
template <class E, std::size_t N>
std::string joined_names(const NamedValue<E> (&names)[N], const char* separator = "|") {
  std::string text;
  for (const NamedValue<E>& entry : names) text += (text.empty() ? "" : separator) + std::string(entry.name);
  return text;
}

}  // namespace agla
