#pragma once
/// \file
/// safetensors reading (memory-mapped, validated before use) and writing.
///
/// Format (huggingface/safetensors, `safetensors/src/tensor.rs`): an 8-byte little-endian header
/// length `N`, `N` bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
/// "__metadata__": {string: string}}`, then the data section; offsets are relative to its start.
///
/// Every check happens in `SafetensorsFile::open`, before any tensor is handed out: header length
/// within the file and at most `kSafetensorsMaxHeaderBytes`, well-formed JSON of at most
/// `kMaxJsonValues` values without duplicate names (`parse_json`), known dtypes, `end - begin == product(shape) * dtype size` (overflow-checked), spans inside
/// the data section and pairwise disjoint. A violation throws `agla::FormatError` naming the file and
/// the tensor.
///
/// Ownership: `SafetensorsFile::tensor` is zero-copy. The returned CPU tensor points into the file
/// mapping and its deleter holds a `std::shared_ptr` to that mapping, so the mapping lives as long as
/// the last tensor (or `SafetensorsFile` copy) that uses it, whatever happens to the `SafetensorsFile`.
/// The file is opened read-only and mapped copy-on-write (`MAP_PRIVATE`): writing into a returned
/// tensor changes private memory only, never the file. A tensor whose data is not aligned to its
/// element size (possible in files written by other tools) is copied instead, so kernels never see
/// misaligned pointers. On platforms without `mmap` the file is read into memory once.

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/io/limits.hpp"
#include "agla/io/state_dict.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define AGLA_HAVE_MMAP 1
#else
#define AGLA_HAVE_MMAP 0
#endif

namespace agla::io {

/// What the header says about one tensor: dtype (file spelling and ATen type), shape, byte span.
struct SafetensorsTensorInfo {
  std::string dtype;           ///< file spelling: "F32", "BF16", ...
  at::ScalarType scalar_type;  ///< the matching ATen type
  std::vector<int64_t> shape;  ///< dims, row-major (C order)
  uint64_t begin = 0;          ///< byte offset of the data, relative to the data section
  uint64_t end = 0;            ///< one past the last byte, relative to the data section
};

namespace detail {

/// The safetensors dtypes this library reads and writes: file spelling, ATen type, element size.
inline const std::map<std::string, std::pair<at::ScalarType, uint64_t>>& safetensors_dtypes() {
  static const std::map<std::string, std::pair<at::ScalarType, uint64_t>> table = {
      {"F64", {at::kDouble, 8}}, {"F32", {at::kFloat, 4}}, {"F16", {at::kHalf, 2}},  {"BF16", {at::kBFloat16, 2}},
      {"I64", {at::kLong, 8}},   {"I32", {at::kInt, 4}},   {"I16", {at::kShort, 2}}, {"I8", {at::kChar, 1}},
      {"U8", {at::kByte, 1}},    {"BOOL", {at::kBool, 1}}};
  return table;
}

/// Element size in bytes and ATen type of a safetensors dtype; false when it is not supported.
inline bool safetensors_dtype(const std::string& name, at::ScalarType& type, uint64_t& size) {
  const auto it = safetensors_dtypes().find(name);
  if (it == safetensors_dtypes().end()) return false;
  type = it->second.first;
  size = it->second.second;
  return true;
}

/// The safetensors spelling of an ATen type (for writing).
inline std::string safetensors_dtype_name(at::ScalarType type) {
  for (const auto& [name, entry] : safetensors_dtypes())
    if (entry.first == type) return name;
  throw InvalidArgument(agla::detail::concat("agla::io::write_safetensors: unsupported dtype ", type,
                                             "; expected one of Double Float Half BFloat16 Long Int Short Char Byte Bool"));
}

inline bool host_is_little_endian() {
  const uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// A whole file in memory: an `mmap` of it where available, else a heap copy. Never written to.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
#if AGLA_HAVE_MMAP
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    check<FormatError>(fd >= 0, "agla::io::SafetensorsFile: cannot open '", path, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw FormatError(agla::detail::concat("agla::io::SafetensorsFile: '", path, "' is not a regular file"));
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
      // Copy-on-write private mapping: in-place ops on returned tensors never reach the file.
      void* addr = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);
      check<FormatError>(addr != MAP_FAILED, "agla::io::SafetensorsFile: cannot map '", path,
                         "': ", std::strerror(err));
      data_ = static_cast<unsigned char*>(addr);
      mapped_ = true;
    } else {
      ::close(fd);
    }
#else
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    check<FormatError>(in.good(), "agla::io::SafetensorsFile: cannot open '", path, "'");
    size_ = static_cast<uint64_t>(in.tellg());
    buffer_.resize(size_);
    in.seekg(0);
    in.read(reinterpret_cast<char*>(buffer_.data()), static_cast<std::streamsize>(size_));
    check<FormatError>(in.good() || size_ == 0, "agla::io::SafetensorsFile: cannot read '", path, "'");
    data_ = buffer_.data();
#endif
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
#if AGLA_HAVE_MMAP
    if (mapped_) ::munmap(data_, size_);
#endif
  }
  unsigned char* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  unsigned char* data_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
#if !AGLA_HAVE_MMAP
  std::vector<unsigned char> buffer_;
#endif
};

}  // namespace detail

/// A validated, memory-mapped safetensors file; cheap to copy (copies share the mapping).
class SafetensorsFile {
 public:
  /// Maps and validates `path`; throws `agla::FormatError` naming the file (and tensor) on any defect.
  static SafetensorsFile open(const std::string& path) {
    SafetensorsFile file;
    file.path_ = path;
    file.mapping_ = std::make_shared<detail::MappedFile>(path);
    guard_allocation("agla::io::SafetensorsFile: " + path, [&file] {
      file.parse_header();
      return 0;
    });
    return file;
  }

  /// The file this was opened from.
  const std::string& path() const { return path_; }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(infos_.size());
    for (const auto& entry : infos_) out.push_back(entry.first);
    return out;
  }

  /// Number of tensors.
  size_t size() const { return infos_.size(); }

  /// Whether a tensor of that name exists.
  bool has(const std::string& name) const { return infos_.count(name) != 0; }

  /// Dtype, shape and byte span of `name`; throws `agla::InvalidArgument` when absent.
  const SafetensorsTensorInfo& info(const std::string& name) const {
    const auto it = infos_.find(name);
    check<InvalidArgument>(it != infos_.end(), "agla::io::SafetensorsFile::info: ", path_, ": no tensor named '", name,
                           "'");
    return it->second;
  }

  /// The `__metadata__` string map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// Tensor `name` as a CPU tensor of the file's dtype and shape, zero-copy into the mapping (see file
  /// comment: the deleter keeps the mapping alive; misaligned data is copied). Throws
  /// `agla::InvalidArgument` when absent, `agla::FormatError` for a BOOL tensor holding bytes other than 0/1.
  at::Tensor tensor(const std::string& name) const {
    const SafetensorsTensorInfo& meta = info(name);
    const auto options = at::TensorOptions().dtype(meta.scalar_type).device(at::kCPU);
    if (meta.end == meta.begin) return at::empty(meta.shape, options);
    unsigned char* ptr = mapping_->data() + data_start_ + meta.begin;
    if (meta.scalar_type == at::kBool) {
      for (uint64_t i = 0; i < meta.end - meta.begin; ++i) {
        check<FormatError>(ptr[i] <= 1, "agla::io::SafetensorsFile::tensor: ", path_, ": BOOL tensor '", name,
                           "' holds byte value ", static_cast<int>(ptr[i]), " at element ", i, "; expected 0 or 1");
      }
    }
    const size_t element = c10::elementSize(meta.scalar_type);
    auto keep_alive = mapping_;
    at::Tensor view = at::from_blob(
        ptr, meta.shape, [keep_alive](void*) mutable { keep_alive.reset(); }, options);
    if (reinterpret_cast<uintptr_t>(ptr) % element != 0) return view.clone();
    return view;
  }

  /// Every tensor, zero-copy (see `tensor`).
  StateDict state_dict() const {
    StateDict out;
    for (const auto& entry : infos_) out.emplace(entry.first, tensor(entry.first));
    return out;
  }

 private:
  SafetensorsFile() = default;

  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(agla::detail::concat("agla::io::SafetensorsFile: ", path_, ": ", what));
  }

  static bool to_u64(const nlohmann::json& value, uint64_t& out) {
    if (!value.is_number_unsigned()) {
      if (value.is_number_integer() && value.get<int64_t>() >= 0) {
        out = static_cast<uint64_t>(value.get<int64_t>());
        return true;
      }
      return false;
    }
    out = value.get<uint64_t>();
    return true;
  }

  void parse_header() {
    check<FormatError>(detail::host_is_little_endian(), "agla::io::SafetensorsFile: ", path_,
                       ": big-endian hosts are not supported");
    const uint64_t file_size = mapping_->size();
    if (file_size < 8) {
      fail(agla::detail::concat("truncated: the file has ", file_size, " bytes, fewer than the 8-byte header length"));
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | mapping_->data()[i];
    if (header_len > kSafetensorsMaxHeaderBytes) {
      fail(agla::detail::concat("header length ", header_len, " exceeds the cap of ", kSafetensorsMaxHeaderBytes,
                                " bytes"));
    }
    if (header_len > file_size - 8) {
      fail(agla::detail::concat("header length ", header_len, " runs past the end of the file (", file_size - 8,
                                " bytes after the length field)"));
    }
    data_start_ = 8 + header_len;
    const uint64_t data_size = file_size - data_start_;
    const char* text = reinterpret_cast<const char*>(mapping_->data() + 8);
    // Duplicate names would make the header ambiguous: parse_json refuses them.
    const nlohmann::json header =
        parse_json(text, text + header_len, agla::detail::concat("agla::io::SafetensorsFile: ", path_, ": header"),
                   "tensor");
    if (!header.is_object()) fail("header must be a JSON object");

    std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> spans;
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& entry = it.value();
      if (name == "__metadata__") {
        if (!entry.is_object()) fail("__metadata__ must be an object of strings");
        for (auto m = entry.begin(); m != entry.end(); ++m) {
          if (!m.value().is_string()) {
            fail(agla::detail::concat("__metadata__ entry '", m.key(), "' must be a string; got ",
                                      detail::describe_json(m.value())));
          }
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = agla::detail::concat("tensor '", name, "': ");
      if (!entry.is_object()) fail(where + "entry must be an object with dtype, shape and data_offsets");
      for (const char* key : {"dtype", "shape", "data_offsets"}) {
        if (!entry.contains(key)) fail(agla::detail::concat(where, "missing \"", key, "\""));
      }
      SafetensorsTensorInfo meta;
      if (!entry["dtype"].is_string()) fail(where + "dtype must be a string");
      meta.dtype = entry["dtype"].get<std::string>();
      uint64_t element = 0;
      if (!detail::safetensors_dtype(meta.dtype, meta.scalar_type, element)) {
        fail(agla::detail::concat(where, "unsupported dtype '", meta.dtype,
                                  "'; expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL"));
      }
      const nlohmann::json& shape = entry["shape"];
      if (!shape.is_array()) fail(where + "shape must be an array of non-negative integers");
      uint64_t count = 1;
      bool overflow = false;
      for (const auto& dim : shape) {
        uint64_t d = 0;
        if (!to_u64(dim, d) || d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          fail(agla::detail::concat(where, "shape ", detail::describe_json(shape), " must hold non-negative integers"));
        }
        meta.shape.push_back(static_cast<int64_t>(d));
        if (d != 0 && count > std::numeric_limits<uint64_t>::max() / d) overflow = true;
        count *= d;
      }
      if (count != 0 && element > std::numeric_limits<uint64_t>::max() / count) overflow = true;
      if (overflow)
        fail(agla::detail::concat(where, "shape ", detail::describe_json(shape), " overflows 64-bit byte counts"));
      const uint64_t nbytes = count * element;
      const nlohmann::json& offsets = entry["data_offsets"];
      if (!offsets.is_array() || offsets.size() != 2 || !to_u64(offsets[0], meta.begin) ||
          !to_u64(offsets[1], meta.end)) {
        fail(agla::detail::concat(where, "data_offsets must be [begin, end] non-negative integers; got ",
                                  detail::describe_json(offsets)));
      }
      if (meta.end < meta.begin) {
        fail(agla::detail::concat(where, "data_offsets [", meta.begin, ", ", meta.end, "] end before begin"));
      }
      if (meta.end - meta.begin != nbytes) {
        fail(agla::detail::concat(where, "data_offsets [", meta.begin, ", ", meta.end, "] span ", meta.end - meta.begin,
                                  " bytes but shape ", detail::describe_json(shape), " x ", meta.dtype, " needs ",
                                  nbytes));
      }
      if (meta.end > data_size) {
        fail(agla::detail::concat(where, "data_offsets [", meta.begin, ", ", meta.end,
                                  "] run past the end of the data section (", data_size, " bytes)"));
      }
      if (nbytes > 0) spans.push_back({{meta.begin, meta.end}, name});
      infos_.emplace(name, std::move(meta));
    }
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i) {
      if (spans[i].first.first < spans[i - 1].first.second) {
        fail(agla::detail::concat("tensor '", spans[i].second, "' [", spans[i].first.first, ", ", spans[i].first.second,
                                  ") overlaps tensor '", spans[i - 1].second, "' [", spans[i - 1].first.first, ", ",
                                  spans[i - 1].first.second, ")"));
      }
    }
  }

  std::string path_;
  std::shared_ptr<detail::MappedFile> mapping_;
  uint64_t data_start_ = 0;
  std::map<std::string, SafetensorsTensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

/// Reads every tensor of a safetensors file (CPU, file dtypes, zero-copy: see `SafetensorsFile`).
inline StateDict read_safetensors(const std::string& path) { return SafetensorsFile::open(path).state_dict(); }

/// Writes `tensors` (any device, supported dtypes; copied to contiguous CPU) and the string
/// `metadata` as a safetensors file: names sorted, tensors packed in name order, header padded with
/// spaces to a multiple of 8 (as the reference writer does). Writes `<path>.tmp` and renames it, so a
/// failed write never leaves a truncated file under `path`.
inline void write_safetensors(const std::string& path, const StateDict& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  check<InvalidArgument>(detail::host_is_little_endian(),
                         "agla::io::write_safetensors: big-endian hosts are not supported");
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> payload;
  uint64_t offset = 0;
  for (const auto& entry : tensors) {
    check<InvalidArgument>(!entry.first.empty() && entry.first != "__metadata__",
                           "agla::io::write_safetensors: invalid tensor name '", entry.first, "'");
    check<InvalidArgument>(entry.second.defined(), "agla::io::write_safetensors: tensor '", entry.first,
                           "' is undefined");
    const std::string dtype = detail::safetensors_dtype_name(entry.second.scalar_type());
    at::Tensor data = entry.second.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(data.numel()) * data.element_size();
    header[entry.first] = {
        {"dtype", dtype}, {"shape", data.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    payload.push_back(std::move(data));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check<FormatError>(out.good(), "agla::io::write_safetensors: cannot open '", tmp, "' for writing");
    unsigned char length[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i, n >>= 8) length[i] = static_cast<unsigned char>(n & 0xff);
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const at::Tensor& t : payload) {
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.flush();
    if (!out.good()) {
      out.close();
      std::remove(tmp.c_str());
      throw FormatError(agla::detail::concat("agla::io::write_safetensors: writing '", tmp, "' failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw FormatError(agla::detail::concat("agla::io::write_safetensors: cannot rename '", tmp, "' to '", path, "'"));
  }
}

}  // namespace agla::io
