// Fuzzes BLIP's text path on arbitrary bytes: LAVIS pre_caption, the BERT WordPiece tokenizer in
// both flavours, encode (35 ids, as for the ITM) and decode of ids taken from the input. Text that
// is not UTF-8 and ids outside the vocabulary must throw agla::InvalidArgument; nothing else may
// fail.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/text/wordpiece.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const agla::text::WordPieceTokenizer tokenizer = agla::text::WordPieceTokenizer::bert_base_uncased();
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const std::string caption = agla::text::pre_caption(text, 1 + size % 60);
    const std::vector<int64_t> ids = tokenizer.encode(caption, 35);
    if (ids.size() < 2 || ids.size() > 35 || ids.front() != tokenizer.cls_id() || ids.back() != tokenizer.sep_id()) {
      __builtin_trap();
    }
    for (int64_t id : ids) {
      if (id < 0 || static_cast<size_t>(id) >= tokenizer.size()) __builtin_trap();
    }
    (void)tokenizer.decode(ids);
  } catch (const agla::InvalidArgument&) {
  }
  try {
    (void)tokenizer.tokenize(text);
  } catch (const agla::InvalidArgument&) {
  }
  try {
    const std::vector<std::string> pieces = tokenizer.tokenize(text, agla::text::BertFlavor::kGoogle);
    (void)tokenizer.tokens_to_ids(pieces);
  } catch (const agla::InvalidArgument&) {
  }
  // Ids read from the bytes, in and out of range.
  std::vector<int64_t> ids;
  for (size_t i = 0; i + 2 <= size && ids.size() < 64; i += 2) {
    ids.push_back(static_cast<int64_t>(data[i] | (data[i + 1] << 8)) - 1024);
  }
  try {
    (void)tokenizer.decode(ids);
  } catch (const agla::InvalidArgument&) {
  }
  return 0;
}
