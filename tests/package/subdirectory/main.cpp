// The parent project's program: compiled with the parent's flags, linking agla::agla from
// add_subdirectory. One AGLA step on fixed logits, and a PNG round trip through agla::stb.
#ifndef PARENT_FLAG
#error "the parent's CMAKE_CXX_FLAGS_RELEASE (-O1 -DPARENT_FLAG) did not reach its own target"
#endif
#ifdef NDEBUG
#error "agla's Release flags (-DNDEBUG) replaced the parent's"
#endif

#include <agla/agla.hpp>

#include <cstdio>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  // l + 2 l_aug under the beta 0.5 cutoff: tokens 1 and 2 stay plausible, token 2 wins.
  const at::Tensor logits = at::tensor({0.0f, 2.0f, 1.5f, -1.0f}).reshape({1, 4});
  const at::Tensor augmented = at::tensor({0.0f, 0.5f, 3.0f, 9.0f}).reshape({1, 4});
  agla::DecodeOptions options;
  options.greedy = true;
  const int64_t token = agla::decode_logits(logits, augmented, options).item<int64_t>();

  const std::string path = std::string(argc > 1 ? argv[1] : ".") + "/parent.png";
  const at::Tensor image = at::full({2, 2, 3}, 7, at::kByte);
  agla::io::write_png(path, image);
  const bool round_trip = agla::io::read_image(path).equal(image);
  std::remove(path.c_str());
  std::cout << "token " << token << ", PNG round trip " << (round_trip ? "ok" : "FAILED") << "\n";
  return token == 2 && round_trip ? 0 : 1;
}
