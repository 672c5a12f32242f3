// AGLA's image-prompt matching (IPM) on one image: which pixels a BLIP ITM model relates to the
// prompt (GradCAM of its cross-attention), and the augmented view AGLA decodes with (the image
// with the unrelated pixels masked). Writes heatmap.png, mask.png and augmented.png.
//
//   ipm_image ITM_DIR IMAGE PROMPT OUT_DIR
//   ipm_image tools/data/models/shapesworld-itm tools/data/sample.png "a red star" ipm_out
//
// ITM_DIR is a Hugging Face BLIP ITM checkpoint directory (config.json, model.safetensors,
// vocab.txt), e.g. Salesforce/blip-itm-large-coco or the small ShapesWorld model shipped with agla.
#include <agla/error.hpp>
#include <agla/io/image.hpp>
#include <agla/ipm.hpp>
#include <agla/models/blip.hpp>

#include <filesystem>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: ipm_image ITM_DIR IMAGE PROMPT OUT_DIR\n";
    return 2;
  }
  const std::string itm_dir = argv[1], image_path = argv[2], prompt = argv[3], out_dir = argv[4];
  try {
    // One intra-op thread: the fastest setting for small models on a shared machine (docs/building.md).
    at::set_num_threads(1);

    const at::Tensor image = agla::io::read_image(image_path);  // [H, W, 3] uint8, PNG / JPEG / BMP
    const agla::blip::BlipItm itm = agla::blip::BlipItm::load(itm_dir);
    // The matcher holds a reference to the model; defaults follow AGLA's reference (GradCAM on the
    // middle text layer, the kept share from the ITC similarity).
    const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(itm);
    const agla::ipm::Match match = matcher.match(image, prompt);

    std::cout << "prompt:            " << match.prompt << "\n"
              << "match probability: " << match.itm_probability << "\n"
              << "ITC similarity:    " << match.itc << "\n"
              << "masked share:      " << match.mask_ratio << " asked, " << 1.0 - match.kept_fraction << " masked\n"
              << "GradCAM layer:     " << matcher.block() << ", grid " << matcher.grid() << "x" << matcher.grid()
              << "\n";

    // The pictures are at the model's input size: the heat map over the resized image, the mask
    // (white = kept) and the augmented view.
    std::filesystem::create_directories(out_dir);
    const at::Tensor resized = matcher.resize_for_model(image);  // [S, S, 3] uint8
    agla::io::write_png(out_dir + "/heatmap.png", agla::ipm::heatmap_overlay(resized, match.relevance));
    agla::io::write_png(out_dir + "/mask.png", match.mask.to(at::kByte).mul(255).unsqueeze(2).contiguous());
    agla::io::write_png(out_dir + "/augmented.png", match.augmented);
    std::cout << "wrote " << out_dir << "/{heatmap,mask,augmented}.png\n";
  } catch (const agla::Error& error) {  // bad files or arguments: the message names the cause
    std::cerr << "ipm_image: " << error.what() << "\n";
    return 1;
  } catch (const std::filesystem::filesystem_error& error) {
    std::cerr << "ipm_image: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
