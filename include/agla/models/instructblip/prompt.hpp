#pragma once
/// \file
/// InstructBLIP prompts as the AGLA reference builds them (LAVIS `blip2_vicuna_instruct.generate`;
/// transformers v4.37.2's `InstructBlipProcessor` gives the same ids): the whole instruction goes
/// twice through two tokenizers, with no conversation template --
///
/// * the Q-Former reads BERT WordPiece `[CLS] pieces [SEP]` (bert-base-uncased, the checkpoint's
///   `qformer_tokenizer/`), at most 128 ids, truncated from the left (LAVIS `max_txt_len`);
/// * the language model reads BOS + SentencePiece pieces of the same text. The BOS is the one the
///   checkpoint's tokenizer files name: the Vicuna InstructBLIP checkpoints (and LAVIS) set it to
///   `</s>` (id 2), not the `<s>` of `tokenizer.model`, which is why it is read from
///   `special_tokens_map.json` / `tokenizer_config.json` / `added_tokens.json` here.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/text/sentencepiece.hpp"
#include "agla/text/wordpiece.hpp"

namespace agla::instructblip {

/// The most instruction ids the Q-Former reads (LAVIS `max_txt_len`), `[CLS]` and `[SEP]` included.
inline constexpr size_t kQFormerMaxTokens = 128;

/// The Q-Former's ids of `instruction`: `[CLS] pieces [SEP]`, keeping the last `max_length - 2`
/// pieces when longer (`truncation_side="left"`). Throws `agla::InvalidArgument` for `max_length` < 2
/// or text that is not valid UTF-8.
inline std::vector<int64_t> qformer_prompt_ids(const text::WordPieceTokenizer& tokenizer, const std::string& instruction,
                                               size_t max_length = kQFormerMaxTokens) {
  check<InvalidArgument>(max_length >= 2, "agla::instructblip::qformer_prompt_ids: max_length must be >= 2 ",
                         "(room for [CLS] and [SEP]); got ", max_length);
  const std::vector<std::string> pieces = tokenizer.tokenize(instruction);
  const size_t kept = std::min(pieces.size(), max_length - 2);
  std::vector<int64_t> ids{tokenizer.cls_id()};
  for (size_t i = pieces.size() - kept; i < pieces.size(); ++i) ids.push_back(tokenizer.token_to_id(pieces[i]));
  ids.push_back(tokenizer.sep_id());
  return ids;
}

/// Special tokens of a Hugging Face LLaMA tokenizer directory, as ids (-1 when not named or not resolvable).
struct SpecialTokens {
  int64_t bos_id = -1;   ///< prepended to prompts when `add_bos`
  int64_t eos_id = -1;   ///< end of sequence
  int64_t unk_id = -1;   ///< unknown token
  int64_t pad_id = -1;   ///< padding
  bool add_bos = true;   ///< `tokenizer_config.json` `add_bos_token` (LlamaTokenizer default true)

  /// Whether `id` is one of the named tokens (what `skip_special_tokens=True` drops).
  bool is_special(int64_t id) const { return id >= 0 && (id == bos_id || id == eos_id || id == unk_id || id == pad_id); }
};

namespace detail {

/// The token string of a special-token entry: a string, or an `AddedToken` object's `content`
/// ("" when absent or null).
inline std::string special_token_content(const nlohmann::json& value, const std::string& where) {
  if (value.is_null()) return "";
  if (value.is_string()) return value.get<std::string>();
  check<FormatError>(value.is_object() && value.contains("content") && value.at("content").is_string(), where,
                     " must be a string or an object with a string \"content\"; got ",
                     io::detail::describe_json(value));
  return value.at("content").get<std::string>();
}

}  // namespace detail

/// Reads the special tokens of the tokenizer files in `dir` the way transformers' `from_pretrained`
/// does: `special_tokens_map.json` overrides `tokenizer_config.json`; a token string becomes an id
/// through `added_tokens.json`, else through the pieces of `tokenizer`. Tokens no file names take
/// `LlamaTokenizer`'s defaults (BOS and EOS of `tokenizer.model`, `<unk>`, no padding). Throws `agla::FormatError`
/// for malformed files, or a BOS string that is neither an added token nor a piece.
inline SpecialTokens read_special_tokens(const std::string& dir, const text::SentencePieceTokenizer& tokenizer) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  auto optional_json = [&](const char* name) {
    const fs::path path = root / name;
    return fs::is_regular_file(path) ? io::read_json_file(path.string()) : nlohmann::json();
  };
  const nlohmann::json map = optional_json("special_tokens_map.json");
  const nlohmann::json config = optional_json("tokenizer_config.json");
  const nlohmann::json added = optional_json("added_tokens.json");
  const std::string where = "agla::instructblip::read_special_tokens: " + dir;
  using Named = std::pair<const nlohmann::json*, const char*>;
  const Named files[] = {{&map, "special_tokens_map.json"}, {&config, "tokenizer_config.json"}, {&added, "added_tokens.json"}};
  for (const auto& [json, name] : files)
    check<FormatError>(json->is_null() || json->is_object(), where, "/", name, " must be a JSON object");
  auto content = [&](const char* key, const std::string& fallback) {
    for (const auto& [json, name] : {files[0], files[1]}) {
      if (json->is_object() && json->contains(key) && !json->at(key).is_null())
        return detail::special_token_content(json->at(key), where + "/" + name + ": " + key);
    }
    return fallback;
  };
  auto resolve = [&](const std::string& token) -> int64_t {
    if (token.empty()) return -1;
    if (added.is_object() && added.contains(token)) {
      const io::JsonConfig entries(added, where + "/added_tokens.json");
      return entries.get_int(token, -1);
    }
    for (int64_t id = 0; id < tokenizer.size(); ++id)
      if (tokenizer.piece(id) == token) return id;
    return -1;
  };
  auto piece_or_empty = [&](int64_t id) { return id >= 0 && id < tokenizer.size() ? tokenizer.piece(id) : ""; };
  SpecialTokens tokens;
  const std::string bos = content("bos_token", piece_or_empty(tokenizer.bos_id()));
  tokens.bos_id = resolve(bos);
  check<FormatError>(bos.empty() || tokens.bos_id >= 0, where, ": bos_token \"", bos,
                     "\" is neither in added_tokens.json nor a piece of tokenizer.model");
  tokens.eos_id = resolve(content("eos_token", piece_or_empty(tokenizer.eos_id())));
  tokens.unk_id = resolve(content("unk_token", "<unk>"));
  tokens.pad_id = resolve(content("pad_token", ""));
  if (config.is_object()) tokens.add_bos = io::JsonConfig(config, where + "/tokenizer_config.json").get_bool("add_bos_token", true);
  return tokens;
}

/// The language model's ids of `instruction`: BOS (when `tokens.add_bos` and named) followed by the
/// SentencePiece pieces of the whole text (LAVIS `llm_tokenizer(prompt)`, no truncation).
inline std::vector<int64_t> llm_prompt_ids(const text::SentencePieceTokenizer& tokenizer, const SpecialTokens& tokens,
                                           const std::string& instruction) {
  std::vector<int64_t> ids;
  if (tokens.add_bos && tokens.bos_id >= 0) ids.push_back(tokens.bos_id);
  const std::vector<int64_t> pieces = tokenizer.encode(instruction);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

}  // namespace agla::instructblip
