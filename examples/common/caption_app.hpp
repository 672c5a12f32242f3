#pragma once
/// \file
/// The `agla_caption` program: regular and AGLA captions of one image, side by side, with the same
/// seed, their decoding speed, and IPM's heat-map and augmented view written as PNG files. The
/// program logic lives here so the tests can run it in-process (`run_caption`).

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agla/decode.hpp"
#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/ipm.hpp"
#include "agla/runtime.hpp"
#include "cli.hpp"
#include "lvlm.hpp"
#include "methods.hpp"

namespace agla::examples {

/// `agla_caption`'s usage text.
inline void caption_usage(std::ostream& out) {
  out << "usage: agla_caption [options]\n"
         "Captions an image with regular and with AGLA decoding (same seed) and writes IPM's heat-map and\n"
         "augmented view. Without options it runs the models shipped in examples/data/models on\n"
         "examples/data/sample.png.\n"
         "  --image PATH          input image (PNG, JPEG, BMP; default: the embedded ShapesWorld sample)\n"
         "  --prompt TEXT         captioning prompt (BLIP: text after [DEC], default none; LLaVA: the\n"
         "                        question inside the conversation template)\n"
         "  --itm-prompt TEXT     text IPM matches against the image (default: the prompt, else 'the image')\n"
         "  --itm DIR             BLIP ITM model directory (default: examples/data/models/shapesworld-itm)\n"
         "  --lvlm DIR            captioning model: a BLIP captioning directory (e.g.\n"
         "                        Salesforce/blip-image-captioning-large) or a llava-hf LLaVA-1.5 directory,\n"
         "                        detected from config.json (default: examples/data/models/shapesworld-lvlm)\n"
         "  --prompt-ids IDS      comma-separated prompt token ids, used as given (no tokenizer, no template;\n"
         "                        BLIP: start with [DEC]; LLaVA: include the image token)\n"
         "  --alpha A             weight of the augmented view (default 2)\n"
         "  --beta B              plausibility cutoff (default 0.5)\n"
         "  --temperature T       sampling temperature (default 1)\n"
         "  --top-k K             top-k filter (default 0 = off)\n"
         "  --top-p P             nucleus filter (default 1 = off)\n"
         "  --greedy              argmax instead of sampling\n"
         "  --seed N              sampling seed, the same for both captions (default 1)\n"
         "  --max-new-tokens N    tokens per caption at most (default 30)\n"
         "  --out DIR             where heatmap.png, mask.png and augmented.png go (default ./agla_caption_out)\n"
         "  --json                print one JSON object (prompt ids; ids, text and speed of each mode; IPM)\n"
         "  --threads N           intra-op threads (0 = all cores; default 0)\n";
}

/// Parsed `agla_caption` options.
struct CaptionOptions {
  std::string image;                      ///< empty: the embedded sample
  std::optional<std::string> prompt;      ///< captioning prompt
  std::optional<std::string> itm_prompt;  ///< IPM's text
  std::string itm, lvlm;                  ///< empty: shipped model, else the fixture
  std::optional<std::vector<int64_t>> prompt_ids;
  SamplingSettings sampling;
  uint64_t seed = 1;
  int64_t max_new_tokens = 30;
  std::string out = "agla_caption_out";
  bool json = false;
  int threads = 0;
  bool help = false;
};

/// Parses `agla_caption`'s arguments (argv without the program name).
inline CaptionOptions parse_caption_options(const std::vector<std::string>& args) {
  const std::string program = "agla_caption";
  CaptionOptions o;
  ArgCursor cursor(args, program);
  while (cursor.more()) {
    const std::string arg = cursor.next();
    if (arg == "--help" || arg == "-h") {
      o.help = true;
    } else if (arg == "--image") {
      o.image = cursor.value(arg);
    } else if (arg == "--prompt") {
      o.prompt = cursor.value(arg);
    } else if (arg == "--itm-prompt") {
      o.itm_prompt = cursor.value(arg);
    } else if (arg == "--itm") {
      o.itm = cursor.value(arg);
    } else if (arg == "--lvlm") {
      o.lvlm = cursor.value(arg);
    } else if (arg == "--prompt-ids") {
      o.prompt_ids = parse_id_list(program, arg, cursor.value(arg));
    } else if (parse_sampling_option(program, arg, cursor, o.sampling)) {
    } else if (arg == "--seed") {
      o.seed = static_cast<uint64_t>(parse_integer(program, arg, cursor.value(arg), 0));
    } else if (arg == "--max-new-tokens") {
      o.max_new_tokens = parse_integer(program, arg, cursor.value(arg), 1, 4096);
    } else if (arg == "--out") {
      o.out = cursor.value(arg);
      check<InvalidArgument>(!o.out.empty(), program, ": --out needs a directory");
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--threads") {
      o.threads = parse_threads(program, cursor.value(arg));
    } else {
      throw InvalidArgument("agla_caption: unknown option '" + arg + "' (see --help)");
    }
  }
  // Range errors now, before any model is loaded.
  method_options(Method::Agla, o.sampling);
  return o;
}

/// The models a run uses, and whether they are the untrained test fixtures.
struct ModelChoice {
  std::string itm, lvlm;
  bool itm_fixture = false, lvlm_fixture = false;
};

/// `--itm` / `--lvlm` when given; else the shipped ShapesWorld models when present; else the
/// random-weight BLIP fixtures under tests/data/blip.
inline ModelChoice resolve_models(const std::string& itm, const std::string& lvlm) {
  const auto present = [](const std::filesystem::path& dir) {
    return std::filesystem::is_regular_file(dir / "config.json");
  };
  const std::filesystem::path shipped = std::filesystem::path(data_dir()) / "models";
  const std::filesystem::path fixture = fixture_model_dir();
  ModelChoice choice;
  const auto pick = [&](const std::string& given, const char* name, const char* fallback, std::string& dir,
                        bool& is_fixture) {
    if (!given.empty()) {
      dir = given;
    } else if (present(shipped / name)) {
      dir = (shipped / name).string();
    } else {
      dir = (fixture / fallback).string();
      is_fixture = true;
    }
  };
  pick(itm, "shapesworld-itm", "itm", choice.itm, choice.itm_fixture);
  pick(lvlm, "shapesworld-lvlm", "caption", choice.lvlm, choice.lvlm_fixture);
  return choice;
}

/// One decoded caption and its speed.
struct CaptionRun {
  std::vector<int64_t> ids;  ///< generated ids (up to and including the stop id)
  std::string text;
  double seconds = 0;
  /// Generated tokens per second of decoding (prompt prefill included, IPM excluded).
  double tokens_per_second() const { return seconds > 0 ? static_cast<double>(ids.size()) / seconds : 0.0; }
};

/// The JSON object of one mode.
inline nlohmann::json caption_run_json(const CaptionRun& run) {
  return nlohmann::json{{"ids", run.ids},
                        {"text", run.text},
                        {"tokens", run.ids.size()},
                        {"seconds", run.seconds},
                        {"tokens_per_second", run.tokens_per_second()}};
}

/// Runs `agla_caption` with `args`; writes the report to `out`, errors to `err`; returns the exit status.
inline int run_caption(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    const CaptionOptions o = parse_caption_options(args);
    if (o.help) {
      caption_usage(out);
      return 0;
    }
    agla::configure_threads(o.threads);
    if (auto warning = agla::blas_warning()) err << *warning << "\n";

    const ModelChoice models = resolve_models(o.itm, o.lvlm);
    const std::string image_path = o.image.empty() ? data_dir() + "/sample.png" : o.image;
    const at::Tensor image = io::read_image(image_path);
    const blip::BlipItm itm = load_itm(models.itm);
    const std::unique_ptr<Lvlm> lvlm = load_lvlm(models.lvlm);

    const std::vector<int64_t> prompt =
        o.prompt_ids ? *o.prompt_ids : lvlm->caption_prompt(o.prompt.value_or(std::string()));
    const std::string itm_prompt =
        o.itm_prompt ? *o.itm_prompt : (o.prompt && !o.prompt->empty() ? *o.prompt : std::string(kCaptionItmText));

    // IPM once: the augmented view both modes share (regular decoding ignores it).
    const ViewBuilder views(&itm, *lvlm);
    const at::Tensor original = lvlm->pixel_values(image);
    const AugmentedView view = views.build(ViewKind::IpmMask, image, itm_prompt, original, seeded_generator(o.seed));

    GenerateOptions limits;
    limits.max_new_tokens = o.max_new_tokens;
    limits.eos_token_ids = lvlm->stop_ids();
    limits.pad_token_id = lvlm->pad_id();
    const auto decode = [&](Method method) {
      CaptionRun run;
      const auto start = std::chrono::steady_clock::now();
      const GenerateResult result = lvlm->generate(prompt, original, view.pixels, method_options(method, o.sampling),
                                                   limits, seeded_generator(o.seed));
      run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const at::Tensor row = result.tokens[0].narrow(0, 0, result.lengths[0]).contiguous();
      run.ids.assign(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
      run.text = lvlm->decode(run.ids);
      return run;
    };
    // One untimed token per mode first, so neither timing includes first-call allocations.
    GenerateOptions warm_up = limits;
    warm_up.max_new_tokens = 1;
    for (Method method : {Method::Regular, Method::Agla})
      lvlm->generate(prompt, original, view.pixels, method_options(method, o.sampling), warm_up,
                     seeded_generator(o.seed));
    const CaptionRun regular = decode(Method::Regular);
    const CaptionRun assembled = decode(Method::Agla);

    make_directory("agla_caption", o.out);
    const std::string heatmap = o.out + "/heatmap.png", augmented = o.out + "/augmented.png",
                      mask = o.out + "/mask.png";
    io::write_png(heatmap, ipm::heatmap_overlay(views.matcher()->resize_for_model(image), view.match->relevance));
    io::write_png(augmented, view.image);
    io::write_png(mask, view.match->mask.to(at::kByte).mul(255).unsqueeze(2).contiguous());

    const bool fixture = models.itm_fixture || models.lvlm_fixture;
    const DecodeOptions agla_options = method_options(Method::Agla, o.sampling);
    if (o.json) {
      nlohmann::json j{
          {"image", image_path},
          {"lvlm",
           {{"dir", models.lvlm}, {"kind", model_kind_name(lvlm->kind())}, {"test_fixture", models.lvlm_fixture}}},
          {"itm", {{"dir", models.itm}, {"test_fixture", models.itm_fixture}}},
          {"prompt_ids", prompt},
          {"itm_prompt", itm_prompt},
          {"seed", o.seed},
          {"decoding",
           {{"alpha", agla_options.alpha},
            {"beta", agla_options.beta},
            {"temperature", agla_options.temperature},
            {"top_k", agla_options.top_k},
            {"top_p", agla_options.top_p},
            {"greedy", agla_options.greedy},
            {"max_new_tokens", o.max_new_tokens}}},
          {"ipm",
           {{"itc", view.itc},
            {"itm_probability", view.match->itm_probability},
            {"mask_ratio", view.match->mask_ratio},
            {"kept_fraction", view.kept_fraction},
            {"milliseconds", view.ipm_ms}}},
          {"regular", caption_run_json(regular)},
          {"agla", caption_run_json(assembled)},
          {"files", {{"heatmap", heatmap}, {"augmented", augmented}, {"mask", mask}}}};
      if (o.prompt) j["prompt"] = *o.prompt;
      out << j.dump() << std::endl;
      return 0;
    }
    if (fixture)
      out << "NOTE: no trained model found in " << data_dir()
          << "/models; running the UNTRAINED RANDOM-WEIGHT TEST MODELS\n"
             "      under tests/data/blip (32x32 input). Their captions are noise; they only show the pipeline.\n";
    out << "lvlm:      " << models.lvlm << " (" << model_kind_name(lvlm->kind()) << ")\n"
        << "itm:       " << models.itm << "\n"
        << "image:     " << image_path << " (" << image.size(1) << "x" << image.size(0) << ")\n"
        << "prompt:    " << (o.prompt_ids ? "(token ids)" : "'" + o.prompt.value_or("") + "'") << ", IPM text '"
        << itm_prompt << "'\n"
        << "decoding:  " << (agla_options.greedy ? "greedy" : "sampling") << ", seed " << o.seed << ", temperature "
        << agla_options.temperature << ", top-k " << agla_options.top_k << ", top-p " << agla_options.top_p
        << "; AGLA alpha " << agla_options.alpha << ", beta " << agla_options.beta << "\n"
        << "IPM:       itc " << view.itc << ", match probability " << view.match->itm_probability << ", kept "
        << view.kept_fraction << " of the pixels, " << std::fixed << std::setprecision(1) << view.ipm_ms << " ms\n\n";
    out << std::left << std::setw(9) << "mode" << std::right << std::setw(10) << "tokens/s"
        << "  caption\n";
    const auto row = [&](const char* name, const CaptionRun& run) {
      out << std::left << std::setw(9) << name << std::right << std::setw(10) << std::fixed << std::setprecision(1)
          << run.tokens_per_second() << "  " << run.text << "\n";
    };
    row("regular", regular);
    row("AGLA", assembled);
    out << "\nwrote:     " << heatmap << ", " << augmented << ", " << mask << "\n";
    return 0;
  } catch (const Error& e) {
    err << e.what() << "\n";
  } catch (const std::exception& e) {
    err << "agla_caption: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace agla::examples
