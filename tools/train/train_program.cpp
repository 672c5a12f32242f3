// agla_train: trains the tiny ShapesWorld BLIP models shipped in tools/data/models/ and prints their
// quality gates on unbiased scenes.
//
//   agla_train --stage all --out tools/data/models --work /tmp/agla-train
//       reproduces shapesworld-itm/, shapesworld-lvlm/ and shapesworld-lvlm-control/ with the
//       recipe below: encoder; biased LVLM from it; ITM from the biased LVLM's vision tower;
//       control LVLM from the encoder.

#include "train/train_program.hpp"

#include <torch/serialize.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "agla/error.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/runtime.hpp"
#include "common/cli.hpp"
#include "common/threads.hpp"
#include "train/shapesworld_training.hpp"

namespace agla::train {

namespace {

namespace sw = agla::shapesworld;

const std::string kProgram = "agla_train";

/// The recipe of the shipped models: steps, batch and learning rate per stage.
struct Recipe {
  std::int64_t steps, batch;
  double lr;
};
constexpr Recipe kEncoderRecipe{4000, 32, 1e-3};
constexpr Recipe kItmRecipe{1200, 32, 1e-3};
constexpr Recipe kLvlmRecipe{1500, 32, 1e-3};

std::string format(const char* pattern, double a, double b = 0, double c = 0, double d = 0, double e = 0) {
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, pattern, a, b, c, d, e);
  return buffer;
}

void print_encoder(std::ostream& out, const EncoderReport& r, int n) {
  out << "encoder gate (" << n << " unbiased scenes): multi-label accuracy " << format("%.4f", r.multilabel)
      << " (CLS head; gate >= 0.95: " << (r.multilabel >= 0.95 ? "PASS" : "FAIL") << "), patch-max "
      << format("%.4f", r.multilabel_patchmax) << ", all-8-correct " << format("%.4f", r.exact)
      << ", per-patch accuracy " << format("%.4f", r.patch) << "\n";
}

void print_itm(std::ostream& out, const ItmReport& r, int n) {
  out << "ITM gate (" << n << " unbiased scenes, " << r.prompts << " question prompts): AUC " << format("%.4f", r.auc)
      << " (gate >= 0.9: " << (r.auc >= 0.9 ? "PASS" : "FAIL") << "), AUC with the partner present "
      << format("%.4f", r.auc_partner) << ", ITC matched " << format("%.3f", r.itc_matched) << " vs unmatched "
      << format("%.3f", r.itc_unmatched) << "\n";
  for (std::size_t l = 0; l < r.gradcam_ratio.size(); ++l) {
    out << "GradCAM layer " << l
        << ": mass in the asked object's box / its area share = " << format("%.2f", r.gradcam_ratio[l]);
    if (l == r.gradcam_ratio.size() / 2)
      out << (r.gradcam_ratio[l] >= 2 ? "  (default layer; gate >= 2: PASS)" : "  (default layer; gate >= 2: FAIL)");
    out << "\n";
  }
}

void print_lvlm(std::ostream& out, const LvlmReport& r) {
  out << "LVLM gate (greedy, POPE prompt): random-split accuracy " << format("%.4f", r.random_accuracy) << " over "
      << r.random_n << " (gate >= 0.80: " << (r.random_accuracy >= 0.8 ? "PASS" : "FAIL") << "), yes-ratio "
      << format("%.3f", r.random_yes_ratio) << "; adversarial accuracy " << format("%.4f", r.adversarial_accuracy)
      << "; contrast false positives partner present " << format("%.3f", r.contrast_fp_partner) << " vs absent "
      << format("%.3f", r.contrast_fp_alone) << " (" << r.contrast_n << " questions)\n";
  out << "LVLM captions (greedy, " << r.captions_n << " images): CHAIR_i " << format("%.3f", r.caption_chair_i)
      << ", CHAIR_s " << format("%.3f", r.caption_chair_s) << ", class recall " << format("%.3f", r.caption_recall)
      << "; e.g. " << r.caption_example << "\n";
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::string stage, dir, work, bias = "biased", init;
  std::int64_t steps = -1, batch = -1, every = 200, eval_n = 400;
  double lr = -1;
  std::uint64_t seed = 1;
  int threads = 0;
  bool eval_only = false, patch_class_loss = true, freeze_vision = false;
  tools::OptionParser parser(kProgram);
  parser.text("--stage", stage).text("--out", dir).text("--work", work).text("--bias", bias).text("--init", init);
  parser.integer("--steps", steps, 0, 1000000).integer("--batch", batch, 1, 1024).seed(seed).threads(threads);
  parser.value("--lr", [&](const std::string& v) { lr = tools::parse_number(kProgram, "--lr", v, 0.0, 1.0, true); });
  parser.integer("--checkpoint-every", every, 1, 1000000).integer("--eval", eval_n, 2, 100000);
  parser.flag("--freeze-vision", freeze_vision).flag("--no-patch-class-loss", patch_class_loss, false);
  parser.flag("--eval-only", eval_only);
  if (!parser.parse(args)) return tools::print_help(kProgram, out);
  check<InvalidArgument>(stage == "encoder" || stage == "itm" || stage == "lvlm" || stage == "all",
                         "agla_train: --stage must be encoder, itm, lvlm or all; got '", stage, "'");
  check<InvalidArgument>(!dir.empty(), "agla_train: --out DIR is required");
  check<InvalidArgument>(bias == "biased" || bias == "control", "agla_train: --bias must be biased or control; got '",
                         bias, "'");
  check<InvalidArgument>(stage != "all" || !work.empty(), "agla_train: --stage all needs --work DIR");
  check<InvalidArgument>(!(stage == "encoder" && eval_only) || !work.empty(),
                         "agla_train: --stage encoder --eval-only reads the checkpoint in --work DIR");
  if (!init.empty()) tools::require_file(kProgram, "--init", init);
  // These models are tiny: one thread is the fastest per job (docs/tools.md "Threads").
  tools::use_threads(threads > 0 ? threads : 1, 0);
  if (auto warning = agla::blas_warning()) err << *warning << "\n";
  const auto distribution = bias == "biased" ? sw::Distribution::Biased : sw::Distribution::Control;
  const int eval_questions = static_cast<int>(eval_n + eval_n % 2);

  auto options = [&](const std::string& name, const Recipe& recipe, const std::string& work_dir) {
    StageOptions o;
    o.stage = name;
    o.distribution = distribution;
    o.steps = steps >= 0 && stage != "all" ? steps : recipe.steps;
    o.batch = batch > 0 && stage != "all" ? batch : recipe.batch;
    o.lr = lr > 0 && stage != "all" ? lr : recipe.lr;
    o.seed = seed;
    o.work = work_dir;
    o.checkpoint_every = every;
    o.init = init;
    o.patch_class_loss = patch_class_loss;
    o.freeze_vision = freeze_vision;
    o.log = &out;
    return o;
  };
  const auto t0 = std::chrono::steady_clock::now();

  auto run_encoder = [&](const std::string& work_dir, const std::string& file) {
    StageOptions o = options("encoder", kEncoderRecipe, work_dir);
    EncoderNet net = train_encoder(o);
    std::filesystem::create_directories(std::filesystem::path(file).parent_path());
    io::write_safetensors(file, state_dict(*net));
    print_encoder(out, evaluate_encoder(net, seed, static_cast<int>(eval_n)), static_cast<int>(eval_n));
    out << "encoder written to " << file << " (" << format("%.0f", seconds_since(t0)) << " s so far)\n";
  };
  auto eval_itm = [&](const std::string& model_dir) {
    const blip::BlipItm itm = blip::BlipItm::load(model_dir);
    const int n = static_cast<int>(std::max<std::int64_t>(2, eval_n / 4));
    print_itm(out, evaluate_itm(itm, seed, n), n);
  };
  auto eval_lvlm = [&](const std::string& model_dir) {
    blip::BlipCaptioner cap = blip::BlipCaptioner::load(model_dir);
    print_lvlm(out, evaluate_lvlm(cap, seed + 1000, eval_questions));
  };
  auto run_itm = [&](const std::string& work_dir, const std::string& model_dir, const std::string& encoder) {
    StageOptions o = options("itm", kItmRecipe, work_dir);
    if (!encoder.empty()) o.init = encoder;
    ItmNet net = train_itm(o);
    write_model_dir(model_dir, *net->model, net->model->config(), "BlipForImageTextRetrieval");
    out << "ITM model written to " << model_dir << " (" << format("%.0f", seconds_since(t0)) << " s so far)\n";
    eval_itm(model_dir);
  };
  auto run_lvlm = [&](const std::string& work_dir, const std::string& model_dir, const std::string& encoder,
                      sw::Distribution d) {
    StageOptions o = options("lvlm", kLvlmRecipe, work_dir);
    o.distribution = d;
    if (!encoder.empty()) o.init = encoder;
    blip::BlipCaptionModel model = train_lvlm(o);
    write_model_dir(model_dir, *model, model->config(), "BlipForConditionalGeneration");
    out << "LVLM written to " << model_dir << " (" << format("%.0f", seconds_since(t0)) << " s so far)\n";
    eval_lvlm(model_dir);
  };

  if (stage == "encoder" && eval_only) {
    // The encoder of the latest checkpoint in --work (a run still in progress can be inspected).
    const std::string checkpoint = work + "/checkpoint.model";
    tools::require_file(kProgram, "the checkpoint in --work", checkpoint);
    EncoderNet net(model_config());
    torch::serialize::InputArchive archive;
    archive.load_from(checkpoint);
    net->load(archive);
    print_encoder(out, evaluate_encoder(net, seed, static_cast<int>(eval_n)), static_cast<int>(eval_n));
  } else if (stage == "encoder") {
    run_encoder(work, dir + "/encoder.safetensors");
  } else if (stage == "itm") {
    if (!eval_only)
      run_itm(work, dir, "");
    else
      eval_itm(dir);
  } else if (stage == "lvlm") {
    if (!eval_only)
      run_lvlm(work, dir, "", distribution);
    else
      eval_lvlm(dir);
  } else {
    const std::string encoder = work + "/encoder/encoder.safetensors";
    if (!std::filesystem::exists(encoder)) run_encoder(work + "/encoder", encoder);
    run_lvlm(work + "/lvlm", dir + "/shapesworld-lvlm", encoder, sw::Distribution::Biased);
    // The ITM starts from the biased LVLM's vision tower: captioning went on training perception
    // (every caption lists all objects), which the matcher needs more than anything else.
    run_itm(work + "/itm", dir + "/shapesworld-itm", dir + "/shapesworld-lvlm/model.safetensors");
    run_lvlm(work + "/lvlm-control", dir + "/shapesworld-lvlm-control", encoder, sw::Distribution::Control);
  }
  out << "total " << format("%.0f", seconds_since(t0)) << " s\n";
  return 0;
}

}  // namespace

int run_train(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return tools::run_guarded(kProgram, err, [&] { return run(args, out, err); });
}

}  // namespace agla::train
