// Trains tiny_llama_bpe.model on corpus.txt, writes cases.json (libsentencepiece's ids and decoded
// text) and compares agla's native SentencePiece BPE with libsentencepiece (no libtorch in this process).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <fstream>
#include <random>
#include "agla/text/sentencepiece.hpp"
int main() {
  auto st = sentencepiece::SentencePieceTrainer::Train(
      "--input=corpus.txt --model_prefix=tiny_llama_bpe --vocab_size=400 --model_type=bpe --byte_fallback=true "
      "--character_coverage=0.9995 --normalization_rule_name=identity --remove_extra_whitespaces=false "
      "--split_digits=true --allow_whitespace_only_pieces=true --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 "
      "--minloglevel=2");
  if (!st.ok()) { std::printf("train: %s\n", st.ToString().c_str()); return 1; }
  sentencepiece::SentencePieceProcessor sp;
  if (!sp.Load("tiny_llama_bpe.model").ok()) return 1;
  agla::text::SentencePieceTokenizer tok("tiny_llama_bpe.model");
  std::vector<std::string> cases = {
      "", " ", "  ", "hello", "Hello world", " leading space", "trailing space ", "double  space",
      "USER: ", "\nIs there a dog in the image? Please answer this question with one word. ASSISTANT:",
      "A chat between a curious human and an artificial intelligence assistant.",
      "Café naïve 東京 🐶 zebra!", "tabs\tand\nnewlines\n\n", "12345 numbers 2024", "ÆØÅ unseen ß", "x",
      "The image shows a man riding a horse on a beach at sunset.", "<s> </s> <unk> <0x41>"};
  nlohmann::json out = nlohmann::json::array();
  int bad = 0;
  for (const auto& text : cases) {
    std::vector<int> ref;
    sp.Encode(text, &ref);
    const auto mine = tok.encode(text);
    std::vector<int64_t> ref64(ref.begin(), ref.end());
    std::string dec_ref;
    sp.Decode(ref, &dec_ref);
    const auto dec_mine = tok.decode(mine);
    const bool ok = ref64 == mine && dec_ref == dec_mine;
    if (!ok) {
      ++bad;
      std::printf("MISMATCH [%s]\n ref:", text.c_str());
      for (auto i : ref) std::printf(" %d", i);
      std::printf("\n got:");
      for (auto i : mine) std::printf(" %lld", (long long)i);
      std::printf("\n dec ref [%s] mine [%s]\n", dec_ref.c_str(), dec_mine.c_str());
    }
    out.push_back({{"text", text}, {"ids", ref64}, {"decoded", dec_ref}});
  }
  std::mt19937 rng(7);
  const std::vector<std::string> atoms = {"a", "e", "th", " ", "  ", "\n", "is", "the", "image", "?", "é", "東", "🐶",
                                          "Z", "q", "1", "9", "USER", ":", "an", "in", "\t", "ß", "zz", ".", "ASSISTANT"};
  int random_bad = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 30);
    for (int k = 0; k < n; ++k) text += atoms[rng() % atoms.size()];
    std::vector<int> ref;
    sp.Encode(text, &ref);
    std::string dec_ref;
    sp.Decode(ref, &dec_ref);
    const auto mine = tok.encode(text);
    if (std::vector<int64_t>(ref.begin(), ref.end()) != mine || tok.decode(mine) != dec_ref) {
      if (random_bad++ < 3) std::printf("RANDOM MISMATCH [%s]\n", text.c_str());
    }
  }
  std::printf("random: 3000 strings, %d mismatches\n", random_bad);
  bad += random_bad;
  std::ofstream("cases.json") << out.dump(1) << "\n";
  std::printf("%zu cases, %d mismatches; vocab %d bos %d eos %d\n", cases.size(), bad, sp.GetPieceSize(), sp.bos_id(), sp.eos_id());
  std::printf("native: size %lld bos %lld eos %lld\n", (long long)tok.size(), (long long)tok.bos_id(), (long long)tok.eos_id());
  return bad == 0 ? 0 : 2;
}
