// A user's program built against the installed agla package: one AGLA step on fixed logits.
#include <agla/agla.hpp>

#include <iostream>

int main() {
  const at::Tensor logits = at::tensor({0.0f, 2.0f, 1.5f, -1.0f}).reshape({1, 4});
  const at::Tensor logits_aug = at::tensor({0.0f, 0.5f, 3.0f, 9.0f}).reshape({1, 4});
  // With the cutoff log(0.5) + 2, only tokens 1 and 2 stay plausible; token 2 wins after fusion.
  const at::Tensor fused = agla::AssemblyFusion{2.0}(logits, logits_aug);
  const at::Tensor kept = agla::BetaCutoff{0.5}(logits, fused);
  const int64_t token = kept.argmax(-1).item<int64_t>();
  std::cout << "token " << token << "\n";
  return token == 2 ? 0 : 1;
}
