// Captions one image with a real model, with regular decoding and with AGLA, using only the library.
// AGLA decodes from two views: the image itself and an augmented view in which IPM (a BLIP ITM
// model, see ipm_image.cpp) has masked the pixels unrelated to the text.
//
//   caption LVLM_DIR ITM_DIR IMAGE [INSTRUCTION]
//   caption tools/data/models/shapesworld-lvlm tools/data/models/shapesworld-itm tools/data/sample.png
//
// LVLM_DIR is a BLIP captioning checkpoint (e.g. Salesforce/blip-image-captioning-large or the
// ShapesWorld model shipped with agla). `caption_with` is written against the LVLM contract
// (agla/models/lvlm.hpp), so a LLaVA-1.5 directory works the same through agla::llava::LlavaLvlm::load.
#include <agla/decode.hpp>
#include <agla/error.hpp>
#include <agla/io/image.hpp>
#include <agla/ipm.hpp>
#include <agla/models/blip.hpp>
#include <agla/models/lvlm.hpp>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace {

// One caption of `pixels` [1, 3, S, S] by any model meeting the LVLM contract; `augmented` [1, 3, S, S]
// is the extra view the method fuses (unused by regular decoding). The same seed gives the same
// random draws to both methods.
template <typename Lvlm>
std::string caption_with(Lvlm& model, const std::string& instruction, const at::Tensor& pixels,
                         const at::Tensor& augmented, const agla::DecodeOptions& options, std::uint64_t seed) {
  static_assert(agla::check_lvlm<Lvlm>());
  const agla::Prompt prompt = model.prompt(instruction);  // the model's template, tokenised
  const agla::TokenSpec spec = model.tokens();            // stop ids, pad id, vocabulary size

  agla::LvlmInputs inputs;
  inputs.prompt = agla::batch_prompts({prompt}, spec.pad_id);  // one stream
  inputs.pixels = pixels;
  if (options.uses_local_view(0)) inputs.views.push_back(agla::ExtraView{agla::ViewKind::Image, augmented, {}});

  agla::GenerateOptions limits;
  limits.max_new_tokens = std::min<std::int64_t>(30, model.room(inputs.prompt));
  limits.eos_token_ids = spec.stop_ids;
  limits.pad_token_id = spec.pad_id;
  inputs.max_new_tokens = limits.max_new_tokens;

  // begin() encodes the images and returns the first step's tokens; generate() loops decode steps.
  const at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const agla::GenerateResult result = agla::generate(model, model.begin(inputs), options, limits, generator);
  model.reset();
  // tokens [B, N]: stream 0's first lengths[0] tokens are its caption (up to and including the stop id).
  const at::Tensor ids = result.tokens[0].narrow(0, 0, result.lengths[0]).contiguous();
  const std::int64_t* first = ids.data_ptr<std::int64_t>();
  return model.decode(std::vector<std::int64_t>(first, first + ids.numel()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: caption LVLM_DIR ITM_DIR IMAGE [INSTRUCTION]\n";
    return 2;
  }
  const std::string instruction = argc == 5 ? argv[4] : "";
  try {
    at::set_num_threads(1);  // small models: one thread is fastest; large ones: the physical cores

    const at::Tensor image = agla::io::read_image(argv[3]);  // [H, W, 3] uint8
    agla::blip::BlipCaptioner captioner = agla::blip::BlipCaptioner::load(argv[1]);
    const agla::blip::BlipItm itm = agla::blip::BlipItm::load(argv[2]);

    // AGLA's augmented view: IPM matches the image against the text (the instruction, or a generic
    // description when captioning without one) and masks what is unrelated.
    const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(itm);
    const agla::ipm::Match match = matcher.match(image, instruction.empty() ? "the image" : instruction);
    const at::Tensor pixels = captioner.preprocess(image).unsqueeze(0);
    const at::Tensor augmented = captioner.preprocess(match.augmented).unsqueeze(0);
    std::cout << "IPM kept " << match.kept_fraction << " of the pixels (ITC " << match.itc << ")\n";

    const std::uint64_t seed = 1;
    std::cout << "regular: "
              << caption_with(captioner, instruction, pixels, augmented, agla::DecodeOptions::regular(), seed) << "\n"
              << "AGLA:    "
              << caption_with(captioner, instruction, pixels, augmented, agla::DecodeOptions::agla(), seed) << "\n";
  } catch (const agla::Error& error) {
    std::cerr << "caption: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
