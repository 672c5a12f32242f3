// What the test programs share to check a refusal: the message of the error a call throws, and the
// fragments a message (or any text) must contain.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "agla/error.hpp"

namespace agla::test {

/// The message of the `Error` that `fn()` throws ("" when it throws none).
template <typename Error = agla::FormatError, typename Fn>
std::string error_message(Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// Expects each of `fragments` in `text`; a failure names `what`, the fragment and the text.
inline void expect_contains(const std::string& text, const std::vector<std::string>& fragments,
                            const std::string& what = "") {
  for (const std::string& fragment : fragments)
    EXPECT_NE(text.find(fragment), std::string::npos) << what << "'" << fragment << "' not in: " << text;
}

}  // namespace agla::test
