// A user's program built against the installed package's agla::raw (no libtorch): AGLA and regular
// decoding on float logits, two streams, with the released schedule (augmented view on step 0 only).
#include <agla/decode/raw.hpp>

#include <cstdint>
#include <iostream>

int main() {
  // Two streams over 4 tokens. Stream 0: l + 2 l_aug with the beta 0.5 cutoff keeps tokens 1 and 2
  // and picks 2; stream 1: the augmented view agrees with the original, token 0 wins.
  const float logits[2][4] = {{0.0f, 2.0f, 1.5f, -1.0f}, {3.0f, 1.0f, 0.0f, 0.0f}};
  const float augmented[2][4] = {{0.0f, 0.5f, 3.0f, 9.0f}, {3.0f, 0.0f, 0.0f, 0.0f}};
  agla::DecodeOptions options = agla::DecodeOptions::llava_reference();
  agla::raw::Decoder<> decoder(options);
  decoder.reserve(2, 4);
  agla::raw::GreedySampler greedy;
  std::int64_t tokens[2] = {-1, -1};

  bool ok = decoder.runs_local_view();
  decoder.step(&logits[0][0], &augmented[0][0], 2, 4, greedy, tokens);
  ok = ok && tokens[0] == 2 && tokens[1] == 0 && decoder.stats(0).n_plausible == 2;
  // Step 1: the schedule skips the augmented view, so it may be left out.
  ok = ok && !decoder.runs_local_view();
  decoder.step(&logits[0][0], nullptr, 2, 4, greedy, tokens);
  ok = ok && tokens[0] == 1 && tokens[1] == 0;

  agla::raw::Decoder<> regular(agla::DecodeOptions::regular());
  regular.step(&logits[0][0], nullptr, 2, 4, greedy, tokens);
  ok = ok && tokens[0] == 1 && !regular.runs_local_view();
  std::cout << (ok ? "raw decoding ok" : "raw decoding FAILED") << "\n";
  return ok ? 0 : 1;
}
