#pragma once
/// \file
/// Training of the tiny ShapesWorld BLIP models that ship in `tools/data/models/`: the vocabulary,
/// the model configuration, on-the-fly batches from the ShapesWorld generator, the three stages
/// (dense vision pre-training, ITM + ITC with mined hard negatives, captioning/VQA language
/// modelling), resumable checkpoints and the quality gates. Everything random is a function of
/// `(seed, step)`, so a run resumed from a checkpoint continues bit for bit like an uninterrupted one.

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agla/io/state_dict.hpp"
#include "agla/models/blip/captioner.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/blip/itm.hpp"
#include "agla/models/common/layers.hpp"
#include "agla/models/common/vit.hpp"
#include "agla/models/llava/prompt.hpp"
#include "agla/shapesworld/world.hpp"
#include "agla/text/wordpiece.hpp"

namespace agla::train {

namespace sw = agla::shapesworld;

/// POPE's instruction suffix, which training questions carry half of the time.
inline constexpr const char* kPopeSuffix = llava::kPopeSuffix;

/// The whole ShapesWorld vocabulary: BERT specials, punctuation, the words of captions, questions and
/// answers (POPE's " Please answer this question with one word." suffix included), the class and
/// colour names, then `[DEC]` and `[ENC]` last (as LAVIS appends them). Whole words only, so WordPiece
/// never needs `##` pieces.
std::vector<std::string> vocabulary();

/// Writes `vocabulary()` as a `vocab.txt` (one token per line, line n = id n).
void write_vocab(const std::string& path);

/// The tokenizer of `vocabulary()` (built in memory, identical to reading the written file).
text::WordPieceTokenizer tokenizer();

/// The tiny BLIP: 64x64 input with 8x8 patches (an 8x8 grid), width 128, 4 ViT layers, 3 text layers
/// with cross-attention, 4 heads: ~0.8 M vision and ~0.8 M text parameters (the feasibility study's
/// architecture, on the Hugging Face layout).
blip::BlipConfig model_config();

/// `config.json` of `c` in `BlipConfig.to_dict()` form, for the given architecture name.
nlohmann::json config_json(const blip::BlipConfig& c, const std::string& architecture);

/// The parameters and buffers of `module` under their registered names (detached CPU float32 copies).
io::StateDict state_dict(const torch::nn::Module& module, const std::string& prefix = "");

/// Writes a Hugging Face-layout model folder: `config.json`, `model.safetensors`, `vocab.txt`.
void write_model_dir(const std::string& dir, const torch::nn::Module& module, const blip::BlipConfig& c,
                     const std::string& architecture);

/// The world the models are trained and evaluated on: the generator's defaults at 64x64 (radius
/// 7..11 px, 8 classes, noise sd ~0.04), i.e. exactly the world `agla_shapesworld` writes the
/// evaluation sets from.
sw::WorldOptions world();

/// Normalised pixels `[B, 3, 64, 64]` float (BLIP's CLIP mean/std, what `BlipItm`/`BlipCaptioner`
/// expect) of `scenes`.
at::Tensor pixels(const std::vector<sw::Scene>& scenes);

/// Stage (a): the BLIP vision tower plus the dense pre-training heads (image-level multi-label
/// presence from the CLS token, per-patch presence from each patch token). Only `vision_model.*`
/// is carried into the ITM and LVLM models.
class EncoderNetImpl : public torch::nn::Module {
 public:
  explicit EncoderNetImpl(const blip::BlipConfig& c) {
    vision_model = register_module("vision_model", models::VisionTransformer(c.vision));
    presence_head = register_module("presence_head", models::Linear(c.vision.hidden_size, sw::kNumShapes));
    patch_head = register_module("patch_head", models::Linear(c.vision.hidden_size, sw::kNumShapes));
    dominant_head = register_module("dominant_head", models::Linear(c.vision.hidden_size, sw::kNumShapes + 1));
  }
  models::VisionTransformer vision_model{nullptr};
  models::Linear presence_head{nullptr}, patch_head{nullptr}, dominant_head{nullptr};
};
TORCH_MODULE(EncoderNet);

/// Stage (b): `BlipForImageTextRetrieval` plus ITC's learned temperature (not shipped: `BlipItm`
/// computes raw cosine similarities).
class ItmNetImpl : public torch::nn::Module {
 public:
  explicit ItmNetImpl(const blip::BlipConfig& c) {
    model = register_module("model", blip::BlipItmModel(c));
    temp = register_parameter("temp", torch::full({1}, 0.07));
  }
  blip::BlipItmModel model{nullptr};
  at::Tensor temp;
};
TORCH_MODULE(ItmNet);

/// What one stage run does.
struct StageOptions {
  std::string stage;              ///< "encoder", "itm" or "lvlm"
  sw::Distribution distribution = sw::Distribution::Biased;  ///< training scenes (the encoder uses Unbiased)
  int64_t steps = 1000;           ///< optimiser steps
  int64_t batch = 32;             ///< scenes per step
  std::uint64_t seed = 1;         ///< run seed (initialisation, scenes, texts, negative mining)
  double lr = 1e-3;               ///< peak learning rate (linear warm-up, cosine decay to 10 %)
  int64_t warmup = 200;           ///< warm-up steps
  std::string work;               ///< checkpoint folder ("" = no checkpoints)
  int64_t checkpoint_every = 200; ///< steps between checkpoints
  int64_t log_every = 50;         ///< steps between loss lines
  std::string init;               ///< encoder checkpoint (`encoder.safetensors`) to start the vision tower from
  bool quiet = false;             ///< no progress lines
  int64_t stop_at = -1;           ///< stop (as if interrupted) after this step; -1 = run to `steps`
  bool patch_class_loss = true;   ///< encoder: add the 9-way "dominant class of each patch" cross-entropy
  bool freeze_vision = false;     ///< itm/lvlm: keep the pre-trained vision tower fixed (else it trains at half rate)
  std::ostream* log = nullptr;    ///< where progress lines go (null: std::cout)
};

/// Encoder quality on `n` unbiased scenes of the evaluation stream: per-class multi-label accuracy of
/// the CLS head and of the per-patch head's max over patches, and the per-patch accuracy.
struct EncoderReport {
  double multilabel = 0, multilabel_patchmax = 0, exact = 0, patch = 0;
};

/// The encoder gates on `n` unbiased scenes of the evaluation stream of `seed`.
EncoderReport evaluate_encoder(EncoderNet& net, std::uint64_t seed, int n);

/// ITM quality on unbiased scenes through the shipped contract (`BlipItm`): AUC of P(match) for
/// "Is there a X in the image?" with X present vs absent (and vs absent while X's partner is
/// present), ITC similarity means, and GradCAM mass inside the asked object's box over its area share
/// at every text layer.
struct ItmReport {
  double auc = 0, auc_partner = 0, itc_matched = 0, itc_unmatched = 0;
  std::vector<double> gradcam_ratio;  ///< per text layer: mean over prompts of (mass in box) / (box area share)
  int prompts = 0;
};

/// The ITM gates on `scenes_n` unbiased scenes of the evaluation stream of `seed`.
ItmReport evaluate_itm(const blip::BlipItm& itm, std::uint64_t seed, int scenes_n);

/// LVLM quality through the shipped contract (`BlipCaptioner`, greedy): accuracy on POPE's random
/// split of a ShapesWorld evaluation set (`questions` questions, seed `seed`), and the false-positive
/// rates of the within-class contrast with the partner present / absent.
struct LvlmReport {
  double random_accuracy = 0, random_yes_ratio = 0, adversarial_accuracy = 0;
  double contrast_fp_partner = 0, contrast_fp_alone = 0;
  int random_n = 0, contrast_n = 0;
  double caption_chair_i = 0;  ///< greedy captions: mentioned classes that are absent / all mentions
  double caption_chair_s = 0;  ///< captions with at least one absent class mentioned / captions
  double caption_recall = 0;   ///< present classes mentioned / present classes
  int captions_n = 0;
  std::string caption_example;  ///< the first caption, with its ground truth
};

/// Greedy caption (no prompt: `[DEC]` only) of one scene, at most `max_tokens` tokens.
std::string greedy_caption(blip::BlipCaptioner& cap, const sw::Scene& scene, int max_tokens = 40);

/// Greedy first answer token (argmax over the whole vocabulary) for `prompt` on each image; returns
/// the decoded words.
std::vector<std::string> greedy_answers(blip::BlipCaptioner& cap, const std::vector<sw::Scene>& scenes,
                                        const std::vector<std::string>& prompts);

/// The LVLM gates on a ShapesWorld evaluation set of `questions` questions per split (seed `seed`).
LvlmReport evaluate_lvlm(blip::BlipCaptioner& cap, std::uint64_t seed, int questions);

/// Runs stage (a); returns the trained network (the vision tower is `net->vision_model`).
EncoderNet train_encoder(const StageOptions& o, std::vector<double>* losses = nullptr);

/// Runs stage (b).
ItmNet train_itm(const StageOptions& o, std::vector<double>* losses = nullptr);

/// Runs stage (c).
blip::BlipCaptionModel train_lvlm(const StageOptions& o, std::vector<double>* losses = nullptr);

}  // namespace agla::train
