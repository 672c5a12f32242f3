#pragma once
/// \file
/// LLaVA-1.5 prompts: the conversation template and the token layout with one `<image>` placeholder,
/// as the AGLA reference builds them (LLaVA's `conv_templates["llava_v1"]` and
/// `llava.mm_utils.tokenizer_image_token`), independent of any tokenizer library.

#include <cstdint>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/text/sentencepiece.hpp"

namespace agla::llava {

/// The placeholder the prompt text carries where the image goes.
inline constexpr const char* kImagePlaceholder = "<image>";

/// The suffix the AGLA reference appends to every POPE question (eval/run_llava.py).
inline constexpr const char* kPopeSuffix = " Please answer this question with one word.";

/// A two-role conversation template (LLaVA `SeparatorStyle.TWO` for one user turn).
struct ConversationTemplate {
  std::string system;                        ///< system prompt; empty = none (and no separator before USER)
  std::string user_role = "USER";            ///< role of the question
  std::string assistant_role = "ASSISTANT";  ///< role of the answer
  std::string separator = " ";               ///< between system prompt and the user turn, and after the user turn
};

/// LLaVA-1.5's `llava_v1` template, the one the AGLA reference uses (`--conv-mode llava_v1`).
inline ConversationTemplate llava_v1_template() {
  ConversationTemplate t;
  t.system =
      "A chat between a curious human and an artificial intelligence assistant. "
      "The assistant gives helpful, detailed, and polite answers to the human's questions.";
  return t;
}

/// The bare template of the llava-hf model cards: `USER: <image>\n{question} ASSISTANT:`.
inline ConversationTemplate llava_hf_template() { return ConversationTemplate{}; }

/// The prompt text for one question about one image: `[system + sep] USER: <image>\n{question}[suffix]
/// + sep + ASSISTANT:`; `pope` appends `kPopeSuffix` to the question as the reference does for POPE.
inline std::string build_prompt(const std::string& question, const ConversationTemplate& t = llava_v1_template(),
                                bool pope = false) {
  std::string out;
  if (!t.system.empty()) out += t.system + t.separator;
  out += t.user_role + ": " + kImagePlaceholder + "\n" + question;
  if (pope) out += kPopeSuffix;
  out += t.separator + t.assistant_role + ":";
  return out;
}

/// Token ids of `prompt` the way `tokenizer_image_token` lays them out: the text is split at each
/// `<image>`, every piece is encoded on its own by `encode` (string -> ids without BOS; SentencePiece
/// adds its dummy-prefix space to each piece), and the result is `[bos] piece0 [image] piece1 ...`.
/// `bos_id` < 0 omits BOS. `Encode` is any callable `std::vector<int64_t>(const std::string&)`.
template <typename Encode>
std::vector<int64_t> prompt_ids(const std::string& prompt, Encode&& encode, int64_t bos_id, int64_t image_token_id) {
  std::vector<int64_t> ids;
  if (bos_id >= 0) ids.push_back(bos_id);
  const std::string placeholder = kImagePlaceholder;
  size_t start = 0;
  while (true) {
    const size_t found = prompt.find(placeholder, start);
    const std::string piece = prompt.substr(start, found == std::string::npos ? std::string::npos : found - start);
    if (!piece.empty()) {
      const std::vector<int64_t> encoded = encode(piece);
      ids.insert(ids.end(), encoded.begin(), encoded.end());
    }
    if (found == std::string::npos) break;
    ids.push_back(image_token_id);
    start = found + placeholder.size();
  }
  return ids;
}

/// `prompt_ids` of `prompt` with `tokenizer`'s pieces and its BOS, `image_token_id` at `<image>`.
inline std::vector<int64_t> encode_prompt(const text::SentencePieceTokenizer& tokenizer, const std::string& prompt,
                                          int64_t image_token_id) {
  return prompt_ids(
      prompt, [&tokenizer](const std::string& piece) { return tokenizer.encode(piece); }, tokenizer.bos_id(),
      image_token_id);
}

}  // namespace agla::llava
