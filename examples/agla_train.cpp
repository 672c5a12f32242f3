// agla_train: trains the tiny ShapesWorld BLIP models shipped in examples/data/models/ (CPU,
// deterministic, resumable) and prints their quality gates on unbiased scenes.
//
//   agla_train --stage all --out examples/data/models --work /tmp/agla-train
//       reproduces shapesworld-itm/, shapesworld-lvlm/ and shapesworld-lvlm-control/ with the
//       recipe below: encoder; biased LVLM from it; ITM from the biased LVLM's vision tower;
//       control LVLM from the encoder.
//   agla_train --stage encoder|itm|lvlm [--bias biased|control] [--steps N] [--batch N] [--seed N]
//       [--lr X] [--init ENCODER.safetensors] --out DIR [--work DIR]
//       one stage; --work keeps checkpoints (model, optimiser, step) and a restarted run resumes.
//   agla_train --stage itm|lvlm --eval-only --out DIR    prints the gates of a trained model dir.

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include "agla/runtime.hpp"
#include "train/shapesworld_training.hpp"

namespace {

namespace tr = agla::train;
namespace sw = agla::shapesworld;

/// The recipe of the shipped models: steps, batch and learning rate per stage.
struct Recipe {
  int64_t steps, batch;
  double lr;
};
constexpr Recipe kEncoderRecipe{4000, 32, 1e-3};
constexpr Recipe kItmRecipe{1200, 32, 1e-3};
constexpr Recipe kLvlmRecipe{1500, 32, 1e-3};

void usage(std::ostream& out) {
  out << "usage: agla_train --stage encoder|itm|lvlm|all --out DIR [options]\n"
         "  --stage S            encoder (dense vision pre-training), itm (ITM+ITC), lvlm (captions + yes/no\n"
         "                       answers), all (the shipped recipe: encoder, lvlm biased, itm, lvlm control)\n"
         "  --out DIR            encoder: writes DIR/encoder.safetensors; itm/lvlm: a Hugging Face model dir;\n"
         "                       all: DIR/shapesworld-itm, DIR/shapesworld-lvlm, DIR/shapesworld-lvlm-control\n"
         "  --work DIR           checkpoints (every --checkpoint-every steps); a restarted run resumes there\n"
         "  --bias B             biased (default) or control training scenes (itm, lvlm)\n"
         "  --init FILE          safetensors with vision_model.* tensors (encoder.safetensors or a model dir's\n"
         "                       model.safetensors) to start the vision tower from (itm, lvlm)\n"
         "  --steps N --batch N --lr X --seed N   schedule (defaults: the recipe of the stage; seed 1)\n"
         "  --checkpoint-every N steps between checkpoints (default 200)\n"
         "  --eval N             scenes / questions for the gates (default 400)\n"
         "  --no-patch-class-loss  encoder: per-patch presence BCE only (no dominant-class cross-entropy)\n"
         "  --freeze-vision      itm/lvlm: keep the pre-trained vision tower fixed (default: it trains at\n"
         "                       half the learning rate)\n"
         "  --eval-only          itm/lvlm: only print the gates of the model in --out; encoder: of the\n"
         "                       checkpoint in --work\n"
         "  --threads N          intra-op threads (default 1: faster per job at these sizes)\n";
}

int64_t parse_int(const std::string& flag, const char* v) {
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  agla::check<agla::InvalidArgument>(end && *end == '\0' && x >= 0, "agla_train: ", flag,
                                     " expects a non-negative integer; got '", v, "'");
  return x;
}

double parse_double(const std::string& flag, const char* v) {
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  agla::check<agla::InvalidArgument>(end && *end == '\0' && x > 0, "agla_train: ", flag,
                                     " expects a positive number; got '", v, "'");
  return x;
}

void print_encoder(const tr::EncoderReport& r, int n) {
  std::printf("encoder gate (%d unbiased scenes): multi-label accuracy %.4f (CLS head; gate >= 0.95: %s), "
              "patch-max %.4f, all-8-correct %.4f, per-patch accuracy %.4f\n",
              n, r.multilabel, r.multilabel >= 0.95 ? "PASS" : "FAIL", r.multilabel_patchmax, r.exact, r.patch);
}

void print_itm(const tr::ItmReport& r, int n) {
  std::printf("ITM gate (%d unbiased scenes, %d question prompts): AUC %.4f (gate >= 0.9: %s), AUC with the partner "
              "present %.4f, ITC matched %.3f vs unmatched %.3f\n",
              n, r.prompts, r.auc, r.auc >= 0.9 ? "PASS" : "FAIL", r.auc_partner, r.itc_matched, r.itc_unmatched);
  for (size_t l = 0; l < r.gradcam_ratio.size(); ++l)
    std::printf("GradCAM layer %zu: mass in the asked object's box / its area share = %.2f%s\n", l,
                r.gradcam_ratio[l],
                l == r.gradcam_ratio.size() / 2 ? (r.gradcam_ratio[l] >= 2 ? "  (default layer; gate >= 2: PASS)"
                                                                             : "  (default layer; gate >= 2: FAIL)")
                                                 : "");
}

void print_lvlm(const tr::LvlmReport& r) {
  std::printf("LVLM gate (greedy, POPE prompt): random-split accuracy %.4f over %d (gate >= 0.80: %s), yes-ratio %.3f; "
              "adversarial accuracy %.4f; contrast false positives partner present %.3f vs absent %.3f (%d questions)\n",
              r.random_accuracy, r.random_n, r.random_accuracy >= 0.8 ? "PASS" : "FAIL", r.random_yes_ratio,
              r.adversarial_accuracy, r.contrast_fp_partner, r.contrast_fp_alone, r.contrast_n);
  std::printf("LVLM captions (greedy, %d images): CHAIR_i %.3f, CHAIR_s %.3f, class recall %.3f; e.g. %s\n",
              r.captions_n, r.caption_chair_i, r.caption_chair_s, r.caption_recall, r.caption_example.c_str());
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string stage, out, work, bias = "biased", init;
    int64_t steps = -1, batch = -1, every = 200, eval_n = 400;
    double lr = -1;
    std::uint64_t seed = 1;
    int threads = 1;
    bool eval_only = false, patch_class_loss = true, freeze_vision = false;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> const char* {
        agla::check<agla::InvalidArgument>(i + 1 < argc, "agla_train: ", arg, " needs a value");
        return argv[++i];
      };
      if (arg == "--help" || arg == "-h") {
        usage(std::cout);
        return 0;
      } else if (arg == "--stage") {
        stage = value();
      } else if (arg == "--out") {
        out = value();
      } else if (arg == "--work") {
        work = value();
      } else if (arg == "--bias") {
        bias = value();
      } else if (arg == "--init") {
        init = value();
      } else if (arg == "--steps") {
        steps = parse_int(arg, value());
      } else if (arg == "--batch") {
        batch = parse_int(arg, value());
      } else if (arg == "--lr") {
        lr = parse_double(arg, value());
      } else if (arg == "--seed") {
        seed = static_cast<std::uint64_t>(parse_int(arg, value()));
      } else if (arg == "--checkpoint-every") {
        every = parse_int(arg, value());
      } else if (arg == "--eval") {
        eval_n = parse_int(arg, value());
      } else if (arg == "--freeze-vision") {
        freeze_vision = true;
      } else if (arg == "--no-patch-class-loss") {
        patch_class_loss = false;
      } else if (arg == "--eval-only") {
        eval_only = true;
      } else if (arg == "--threads") {
        threads = static_cast<int>(parse_int(arg, value()));
      } else {
        throw agla::InvalidArgument("agla_train: unknown option '" + arg + "' (see --help)");
      }
    }
    agla::check<agla::InvalidArgument>(stage == "encoder" || stage == "itm" || stage == "lvlm" || stage == "all",
                                       "agla_train: --stage must be encoder, itm, lvlm or all; got '", stage, "'");
    agla::check<agla::InvalidArgument>(!out.empty(), "agla_train: --out DIR is required");
    agla::check<agla::InvalidArgument>(bias == "biased" || bias == "control",
                                       "agla_train: --bias must be biased or control; got '", bias, "'");
    agla::check<agla::InvalidArgument>(every >= 1 && eval_n >= 2, "agla_train: --checkpoint-every >= 1, --eval >= 2");
    agla::configure_threads(threads);
    if (auto warning = agla::blas_warning()) std::cerr << *warning << "\n";
    const auto distribution = bias == "biased" ? sw::Distribution::Biased : sw::Distribution::Control;
    const int eval_questions = static_cast<int>(eval_n + eval_n % 2);

    auto options = [&](const std::string& name, const Recipe& recipe, const std::string& work_dir) {
      tr::StageOptions o;
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
      return o;
    };
    const auto t0 = std::chrono::steady_clock::now();

    auto run_encoder = [&](const std::string& work_dir, const std::string& file) {
      tr::StageOptions o = options("encoder", kEncoderRecipe, work_dir);
      tr::EncoderNet net = tr::train_encoder(o);
      std::filesystem::create_directories(std::filesystem::path(file).parent_path());
      agla::io::write_safetensors(file, tr::state_dict(*net));
      print_encoder(tr::evaluate_encoder(net, seed, static_cast<int>(eval_n)), static_cast<int>(eval_n));
      std::printf("encoder written to %s (%.0f s so far)\n", file.c_str(), seconds_since(t0));
    };
    auto eval_itm = [&](const std::string& dir) {
      const agla::blip::BlipItm itm = agla::blip::BlipItm::load(dir);
      const int n = static_cast<int>(std::max<int64_t>(2, eval_n / 4));
      print_itm(tr::evaluate_itm(itm, seed, n), n);
    };
    auto eval_lvlm = [&](const std::string& dir) {
      agla::blip::BlipCaptioner cap = agla::blip::BlipCaptioner::load(dir);
      print_lvlm(tr::evaluate_lvlm(cap, seed + 1000, eval_questions));
    };
    auto run_itm = [&](const std::string& work_dir, const std::string& dir, const std::string& encoder) {
      tr::StageOptions o = options("itm", kItmRecipe, work_dir);
      if (!encoder.empty()) o.init = encoder;
      tr::ItmNet net = tr::train_itm(o);
      tr::write_model_dir(dir, *net->model, net->model->config(), "BlipForImageTextRetrieval");
      std::printf("ITM model written to %s (%.0f s so far)\n", dir.c_str(), seconds_since(t0));
      eval_itm(dir);
    };
    auto run_lvlm = [&](const std::string& work_dir, const std::string& dir, const std::string& encoder,
                        sw::Distribution d) {
      tr::StageOptions o = options("lvlm", kLvlmRecipe, work_dir);
      o.distribution = d;
      if (!encoder.empty()) o.init = encoder;
      agla::blip::BlipCaptionModel model = tr::train_lvlm(o);
      tr::write_model_dir(dir, *model, model->config(), "BlipForConditionalGeneration");
      std::printf("LVLM written to %s (%.0f s so far)\n", dir.c_str(), seconds_since(t0));
      eval_lvlm(dir);
    };

    if (stage == "encoder" && eval_only) {
      // The encoder of the latest checkpoint in --work (a run still in progress can be inspected).
      tr::EncoderNet net(tr::model_config());
      torch::serialize::InputArchive archive;
      archive.load_from(work + "/checkpoint.model");
      net->load(archive);
      print_encoder(tr::evaluate_encoder(net, seed, static_cast<int>(eval_n)), static_cast<int>(eval_n));
    } else if (stage == "encoder") {
      run_encoder(work, out + "/encoder.safetensors");
    } else if (stage == "itm") {
      if (!eval_only) run_itm(work, out, "");
      else eval_itm(out);
    } else if (stage == "lvlm") {
      if (!eval_only) run_lvlm(work, out, "", distribution);
      else eval_lvlm(out);
    } else {
      agla::check<agla::InvalidArgument>(!work.empty(), "agla_train: --stage all needs --work DIR");
      const std::string encoder = work + "/encoder/encoder.safetensors";
      if (!std::filesystem::exists(encoder)) run_encoder(work + "/encoder", encoder);
      run_lvlm(work + "/lvlm", out + "/shapesworld-lvlm", encoder, sw::Distribution::Biased);
      // The ITM starts from the biased LVLM's vision tower: captioning went on training perception
      // (every caption lists all objects), which the matcher needs more than anything else.
      run_itm(work + "/itm", out + "/shapesworld-itm", out + "/shapesworld-lvlm/model.safetensors");
      run_lvlm(work + "/lvlm-control", out + "/shapesworld-lvlm-control", encoder, sw::Distribution::Control);
    }
    std::printf("total %.0f s\n", seconds_since(t0));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
