#pragma once
/// \file
/// The one exception family of the library. Every failure the library detects -- bad options,
/// bad shapes, corrupt files, NaN logits -- is reported as an `agla::Error` (or a subclass)
/// whose message names the function, what was expected and what came.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace agla {

/// Base class of every exception thrown by agla.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// An argument or option outside its documented range (alpha < 0, beta > 1, layer out of range, ...).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// A tensor whose rank, shape, dtype or device is not what the function requires.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be read or whose content is malformed (safetensors, config, image, vocab).
class FormatError : public Error {
 public:
  using Error::Error;
};

/// Numbers that make the computation meaningless (NaN or +inf logits, empty distributions).
class NumericError : public Error {
 public:
  using Error::Error;
};

namespace detail {

/// Concatenates anything streamable into one message string.
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace detail

/// Throws `ErrorType` with the streamed message parts when `condition` is false.
template <typename ErrorType = Error, typename... Parts>
void check(bool condition, Parts&&... parts) {
  if (!condition) throw ErrorType(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace agla
