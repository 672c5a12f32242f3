// BERT WordPiece tokenizer and LAVIS caption pre-processing against tests/data/tokenizer/cases.json
// (transformers BertTokenizer, google-research/bert FullTokenizer, BlipCaptionProcessor; exact).

#include "agla/text/wordpiece.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using agla::text::BertFlavor;
using agla::text::WordPieceTokenizer;

const std::string kData = AGLA_TEST_DATA_DIR;

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

const nlohmann::json& cases() {
  static const nlohmann::json json = load_json(kData + "/tokenizer/cases.json");
  return json;
}

const WordPieceTokenizer& file_tokenizer() {
  static const WordPieceTokenizer tok =
      WordPieceTokenizer::from_vocab_file(kData + "/tokenizer/bert-base-uncased-vocab.txt");
  return tok;
}

}  // namespace

TEST(TokenizerTest, FixtureHasAllCases) {
  ASSERT_EQ(cases()["cases"].size(), 300u);
  EXPECT_EQ(cases()["unicode_version"], "14.0.0");
  int disagree = 0;
  for (const auto& c : cases()["cases"]) disagree += c["google_hf_agree"].get<bool>() ? 0 : 1;
  EXPECT_GT(disagree, 0);  // the two flavours are genuinely exercised apart
}

TEST(TokenizerTest, TransformersColumnsMatchAllCases) {
  const WordPieceTokenizer& tok = file_tokenizer();
  int checked = 0;
  for (const auto& c : cases()["cases"]) {
    const std::string text = c["text"];
    const auto tokens = tok.tokenize(text);
    EXPECT_EQ(tokens, c["hf_tokens"].get<std::vector<std::string>>()) << "case " << c["id"];
    EXPECT_EQ(tok.tokens_to_ids(tokens), c["hf_ids"].get<std::vector<int64_t>>()) << "case " << c["id"];
    EXPECT_EQ(tok.encode(text), c["hf_ids_cls_sep_max35"].get<std::vector<int64_t>>()) << "case " << c["id"];
    ++checked;
  }
  EXPECT_EQ(checked, 300);
}

TEST(TokenizerTest, GoogleColumnsMatchAllCases) {
  const WordPieceTokenizer& tok = file_tokenizer();
  for (const auto& c : cases()["cases"]) {
    const std::string text = c["text"];
    const auto tokens = tok.tokenize(text, BertFlavor::kGoogle);
    EXPECT_EQ(tokens, c["tokens"].get<std::vector<std::string>>()) << "case " << c["id"];
    EXPECT_EQ(tok.tokens_to_ids(tokens), c["ids"].get<std::vector<int64_t>>()) << "case " << c["id"];
    EXPECT_EQ(tok.encode(text, 35, BertFlavor::kGoogle), c["ids_cls_sep_max35"].get<std::vector<int64_t>>())
        << "case " << c["id"];
  }
}

TEST(TokenizerTest, PreCaptionColumnsMatchAllCases) {
  const WordPieceTokenizer& tok = file_tokenizer();
  for (const auto& c : cases()["cases"]) {
    const std::string pre = agla::text::pre_caption(c["text"].get<std::string>());
    EXPECT_EQ(pre, c["pre_caption"].get<std::string>()) << "case " << c["id"];
    EXPECT_EQ(tok.tokenize(pre), c["pre_caption_hf_tokens"].get<std::vector<std::string>>()) << "case " << c["id"];
    EXPECT_EQ(tok.encode(pre), c["pre_caption_hf_ids_cls_sep_max35"].get<std::vector<int64_t>>()) << "case " << c["id"];
  }
}

TEST(TokenizerTest, EmbeddedVocabularyEqualsFile) {
  const WordPieceTokenizer embedded = WordPieceTokenizer::bert_base_uncased();
  const WordPieceTokenizer& file = file_tokenizer();
  ASSERT_EQ(embedded.size(), 30524u);
  ASSERT_EQ(file.size(), embedded.size());
  for (int64_t id = 0; id < static_cast<int64_t>(file.size()); ++id)
    ASSERT_EQ(embedded.id_to_token(id), file.id_to_token(id)) << id;
  const auto& special = cases()["special_ids"];
  EXPECT_EQ(embedded.pad_id(), special["[PAD]"].get<int64_t>());
  EXPECT_EQ(embedded.unk_id(), special["[UNK]"].get<int64_t>());
  EXPECT_EQ(embedded.cls_id(), special["[CLS]"].get<int64_t>());
  EXPECT_EQ(embedded.sep_id(), special["[SEP]"].get<int64_t>());
  EXPECT_EQ(embedded.mask_id(), special["[MASK]"].get<int64_t>());
  EXPECT_EQ(embedded.dec_id(), special["[DEC]"].get<int64_t>());
  EXPECT_EQ(embedded.enc_id(), special["[ENC]"].get<int64_t>());
  EXPECT_EQ(embedded.token_to_id("[DEC]"), 30522);
  EXPECT_EQ(embedded.id_to_token(30523), "[ENC]");
  EXPECT_EQ(embedded.token_to_id("no-such-token"), 100);
}

TEST(TokenizerTest, BlipFixtureVocabularyKeepsItsAddedTokens) {
  const WordPieceTokenizer tok = WordPieceTokenizer::from_vocab_file(kData + "/blip/vocab.txt");
  const nlohmann::json fixtures = load_json(kData + "/blip/fixtures.json");
  EXPECT_EQ(tok.size(), 128u);
  EXPECT_EQ(tok.dec_id(), fixtures["special_tokens"]["dec_bos"].get<int64_t>());
  EXPECT_EQ(tok.enc_id(), fixtures["special_tokens"]["enc"].get<int64_t>());
  EXPECT_EQ(tok.cls_id(), 2);
  EXPECT_EQ(tok.unk_id(), 1);
  for (const auto& p : fixtures["prompts"]) {
    const std::string text = p["text"];
    EXPECT_EQ(tok.tokenize(text), p["wordpieces"].get<std::vector<std::string>>()) << text;
    EXPECT_EQ(tok.encode(text), p["input_ids"].get<std::vector<int64_t>>()) << text;
  }
}

TEST(TokenizerTest, TruncationKeepsClsAndSep) {
  const WordPieceTokenizer tok = WordPieceTokenizer::bert_base_uncased();
  const auto ids = tok.encode("one two three four five", 4);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 101);
  EXPECT_EQ(ids.back(), 102);
  EXPECT_EQ(ids[1], tok.token_to_id("one"));
  EXPECT_EQ(tok.encode("", 35), (std::vector<int64_t>{101, 102}));
  EXPECT_THROW(tok.encode("a", 1), agla::InvalidArgument);
}

TEST(TokenizerTest, DecodeUndoesWordPieces) {
  const WordPieceTokenizer tok = WordPieceTokenizer::bert_base_uncased();
  EXPECT_EQ(tok.decode(tok.encode("A woman's rocket-ship, orbiting!")), "a woman's rocket - ship, orbiting!");
  std::vector<int64_t> with_dec{tok.dec_id()};
  for (int64_t id : tok.encode("a picture of a cat")) with_dec.push_back(id);
  EXPECT_EQ(tok.decode(with_dec), "a picture of a cat");
}

TEST(TokenizerTest, PreCaptionKeepsAtMostMaxWords) {
  EXPECT_EQ(agla::text::pre_caption("One two:  three\tfour. five", 3), "one two three\tfour");
  EXPECT_EQ(agla::text::pre_caption("a\tb", 1), "a\tb");  // a lone tab is not a word separator
  EXPECT_EQ(agla::text::pre_caption("  (Hello)!  \n\n", 50), "hello");
  EXPECT_EQ(agla::text::pre_caption("x y", 0), "");
  EXPECT_EQ(agla::text::pre_caption("ΟΔΟΣ ΟΔΟΣ."), "οδος οδος");
}

TEST(TokenizerTest, InvalidUtf8Throws) {
  const WordPieceTokenizer tok = WordPieceTokenizer::bert_base_uncased();
  for (const std::string bad : {std::string("\xff"), std::string("ab\xc0\xaf"), std::string("\xed\xa0\x80"),
                                std::string("\xe2\x82"), std::string("\x80x"), std::string("\xf4\x90\x80\x80")}) {
    EXPECT_THROW(tok.tokenize(bad), agla::InvalidArgument);
    EXPECT_THROW(tok.tokenize(bad, BertFlavor::kGoogle), agla::InvalidArgument);
    EXPECT_THROW(agla::text::pre_caption(bad), agla::InvalidArgument);
  }
}

TEST(TokenizerTest, BadVocabularyThrows) {
  EXPECT_THROW(WordPieceTokenizer::from_vocab_file(kData + "/tokenizer/no-such-vocab.txt"), agla::FormatError);
  EXPECT_THROW(WordPieceTokenizer::from_vocab_text("[PAD]\n[UNK]\nhello\n", "test"), agla::FormatError);
  EXPECT_THROW(WordPieceTokenizer::from_vocab_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n\xff\n", "test"),
               agla::InvalidArgument);
  const WordPieceTokenizer crlf =
      WordPieceTokenizer::from_vocab_text("[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhi\r\n", "t");
  EXPECT_EQ(crlf.token_to_id("hi"), 5);
  EXPECT_EQ(crlf.dec_id(), 6);
  EXPECT_EQ(crlf.enc_id(), 7);
  EXPECT_EQ(crlf.size(), 8u);
}
