// A user's program built against the installed package's agla::agla: the umbrella header compiles
// (models, IPM, I/O), the shipped LVLMs meet the LVLM contract, and image I/O runs through the
// package's compiled stb (agla::stb): a PNG written and read back unchanged.
#include <agla/agla.hpp>

#include <cstdio>
#include <iostream>
#include <string>

static_assert(agla::check_lvlm<agla::blip::BlipCaptioner>());
static_assert(agla::check_lvlm<agla::llava::LlavaLvlm>());

int main(int argc, char** argv) {
  const std::string path = std::string(argc > 1 ? argv[1] : ".") + "/consumer.png";
  const at::Tensor image = at::arange(5 * 3 * 3, at::kInt).remainder(256).to(at::kByte).reshape({5, 3, 3});
  agla::io::write_png(path, image);
  const at::Tensor back = agla::io::read_image(path);
  std::remove(path.c_str());
  const bool ok = back.sizes() == image.sizes() && back.equal(image);
  std::cout << (ok ? "PNG round trip ok" : "PNG round trip FAILED") << "\n";
  return ok ? 0 : 1;
}
