#pragma once
/// \file
/// A strict reader of zip archives whose records are stored uncompressed -- the container of
/// PyTorch checkpoints (`torch.save` since 1.6 writes every record uncompressed, with data
/// descriptors and ZIP64 end records).
///
/// Every size the archive declares is checked before anything is allocated for it: the central
/// directory must end where its end record begins and hold at most `kMaxZipRecords` records; each
/// record's local header must name the record the central directory names, with the same flags
/// and method, and sizes and CRC that agree with the central directory (a local header may leave
/// them zero only when a data descriptor follows the data, which must then agree too); a record's
/// data must end before the central directory; no two records may overlap or share a name.
///
/// Compressed (e.g. DEFLATE) and encrypted records are refused, not inflated: `torch.save` never
/// writes them, and refusing them removes decompression bombs by construction. A record can
/// therefore never yield more bytes than it occupies in the file. CRC-32 values are compared
/// between the headers but not recomputed over the data (as in `torch.load`): integrity against
/// corruption is not what stops a hostile file, and recomputing would add a pass over every byte.

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/limits.hpp"

namespace agla::io {

/// One uncompressed record of a zip archive: its name and where its bytes lie in the file.
struct ZipRecord {
  std::string name;          ///< path inside the archive, e.g. "archive/data/0"
  uint64_t data_offset = 0;  ///< file offset of the first data byte
  uint64_t size = 0;         ///< data bytes (stored: equal in the file and once read)
  uint32_t crc32 = 0;        ///< CRC-32 the headers declare (compared, not recomputed)
};

namespace detail {

inline uint64_t zip_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace detail

/// A validated zip archive of stored records (see the file comment). Reads go through one file
/// stream, so an instance is not for concurrent use.
class StoredZip {
 public:
  /// Opens and validates `path`; `where` (function and file) prefixes every error message. Throws
  /// `agla::FormatError` for anything but a well-formed archive of stored records.
  static StoredZip open(const std::string& path, const std::string& where) {
    StoredZip zip;
    zip.where_ = where;
    zip.file_size_ = regular_file_size(path, where);
    zip.in_ = std::make_unique<std::ifstream>(path, std::ios::binary);
    check<FormatError>(zip.in_->good(), where, ": cannot open file");
    guard_allocation(where, [&zip] {
      zip.parse();
      return 0;
    });
    return zip;
  }

  /// Every record, in central-directory order.
  const std::vector<ZipRecord>& records() const { return records_; }

  /// The record named `name`, or nullptr.
  const ZipRecord* find(const std::string& name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &records_[it->second];
  }

  /// Size of the archive file in bytes.
  uint64_t file_size() const { return file_size_; }

  /// Copies the `record.size` data bytes of `record` (one of `records()`) to `out`.
  void read(const ZipRecord& record, void* out) const { read_at(record.data_offset, record.size, out); }

  /// The data of `record` as a string; refused when it is longer than `max_bytes`.
  std::string read_string(const ZipRecord& record, uint64_t max_bytes) const {
    check<FormatError>(record.size <= max_bytes, where_, ": record '", record.name, "' has ", record.size,
                       " bytes; at most ", max_bytes, " expected");
    std::string out(static_cast<size_t>(record.size), '\0');
    read(record, out.data());
    return out;
  }

 private:
  static constexpr uint32_t kLocalHeader = 0x04034b50;
  static constexpr uint32_t kCentralHeader = 0x02014b50;
  static constexpr uint32_t kEndRecord = 0x06054b50;
  static constexpr uint32_t kEnd64Record = 0x06064b50;
  static constexpr uint32_t kEnd64Locator = 0x07064b50;
  static constexpr uint32_t kDataDescriptor = 0x08074b50;
  static constexpr uint64_t kMax32 = 0xffffffffu;

  StoredZip() = default;

  void read_at(uint64_t offset, uint64_t size, void* out) const {
    check<FormatError>(offset <= file_size_ && size <= file_size_ - offset, where_, ": reading ", size,
                       " bytes at offset ", offset, " runs past the end of the file (", file_size_, " bytes)");
    if (size == 0) return;
    in_->clear();
    in_->seekg(static_cast<std::streamoff>(offset));
    in_->read(static_cast<char*>(out), static_cast<std::streamsize>(size));
    check<FormatError>(in_->good() && static_cast<uint64_t>(in_->gcount()) == size, where_, ": cannot read ", size,
                       " bytes at offset ", offset, " (the file is truncated or unreadable)");
  }
  std::vector<unsigned char> bytes_at(uint64_t offset, uint64_t size) const {
    std::vector<unsigned char> out(static_cast<size_t>(size));
    read_at(offset, size, out.data());
    return out;
  }

  /// Reads a ZIP64 extra field out of `extra`: replaces each saturated value by its 64-bit form.
  /// Returns whether the field is present.
  bool zip64_extra(const unsigned char* extra, size_t length, const std::string& name, uint64_t* usize,
                   uint64_t* csize, uint64_t* offset) const {
    size_t at = 0;
    while (at + 4 <= length) {
      const uint64_t id = detail::zip_le(extra + at, 2);
      const uint64_t size = detail::zip_le(extra + at + 2, 2);
      check<FormatError>(at + 4 + size <= length, where_, ": record '", name, "': extra field overruns its header");
      if (id == 1) {
        size_t field = at + 4;
        const size_t end = at + 4 + size;
        for (uint64_t* value : {usize, csize, offset}) {
          if (value == nullptr || *value != kMax32) continue;
          check<FormatError>(field + 8 <= end, where_, ": record '", name, "': ZIP64 extra field too short");
          *value = detail::zip_le(extra + field, 8);
          field += 8;
        }
        return true;
      }
      at += 4 + size;
    }
    check<FormatError>(at == length, where_, ": record '", name, "': malformed extra field");
    return false;
  }

  void parse() {
    check<FormatError>(file_size_ >= 22, where_, ": file of ", file_size_, " bytes is too short to be a zip archive");
    // The end record: the last "PK\5\6" whose comment reaches exactly to the end of the file.
    const uint64_t tail_size = std::min<uint64_t>(file_size_, 22 + 0xffff);
    const std::vector<unsigned char> tail = bytes_at(file_size_ - tail_size, tail_size);
    int64_t found = -1;
    for (int64_t i = static_cast<int64_t>(tail_size) - 22; i >= 0; --i) {
      const unsigned char* p = tail.data() + i;
      if (detail::zip_le(p, 4) == kEndRecord && static_cast<uint64_t>(i) + 22 + detail::zip_le(p + 20, 2) == tail_size) {
        found = i;
        break;
      }
    }
    check<FormatError>(found >= 0, where_, ": no zip end-of-central-directory record (not a zip archive, or truncated)");
    const unsigned char* end = tail.data() + found;
    const uint64_t end_offset = file_size_ - tail_size + static_cast<uint64_t>(found);
    uint64_t disk = detail::zip_le(end + 4, 2), cd_disk = detail::zip_le(end + 6, 2);
    uint64_t disk_entries = detail::zip_le(end + 8, 2), entries = detail::zip_le(end + 10, 2);
    uint64_t cd_size = detail::zip_le(end + 12, 4), cd_offset = detail::zip_le(end + 16, 4);
    uint64_t cd_end = end_offset;  // where the central directory must end
    if (end_offset >= 20) {
      const std::vector<unsigned char> locator = bytes_at(end_offset - 20, 20);
      if (detail::zip_le(locator.data(), 4) == kEnd64Locator) {
        const uint64_t end64_offset = detail::zip_le(locator.data() + 8, 8);
        check<FormatError>(detail::zip_le(locator.data() + 4, 4) == 0 && detail::zip_le(locator.data() + 16, 4) == 1,
                           where_, ": multi-disk zip archives are not supported");
        check<FormatError>(end64_offset <= end_offset - 20 && end_offset - 20 - end64_offset >= 56, where_,
                           ": ZIP64 end record at ", end64_offset, " does not fit before its locator");
        const std::vector<unsigned char> end64 = bytes_at(end64_offset, 56);
        check<FormatError>(detail::zip_le(end64.data(), 4) == kEnd64Record, where_,
                           ": the ZIP64 locator does not point at a ZIP64 end record");
        check<FormatError>(detail::zip_le(end64.data() + 4, 8) == end_offset - 20 - end64_offset - 12, where_,
                           ": ZIP64 end record size does not reach its locator");
        // The 32-bit fields are either saturated or equal to their ZIP64 values.
        auto merge = [&](uint64_t& small, uint64_t wide, uint64_t saturated, const char* what) {
          check<FormatError>(small == saturated || small == wide, where_, ": end records disagree on the ", what, " (",
                             small, " vs ", wide, ")");
          small = wide;
        };
        merge(disk, detail::zip_le(end64.data() + 16, 4), 0xffff, "disk number");
        merge(cd_disk, detail::zip_le(end64.data() + 20, 4), 0xffff, "central directory disk");
        merge(disk_entries, detail::zip_le(end64.data() + 24, 8), 0xffff, "record count on this disk");
        merge(entries, detail::zip_le(end64.data() + 32, 8), 0xffff, "record count");
        merge(cd_size, detail::zip_le(end64.data() + 40, 8), kMax32, "central directory size");
        merge(cd_offset, detail::zip_le(end64.data() + 48, 8), kMax32, "central directory offset");
        cd_end = end64_offset;
      }
    }
    check<FormatError>(disk == 0 && cd_disk == 0 && disk_entries == entries, where_,
                       ": multi-disk zip archives are not supported");
    check<FormatError>(cd_offset <= cd_end && cd_size == cd_end - cd_offset, where_, ": central directory [",
                       cd_offset, ", +", cd_size, ") does not end where its end record begins (", cd_end, ")");
    check<FormatError>(entries <= kMaxZipRecords, where_, ": ", entries, " records exceed the limit of ",
                       kMaxZipRecords);
    check<FormatError>(entries <= cd_size / 46, where_, ": ", entries, " records cannot fit in a central directory of ",
                       cd_size, " bytes");
    const std::vector<unsigned char> cd = bytes_at(cd_offset, cd_size);

    records_.reserve(static_cast<size_t>(entries));
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // [local header, end of data or descriptor)
    spans.reserve(static_cast<size_t>(entries));
    size_t at = 0;
    for (uint64_t index = 0; index < entries; ++index) {
      check<FormatError>(at + 46 <= cd.size() && detail::zip_le(cd.data() + at, 4) == kCentralHeader, where_,
                         ": central directory record ", index, " is malformed");
      const unsigned char* h = cd.data() + at;
      const uint64_t flags = detail::zip_le(h + 8, 2), method = detail::zip_le(h + 10, 2);
      const uint32_t crc = static_cast<uint32_t>(detail::zip_le(h + 16, 4));
      uint64_t csize = detail::zip_le(h + 20, 4), usize = detail::zip_le(h + 24, 4);
      const uint64_t name_length = detail::zip_le(h + 28, 2), extra_length = detail::zip_le(h + 30, 2);
      const uint64_t comment_length = detail::zip_le(h + 32, 2), start_disk = detail::zip_le(h + 34, 2);
      uint64_t local_offset = detail::zip_le(h + 42, 4);
      check<FormatError>(at + 46 + name_length + extra_length + comment_length <= cd.size(), where_,
                         ": central directory record ", index, " overruns the central directory");
      std::string name(reinterpret_cast<const char*>(h + 46), static_cast<size_t>(name_length));
      zip64_extra(h + 46 + name_length, static_cast<size_t>(extra_length), name, &usize, &csize, &local_offset);
      at += static_cast<size_t>(46 + name_length + extra_length + comment_length);

      check<FormatError>(start_disk == 0 || start_disk == 0xffff, where_, ": record '", name,
                         "' lies on another disk");
      check<FormatError>((flags & 0x41) == 0, where_, ": record '", name, "' is encrypted");
      check<FormatError>(method == 0, where_, ": record '", name, "' is compressed (zip method ", method,
                         "); only stored records are read -- torch.save never compresses, so this file was re-packed "
                         "by another tool (store it again uncompressed, e.g. with `zip -0`, or re-save it)");
      check<FormatError>(csize == usize, where_, ": stored record '", name, "' declares ", csize,
                         " bytes in the file but ", usize, " once read");
      check<FormatError>(!name.empty() && by_name_.emplace(name, records_.size()).second, where_,
                         name.empty() ? ": a record has an empty name" : ": record '" + name + "' appears twice");

      // The local header must tell the same story.
      check<FormatError>(local_offset <= cd_offset && cd_offset - local_offset >= 30, where_, ": record '", name,
                         "': local header at ", local_offset, " does not lie before the central directory");
      const std::vector<unsigned char> local = bytes_at(local_offset, 30);
      check<FormatError>(detail::zip_le(local.data(), 4) == kLocalHeader, where_, ": record '", name,
                         "': no local header at offset ", local_offset);
      const uint64_t local_name_length = detail::zip_le(local.data() + 26, 2);
      const uint64_t local_extra_length = detail::zip_le(local.data() + 28, 2);
      check<FormatError>(local_name_length + local_extra_length <= cd_offset - local_offset - 30, where_, ": record '",
                         name, "': local header overruns the central directory");
      const std::vector<unsigned char> local_tail =
          bytes_at(local_offset + 30, local_name_length + local_extra_length);
      const std::string local_name(reinterpret_cast<const char*>(local_tail.data()),
                                   static_cast<size_t>(local_name_length));
      check<FormatError>(local_name == name, where_, ": record '", name, "': its local header names '", local_name,
                         "'");
      const uint64_t local_flags = detail::zip_le(local.data() + 6, 2);
      const bool descriptor = (flags & 0x8) != 0;
      check<FormatError>(local_flags == flags && detail::zip_le(local.data() + 8, 2) == method, where_, ": record '",
                         name, "': local header flags or method differ from the central directory");
      uint64_t local_crc = detail::zip_le(local.data() + 14, 4);
      uint64_t local_csize = detail::zip_le(local.data() + 18, 4), local_usize = detail::zip_le(local.data() + 22, 4);
      const bool local_zip64 = zip64_extra(local_tail.data() + local_name_length,
                                           static_cast<size_t>(local_extra_length), name, &local_usize, &local_csize,
                                           nullptr);
      // With a data descriptor (flag bit 3) the local header may leave CRC and sizes zero.
      auto agree = [&](uint64_t local_value, uint64_t central_value, const char* what) {
        check<FormatError>(local_value == central_value || (descriptor && local_value == 0), where_, ": record '",
                           name, "': local header declares ", what, " ", local_value, ", the central directory ",
                           central_value);
      };
      agree(local_crc, crc, "CRC-32");
      agree(local_csize, csize, "compressed size");
      agree(local_usize, usize, "size");

      const uint64_t data_offset = local_offset + 30 + local_name_length + local_extra_length;
      check<FormatError>(usize <= cd_offset - data_offset, where_, ": record '", name, "' declares ", usize,
                         " bytes at offset ", data_offset, ", past the central directory at ", cd_offset);
      uint64_t span_end = data_offset + usize;
      if (descriptor) {
        // Optional signature, CRC-32, then both sizes: 8 bytes each with ZIP64, else 4.
        const uint64_t field = local_zip64 ? 8 : 4;
        const uint64_t room = cd_offset - span_end;
        const std::vector<unsigned char> d = bytes_at(span_end, std::min<uint64_t>(room, 4 + 4 + 2 * field));
        const bool signed_descriptor = d.size() >= 4 && detail::zip_le(d.data(), 4) == kDataDescriptor;
        const size_t skip = signed_descriptor ? 4 : 0;
        check<FormatError>(d.size() >= skip + 4 + 2 * field, where_, ": record '", name,
                           "': data descriptor overruns the central directory");
        check<FormatError>(detail::zip_le(d.data() + skip, 4) == crc &&
                               detail::zip_le(d.data() + skip + 4, static_cast<int>(field)) == csize &&
                               detail::zip_le(d.data() + skip + 4 + field, static_cast<int>(field)) == usize,
                           where_, ": record '", name, "': data descriptor disagrees with the central directory");
        span_end += skip + 4 + 2 * field;
      }
      spans.emplace_back(local_offset, span_end);
      records_.push_back(ZipRecord{std::move(name), data_offset, usize, crc});
    }
    check<FormatError>(at == cd.size(), where_, ": central directory has ", cd.size() - at,
                       " bytes after its last record");
    // Overlapping records would let one stretch of the file be read many times over.
    std::vector<size_t> order(records_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&spans](size_t a, size_t b) { return spans[a] < spans[b]; });
    for (size_t i = 1; i < order.size(); ++i) {
      check<FormatError>(spans[order[i]].first >= spans[order[i - 1]].second, where_, ": records '",
                         records_[order[i - 1]].name, "' and '", records_[order[i]].name, "' overlap");
    }
  }

  std::string where_;
  uint64_t file_size_ = 0;
  std::unique_ptr<std::ifstream> in_;
  std::vector<ZipRecord> records_;
  std::unordered_map<std::string, size_t> by_name_;
};

}  // namespace agla::io
