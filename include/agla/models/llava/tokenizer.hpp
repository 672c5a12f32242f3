#pragma once
/// \file
/// SentencePiece tokenizer of a LLaVA-1.5 checkpoint (`tokenizer.model`, the LLaMA/Vicuna vocabulary).
/// Not part of the `agla/models/llava.hpp` umbrella: include it explicitly and link `sentencepiece`
/// (Debian: libsentencepiece-dev).

#include <sentencepiece_processor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/models/llava/prompt.hpp"

namespace agla::llava {

/// Encodes and decodes text with a SentencePiece model, like transformers' slow `LlamaTokenizer`
/// (legacy mode, which the LLaVA code base loads with `use_fast=False`).
class SentencePieceTokenizer {
 public:
  /// Loads `path` (a `tokenizer.model`); throws `agla::FormatError` when it cannot be read.
  explicit SentencePieceTokenizer(const std::string& path)
      : sp_(std::make_shared<sentencepiece::SentencePieceProcessor>()) {
    const auto status = sp_->Load(path);
    check<FormatError>(status.ok(), "agla::llava::SentencePieceTokenizer: cannot load \"", path,
                       "\": ", status.ToString());
  }

  /// Ids of `text` without BOS/EOS (SentencePiece adds its dummy-prefix space).
  std::vector<int64_t> encode(const std::string& text) const {
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    check<Error>(status.ok(), "agla::llava::SentencePieceTokenizer::encode: ", status.ToString());
    return std::vector<int64_t>(ids.begin(), ids.end());
  }

  /// Prompt ids with BOS and `image_token_id` at the `<image>` placeholder (see `prompt_ids`).
  std::vector<int64_t> encode_prompt(const std::string& prompt, int64_t image_token_id) const {
    return prompt_ids(
        prompt, [this](const std::string& piece) { return encode(piece); }, bos_id(), image_token_id);
  }

  /// Text of `ids`, skipping control tokens (BOS, EOS, pad) and ids outside the SentencePiece
  /// vocabulary (such as the `<image>` id added by llava-hf), like `skip_special_tokens=True`.
  std::string decode(const std::vector<int64_t>& ids) const {
    std::vector<int> kept;
    for (int64_t id : ids) {
      if (id < 0 || id >= sp_->GetPieceSize()) continue;
      if (sp_->IsControl(static_cast<int>(id))) continue;
      kept.push_back(static_cast<int>(id));
    }
    std::string text;
    const auto status = sp_->Decode(kept, &text);
    check<Error>(status.ok(), "agla::llava::SentencePieceTokenizer::decode: ", status.ToString());
    return text;
  }

  /// Beginning-of-sequence id (1 for LLaMA).
  int64_t bos_id() const { return sp_->bos_id(); }
  /// End-of-sequence id (2 for LLaMA).
  int64_t eos_id() const { return sp_->eos_id(); }
  /// Number of pieces in the model (32000 for LLaMA).
  int64_t size() const { return sp_->GetPieceSize(); }

 private:
  std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace agla::llava
