#pragma once
/// \file
/// Reading whole files with a size bound, and allocation failures reported as `agla::FormatError`
/// naming the file: the two things every reader of untrusted files in `agla::io` needs.

#include <c10/util/Exception.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

#include "agla/error.hpp"

namespace agla::io {

/// Runs `read` and returns what it returns; an allocation failure inside it (`std::bad_alloc`,
/// `std::length_error`, or a `c10::Error` from libtorch's allocator) is rethrown as
/// `agla::FormatError` prefixed by `where` (function and file), so a file that declares more data
/// than the process may allocate is refused like any other malformed file.
template <typename Read>
auto guard_allocation(const std::string& where, Read&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const agla::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw FormatError(where + ": out of memory while reading it (std::bad_alloc)");
  } catch (const std::length_error& e) {
    throw FormatError(agla::detail::concat(where, ": out of memory while reading it (", e.what(), ")"));
  } catch (const c10::Error& e) {
    // libtorch's CPU allocator reports failures as c10::Error ("... can't allocate memory ...").
    const std::string what = e.what_without_backtrace();
    const bool memory = what.find("allocate") != std::string::npos || what.find("memory") != std::string::npos;
    throw FormatError(agla::detail::concat(where, memory ? ": out of memory while reading it (" : ": ", what,
                                           memory ? ")" : ""));
  }
}

/// Size in bytes of the regular file `path` (symbolic links are followed). Throws
/// `agla::FormatError` prefixed by `where` when it is missing or not a regular file: a device such as
/// `/dev/zero`, a pipe or a directory never reaches a reader.
inline uint64_t regular_file_size(const std::string& path, const std::string& where) {
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(path, error);
  check<FormatError>(!error && std::filesystem::exists(status), where, ": cannot open file (",
                     error ? error.message() : std::string("no such file"), ")");
  check<FormatError>(std::filesystem::is_regular_file(status), where,
                     ": not a regular file (a device, pipe or directory is not read)");
  const uintmax_t size = std::filesystem::file_size(path, error);
  check<FormatError>(!error, where, ": cannot read its size (", error.message(), ")");
  return static_cast<uint64_t>(size);
}

/// The bytes of the regular file `path`, which may hold at most `max_bytes`; the size is checked
/// before anything is allocated. Throws `agla::FormatError` prefixed by `where`.
inline std::string read_file(const std::string& path, uint64_t max_bytes, const std::string& where) {
  const uint64_t size = regular_file_size(path, where);
  check<FormatError>(size <= max_bytes, where, ": file of ", size, " bytes exceeds the limit of ", max_bytes,
                     " bytes");
  return guard_allocation(where, [&] {
    std::ifstream in(path, std::ios::binary);
    check<FormatError>(in.good(), where, ": cannot open file");
    std::string data(static_cast<size_t>(size), '\0');
    in.read(data.data(), static_cast<std::streamsize>(size));
    check<FormatError>(static_cast<uint64_t>(in.gcount()) == size && in.peek() == std::ifstream::traits_type::eof(),
                       where, ": the file changed size while it was read");
    return data;
  });
}

}  // namespace agla::io
