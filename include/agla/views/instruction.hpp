#pragma once
/// \file
/// ICD's disturbed instructions (Wang et al., ACL Findings 2024, "Mitigating Hallucinations in
/// Large Vision-Language Models with Instruction Contrastive Decoding"; p1k0pan/ICD). The extra view
/// is the same image under a disturbed instruction. The released scripts try five disturbances and
/// fix none; where a model puts it follows the reference code of that model (`disturbed_prompt` of
/// each LVLM: LLaVA replaces its system prompt, InstructBLIP's Q-Former reads the disturbance before
/// the question, the BLIP captioner reads it before the instruction).

#include <array>
#include <string>

namespace agla::views {

/// The five disturbances of the ICD scripts (`experiments/gen_scripts/icd_llava_pope.py`).
inline const std::array<std::string, 5>& icd_disturbances() {
  static const std::array<std::string, 5> disturbances = {
      "You are an object detector to recognize every different objects.",
      "You are an object detector to recognize every different objects by focusing the shapes, colors and "
      "relationships of objects.",
      "I want you avoid any specific identification or categorization of the objects depicted.",
      "You are a confused objects detector to provide a fuzzy overview or impression of the image.",
      "You are an object detector to provide a general overview or impression of the image."};
  return disturbances;
}

/// The disturbance the library uses by default: the fourth of the scripts, the "confused detector"
/// role the paper describes.
inline const std::string& default_icd_disturbance() { return icd_disturbances()[3]; }

}  // namespace agla::views
