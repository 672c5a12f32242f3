// agla_shapesworld: writes ShapesWorld's evaluation sets in POPE's format (images/*.png and jsonl
// question files for the random, popular, adversarial, contrast and caption splits), and prints
// the co-occurrence statistics of the training distributions.
//
//   agla_shapesworld --out DIR [--seed N] [--questions-per-split N] [--captions N] [--size PX]
//   agla_shapesworld --stats N [--seed N] [--size PX]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "agla/error.hpp"
#include "agla/runtime.hpp"
#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/world.hpp"

#if __has_include("agla/io/image.hpp")
#include "agla/io/image.hpp"
#include "agla/shapesworld/tensor.hpp"
#define AGLA_SHAPESWORLD_IO_IMAGE 1
#else
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#endif

namespace sw = agla::shapesworld;

namespace {

void usage(std::ostream& out) {
  out << "usage: agla_shapesworld --out DIR [--seed N] [--questions-per-split N] [--captions N] [--size PX]\n"
         "       agla_shapesworld --stats SCENES [--seed N] [--size PX]\n"
         "  --out DIR               write the evaluation sets (images/*.png, shapesworld_*.jsonl, world.json)\n"
         "  --seed N                scene seed (default 1)\n"
         "  --questions-per-split N questions in each POPE split and in the contrast split (default 1000, even)\n"
         "  --captions N            images in the caption split (default questions-per-split / 2)\n"
         "  --size PX               image side in pixels (default 64; 32..512)\n"
         "  --stats SCENES          print class frequencies and P(partner | class) of the biased, control and\n"
         "                          unbiased distributions over SCENES scenes\n"
         "  --threads N             intra-op threads (0 = all cores; default 1)\n";
}

void write_png(const std::string& path, const sw::Scene& scene) {
#ifdef AGLA_SHAPESWORLD_IO_IMAGE
  agla::io::write_png(path, sw::image_tensor(scene));
#else
  agla::check<agla::FormatError>(
      stbi_write_png(path.c_str(), scene.width, scene.height, 3, scene.rgb.data(), scene.width * 3) != 0,
      "agla_shapesworld: cannot write '", path, "'");
#endif
}

void print_stats(std::uint64_t seed, int scenes, const sw::WorldOptions& world) {
  const char* names[] = {"biased", "control", "unbiased"};
  const sw::Distribution kinds[] = {sw::Distribution::Biased, sw::Distribution::Control, sw::Distribution::Unbiased};
  for (int k = 0; k < 3; ++k) {
    long long count[sw::kNumShapes] = {}, with_partner[sw::kNumShapes] = {}, partner_without[sw::kNumShapes] = {};
    long long objects = 0;
    for (int i = 0; i < scenes; ++i) {
      sw::Rng rng(sw::scene_seed(seed, static_cast<std::uint64_t>(i)));
      bool present[sw::kNumShapes] = {};
      for (int c : sw::sample_shapes(rng, world, kinds[k])) present[c] = true, ++objects;
      for (int c = 0; c < sw::kNumShapes; ++c) {
        const int p = sw::partner_of(c, world);
        count[c] += present[c];
        if (p >= 0 && present[c] && present[p]) ++with_partner[c];
        if (p >= 0 && !present[c] && present[p]) ++partner_without[c];
      }
    }
    std::printf("%s: %d scenes, %.2f objects per scene\n", names[k], scenes, static_cast<double>(objects) / scenes);
    for (int c = 0; c < sw::kNumShapes; ++c) {
      const int p = sw::partner_of(c, world);
      std::printf("  %-9s P(class) %.3f", sw::kShapeNames[c], static_cast<double>(count[c]) / scenes);
      if (p >= 0)
        std::printf("   P(%s | %s) %.3f   P(%s | no %s) %.3f", sw::kShapeNames[p], sw::kShapeNames[c],
                    count[c] ? static_cast<double>(with_partner[c]) / count[c] : 0.0, sw::kShapeNames[p],
                    sw::kShapeNames[c],
                    scenes - count[c] ? static_cast<double>(partner_without[c]) / (scenes - count[c]) : 0.0);
      std::printf("\n");
    }
  }
}

int parse_int(const std::string& flag, const char* value) {
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  agla::check<agla::InvalidArgument>(end != value && *end == '\0', "agla_shapesworld: ", flag,
                                     " expects an integer; got '", value, "'");
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string out;
    sw::EvalOptions options;
    int stats = 0, threads = 1;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const auto value = [&]() -> const char* {
        agla::check<agla::InvalidArgument>(i + 1 < argc, "agla_shapesworld: ", arg, " needs a value");
        return argv[++i];
      };
      if (arg == "--help" || arg == "-h") {
        usage(std::cout);
        return 0;
      } else if (arg == "--out") {
        out = value();
      } else if (arg == "--seed") {
        const char* v = value();
        char* end = nullptr;
        options.seed = std::strtoull(v, &end, 10);
        agla::check<agla::InvalidArgument>(end != v && *end == '\0',
                                           "agla_shapesworld: --seed expects a "
                                           "non-negative integer; got '",
                                           v, "'");
      } else if (arg == "--questions-per-split") {
        options.questions_per_split = parse_int(arg, value());
      } else if (arg == "--captions") {
        options.captions = parse_int(arg, value());
      } else if (arg == "--size") {
        options.world.height = options.world.width = parse_int(arg, value());
      } else if (arg == "--stats") {
        stats = parse_int(arg, value());
        agla::check<agla::InvalidArgument>(stats >= 1, "agla_shapesworld: --stats expects >= 1 scenes");
      } else if (arg == "--threads") {
        threads = parse_int(arg, value());
      } else {
        usage(std::cerr);
        throw agla::InvalidArgument("agla_shapesworld: unknown option '" + arg + "'");
      }
    }
    agla::configure_threads(threads);
    sw::validate(options.world);
    if (stats > 0) {
      print_stats(options.seed, stats, options.world);
      if (out.empty()) return 0;
    }
    if (out.empty()) {
      usage(std::cerr);
      throw agla::InvalidArgument("agla_shapesworld: --out DIR is required");
    }
    const auto start = std::chrono::steady_clock::now();
    const sw::EvalSet set = sw::build_eval_set(options);
    sw::write_eval_set(set, out, write_png);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf(
        "wrote %s: %zu images (%zu scenes drawn), questions: random %zu, popular %zu, adversarial %zu, "
        "contrast %zu, captions %zu (%.2f s)\n",
        out.c_str(), set.images.size(), set.pool_scenes, set.random.size(), set.popular.size(), set.adversarial.size(),
        set.contrast.size(), set.captions.size(), seconds);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << '\n';
    return 1;
  }
}
