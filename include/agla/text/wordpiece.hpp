#pragma once
/// \file
/// BLIP's text tokenizer: BERT WordPiece, uncased, on the bert-base-uncased vocabulary with
/// `[DEC]` and `[ENC]` appended, plus LAVIS's caption pre-processing that AGLA applies to prompts.
///
/// Two flavours reproduce the two reference implementations exactly (Unicode 14.0 tables):
/// * `BertFlavor::kTransformers` -- transformers v4.34 `BertTokenizer` as LAVIS `BlipBase.init_tokenizer`
///   configures it (what BLIP runs, the default): special tokens split off first, per-code-point
///   lower-casing, every C* category dropped, words over 100 code points become `[UNK]`.
/// * `BertFlavor::kGoogle` -- google-research/bert `tokenization.FullTokenizer(do_lower_case=True)`:
///   no special tokens, Python `str.lower()` per word (final sigma), only Cc/Cf dropped, 200 code points.
///
/// transformers additionally NFC-normalises the text before lower-casing; NFD and the removal of
/// non-spacing marks follow, which makes that step invisible, so it is not performed here.
/// Text must be valid UTF-8; anything else throws agla::InvalidArgument (never replaced silently).

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/limits.hpp"
#include "agla/text/detail/bert_base_uncased_vocab.hpp"
#include "agla/text/detail/unicode.hpp"

namespace agla::text {

/// Which reference BERT tokenizer to reproduce.
enum class BertFlavor {
  kTransformers,  ///< transformers `BertTokenizer` (slow), v4.34, as BLIP/LAVIS uses it
  kGoogle,        ///< google-research/bert `FullTokenizer(do_lower_case=True)`
};

namespace detail {

/// google-research/bert `_is_chinese_char`: CJK Unified Ideographs blocks (not kana, not Hangul).
inline bool is_cjk_ideograph(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/// `_is_punctuation`: the ASCII non-alphanumeric printable ranges, or general category P*.
inline bool is_bert_punctuation(char32_t c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126) ||
         (unicode::flags(c) & unicode::kPunctP) != 0;
}

/// `_is_whitespace`: space, tab, newline, carriage return or general category Zs.
inline bool is_bert_whitespace(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || (unicode::flags(c) & unicode::kSpaceZs) != 0;
}

/// `_is_control` of the flavour: C* (transformers) or Cc/Cf (Google), never tab/newline/return.
inline bool is_bert_control(char32_t c, BertFlavor flavor) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const uint8_t f = unicode::flags(c);
  return flavor == BertFlavor::kTransformers ? (f & unicode::kControlAnyC) != 0 : (f & unicode::kControlCcCf) != 0;
}

}  // namespace detail

/// LAVIS `BlipCaptionProcessor.pre_caption` (prompt "", `lavis/processors/blip_processors.py`):
/// Python `lower()`, `.!"()*#:;~` -> space, runs of >= 2 white-space characters -> one space,
/// `rstrip("\n")`, `strip(" ")`, then at most `max_words` space-separated words. UTF-8 in and out.
inline std::string pre_caption(const std::string& text, size_t max_words = 50) {
  namespace u = detail::unicode;
  const std::u32string lowered = u::lower_full(u::decode_utf8(text, "agla::text::pre_caption"));
  if (max_words == 0) return "";  // " ".join(caption.split(" ")[:0])
  std::u32string s;
  s.reserve(lowered.size());
  for (char32_t c : lowered) {
    const bool removed = c == '.' || c == '!' || c == '"' || c == '(' || c == ')' || c == '*' || c == '#' || c == ':' ||
                         c == ';' || c == '~';
    s.push_back(removed ? U' ' : c);
  }
  // re.sub(r"\s{2,}", " ", caption): only runs of two or more collapse; a lone tab stays.
  std::u32string collapsed;
  collapsed.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t j = i;
    while (j < s.size() && u::is_py_space(s[j])) ++j;
    if (j - i >= 2) {
      collapsed.push_back(U' ');
      i = j;
    } else {
      collapsed.push_back(s[i]);
      ++i;
    }
  }
  size_t end = collapsed.size();
  while (end > 0 && collapsed[end - 1] == U'\n') --end;
  while (end > 0 && collapsed[end - 1] == U' ') --end;
  size_t begin = 0;
  while (begin < end && collapsed[begin] == U' ') ++begin;
  // caption.split(" ")[:max_words] joined by " " is the prefix before the max_words-th space.
  size_t words = 1;
  for (size_t i = begin; i < end; ++i) {
    if (collapsed[i] == U' ' && words++ == max_words) {
      end = i;
      break;
    }
  }
  return u::encode_utf8(collapsed.data() + begin, collapsed.data() + end);
}

/// BERT WordPiece tokenizer (uncased) with BLIP's added `[DEC]` (bos) and `[ENC]` tokens.
class WordPieceTokenizer {
 public:
  /// Loads a `vocab.txt` (one token per line, line n = id n; LF or CRLF). `[DEC]` and `[ENC]` are
  /// appended after the last line when the file lacks them, as LAVIS's `add_special_tokens` does.
  static WordPieceTokenizer from_vocab_file(const std::string& path) {
    const std::string text = io::read_file(path, io::kMaxVocabFileBytes,
                                           "agla::text::WordPieceTokenizer::from_vocab_file: '" + path + "'");
    return from_vocab_text(text, path);
  }

  /// Parses the contents of a `vocab.txt`; `source` names it in error messages.
  static WordPieceTokenizer from_vocab_text(const std::string& text, const std::string& source) {
    std::vector<std::string> tokens;
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      tokens.push_back(std::move(line));
      start = end + 1;
    }
    return WordPieceTokenizer(std::move(tokens), source);
  }

  /// The bert-base-uncased vocabulary embedded in the library (30522 tokens) + `[DEC]` 30522, `[ENC]` 30523.
  static WordPieceTokenizer bert_base_uncased() {
    static const WordPieceTokenizer instance = [] {
      std::string text;
      for (const char* piece : detail::kBertBaseUncasedVocab) text += piece;
      return from_vocab_text(text, "<embedded bert-base-uncased vocab>");
    }();
    return instance;
  }

  /// Word pieces of `text` (UTF-8) without `[CLS]`/`[SEP]`, as the chosen reference tokenizer gives them.
  std::vector<std::string> tokenize(const std::string& text, BertFlavor flavor = BertFlavor::kTransformers) const {
    namespace u = detail::unicode;
    const std::u32string cps = u::decode_utf8(text, "agla::text::WordPieceTokenizer::tokenize");
    std::vector<std::string> out;
    if (flavor == BertFlavor::kGoogle) {
      tokenize_chunk(cps, flavor, out);
      return out;
    }
    // transformers' PreTrainedTokenizer.tokenize: special-token strings are matched case-sensitively
    // anywhere in the raw text and kept whole; the text around them is lower-cased per code point.
    std::u32string chunk;
    for (size_t i = 0; i < cps.size();) {
      const std::string* special = cps[i] == U'[' ? match_special(cps, i) : nullptr;
      if (special != nullptr) {
        tokenize_chunk(u::lower_per_code_point(chunk), flavor, out);
        chunk.clear();
        out.push_back(*special);
        i += special->size();
      } else {
        chunk.push_back(cps[i]);
        ++i;
      }
    }
    tokenize_chunk(u::lower_per_code_point(chunk), flavor, out);
    return out;
  }

  /// Ids of word pieces (unknown strings map to `[UNK]`, as transformers' `convert_tokens_to_ids`).
  std::vector<int64_t> tokens_to_ids(const std::vector<std::string>& tokens) const {
    std::vector<int64_t> ids;
    ids.reserve(tokens.size());
    for (const std::string& t : tokens) ids.push_back(token_to_id(t));
    return ids;
  }

  /// `[CLS] pieces [SEP]` ids, pieces truncated from the right so that at most `max_length` ids
  /// remain: BLIP's `tokenizer(text, truncation=True, max_length=35)` for one prompt (35 for ITM).
  std::vector<int64_t> encode(const std::string& text, size_t max_length = 35,
                              BertFlavor flavor = BertFlavor::kTransformers) const {
    check<InvalidArgument>(max_length >= 2, "agla::text::WordPieceTokenizer::encode: max_length must be >= 2 ",
                           "(room for [CLS] and [SEP]); got ", max_length);
    const std::vector<std::string> pieces = tokenize(text, flavor);
    std::vector<int64_t> ids{cls_id_};
    for (size_t i = 0; i < pieces.size() && i + 2 < max_length; ++i) ids.push_back(token_to_id(pieces[i]));
    ids.push_back(sep_id_);
    return ids;
  }

  /// transformers' `decode(ids, skip_special_tokens=True)` with its default clean-up of spaces
  /// before punctuation and contractions (how LAVIS turns generated ids into a caption).
  std::string decode(const std::vector<int64_t>& ids) const {
    std::string text;
    for (int64_t id : ids) {
      if (is_special_id(id)) continue;
      const std::string& t = id_to_token(id);
      if (t.size() >= 2 && t[0] == '#' && t[1] == '#' && !text.empty()) {
        text += t.substr(2);
      } else {
        if (!text.empty()) text += ' ';
        text += t;
      }
    }
    static const std::pair<const char*, const char*> kCleanUp[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kCleanUp) {
      const std::string f(from), t(to);
      for (size_t pos = text.find(f); pos != std::string::npos; pos = text.find(f, pos + t.size()))
        text.replace(pos, f.size(), t);
    }
    return text;
  }

  /// Id of `token` (a vocabulary line or an added special token); `[UNK]`'s id when unknown.
  int64_t token_to_id(const std::string& token) const {
    const auto it = vocab_.find(token);
    if (it != vocab_.end()) return it->second;
    if (token == "[DEC]") return dec_id_;
    if (token == "[ENC]") return enc_id_;
    return unk_id_;
  }

  /// Whether `token` has its own id (vocabulary line or added special token).
  bool contains(const std::string& token) const {
    return vocab_.count(token) != 0 || token == "[DEC]" || token == "[ENC]";
  }

  /// Token string of `id`, 0 <= id < size(); otherwise agla::InvalidArgument.
  const std::string& id_to_token(int64_t id) const {
    check<InvalidArgument>(id >= 0 && static_cast<size_t>(id) < id_to_token_.size(),
                           "agla::text::WordPieceTokenizer::id_to_token: id must be in [0, ", id_to_token_.size(),
                           "); got ", id);
    return id_to_token_[static_cast<size_t>(id)];
  }

  /// Number of ids: vocabulary lines plus appended special tokens (30524 for BLIP's bert-base-uncased).
  size_t size() const { return id_to_token_.size(); }

  int64_t pad_id() const { return pad_id_; }    ///< `[PAD]`
  int64_t unk_id() const { return unk_id_; }    ///< `[UNK]`
  int64_t cls_id() const { return cls_id_; }    ///< `[CLS]` (first token for ITC)
  int64_t sep_id() const { return sep_id_; }    ///< `[SEP]` (last token; the captioner's stop token)
  int64_t mask_id() const { return mask_id_; }  ///< `[MASK]`
  int64_t dec_id() const { return dec_id_; }    ///< `[DEC]` (captioning bos)
  int64_t enc_id() const { return enc_id_; }    ///< `[ENC]` (replaces `[CLS]` for ITM)

 private:
  WordPieceTokenizer(std::vector<std::string> tokens, const std::string& source) : id_to_token_(std::move(tokens)) {
    const char* where = "agla::text::WordPieceTokenizer: vocabulary ";
    for (size_t i = 0; i < id_to_token_.size(); ++i) {
      // Validates the vocabulary's UTF-8 so that tokens compare with decoded text byte for byte.
      detail::unicode::decode_utf8(id_to_token_[i], "agla::text::WordPieceTokenizer: vocabulary line");
      vocab_[id_to_token_[i]] = static_cast<int64_t>(i);  // a repeated line keeps its last id, as transformers
    }
    auto required = [&](const char* name) {
      const auto it = vocab_.find(name);
      check<FormatError>(it != vocab_.end(), where, source, " has no ", name, " line");
      return it->second;
    };
    pad_id_ = required("[PAD]");
    unk_id_ = required("[UNK]");
    cls_id_ = required("[CLS]");
    sep_id_ = required("[SEP]");
    mask_id_ = required("[MASK]");
    auto added = [&](const char* name) {
      const auto it = vocab_.find(name);
      if (it != vocab_.end()) return it->second;
      id_to_token_.emplace_back(name);
      return static_cast<int64_t>(id_to_token_.size() - 1);
    };
    dec_id_ = added("[DEC]");
    enc_id_ = added("[ENC]");
  }

  bool is_special_id(int64_t id) const {
    return id == pad_id_ || id == unk_id_ || id == cls_id_ || id == sep_id_ || id == mask_id_ || id == dec_id_ ||
           id == enc_id_;
  }

  /// The special-token string starting at cps[i], if any (they are ASCII and none prefixes another).
  static const std::string* match_special(const std::u32string& cps, size_t i) {
    static const std::string kSpecial[] = {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]", "[DEC]", "[ENC]"};
    for (const std::string& s : kSpecial) {
      if (i + s.size() > cps.size()) continue;
      bool equal = true;
      for (size_t k = 0; k < s.size() && equal; ++k) equal = cps[i + k] == static_cast<char32_t>(s[k]);
      if (equal) return &s;
    }
    return nullptr;
  }

  /// BasicTokenizer then WordpieceTokenizer on text containing no special token; appends to `out`.
  void tokenize_chunk(const std::u32string& text, BertFlavor flavor, std::vector<std::string>& out) const {
    namespace u = detail::unicode;
    // _clean_text and _tokenize_chinese_chars.
    std::u32string cleaned;
    cleaned.reserve(text.size());
    for (char32_t c : text) {
      if (c == 0 || c == 0xFFFD || detail::is_bert_control(c, flavor)) continue;
      if (detail::is_bert_whitespace(c)) {
        cleaned.push_back(U' ');
      } else if (detail::is_cjk_ideograph(c)) {
        cleaned.push_back(U' ');
        cleaned.push_back(c);
        cleaned.push_back(U' ');
      } else {
        cleaned.push_back(c);
      }
    }
    std::vector<std::u32string> split_tokens;
    for (const std::u32string& word : u::split_py_whitespace(cleaned)) {
      const std::u32string base = u::strip_accents(u::lower_full(word));
      // _run_split_on_punc: every punctuation character becomes its own piece.
      std::u32string current;
      for (char32_t c : base) {
        if (detail::is_bert_punctuation(c)) {
          if (!current.empty()) split_tokens.push_back(std::move(current));
          current.clear();
          split_tokens.emplace_back(1, c);
        } else {
          current.push_back(c);
        }
      }
      if (!current.empty()) split_tokens.push_back(std::move(current));
    }
    const size_t max_chars = flavor == BertFlavor::kTransformers ? 100 : 200;
    for (const std::u32string& piece : split_tokens)
      for (const std::u32string& word : u::split_py_whitespace(piece)) wordpiece(word, max_chars, out);
  }

  /// WordpieceTokenizer.tokenize for one word: greedy longest match first, `##` continuations,
  /// the whole word `[UNK]` when it is longer than `max_chars` code points or some position has no match.
  void wordpiece(const std::u32string& word, size_t max_chars, std::vector<std::string>& out) const {
    if (word.size() > max_chars) {
      out.push_back("[UNK]");
      return;
    }
    std::string utf8;
    std::vector<size_t> offset;
    for (char32_t c : word) {
      offset.push_back(utf8.size());
      detail::unicode::append_utf8(utf8, c);
    }
    offset.push_back(utf8.size());
    std::vector<std::string> pieces;
    size_t start = 0;
    const size_t n = word.size();
    while (start < n) {
      size_t end = n;
      std::string found;
      while (start < end) {
        std::string candidate = (start > 0 ? "##" : "") + utf8.substr(offset[start], offset[end] - offset[start]);
        if (vocab_.count(candidate) != 0) {
          found = std::move(candidate);
          break;
        }
        --end;
      }
      if (found.empty()) {
        out.push_back("[UNK]");
        return;
      }
      pieces.push_back(std::move(found));
      start = end;
    }
    for (std::string& p : pieces) out.push_back(std::move(p));
  }

  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int64_t> vocab_;
  int64_t pad_id_ = 0, unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, mask_id_ = 0, dec_id_ = 0, enc_id_ = 0;
};

}  // namespace agla::text
