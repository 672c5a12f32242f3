// Fuzzes the SentencePiece tokenizer.model reader and the tokenizer. Input: a 2-byte
// little-endian text length, the text, then the model bytes. The model must be refused with
// agla::FormatError or load; a loaded model must encode the text to ids inside its vocabulary and
// decode any ids without failing. The text is also run through the fixture LLaMA-style model.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/models/llava/prompt.hpp"
#include "agla/text/sentencepiece.hpp"
#include "scratch.hpp"

namespace {

void exercise(const agla::text::SentencePieceTokenizer& tokenizer, const std::string& text) {
  const std::vector<int64_t> ids = tokenizer.encode(text);
  for (int64_t id : ids) {
    if (id < 0 || id >= tokenizer.size()) __builtin_trap();
  }
  (void)tokenizer.decode(ids);
  const std::vector<int64_t> prompt = agla::llava::encode_prompt(tokenizer, text, tokenizer.size());
  if (prompt.empty() || prompt.front() != tokenizer.bos_id()) __builtin_trap();
  // Arbitrary ids, in and out of range, decode without failing.
  std::vector<int64_t> raw;
  for (size_t i = 0; i + 2 <= text.size() && raw.size() < 64; i += 2) {
    raw.push_back(static_cast<int64_t>(static_cast<uint8_t>(text[i]) | (static_cast<uint8_t>(text[i + 1]) << 8)) - 512);
  }
  (void)tokenizer.decode(raw);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const agla::text::SentencePieceTokenizer fixture(std::string(AGLA_TEST_DATA_DIR) +
                                                           "/llava/tokenizer/tiny_llama_bpe.model");
  static const std::string path = agla_fuzz::scratch_path("tokenizer.model");
  if (size < 2) return 0;
  const size_t text_size = std::min<size_t>(data[0] | (data[1] << 8), size - 2);
  const std::string text(reinterpret_cast<const char*>(data + 2), text_size);
  agla_fuzz::write_file(path, data + 2 + text_size, size - 2 - text_size);
  exercise(fixture, text);
  try {
    const agla::text::SentencePieceTokenizer tokenizer(path);
    exercise(tokenizer, text);
  } catch (const agla::FormatError&) {
  }
  return 0;
}
