#pragma once
/// \file
/// ShapesWorld evaluation sets in POPE's file format: a folder with `images/*.png` and jsonl
/// question files (`question_id`, `image`, `text`, `label`), drawn from the unbiased distribution.
///
/// Splits (each balanced: one present-class question and one negative per scene):
///   random      -- negative: an absent class that is neither popular nor the partner of a present
///                  class (the feasibility study found that frequent classes in POPE's random
///                  negatives hide the co-occurrence effect);
///   popular     -- negative: an absent popular class (POPE: the most frequent classes);
///   adversarial -- negative: an absent class whose partner is present (POPE: the classes that
///                  co-occur most with the present ones);
///   contrast    -- the within-class contrast: pairs of "no" questions asking about an absent
///                  paired class X on a scene where X's partner is present, and on the same scene
///                  rendered without that partner (everything else, noise included, identical);
///                  balanced over X;
///   captions    -- images with their ground-truth object lists, for CHAIR.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agla/error.hpp"
#include "agla/shapesworld/random.hpp"
#include "agla/shapesworld/text.hpp"
#include "agla/shapesworld/world.hpp"

namespace agla::shapesworld {

/// What to generate.
struct EvalOptions {
  WorldOptions world;              ///< the world (only its geometry, clutter, noise and pair/popular lists matter:
                                   ///< evaluation scenes come from the unbiased distribution)
  std::uint64_t seed = 1;          ///< scene `i` of the pool is `scene_seed(seed, i)`
  int questions_per_split = 1000;  ///< questions in each of random, popular, adversarial, contrast (even, >= 2)
  int captions = -1;               ///< images in the caption split; -1: questions_per_split / 2
};

/// An image of the set: its file name under `images/` and the layout that renders it.
struct EvalImage {
  std::string file;
  Layout layout;
};

/// One question line.
struct EvalQuestion {
  int question_id = 0;           ///< 1-based within its split
  std::string image;             ///< file name under `images/`
  int shape = 0;                 ///< asked class
  bool label = false;            ///< true: "yes"
  int partner = -1;              ///< contrast: the asked class's partner
  bool partner_present = false;  ///< contrast: whether the partner is in this image
  int pair_id = -1;              ///< contrast: the two questions of a pair share it (1-based)
};

/// One caption-split line: an image and its objects (class indices, left to right).
struct EvalCaption {
  int question_id = 0;
  std::string image;
  std::vector<int> objects;
  std::string caption;  ///< the generator's reference caption
};

/// A complete evaluation set, in memory (images as layouts, rendered on writing).
struct EvalSet {
  EvalOptions options;
  std::vector<EvalImage> images;
  std::vector<EvalQuestion> random, popular, adversarial, contrast;
  std::vector<EvalCaption> captions;
  std::size_t pool_scenes = 0;  ///< scenes drawn to fill the splits
};

namespace detail {

inline std::string pool_image_name(std::size_t index) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "sw_%06zu.png", index);
  return buffer;
}

}  // namespace detail

/// Builds the evaluation set of `options` (deterministic in `options`). Scenes of the unbiased
/// pool are offered to every split in turn, so the splits share images as POPE's do.
inline EvalSet build_eval_set(const EvalOptions& options) {
  const char* fn = "agla::shapesworld::build_eval_set: ";
  validate(options.world);
  check<InvalidArgument>(options.questions_per_split >= 2 && options.questions_per_split % 2 == 0, fn,
                         "questions_per_split must be even and >= 2; got ", options.questions_per_split);
  const WorldOptions& world = options.world;
  const std::size_t per_split = static_cast<std::size_t>(options.questions_per_split) / 2;
  const std::size_t num_captions = options.captions < 0 ? per_split : static_cast<std::size_t>(options.captions);

  std::vector<int> paired;
  for (const ShapePair& p : world.pairs) {
    paired.push_back(p.a);
    paired.push_back(p.b);
  }
  check<InvalidArgument>(!paired.empty(), fn, "the world needs at least one pair for the adversarial split");
  check<InvalidArgument>(!world.popular.empty(), fn, "the world needs a popular class for the popular split");
  std::map<int, std::size_t> contrast_quota;
  for (std::size_t i = 0; i < paired.size(); ++i)
    contrast_quota[paired[i]] = per_split / paired.size() + (i < per_split % paired.size() ? 1 : 0);

  EvalSet set;
  set.options = options;
  Rng choose(splitmix64(options.seed ^ 0x5EEDC0DE5EEDC0DEull));
  std::map<std::string, bool> used_images;
  const auto use_image = [&](const std::string& file, const Layout& layout) {
    if (used_images.emplace(file, true).second) set.images.push_back({file, layout});
  };
  const auto pick = [&](const std::vector<int>& from) {
    return from[static_cast<std::size_t>(choose.below(from.size()))];
  };
  const auto add_pair = [&](std::vector<EvalQuestion>& split, const std::string& image, int positive, int negative) {
    for (const auto& [shape, label] : {std::pair<int, bool>{positive, true}, std::pair<int, bool>{negative, false}}) {
      EvalQuestion q;
      q.question_id = static_cast<int>(split.size()) + 1;
      q.image = image;
      q.shape = shape;
      q.label = label;
      split.push_back(q);
    }
  };

  const std::size_t max_pool = 1000 + 200 * (per_split + num_captions);
  std::size_t index = 0;
  const auto full = [&] {
    return set.random.size() >= 2 * per_split && set.popular.size() >= 2 * per_split &&
           set.adversarial.size() >= 2 * per_split && set.contrast.size() >= 2 * per_split &&
           set.captions.size() >= num_captions;
  };
  for (; !full(); ++index) {
    check<InvalidArgument>(index < max_pool, fn, "could not fill the splits from ", max_pool,
                           " scenes; the world's pairs and popular classes leave too few candidates");
    const Layout layout = sample_layout(scene_seed(options.seed, index), world, Distribution::Unbiased);
    const std::string image = detail::pool_image_name(index);
    const std::vector<int> present = present_shapes(layout.objects);
    const auto has = [&](int c) { return std::find(present.begin(), present.end(), c) != present.end(); };
    std::vector<int> random_neg, popular_neg, adversarial_neg;
    for (int c = 0; c < kNumShapes; ++c) {
      if (has(c)) continue;
      const int partner = partner_of(c, world);
      const bool partner_present = partner >= 0 && has(partner);
      if (is_popular(c, world))
        popular_neg.push_back(c);
      else if (partner_present)
        adversarial_neg.push_back(c);
      else
        random_neg.push_back(c);
    }
    bool used = false;
    const auto offer = [&](std::vector<EvalQuestion>& split, const std::vector<int>& negatives) {
      if (split.size() >= 2 * per_split || negatives.empty()) return;
      const int positive = pick(present);
      add_pair(split, image, positive, pick(negatives));
      used = true;
    };
    offer(set.random, random_neg);
    offer(set.popular, popular_neg);
    offer(set.adversarial, adversarial_neg);

    if (set.contrast.size() < 2 * per_split && layout.objects.size() >= 2) {
      std::vector<int> candidates;  // object indices whose class's partner is absent and still wanted
      for (std::size_t k = 0; k < layout.objects.size(); ++k) {
        const int asked = partner_of(layout.objects[k].shape, world);
        if (asked >= 0 && !has(asked) && contrast_quota[asked] > 0) candidates.push_back(static_cast<int>(k));
      }
      if (!candidates.empty()) {
        const std::size_t k = static_cast<std::size_t>(pick(candidates));
        const int partner = layout.objects[k].shape;
        const int asked = partner_of(partner, world);
        --contrast_quota[asked];
        const std::string without = image.substr(0, image.size() - 4) + "_no_" + shape_name(partner) + ".png";
        use_image(without, without_object(layout, k));
        const int pair_id = static_cast<int>(set.contrast.size()) / 2 + 1;
        for (const bool with_partner : {true, false}) {
          EvalQuestion q;
          q.question_id = static_cast<int>(set.contrast.size()) + 1;
          q.image = with_partner ? image : without;
          q.shape = asked;
          q.label = false;
          q.partner = partner;
          q.partner_present = with_partner;
          q.pair_id = pair_id;
          set.contrast.push_back(q);
        }
        used = true;
      }
    }
    if (set.captions.size() < num_captions) {
      EvalCaption c;
      c.question_id = static_cast<int>(set.captions.size()) + 1;
      c.image = image;
      for (const SceneObject& o : layout.objects) c.objects.push_back(o.shape);
      c.caption = caption(layout.objects);
      set.captions.push_back(c);
      used = true;
    }
    if (used) use_image(image, layout);
  }
  set.pool_scenes = index;
  // Keep image order stable and readable: by file name.
  std::sort(set.images.begin(), set.images.end(),
            [](const EvalImage& a, const EvalImage& b) { return a.file < b.file; });
  return set;
}

/// The JSON line of a question (POPE's fields plus `object`, and for the contrast split
/// `partner`, `partner_present` and `pair_id`).
inline nlohmann::json question_json(const EvalQuestion& q) {
  nlohmann::json j;
  j["question_id"] = q.question_id;
  j["image"] = q.image;
  j["text"] = question(q.shape);
  j["label"] = q.label ? "yes" : "no";
  j["object"] = shape_name(q.shape);
  if (q.pair_id > 0) {
    j["partner"] = shape_name(q.partner);
    j["partner_present"] = q.partner_present;
    j["pair_id"] = q.pair_id;
  }
  return j;
}

/// The JSON line of a caption-split item (`question_id`, `image`, `objects`, `caption`).
inline nlohmann::json caption_json(const EvalCaption& c) {
  nlohmann::json j;
  j["question_id"] = c.question_id;
  j["image"] = c.image;
  nlohmann::json objects = nlohmann::json::array();
  for (int shape : c.objects) objects.push_back(shape_name(shape));
  j["objects"] = objects;
  j["caption"] = c.caption;
  return j;
}

/// Writes one PNG: `path` and the rendered scene (RGB uint8 `[H, W, 3]`).
using ImageWriter = std::function<void(const std::string& path, const Scene& scene)>;

/// The files `write_eval_set` writes under its folder, split name -> file name.
inline const std::map<std::string, std::string>& eval_files() {
  static const std::map<std::string, std::string> files = {{"random", "shapesworld_pope_random.jsonl"},
                                                           {"popular", "shapesworld_pope_popular.jsonl"},
                                                           {"adversarial", "shapesworld_pope_adversarial.jsonl"},
                                                           {"contrast", "shapesworld_contrast.jsonl"},
                                                           {"captions", "shapesworld_captions.jsonl"}};
  return files;
}

/// Writes `set` to `dir`: `images/<file>` through `write_image`, one jsonl file per split (see
/// `eval_files`) and `world.json` (the options, classes, pairs and counts). Creates `dir`.
inline void write_eval_set(const EvalSet& set, const std::string& dir, const ImageWriter& write_image) {
  namespace fs = std::filesystem;
  const char* fn = "agla::shapesworld::write_eval_set: ";
  std::error_code error;
  fs::create_directories(fs::path(dir) / "images", error);
  check<FormatError>(!error, fn, "cannot create '", (fs::path(dir) / "images").string(), "': ", error.message());
  for (const EvalImage& image : set.images)
    write_image((fs::path(dir) / "images" / image.file).string(), render(image.layout));

  const auto write_lines = [&](const std::string& file, const std::vector<nlohmann::json>& lines) {
    const std::string path = (fs::path(dir) / file).string();
    std::ofstream out(path, std::ios::binary);
    check<FormatError>(out.good(), fn, "cannot write '", path, "'");
    for (const nlohmann::json& line : lines) out << line.dump() << '\n';
    check<FormatError>(out.good(), fn, "write failed for '", path, "'");
  };
  const auto questions = [&](const std::vector<EvalQuestion>& split) {
    std::vector<nlohmann::json> lines;
    for (const EvalQuestion& q : split) lines.push_back(question_json(q));
    return lines;
  };
  const auto& files = eval_files();
  write_lines(files.at("random"), questions(set.random));
  write_lines(files.at("popular"), questions(set.popular));
  write_lines(files.at("adversarial"), questions(set.adversarial));
  write_lines(files.at("contrast"), questions(set.contrast));
  std::vector<nlohmann::json> captions;
  for (const EvalCaption& c : set.captions) captions.push_back(caption_json(c));
  write_lines(files.at("captions"), captions);

  const WorldOptions& w = set.options.world;
  nlohmann::json world;
  world["seed"] = set.options.seed;
  world["distribution"] = "unbiased";
  world["height"] = w.height;
  world["width"] = w.width;
  world["objects"] = {w.min_objects, w.max_objects};
  const auto radius = radius_range(w);
  world["radius"] = {radius[0], radius[1]};
  world["noise_half_width"] = w.noise_half_width;
  world["classes"] = kShapeNames;
  nlohmann::json colours = nlohmann::json::array();
  for (const Colour& c : kColours) colours.push_back(c.name);
  world["colours"] = colours;
  nlohmann::json pairs = nlohmann::json::array();
  for (const ShapePair& p : w.pairs) pairs.push_back({shape_name(p.a), shape_name(p.b)});
  world["pairs"] = pairs;
  nlohmann::json popular = nlohmann::json::array();
  for (int c : w.popular) popular.push_back(shape_name(c));
  world["popular"] = popular;
  world["images"] = set.images.size();
  world["pool_scenes"] = set.pool_scenes;
  world["questions"] = {{"random", set.random.size()},
                        {"popular", set.popular.size()},
                        {"adversarial", set.adversarial.size()},
                        {"contrast", set.contrast.size()},
                        {"captions", set.captions.size()}};
  write_lines("world.json", {world});
}

}  // namespace agla::shapesworld
