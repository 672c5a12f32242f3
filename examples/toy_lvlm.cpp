// A toy LVLM decoded with AGLA: the smallest program that shows what a model must offer the
// decoding layer and the three ways to drive it (a DecodeSession per-token loop, decode_step with
// an explicit step index, and generate). Needs only agla::decode (<agla/decode.hpp>).
//
// The "model" is a lookup table over a six-word vocabulary. After "a red", its original view
// prefers "heart" (a language prior: hearts are red) although the image shows a star; the
// augmented view (AGLA's masked image, which keeps the star) clearly says "star". Regular decoding
// follows the prior; AGLA's fusion l + 2 l_aug corrects it.
#include <agla/decode.hpp>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace {

const std::vector<std::string> kWords{"<s>", "a", "red", "star", "heart", "</s>"};
constexpr std::int64_t kEos = 5;

// The forward-functor contract (agla/decode/view.hpp): next-token logits [B, V] float32 of one
// view, given the tokens new to this step [B, T] int64. A real model keeps one KV cache per stream
// and view and extends the cache of exactly the view it is asked for; this table needs no cache and
// reads only the last token.
class ToyLvlm {
 public:
  at::Tensor operator()(const at::Tensor& step_tokens, agla::View view) {
    if (!view.is_original()) ++augmented_forwards_;
    const std::int64_t batch = step_tokens.size(0);
    const at::Tensor last = step_tokens.select(1, step_tokens.size(1) - 1).contiguous();
    at::Tensor logits = at::full({batch, static_cast<std::int64_t>(kWords.size())}, -4.0f);
    for (std::int64_t b = 0; b < batch; ++b) {
      const std::int64_t token = last.data_ptr<std::int64_t>()[b];
      if (token == 2) {  // after "red": the views disagree
        logits[b][3] = view.is_original() ? 1.6f : 3.0f;  // star
        logits[b][4] = view.is_original() ? 2.0f : 0.5f;  // heart
      } else {
        logits[b][token == 0 ? 1 : token == 1 ? 2 : kEos] = 5.0f;  // <s> a red ... </s>
      }
    }
    return logits;
  }

  // Forwards of the augmented view so far (what the local-view schedule saves).
  int augmented_forwards() const { return augmented_forwards_; }

 private:
  int augmented_forwards_ = 0;
};

std::string words(const std::vector<std::int64_t>& tokens) {
  std::string text;
  for (std::int64_t token : tokens) text += (text.empty() ? "" : " ") + kWords.at(static_cast<size_t>(token));
  return text;
}

}  // namespace

int main() {
  const at::Tensor prompt = at::zeros({1, 1}, at::kLong);  // [B = 1, T = 1]: "<s>"
  agla::DecodeOptions options = agla::DecodeOptions::agla();
  options.greedy = true;  // argmax, so the output is the same on every run

  // 1. The per-token loop: a session counts the steps, so the preset's local-view schedule holds.
  ToyLvlm model;
  agla::DecodeSession session(options);
  std::vector<std::int64_t> tokens;
  at::Tensor step_tokens = prompt;
  while (tokens.size() < 8) {
    const at::Tensor next = session.step(model, step_tokens);  // [B] int64
    tokens.push_back(next.item<std::int64_t>());
    if (tokens.back() == kEos) break;
    step_tokens = next.unsqueeze(1);  // the next step feeds the chosen token
  }
  std::cout << "AGLA, DecodeSession loop:      " << words(tokens) << "  (" << model.augmented_forwards()
            << " augmented forwards)\n";

  // 2. decode_step without a session: pass the step index. The released preset runs the augmented
  // view for the first token only (the released code's behaviour), and needs the index to know
  // which step that is; here the views disagree at the third token, so it keeps the prior's word.
  agla::DecodeOptions released = agla::DecodeOptions::llava_reference();
  released.greedy = true;
  ToyLvlm released_model;
  tokens.clear();
  step_tokens = prompt;
  for (std::int64_t step = 0; step < 8; ++step) {
    agla::StepControl control;
    control.step = step;
    const at::Tensor next = agla::decode_step(released_model, step_tokens, released, {}, control);
    tokens.push_back(next.item<std::int64_t>());
    if (tokens.back() == kEos) break;
    step_tokens = next.unsqueeze(1);
  }
  std::cout << "released preset, decode_step:  " << words(tokens) << "  (" << released_model.augmented_forwards()
            << " augmented forward)\n";

  // 3. generate: the loop with stop tokens and a streaming callback, regular vs AGLA.
  agla::GenerateOptions limits;
  limits.max_new_tokens = 8;
  limits.eos_token_ids = {kEos};
  for (const bool use_agla : {false, true}) {
    agla::DecodeOptions method = use_agla ? agla::DecodeOptions::agla() : agla::DecodeOptions::regular();
    method.greedy = true;
    ToyLvlm fresh;
    std::cout << (use_agla ? "AGLA,    generate:             " : "regular, generate:             ");
    // on_token(step, tokens): the tokens this step chose, one per stream.
    const auto print = [](std::int64_t /*step*/, const std::vector<std::int64_t>& tokens) {
      std::cout << kWords.at(static_cast<size_t>(tokens[0])) << " " << std::flush;
    };
    const agla::GenerateResult result = agla::generate(fresh, prompt, method, limits, {}, print);
    std::cout << " (" << result.lengths[0] << " tokens, " << fresh.augmented_forwards() << " augmented forwards)\n";
  }
  return 0;
}
