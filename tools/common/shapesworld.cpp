// agla_shapesworld: writes ShapesWorld's evaluation sets in POPE's format (images/*.png and jsonl
// question files for the random, popular, adversarial, contrast and caption splits), and prints
// the co-occurrence statistics of the training distributions.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/tensor.hpp"
#include "agla/shapesworld/world.hpp"
#include "common/cli.hpp"
#include "common/programs.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

namespace sw = agla::shapesworld;

const std::string kProgram = "agla_shapesworld";

/// Bounds that keep a run within minutes and a few hundred MB (docs/tools.md).
constexpr std::int64_t kMaxQuestionsPerSplit = 10000, kMaxCaptions = 10000, kMaxStatsScenes = 10000000;

void write_png(const std::string& path, const sw::Scene& scene) { io::write_png(path, sw::image_tensor(scene)); }

std::string format(const char* pattern, double a, double b = 0, double c = 0, double d = 0) {
  char buffer[256];
  std::snprintf(buffer, sizeof buffer, pattern, a, b, c, d);
  return buffer;
}

/// The statistics text of `scenes` scenes per distribution.
std::string stats_text(std::uint64_t seed, std::int64_t scenes, const sw::WorldOptions& world) {
  std::ostringstream out;
  const char* names[] = {"biased", "control", "unbiased"};
  const sw::Distribution kinds[] = {sw::Distribution::Biased, sw::Distribution::Control, sw::Distribution::Unbiased};
  const double n = static_cast<double>(scenes);
  for (int k = 0; k < 3; ++k) {
    long long count[sw::kNumShapes] = {}, with_partner[sw::kNumShapes] = {}, partner_without[sw::kNumShapes] = {};
    long long objects = 0;
    for (std::int64_t i = 0; i < scenes; ++i) {
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
    out << names[k] << ": " << scenes << " scenes, " << format("%.2f", static_cast<double>(objects) / n)
        << " objects per scene\n";
    for (int c = 0; c < sw::kNumShapes; ++c) {
      const int p = sw::partner_of(c, world);
      char name[32];
      std::snprintf(name, sizeof name, "%-9s", sw::kShapeNames[c]);
      out << "  " << name << " P(class) " << format("%.3f", static_cast<double>(count[c]) / n);
      if (p >= 0) {
        const double given = count[c] ? static_cast<double>(with_partner[c]) / static_cast<double>(count[c]) : 0.0;
        const double absent = scenes - count[c] ? static_cast<double>(partner_without[c]) / (n - count[c]) : 0.0;
        out << "   P(" << sw::kShapeNames[p] << " | " << sw::kShapeNames[c] << ") " << format("%.3f", given) << "   P("
            << sw::kShapeNames[p] << " | no " << sw::kShapeNames[c] << ") " << format("%.3f", absent);
      }
      out << "\n";
    }
  }
  return out.str();
}

int run(const std::vector<std::string>& args, std::ostream& out) {
  std::string dir;
  sw::EvalOptions options;
  std::int64_t stats = 0;
  int threads = 0;
  OptionParser parser(kProgram);
  parser.directory("--out", dir).seed(options.seed).threads(threads);
  parser.integer("--questions-per-split", options.questions_per_split, 2, kMaxQuestionsPerSplit);
  parser.integer("--captions", options.captions, 1, kMaxCaptions).integer("--stats", stats, 1, kMaxStatsScenes);
  parser.value("--size", [&](const std::string& v) {
    options.world.height = options.world.width = static_cast<int>(parse_integer(kProgram, "--size", v, 32, 512));
  });
  if (!parser.parse(args)) return print_help(kProgram, out);
  check<InvalidArgument>(options.questions_per_split % 2 == 0, kProgram,
                         ": --questions-per-split must be even (half yes, half no); got ", options.questions_per_split);
  check<InvalidArgument>(stats > 0 || !dir.empty(), kProgram, ": give --out DIR or --stats SCENES (see --help)");
  use_threads(threads, 0);
  sw::validate(options.world);
  if (stats > 0) {
    const std::string text = stats_text(options.seed, stats, options.world);
    out << text;
    if (!dir.empty()) {
      make_directory(kProgram, dir);
      const std::string path = (std::filesystem::path(dir) / "shapesworld_stats.txt").string();
      std::ofstream file(path, std::ios::binary);
      file << text;
      check<FormatError>(file.good(), kProgram, ": cannot write '", path, "'");
    }
  }
  if (dir.empty()) return 0;
  const auto start = std::chrono::steady_clock::now();
  const sw::EvalSet set = sw::build_eval_set(options);
  sw::write_eval_set(set, dir, write_png);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out << "wrote " << dir << ": " << set.images.size() << " images (" << set.pool_scenes
      << " scenes drawn), questions: random " << set.random.size() << ", popular " << set.popular.size()
      << ", adversarial " << set.adversarial.size() << ", contrast " << set.contrast.size() << ", captions "
      << set.captions.size() << " (" << format("%.2f", seconds) << " s)\n";
  return 0;
}

}  // namespace

int run_shapesworld(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_guarded(kProgram, err, [&] { return run(args, out); });
}

}  // namespace agla::tools
