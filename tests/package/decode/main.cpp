// A user's program built against the installed package's agla::decode: a toy LVLM functor decoded
// per token with agla::DecodeSession, with agla::decode_step and an explicit step index, and with
// agla::generate; all three must agree, and the released preset must run the augmented view once.
#include <agla/decode.hpp>

#include <cstdint>
#include <iostream>
#include <vector>

namespace {

// Vocabulary of 6 tokens, 5 = EOS. After the prompt (last token 0) the original view prefers token
// 1 and the augmented view token 3; AGLA's fusion l + 2 l_aug with the beta 0.5 cutoff keeps tokens
// 1 and 2 and picks 2. Afterwards both views prefer the successor of the last token.
struct ToyLvlm {
  int augmented_calls = 0;

  at::Tensor operator()(const at::Tensor& step_tokens, agla::View view) {
    if (!view.is_original()) ++augmented_calls;
    const int64_t batch = step_tokens.size(0);
    at::Tensor logits = at::full({batch, 6}, -1.0f);
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t last = step_tokens[b][step_tokens.size(1) - 1].item<int64_t>();
      if (last == 0) {
        const std::vector<float> row = view.is_original() ? std::vector<float>{0, 2, 1.5, -1, -1, -1}
                                                          : std::vector<float>{0, 0.5, 3, 9, -1, -1};
        logits[b].copy_(at::tensor(row));
      } else {
        logits[b][(last + 1) % 6] = 4.0f;
      }
    }
    return logits;
  }
};

bool expect(bool ok, const char* what) {
  if (!ok) std::cerr << "FAILED: " << what << "\n";
  return ok;
}

}  // namespace

int main() {
  const at::Tensor prompt = at::zeros({1, 2}, at::kLong);
  agla::DecodeOptions options = agla::DecodeOptions::llava_reference();
  options.greedy = true;

  // Per-token loop over a session (it counts the steps the schedule reads).
  ToyLvlm session_model;
  agla::DecodeSession session(options);
  std::vector<int64_t> session_tokens;
  at::Tensor step_tokens = prompt;
  for (int step = 0; step < 8; ++step) {
    const at::Tensor next = session.step(session_model, step_tokens);
    session_tokens.push_back(next.item<int64_t>());
    if (session_tokens.back() == 5) break;
    step_tokens = next.unsqueeze(1);
  }

  // decode_step with the step index given explicitly.
  ToyLvlm step_model;
  std::vector<int64_t> step_tokens_out;
  step_tokens = prompt;
  for (int64_t step = 0; step < 8; ++step) {
    agla::StepControl control;
    control.step = step;
    const at::Tensor next = agla::decode_step(step_model, step_tokens, options, {}, control);
    step_tokens_out.push_back(next.item<int64_t>());
    if (step_tokens_out.back() == 5) break;
    step_tokens = next.unsqueeze(1);
  }

  // generate, streaming each step's tokens to the callback.
  ToyLvlm generate_model;
  agla::GenerateOptions limits;
  limits.max_new_tokens = 8;
  limits.eos_token_ids = {5};
  std::vector<int64_t> streamed;
  const agla::GenerateResult result =
      agla::generate(generate_model, prompt, options, limits, {},
                     [&](int64_t, const std::vector<int64_t>& tokens) { streamed.push_back(tokens[0]); });
  const at::Tensor generated = result.tokens[0];
  const std::vector<int64_t> generate_tokens(generated.data_ptr<int64_t>(),
                                             generated.data_ptr<int64_t>() + generated.numel());

  // Regular decoding of the same functor never asks for the augmented view.
  ToyLvlm regular_model;
  agla::DecodeOptions regular = agla::DecodeOptions::regular();
  regular.greedy = true;
  const at::Tensor regular_first = agla::DecodeSession(regular).step(regular_model, prompt);

  const std::vector<int64_t> expected{2, 3, 4, 5};
  bool ok = expect(session_tokens == expected, "DecodeSession tokens 2 3 4 5");
  ok &= expect(step_tokens_out == expected, "decode_step tokens equal the session's");
  ok &= expect(generate_tokens == expected && streamed == expected, "generate tokens equal the session's");
  ok &= expect(result.finished[0] && result.lengths[0] == 4, "generate stops at EOS");
  ok &= expect(session_model.augmented_calls == 1 && generate_model.augmented_calls == 1 &&
                   step_model.augmented_calls == 1,
               "llava_reference runs the augmented view on the first step only");
  ok &= expect(regular_first.item<int64_t>() == 1 && regular_model.augmented_calls == 0,
               "regular decoding picks token 1 without the augmented view");
  std::cout << "tokens";
  for (int64_t token : session_tokens) std::cout << " " << token;
  std::cout << "\n";
  return ok ? 0 : 1;
}
