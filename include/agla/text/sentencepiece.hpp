#pragma once
/// \file
/// The SentencePiece tokenizer of a LLaVA-1.5 checkpoint (`tokenizer.model`, the LLaMA/Vicuna
/// vocabulary), read and run natively: the model file's protobuf is decoded here and encoding
/// follows SentencePiece's BPE (`bpe_model.cc`: merge the adjacent pair whose union is a vocabulary
/// piece of highest score, leftmost first; unknown characters fall back to `<0xXX>` byte pieces).
///
/// Why not libsentencepiece: Debian's `libsentencepiece0` exports its bundled protobuf 3.14 runtime,
/// which clashes with the protobuf 3.21 that libtorch loads -- a process linking both crashes while
/// loading or fails protobuf's version check. The native reader has no such dependency, and its
/// ids were checked against libsentencepiece 0.1.97 in a separate process (tests/data/llava/tokenizer).
///
/// Supported: BPE models with the "identity" normaliser (no precompiled character map), dummy
/// prefix, whitespace escaping and byte fallback -- the LLaMA tokenizer. Other models are refused
/// with `agla::FormatError`, as are files over `io::kMaxTokenizerModelBytes`, models of more than
/// `io::kMaxTokenizerPieces` pieces and BOS/EOS/UNK ids outside the vocabulary, so a hostile file
/// costs at most a bounded amount of memory.

#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/limits.hpp"

namespace agla::text {

namespace detail {

/// Minimal protobuf wire-format reader over a byte range (varint, 32-bit, length-delimited).
class ProtoReader {
 public:
  ProtoReader(const char* begin, const char* end, const std::string& where) : p_(begin), end_(end), where_(where) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      check<FormatError>(p_ < end_, where_, ": truncated varint");
      const auto byte = static_cast<uint8_t>(*p_++);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw FormatError(where_ + ": varint longer than 10 bytes");
  }
  /// Reads a field key: field number and wire type.
  std::pair<uint32_t, uint32_t> key() {
    const auto k = varint();
    return {static_cast<uint32_t>(k >> 3), static_cast<uint32_t>(k & 7)};
  }
  std::pair<const char*, const char*> bytes() {
    const auto n = varint();
    check<FormatError>(n <= static_cast<uint64_t>(end_ - p_), where_, ": length-delimited field overruns the data");
    const char* begin = p_;
    p_ += n;
    return {begin, p_};
  }
  float fixed32_float() {
    check<FormatError>(end_ - p_ >= 4, where_, ": truncated 32-bit field");
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 4;
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        return;
      case 1:
        check<FormatError>(end_ - p_ >= 8, where_, ": truncated 64-bit field");
        p_ += 8;
        return;
      case 2:
        bytes();
        return;
      case 5:
        check<FormatError>(end_ - p_ >= 4, where_, ": truncated 32-bit field");
        p_ += 4;
        return;
      default:
        throw FormatError(agla::detail::concat(where_, ": unsupported protobuf wire type ", wire_type));
    }
  }

 private:
  const char* p_;
  const char* end_;
  std::string where_;
};

/// Byte length of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes, as SentencePiece).
inline size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xe) return 3;
  if ((lead >> 3) == 0x1e) return 4;
  return 1;
}

}  // namespace detail

/// A LLaMA-style SentencePiece BPE tokenizer loaded from `tokenizer.model`; encodes like
/// `SentencePieceProcessor::Encode` and transformers' slow `LlamaTokenizer` (legacy mode, which the
/// LLaVA code base loads with `use_fast=False`), decodes like `skip_special_tokens=True`.
class SentencePieceTokenizer {
 public:
  /// Piece types of `sentencepiece_model.proto`.
  enum class PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

  /// Reads `path` (a `tokenizer.model`, a regular file of at most `io::kMaxTokenizerModelBytes`);
  /// throws `agla::FormatError` when it cannot be read or is not a BPE model with identity
  /// normalisation.
  explicit SentencePieceTokenizer(const std::string& path) {
    const std::string where = "agla::text::SentencePieceTokenizer: \"" + path + "\"";
    const std::string data = io::read_file(path, io::kMaxTokenizerModelBytes, where);
    io::guard_allocation(where, [&] {
      parse(data, where);
      return 0;
    });
  }

  /// Ids of `text` without BOS/EOS (the dummy-prefix space is added as SentencePiece does).
  std::vector<int64_t> encode(const std::string& text) const {
    std::vector<int64_t> ids;
    const std::string normalized = normalize(text);
    if (normalized.empty()) return ids;
    // Symbols: one per UTF-8 character, linked left to right; merged in place.
    struct Symbol {
      size_t begin, length;
      int prev, next;
    };
    std::vector<Symbol> symbols;
    for (size_t i = 0; i < normalized.size();) {
      const size_t n = std::min(detail::utf8_length(static_cast<unsigned char>(normalized[i])), normalized.size() - i);
      symbols.push_back({i, n, static_cast<int>(symbols.size()) - 1, static_cast<int>(symbols.size()) + 1});
      i += n;
    }
    symbols.back().next = -1;
    struct Pair {
      float score;
      int left, right;
      size_t length;
    };
    // Highest score first; on ties the leftmost pair (SymbolPairComparator in bpe_model.cc).
    auto lower = [](const Pair& a, const Pair& b) {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<Pair, std::vector<Pair>, decltype(lower)> agenda(lower);
    auto propose = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const auto& l = symbols[static_cast<size_t>(left)];
      const auto& r = symbols[static_cast<size_t>(right)];
      const auto it = merge_vocab_.find(normalized.substr(l.begin, l.length + r.length));
      if (it != merge_vocab_.end())
        agenda.push({scores_[static_cast<size_t>(it->second)], left, right, l.length + r.length});
    };
    for (size_t i = 1; i < symbols.size(); ++i) propose(static_cast<int>(i) - 1, static_cast<int>(i));
    while (!agenda.empty()) {
      const Pair top = agenda.top();
      agenda.pop();
      auto& l = symbols[static_cast<size_t>(top.left)];
      auto& r = symbols[static_cast<size_t>(top.right)];
      // Stale entries: a side was merged away or changed since the pair was proposed.
      if (l.length == 0 || r.length == 0 || l.length + r.length != top.length || l.next != top.right) continue;
      l.length += r.length;
      l.next = r.next;
      if (r.next >= 0) symbols[static_cast<size_t>(r.next)].prev = top.left;
      r.length = 0;
      propose(l.prev, top.left);
      propose(top.left, l.next);
    }
    for (int i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
      const auto& s = symbols[static_cast<size_t>(i)];
      const std::string piece = normalized.substr(s.begin, s.length);
      const auto it = merge_vocab_.find(piece);
      if (it != merge_vocab_.end()) {
        ids.push_back(it->second);
      } else if (byte_fallback_) {
        for (unsigned char byte : piece) ids.push_back(byte_ids_[byte]);
      } else {
        ids.push_back(unk_id_);
      }
    }
    return ids;
  }

  /// Text of `ids`, skipping control and unknown-to-the-model ids (BOS, EOS, pad, the `<image>` id
  /// llava-hf adds past the SentencePiece vocabulary), like `skip_special_tokens=True`.
  std::string decode(const std::vector<int64_t>& ids) const {
    std::string text;
    for (int64_t id : ids) {
      if (id < 0 || id >= size()) continue;
      const auto type = types_[static_cast<size_t>(id)];
      if (type == PieceType::Control) continue;
      if (type == PieceType::Byte) {
        text.push_back(static_cast<char>(byte_values_[static_cast<size_t>(id)]));
        continue;
      }
      text += pieces_[static_cast<size_t>(id)];
    }
    std::string out;
    static const std::string kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's escaped space
    for (size_t i = 0; i < text.size();) {
      if (escape_whitespaces_ && text.compare(i, kSpace.size(), kSpace) == 0) {
        out.push_back(' ');
        i += kSpace.size();
      } else {
        out.push_back(text[i++]);
      }
    }
    if (add_dummy_prefix_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  /// Piece string of `id` (e.g. "▁the", "<0x0A>", "<s>"); throws `agla::InvalidArgument` when out of range.
  const std::string& piece(int64_t id) const {
    check<InvalidArgument>(id >= 0 && id < size(), "agla::text::SentencePieceTokenizer::piece: id ", id,
                           " is outside [0, ", size(), ")");
    return pieces_[static_cast<size_t>(id)];
  }
  /// Beginning-of-sequence id (1 for LLaMA).
  int64_t bos_id() const { return bos_id_; }
  /// End-of-sequence id (2 for LLaMA).
  int64_t eos_id() const { return eos_id_; }
  /// Number of pieces in the model (32000 for LLaMA).
  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }

 private:
  std::string normalize(const std::string& text) const {
    std::string in = text;
    if (remove_extra_whitespaces_) {
      std::string collapsed;
      for (char c : in) {
        if (c == ' ' && (collapsed.empty() || collapsed.back() == ' ')) continue;
        collapsed.push_back(c);
      }
      while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
      in = collapsed;
    }
    if (in.empty()) return in;
    const std::string space = escape_whitespaces_ ? "\xe2\x96\x81" : " ";
    std::string out = add_dummy_prefix_ ? space : std::string();
    for (char c : in) {
      if (c == ' ') {
        out += space;
      } else {
        out.push_back(c);
      }
    }
    return out;
  }

  void parse(const std::string& data, const std::string& where) {
    detail::ProtoReader model(data.data(), data.data() + data.size(), where);
    int64_t model_type = 1;
    std::string normalizer_name;
    bool has_charsmap = false;
    while (!model.done()) {
      const auto [field, wire] = model.key();
      if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
        const auto [b, e] = model.bytes();
        detail::ProtoReader piece(b, e, where);
        std::string text;
        float score = 0.0f;
        int64_t type = 1;
        while (!piece.done()) {
          const auto [f, w] = piece.key();
          if (f == 1 && w == 2) {
            const auto [pb, pe] = piece.bytes();
            text.assign(pb, pe);
          } else if (f == 2 && w == 5) {
            score = piece.fixed32_float();
          } else if (f == 3 && w == 0) {
            type = static_cast<int64_t>(piece.varint());
          } else {
            piece.skip(w);
          }
        }
        check<FormatError>(type >= 1 && type <= 6, where, ": piece ", pieces_.size(), " has unknown type ", type);
        check<FormatError>(pieces_.size() < io::kMaxTokenizerPieces, where, ": more than ", io::kMaxTokenizerPieces,
                           " pieces");
        pieces_.push_back(text);
        scores_.push_back(score);
        types_.push_back(static_cast<PieceType>(type));
      } else if (field == 2 && wire == 2) {  // TrainerSpec
        const auto [b, e] = model.bytes();
        detail::ProtoReader spec(b, e, where);
        while (!spec.done()) {
          const auto [f, w] = spec.key();
          if (w != 0) {
            spec.skip(w);
            continue;
          }
          const auto value = static_cast<int64_t>(static_cast<int32_t>(spec.varint()));
          if (f == 3) model_type = value;
          if (f == 35) byte_fallback_ = value != 0;
          if (f == 40) unk_id_ = value;
          if (f == 41) bos_id_ = value;
          if (f == 42) eos_id_ = value;
        }
      } else if (field == 3 && wire == 2) {  // NormalizerSpec
        const auto [b, e] = model.bytes();
        detail::ProtoReader spec(b, e, where);
        while (!spec.done()) {
          const auto [f, w] = spec.key();
          if (f == 1 && w == 2) {
            const auto [nb, ne] = spec.bytes();
            normalizer_name.assign(nb, ne);
          } else if (f == 2 && w == 2) {
            const auto [cb, ce] = spec.bytes();
            has_charsmap = has_charsmap || cb != ce;
          } else if (f == 3 && w == 0) {
            add_dummy_prefix_ = spec.varint() != 0;
          } else if (f == 4 && w == 0) {
            remove_extra_whitespaces_ = spec.varint() != 0;
          } else if (f == 5 && w == 0) {
            escape_whitespaces_ = spec.varint() != 0;
          } else {
            spec.skip(w);
          }
        }
      } else {
        model.skip(wire);
      }
    }
    check<FormatError>(!pieces_.empty(), where, ": no pieces (not a SentencePiece model?)");
    check<FormatError>(model_type == 2, where, ": only BPE models (LLaMA's) are supported; model_type is ", model_type);
    check<FormatError>(!has_charsmap, where, ": normaliser \"", normalizer_name,
                       "\" uses a character map; only \"identity\" (LLaMA's) is supported");
    for (size_t i = 0; i < pieces_.size(); ++i) {
      const auto type = types_[i];
      if (type == PieceType::Normal || type == PieceType::UserDefined) {
        merge_vocab_.emplace(pieces_[i], static_cast<int64_t>(i));
      } else if (type == PieceType::Byte) {
        const auto& p = pieces_[i];
        check<FormatError>(p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' &&
                               std::isxdigit(static_cast<unsigned char>(p[3])) &&
                               std::isxdigit(static_cast<unsigned char>(p[4])),
                           where, ": byte piece ", i, " is \"", p, "\"; expected <0xXX>");
        const auto value = std::stoi(p.substr(3, 2), nullptr, 16);
        byte_ids_[static_cast<size_t>(value)] = static_cast<int64_t>(i);
        byte_values_.resize(pieces_.size(), 0);
        byte_values_[i] = static_cast<uint8_t>(value);
      }
    }
    byte_values_.resize(pieces_.size(), 0);
    if (byte_fallback_) {
      for (size_t b = 0; b < 256; ++b) {
        check<FormatError>(byte_ids_[b] >= 0, where, ": byte_fallback is on but piece <0x", std::hex, b,
                           "> is missing");
      }
    }
    check<FormatError>(unk_id_ >= 0 && unk_id_ < size(), where, ": unk_id ", unk_id_, " is outside the vocabulary");
    check<FormatError>(bos_id_ >= 0 && bos_id_ < size(), where, ": bos_id ", bos_id_, " is outside the vocabulary");
    check<FormatError>(eos_id_ >= 0 && eos_id_ < size(), where, ": eos_id ", eos_id_, " is outside the vocabulary");
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<PieceType> types_;
  std::unordered_map<std::string, int64_t> merge_vocab_;  // normal and user-defined pieces
  std::vector<int64_t> byte_ids_ = std::vector<int64_t>(256, -1);
  std::vector<uint8_t> byte_values_;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  int64_t unk_id_ = 0, bos_id_ = 1, eos_id_ = 2;
};

}  // namespace agla::text
