#pragma once
/// \file
/// Word tokenization and WordNet lemmatization as the CHAIR reference (`chair.py` of
/// CHAIR-metric-standalone, used by OPERA and the AGLA/VCD-era repositories) computes them with
/// NLTK 3.8: `nltk.word_tokenize` (Punkt sentence splitting, then `NLTKWordTokenizer`) and
/// `WordNetLemmatizer.lemmatize` (WordNet 3.0 "morphy").
///
/// `word_tokenize` reproduces every rule of `NLTKWordTokenizer` (quotes, punctuation, clitics,
/// contractions) by hand-written passes, so its time is linear in the text. Two parts cannot be
/// reproduced without NLTK's trained models and are approximated (see `split_sentences`): Punkt's
/// sentence boundaries, and non-ASCII text (only ASCII letters are lower-cased by
/// `ascii_lower`; Unicode spaces are read as spaces; `\\w` outside ASCII is
/// approximated by `detail::is_word_code`).
///
/// `WordNetMorphy` is NLTK's `_morphy` over the WordNet 3.0 database files (`index.noun`,
/// `index.verb`, `noun.exc`, `verb.exc`; Debian's `wordnet-base` installs them in
/// /usr/share/wordnet, NLTK's `wordnet` corpus holds the same files): the exception list first,
/// then one round of suffix rules keeping the forms that are WordNet lemmas (the word itself
/// included), then further rounds only while none is found; the lemma is the shortest result (the
/// first of equally short ones), or the word itself when there is none.

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "agla/error.hpp"

namespace agla::eval {

namespace detail {

/// Python's `\s` on one byte of ASCII (space, \t \n \v \f \r and the separators 0x1c-0x1f).
inline bool is_space_byte(unsigned char c) { return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f); }

/// The length (1-4) of the UTF-8 character at `text[i]` (1 for a stray byte) and its code point.
inline std::pair<std::size_t, std::uint32_t> code_point_at(std::string_view text, std::size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  const std::size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  if (i + n > text.size()) return {1, c};
  std::uint32_t code = n == 1 ? c : n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
  for (std::size_t k = 1; k < n; ++k) code = (code << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3Fu);
  return {n, code};
}

/// Python's `\w` on a code point: ASCII letters, digits and '_'; outside ASCII, everything but
/// the punctuation, symbol and space blocks met in text (Latin-1 punctuation, General
/// Punctuation, arrows to dingbats, CJK and full-width punctuation, emoji).
inline bool is_word_code(std::uint32_t c) {
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) != 0 || c == '_';
  if (c >= 0xA0 && c <= 0xBF)
    return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA || (c >= 0xBC && c <= 0xBE);
  if (c == 0xD7 || c == 0xF7) return false;
  if (c >= 0x2000 && c <= 0x206F) return false;
  if (c >= 0x2190 && c <= 0x2BFF) return false;
  if ((c >= 0x3000 && c <= 0x3004) || (c >= 0x3008 && c <= 0x3020) || c == 0x3030) return false;
  if (c >= 0xFE10 && c <= 0xFE6F) return false;
  if ((c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
      (c >= 0xFF5B && c <= 0xFF65))
    return c == 0xFF3F;
  if (c >= 0x1F000 && c <= 0x1FAFF) return false;
  return true;
}

/// True when the character starting at `text[i]` is a word character (`\w`); false at the end.
inline bool word_at(std::string_view text, std::size_t i) {
  return i < text.size() && is_word_code(code_point_at(text, i).second);
}

/// True when the character ending just before `text[i]` is a word character; false at the start.
inline bool word_before(std::string_view text, std::size_t i) {
  if (i == 0) return false;
  std::size_t k = i - 1;
  while (k > 0 && (static_cast<unsigned char>(text[k]) & 0xC0u) == 0x80u && i - k < 4) --k;
  return word_at(text, k);
}

/// `text` with every Unicode space (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
/// U+202F, U+205F, U+3000; all `\s` to Python) replaced by one ASCII space.
inline std::string ascii_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto at = [&](std::size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0; };
    std::size_t n = 0;
    if (at(0) == 0xC2 && (at(1) == 0x85 || at(1) == 0xA0)) n = 2;
    if (at(0) == 0xE1 && at(1) == 0x9A && at(2) == 0x80) n = 3;
    if (at(0) == 0xE2 && at(1) == 0x80 &&
        ((at(2) >= 0x80 && at(2) <= 0x8A) || at(2) == 0xA8 || at(2) == 0xA9 || at(2) == 0xAF))
      n = 3;
    if (at(0) == 0xE2 && at(1) == 0x81 && at(2) == 0x9F) n = 3;
    if (at(0) == 0xE3 && at(1) == 0x80 && at(2) == 0x80) n = 3;
    if (n > 0) {
      out += ' ';
      i += n;
    } else {
      out += text[i++];
    }
  }
  return out;
}

/// True when `text` at `i` starts with `s`.
inline bool starts_at(std::string_view text, std::size_t i, std::string_view s) {
  return i <= text.size() && text.substr(i, s.size()) == s;
}

/// Pads every occurrence of any of `marks` (left to right, not overlapping) with a space on each
/// side (the `r" \g<0> "` substitutions of `NLTKWordTokenizer`).
inline std::string pad(std::string_view text, const std::vector<std::string_view>& marks) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    bool hit = false;
    for (std::string_view m : marks)
      if (starts_at(text, i, m)) {
        out += ' ';
        out.append(m);
        out += ' ';
        i += m.size();
        hit = true;
        break;
      }
    if (!hit) out += text[i++];
  }
  return out;
}

/// `NLTKWordTokenizer`'s final-period rule `([^\.])(\.)([closers]*)\s*$`: the one period whose
/// following characters are all closers or whitespace, not preceded by a period, becomes
/// `c . closers ` (`spaced`: `\1 \2 \3 `) or `c .closers ` (`\1 \2\3 `).
inline std::string final_period(const std::string& text, const std::vector<std::string_view>& closers, bool spaced) {
  // Scan back over the closers and whitespace that end the text.
  std::size_t end = text.size();
  std::size_t tail = end;
  while (tail > 0) {
    if (is_space_byte(static_cast<unsigned char>(text[tail - 1]))) {
      --tail;
      continue;
    }
    bool closer = false;
    for (std::string_view c : closers)
      if (c.size() <= tail && std::string_view(text).substr(tail - c.size(), c.size()) == c) {
        tail -= c.size();
        closer = true;
        break;
      }
    if (!closer) break;
  }
  // The regex is leftmost: the period must be followed only by closers (its group 3) and then
  // whitespace; try each period position from the left inside the tail region.
  for (std::size_t p = 1; p < text.size(); ++p) {
    if (text[p] != '.' || text[p - 1] == '.') continue;
    if (p + 1 < tail) continue;  // something other than closers/whitespace follows
    // Group 3: the longest run of closers right after the period; then only whitespace may follow.
    std::size_t q = p + 1;
    while (q < end) {
      bool closer = false;
      for (std::string_view c : closers)
        if (starts_at(text, q, c)) {
          q += c.size();
          closer = true;
          break;
        }
      if (!closer) break;
    }
    std::size_t r = q;
    while (r < end && is_space_byte(static_cast<unsigned char>(text[r]))) ++r;
    if (r != end) continue;
    std::string out = text.substr(0, p) + (spaced ? " . " : " .") + text.substr(p + 1, q - p - 1) + " ";
    return out;
  }
  return text;
}

/// Applies `(?i)\b(first)(second)\b` -> ` first second ` (a contraction split) everywhere.
inline std::string split_contraction(const std::string& text, std::string_view first, std::string_view second,
                                     bool needs_space_after) {
  const std::string whole = std::string(first) + std::string(second);
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const bool boundary_before = !word_before(text, i);
    if (boundary_before && i + whole.size() <= text.size()) {
      std::string candidate = text.substr(i, whole.size());
      std::transform(candidate.begin(), candidate.end(), candidate.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      const std::size_t after = i + whole.size();
      const bool boundary_after = needs_space_after
                                      ? after < text.size() && is_space_byte(static_cast<unsigned char>(text[after]))
                                      : !word_at(text, after);
      if (candidate == whole && boundary_after) {
        out += ' ';
        out += text.substr(i, first.size());
        out += ' ';
        out += text.substr(i + first.size(), second.size());
        out += ' ';
        i = after;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

/// Splits `text` into lines as Python's text-mode `readlines()` does: `\n`, `\r\n` and a lone `\r`
/// end a line, and each line keeps its ending written as `\n`; the last line may have none.
inline std::vector<std::string> python_readlines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n' || c == '\r') {
      line += '\n';
      lines.push_back(std::move(line));
      line.clear();
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else {
      line += c;
    }
  }
  if (!line.empty()) lines.push_back(std::move(line));
  return lines;
}

/// The whole file `path` as bytes; throws `FormatError` naming `who` when it cannot be read.
inline std::string read_file_bytes(const std::string& path, const std::string& who) {
  std::ifstream in(path, std::ios::binary);
  check<FormatError>(in.good(), who, ": cannot open '", path, "'");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// `s` without leading and trailing whitespace (Python's `str.strip()` on ASCII whitespace).
inline std::string strip(std::string_view s) {
  const char* space = " \t\n\r\f\v";
  const std::size_t begin = s.find_first_not_of(space);
  if (begin == std::string_view::npos) return {};
  return std::string(s.substr(begin, s.find_last_not_of(space) - begin + 1));
}

/// `s` split at every `sep`.
inline std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = s.find(sep, start);
    parts.emplace_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

}  // namespace detail

/// `text` with ASCII letters lower-cased (other bytes unchanged).
inline std::string ascii_lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

/// NLTK's `NLTKWordTokenizer().tokenize(sentence)` (NLTK 3.8, `convert_parentheses=False`) on
/// one sentence.
inline std::vector<std::string> treebank_tokenize(std::string_view sentence) {
  using detail::is_space_byte;
  std::string text = detail::ascii_spaces(sentence);
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  // Starting quotes: « “ ‘ „ and runs of backticks padded; a leading " becomes ``; `` padded.
  {
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      bool hit = false;
      for (std::string_view q : {"\xC2\xAB", "\xE2\x80\x9C", "\xE2\x80\x98", "\xE2\x80\x9E"})
        if (detail::starts_at(text, i, q)) {
          out += ' ';
          out.append(q);
          out += ' ';
          i += q.size();
          hit = true;
          break;
        }
      if (hit) continue;
      if (text[i] == '`') {
        std::size_t j = i;
        while (j < text.size() && text[j] == '`') ++j;
        out += ' ' + text.substr(i, j - i) + ' ';
        i = j;
        continue;
      }
      out += text[i++];
    }
    text = out;
  }
  if (!text.empty() && text[0] == '"') text = "``" + text.substr(1);
  text = detail::pad(text, {"``"});
  {  // ([ \(\[{<])("|'') -> \1 ``
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      const char c = text[i];
      if ((c == ' ' || c == '(' || c == '[' || c == '{' || c == '<') && i + 1 < text.size()) {
        if (text[i + 1] == '"') {
          out += c;
          out += " `` ";
          i += 2;
          continue;
        }
        if (detail::starts_at(text, i + 1, "''")) {
          out += c;
          out += " `` ";
          i += 3;
          continue;
        }
      }
      out += text[i++];
    }
    text = out;
  }
  {  // (?i)(')(?!re|ve|ll|m|t|s|d|n)(\w)\b -> \1 \2
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
      out += text[i];
      if (text[i] != '\'' || i + 1 >= text.size()) continue;
      const std::size_t n = detail::code_point_at(text, i + 1).first;
      const bool single_word_char = detail::word_at(text, i + 1) && !detail::word_at(text, i + 1 + n);
      const char lw = static_cast<char>(std::tolower(byte(i + 1)));
      const bool excluded = lw == 'm' || lw == 't' || lw == 's' || lw == 'd' || lw == 'n';
      if (single_word_char && !excluded) out += ' ';
    }
    text = out;
  }
  // Punctuation.
  text = detail::final_period(text, {"]", ")", "}", ">", "\"", "'", "\xC2\xBB", "\xE2\x80\x9D", "\xE2\x80\x99", " "},
                              true);
  {  // ([:,])([^\d]) -> " \1 \2"; ([:,])$ -> " \1 "
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      if ((text[i] == ':' || text[i] == ',') && i + 1 < text.size() && !std::isdigit(byte(i + 1))) {
        out += ' ';
        out += text[i];
        out += ' ';
        out += text[i + 1];
        i += 2;
        continue;
      }
      out += text[i++];
    }
    text = out;
    if (!text.empty() && (text.back() == ':' || text.back() == ',')) {
      const char c = text.back();
      text.pop_back();
      text += ' ';
      text += c;
      text += ' ';
    }
  }
  {  // \.{2,} padded
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      if (text[i] == '.' && i + 1 < text.size() && text[i + 1] == '.') {
        std::size_t j = i;
        while (j < text.size() && text[j] == '.') ++j;
        out += ' ' + text.substr(i, j - i) + ' ';
        i = j;
        continue;
      }
      out += text[i++];
    }
    text = out;
  }
  text = detail::pad(text, {";", "@", "#", "$", "%", "&"});
  text = detail::final_period(text, {"]", ")", "}", ">", "\"", "'"}, false);
  text = detail::pad(text, {"?", "!"});
  {  // ([^'])' -> \1 '
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      if (text[i] != '\'' && i + 2 < text.size() && text[i + 1] == '\'' && text[i + 2] == ' ') {
        out += text[i];
        out += " ' ";
        i += 3;
        continue;
      }
      out += text[i++];
    }
    text = out;
  }
  text = detail::pad(text, {"*"});
  text = detail::pad(text, {"[", "]", "(", ")", "{", "}", "<", ">"});
  text = detail::pad(text, {"--"});
  text = " " + text + " ";
  // Ending quotes.
  text = detail::pad(text, {"\xC2\xBB", "\xE2\x80\x9D", "\xE2\x80\x99"});
  text = detail::pad(text, {"''"});
  {
    std::string out;
    for (const char c : text) out += c == '"' ? std::string(" '' ") : std::string(1, c);
    text = out;
  }
  {  // ([^' ])('[sS]|'[mM]|'[dD]|') -> \1 \2 ; ([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) -> \1 \2
    for (int pass = 0; pass < 2; ++pass) {
      const std::vector<std::string_view> clitics =
          pass == 0 ? std::vector<std::string_view>{"'s", "'S", "'m", "'M", "'d", "'D", "'"}
                    : std::vector<std::string_view>{"'ll", "'LL", "'re", "'RE", "'ve", "'VE", "n't", "N'T"};
      std::string out;
      for (std::size_t i = 0; i < text.size();) {
        bool hit = false;
        if (text[i] != '\'' && text[i] != ' ')
          for (std::string_view c : clitics)
            if (detail::starts_at(text, i + 1, c) && i + 1 + c.size() < text.size() && text[i + 1 + c.size()] == ' ') {
              out += text[i];
              out += ' ';
              out.append(c);
              out += ' ';
              i += 2 + c.size();
              hit = true;
              break;
            }
        if (!hit) out += text[i++];
      }
      text = out;
    }
  }
  for (const auto& [first, second] : std::vector<std::pair<std::string_view, std::string_view>>{
           {"can", "not"}, {"d", "'ye"}, {"gim", "me"}, {"gon", "na"}, {"got", "ta"}, {"lem", "me"}, {"more", "'n"}})
    text = detail::split_contraction(text, first, second, false);
  text = detail::split_contraction(text, "wan", "na", true);
  for (std::string_view second : {"is", "was"}) {  // (?i) ('t)(is)\b -> " 't is "
    std::string out;
    const std::string whole = " 't" + std::string(second);
    for (std::size_t i = 0; i < text.size();) {
      std::string candidate = text.substr(i, whole.size());
      std::transform(candidate.begin(), candidate.end(), candidate.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      const std::size_t after = i + whole.size();
      if (candidate == whole && !detail::word_at(text, after)) {
        out += "  " + text.substr(i + 1, 2) + " " + text.substr(i + 3, second.size()) + " ";
        i = after;
        continue;
      }
      out += text[i++];
    }
    text = out;
  }
  std::vector<std::string> tokens;
  std::string token;
  for (const char c : text) {
    if (is_space_byte(static_cast<unsigned char>(c))) {
      if (!token.empty()) tokens.push_back(std::move(token));
      token.clear();
    } else {
      token += c;
    }
  }
  if (!token.empty()) tokens.push_back(std::move(token));
  return tokens;
}

/// Sentences of `text`, approximating Punkt (NLTK's pre-trained English model, which cannot be
/// reproduced without its learned abbreviation list): a sentence ends after a whitespace-separated
/// chunk that ends in '.', '?' or '!' (optionally followed by closing quotes and brackets) and is
/// followed by more text, except when the part before that final '.' ends in or contains a
/// period ("e.g.", "u.s.", "dog..."), which Punkt reads as an abbreviation or ellipsis.
/// Punkt also keeps the abbreviations it learned ("mr.", "st.", ...) inside a sentence; that list
/// is part of its model and is not reproduced.
inline std::vector<std::string> split_sentences(std::string_view text) {
  std::vector<std::string> sentences;
  std::size_t start = std::string_view::npos;
  std::size_t i = 0;
  const auto space = [&](std::size_t k) { return detail::is_space_byte(static_cast<unsigned char>(text[k])); };
  while (i < text.size()) {
    while (i < text.size() && space(i)) ++i;
    if (i >= text.size()) break;
    const std::size_t chunk_begin = i;
    while (i < text.size() && !space(i)) ++i;
    if (start == std::string_view::npos) start = chunk_begin;
    std::string_view chunk = text.substr(chunk_begin, i - chunk_begin);
    std::size_t end = chunk.size();
    while (end > 0 && std::string_view("\"')]}").find(chunk[end - 1]) != std::string_view::npos) --end;
    bool ends = false;
    if (end > 0 && (chunk[end - 1] == '?' || chunk[end - 1] == '!')) ends = true;
    if (end > 0 && chunk[end - 1] == '.') ends = chunk.substr(0, end - 1).find('.') == std::string_view::npos;
    std::size_t next = i;
    while (next < text.size() && space(next)) ++next;
    if (ends && next < text.size()) {
      sentences.emplace_back(text.substr(start, i - start));
      start = std::string_view::npos;
    }
  }
  if (start != std::string_view::npos) {
    std::size_t stop = text.size();
    while (stop > start && space(stop - 1)) --stop;
    sentences.emplace_back(text.substr(start, stop - start));
  }
  return sentences;
}

/// `nltk.word_tokenize(text)`: sentences (`split_sentences`), each tokenized by
/// `treebank_tokenize`, concatenated.
inline std::vector<std::string> word_tokenize(std::string_view text) {
  std::vector<std::string> tokens;
  for (const std::string& sentence : split_sentences(detail::ascii_spaces(text))) {
    std::vector<std::string> part = treebank_tokenize(sentence);
    tokens.insert(tokens.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
  }
  return tokens;
}

/// A WordNet part of speech that `WordNetMorphy` lemmatizes.
enum class WordNetPos { Noun, Verb };

/// NLTK's `WordNetLemmatizer` for nouns and verbs over WordNet 3.0's database files.
class WordNetMorphy {
 public:
  /// Reads `index.noun`, `index.verb`, `noun.exc` and `verb.exc` from `dir` (e.g.
  /// /usr/share/wordnet). Only lemma names are kept (~130,000 strings). Throws `FormatError`
  /// when a file is missing or holds no entries.
  static WordNetMorphy load(const std::string& dir) {
    WordNetMorphy m;
    const std::string who = "agla::eval::WordNetMorphy::load";
    for (int p = 0; p < 2; ++p) {
      const std::string suffix = p == 0 ? "noun" : "verb";
      const std::string index = (std::filesystem::path(dir) / ("index." + suffix)).string();
      std::ifstream in(index, std::ios::binary);
      check<FormatError>(in.good(), who, ": cannot open '", index,
                         "' (a WordNet 3.0 dict folder is needed: e.g. /usr/share/wordnet from Debian's wordnet-base, "
                         "or NLTK's corpora/wordnet)");
      std::string line;
      // As NLTK reads them: lines starting with a space are the licence header; the lemma is the
      // first field.
      while (std::getline(in, line)) {
        if (line.empty() || line[0] == ' ') continue;
        const std::size_t end = line.find(' ');
        m.lemmas_[p].insert(line.substr(0, end));
      }
      check<FormatError>(!m.lemmas_[p].empty(), who, ": '", index, "' holds no lemmas");
      const std::string exc = (std::filesystem::path(dir) / (suffix + ".exc")).string();
      std::ifstream ex(exc, std::ios::binary);
      check<FormatError>(ex.good(), who, ": cannot open '", exc, "'");
      while (std::getline(ex, line)) {
        std::istringstream fields(line);
        std::string form, base;
        if (!(fields >> form)) continue;
        // A form listed twice keeps its last line, as NLTK's dict assignment does.
        std::vector<std::string>& bases = m.exceptions_[p][form];
        bases.clear();
        while (fields >> base) bases.push_back(base);
      }
    }
    return m;
  }

  /// An empty database (every word is its own lemma); for tests, filled with `add_lemma` and
  /// `add_exception`.
  WordNetMorphy() = default;

  /// Adds `lemma` as a WordNet lemma of `pos`.
  void add_lemma(WordNetPos pos, const std::string& lemma) { lemmas_[index(pos)].insert(lemma); }

  /// Adds the exception-list entry `form -> bases` of `pos`.
  void add_exception(WordNetPos pos, const std::string& form, const std::vector<std::string>& bases) {
    exceptions_[index(pos)][form] = bases;
  }

  /// True when `word` is a lemma of `pos` in the database.
  bool is_lemma(const std::string& word, WordNetPos pos) const { return lemmas_[index(pos)].count(word) > 0; }

  /// True when `word` has an entry in the exception list of `pos` (e.g. "mice", "bore").
  bool is_exception(const std::string& word, WordNetPos pos) const { return exceptions_[index(pos)].count(word) > 0; }

  /// NLTK's `_morphy(word, pos)`: the WordNet lemmas `word` may be a form of, in NLTK's order.
  std::vector<std::string> morphy(const std::string& word, WordNetPos pos) const {
    const int p = index(pos);
    const auto filter = [&](const std::vector<std::string>& forms) {
      std::vector<std::string> kept;
      for (const std::string& f : forms)
        if (lemmas_[p].count(f) && std::find(kept.begin(), kept.end(), f) == kept.end()) kept.push_back(f);
      return kept;
    };
    if (const auto it = exceptions_[p].find(word); it != exceptions_[p].end()) {
      std::vector<std::string> forms{word};
      forms.insert(forms.end(), it->second.begin(), it->second.end());
      return filter(forms);
    }
    const auto& rules = p == 0 ? noun_rules() : verb_rules();
    // Repeated forms are dropped (first kept): the results and their order stay NLTK's, and the
    // number of forms stays bounded on adversarial words.
    const auto apply = [&](const std::vector<std::string>& forms) {
      std::vector<std::string> out;
      for (const std::string& f : forms)
        for (const auto& [old_suffix, new_suffix] : rules)
          if (f.size() >= old_suffix.size() &&
              f.compare(f.size() - old_suffix.size(), old_suffix.size(), old_suffix) == 0) {
            std::string g = f.substr(0, f.size() - old_suffix.size()) + new_suffix;
            if (std::find(out.begin(), out.end(), g) == out.end()) out.push_back(std::move(g));
          }
      return out;
    };
    std::vector<std::string> forms = apply({word});
    std::vector<std::string> first{word};
    first.insert(first.end(), forms.begin(), forms.end());
    if (std::vector<std::string> found = filter(first); !found.empty()) return found;
    // Each round shortens every form, so this ends after at most word.size() rounds.
    while (!forms.empty()) {
      forms = apply(forms);
      if (std::vector<std::string> found = filter(forms); !found.empty()) return found;
    }
    return {};
  }

  /// `WordNetLemmatizer().lemmatize(word, pos)`: the shortest of `morphy` (the first of equally
  /// short ones), or `word` when it has none.
  std::string lemmatize(const std::string& word, WordNetPos pos) const {
    const std::vector<std::string> found = morphy(word, pos);
    if (found.empty()) return word;
    return *std::min_element(found.begin(), found.end(),
                             [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
  }

 private:
  static int index(WordNetPos pos) { return pos == WordNetPos::Noun ? 0 : 1; }

  using Rules = std::vector<std::pair<std::string, std::string>>;
  static const Rules& noun_rules() {
    static const Rules rules{{"s", ""},      {"ses", "s"},   {"ves", "f"},   {"xes", "x"}, {"zes", "z"},
                             {"ches", "ch"}, {"shes", "sh"}, {"men", "man"}, {"ies", "y"}};
    return rules;
  }
  static const Rules& verb_rules() {
    static const Rules rules{{"s", ""},   {"ies", "y"}, {"es", "e"},  {"es", ""},
                             {"ed", "e"}, {"ed", ""},   {"ing", "e"}, {"ing", ""}};
    return rules;
  }

  std::unordered_set<std::string> lemmas_[2];
  std::unordered_map<std::string, std::vector<std::string>> exceptions_[2];
};

}  // namespace agla::eval
