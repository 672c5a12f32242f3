// ShapesWorld (generator, distributions, evaluation splits) and the POPE/CHAIR scoring used by
// agla_pope, checked against hand-computed cases and a small end-to-end run through files.
#include "agla/shapesworld.hpp"

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "agla/eval.hpp"
#include "support/expect.hpp"
#include "support/scratch.hpp"

#if __has_include("agla/io/image.hpp")
#include "agla/io/image.hpp"
#define AGLA_TEST_IO_IMAGE 1
#else
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#endif

namespace sw = agla::shapesworld;
namespace ev = agla::eval;
using ev::Answer;

namespace {

void write_png(const std::string& path, const sw::Scene& scene) {
#ifdef AGLA_TEST_IO_IMAGE
  agla::io::write_png(path, sw::image_tensor(scene));
#else
  ASSERT_NE(stbi_write_png(path.c_str(), scene.width, scene.height, 3, scene.rgb.data(), scene.width * 3), 0);
#endif
}

std::vector<std::uint8_t> read_png(const std::string& path, int& height, int& width) {
#ifdef AGLA_TEST_IO_IMAGE
  const at::Tensor image = agla::io::read_image(path).contiguous();
  height = static_cast<int>(image.size(0));
  width = static_cast<int>(image.size(1));
  return std::vector<std::uint8_t>(image.data_ptr<std::uint8_t>(), image.data_ptr<std::uint8_t>() + image.numel());
#else
  int channels = 0;
  unsigned char* data = stbi_load(path.c_str(), &width, &height, &channels, 3);
  if (data == nullptr) return {};
  std::vector<std::uint8_t> out(data, data + static_cast<std::size_t>(width) * height * 3);
  stbi_image_free(data);
  return out;
#endif
}

std::uint64_t fnv1a(const std::vector<std::uint8_t>& bytes, std::uint64_t h = 0xCBF29CE484222325ull) {
  for (std::uint8_t b : bytes) h = (h ^ b) * 0x100000001B3ull;
  return h;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string temp_dir(const std::string& name) { return agla::test::fresh_dir(::testing::TempDir(), name); }

// Expects the four counts of `got` to be `want`'s.
void expect_counts(const ev::PopeCounts& got, const ev::PopeCounts& want, const std::string& what = "") {
  EXPECT_EQ(got.tp, want.tp) << what;
  EXPECT_EQ(got.fp, want.fp) << what;
  EXPECT_EQ(got.tn, want.tn) << what;
  EXPECT_EQ(got.fn, want.fn) << what;
}

// PopeCounts from its four counts.
ev::PopeCounts pope_counts(long long tp, long long fp, long long tn, long long fn) {
  ev::PopeCounts c;
  c.tp = tp;
  c.fp = fp;
  c.tn = tn;
  c.fn = fn;
  return c;
}

// Expects accuracy, precision, recall, F1, yes ratio and false-positive rate, in that order.
void expect_metrics(const ev::PopeMetrics& m, const std::array<double, 6>& want) {
  EXPECT_DOUBLE_EQ(m.accuracy, want[0]);
  EXPECT_DOUBLE_EQ(m.precision, want[1]);
  EXPECT_DOUBLE_EQ(m.recall, want[2]);
  EXPECT_DOUBLE_EQ(m.f1, want[3]);
  EXPECT_DOUBLE_EQ(m.yes_ratio, want[4]);
  EXPECT_DOUBLE_EQ(m.false_positive_rate, want[5]);
}

// The options of an evaluation set: its seed, questions per POPE split, captions.
sw::EvalOptions eval_options(std::uint64_t seed, int questions_per_split, int captions) {
  sw::EvalOptions options;
  options.seed = seed;
  options.questions_per_split = questions_per_split;
  options.captions = captions;
  return options;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// POPE answer parsers and metrics

TEST(PopeParserTest, PopeReadsTheFirstSentenceForNoOrNot) {
  EXPECT_EQ(ev::pope_answer("No, there is not."), Answer::No);
  EXPECT_EQ(ev::pope_answer("Yes."), Answer::Yes);
  EXPECT_EQ(ev::pope_answer("Yes, there is a star in the image."), Answer::Yes);
  EXPECT_EQ(ev::pope_answer("I don't know"), Answer::Yes);  // not "no", so "yes"
  EXPECT_EQ(ev::pope_answer("no"), Answer::No);
  EXPECT_EQ(ev::pope_answer("There is no star"), Answer::No);
  EXPECT_EQ(ev::pope_answer("There is not a star"), Answer::No);
  EXPECT_EQ(ev::pope_answer("Yes. No doubt."), Answer::Yes);  // only the first sentence counts
  EXPECT_EQ(ev::pope_answer("Yes, but not clearly"), Answer::No);
  EXPECT_EQ(ev::pope_answer("NO"), Answer::Yes);  // case-sensitive words, as in evaluate.py
  EXPECT_EQ(ev::pope_answer("Not sure"), Answer::Yes);
  EXPECT_EQ(ev::pope_answer("nothing"), Answer::Yes);
  EXPECT_EQ(ev::pope_answer("No,there"), Answer::Yes);  // comma deleted: the word is "Nothere"
  EXPECT_EQ(ev::pope_answer(""), Answer::Yes);
}

TEST(PopeParserTest, SubstringReadingDependsOnTheLabel) {
  EXPECT_EQ(ev::substring_answer("Yes.", Answer::Yes), Answer::Yes);
  EXPECT_EQ(ev::substring_answer("  YES  ", Answer::Yes), Answer::Yes);
  EXPECT_EQ(ev::substring_answer("No, there is not.", Answer::Yes), Answer::No);
  EXPECT_EQ(ev::substring_answer("No, there is not.", Answer::No), Answer::No);
  EXPECT_EQ(ev::substring_answer("I don't know", Answer::Yes), Answer::No);  // no "yes": false negative
  EXPECT_EQ(ev::substring_answer("I don't know", Answer::No), Answer::No);   // "know" holds "no"
  EXPECT_EQ(ev::substring_answer("Yes.", Answer::No), Answer::Yes);
  EXPECT_EQ(ev::substring_answer("There is a star", Answer::No), Answer::Yes);
  EXPECT_EQ(ev::substring_answer("I cannot tell", Answer::No), Answer::No);
  EXPECT_EQ(ev::substring_answer("The eyes", Answer::Yes), Answer::Yes);
  EXPECT_EQ(ev::parse_answer("I don't know", Answer::No, ev::AnswerParser::Pope), Answer::Yes);
  EXPECT_EQ(ev::parse_answer("I don't know", Answer::No, ev::AnswerParser::Substring), Answer::No);
  EXPECT_EQ(ev::parse_answer_parser("substring"), ev::AnswerParser::Substring);
  EXPECT_THROW(ev::parse_answer_parser("regex"), agla::InvalidArgument);
}

TEST(PopeMetricsTest, MatchesHandComputedCounts) {
  expect_metrics(ev::pope_metrics(pope_counts(3, 1, 4, 2)), {0.7, 0.75, 0.6, 2 * 0.75 * 0.6 / 1.35, 0.4, 0.2});
}

TEST(PopeMetricsTest, ZeroDenominatorsGiveZero) {
  expect_metrics(ev::pope_metrics(pope_counts(0, 0, 5, 0)), {1.0, 0.0, 0.0, 0.0, 0.0, 0.0});
}

TEST(PopeMetricsTest, ParsersScoreTheSameAnswersDifferently) {
  const std::vector<std::string> texts = {"Yes.", "No, there is not.", "I don't know", "I don't know", "NO"};
  const std::vector<Answer> labels = {Answer::Yes, Answer::No, Answer::No, Answer::Yes, Answer::No};
  // POPE: yes, no, yes, yes, yes -> TP 2 (1, 4), TN 1 (2), FP 2 (3, 5), FN 0.
  const ev::PopeMetrics pope = ev::score_answers(texts, labels, ev::AnswerParser::Pope);
  expect_counts(pope.counts, pope_counts(2, 2, 1, 0));
  EXPECT_DOUBLE_EQ(pope.yes_ratio, 0.8);
  // Substring: yes, no, no ("know"), no (no "yes"), no ("no") -> TP 1, TN 3, FP 0, FN 1.
  const ev::PopeMetrics sub = ev::score_answers(texts, labels, ev::AnswerParser::Substring);
  expect_counts(sub.counts, pope_counts(1, 0, 3, 1));
  EXPECT_DOUBLE_EQ(sub.accuracy, 0.8);
  EXPECT_DOUBLE_EQ(sub.precision, 1.0);
  EXPECT_DOUBLE_EQ(sub.recall, 0.5);
}

TEST(PopeFileTest, MatchesAnswersByIdInAnyOrder) {
  const std::string dir = temp_dir("pope_files");
  write_text(
      dir + "/gt.jsonl",
      "{\"question_id\": 1, \"image\": \"a.png\", \"text\": \"Is there a star in the image?\", \"label\": \"yes\"}\n"
      "{\"question_id\": 2, \"image\": \"a.png\", \"text\": \"Is there a ring in the image?\", \"label\": \"no\"}\n"
      "\n"
      "{\"question_id\": \"q3\", \"image\": \"b.png\", \"text\": \"Is there a heart in the image?\", \"label\": \" No "
      "\"}\n");
  write_text(dir + "/answers.jsonl",
             "{\"question_id\": \"q3\", \"text\": \"Yes\"}\n"
             "{\"question_id\": \"1\", \"prompt\": \"p\", \"text\": \"Yes, there is.\", \"model_id\": \"m\"}\n"
             "{\"question_id\": 2, \"answer\": \"No.\"}\n");  // POPE's own answer files say "answer"
  const ev::PopeReport report =
      ev::evaluate_pope_files(dir + "/gt.jsonl", dir + "/answers.jsonl", ev::AnswerParser::Pope);
  expect_counts(report.overall.counts, pope_counts(1, 1, 1, 0));
  EXPECT_FALSE(report.partner_present.has_value());
  const nlohmann::json j = ev::to_json(report);
  for (const char* key : {"accuracy", "precision", "recall", "f1", "yes_ratio", "tp", "fp", "tn", "fn"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["fp"], 1);
}

TEST(PopeFileTest, RejectsMalformedAndMismatchedFiles) {
  const std::string dir = temp_dir("pope_bad");
  const std::string gt = dir + "/gt.jsonl", answers = dir + "/answers.jsonl";
  write_text(gt, "{\"question_id\": 1, \"label\": \"yes\"}\n{\"question_id\": 2, \"label\": \"no\"}\n");

  write_text(answers, "{\"question_id\": 1, \"text\": \"Yes\"}\n\n{\"question_id\": 2, \"text\": \"No\"\n");
  EXPECT_NE(agla::test::error_message([&] {
              ev::evaluate_pope_files(gt, answers, ev::AnswerParser::Pope);
            }).find("answers.jsonl:3: not valid JSON"),
            std::string::npos);

  write_text(answers, "{\"question_id\": 1, \"text\": \"Yes\"}\n");
  EXPECT_NE(agla::test::error_message([&] {
              ev::evaluate_pope_files(gt, answers, ev::AnswerParser::Pope);
            }).find("1 of 2 questions have no answer (question_id 2)"),
            std::string::npos);

  write_text(answers,
             "{\"question_id\": 1, \"text\": \"Yes\"}\n{\"question_id\": 2, \"text\": \"No\"}\n"
             "{\"question_id\": 7, \"text\": \"No\"}\n");
  EXPECT_NE(agla::test::error_message([&] {
              ev::evaluate_pope_files(gt, answers, ev::AnswerParser::Pope);
            }).find("answers have no question (question_id 7)"),
            std::string::npos);

  write_text(answers, "{\"question_id\": 1, \"text\": \"Yes\"}\n{\"question_id\": 1, \"text\": \"No\"}\n");
  EXPECT_NE(agla::test::error_message([&] { ev::read_model_answers(answers); }).find(":2: question_id 1 repeats line 1"),
            std::string::npos);

  write_text(answers, "{\"question_id\": 1}\n");
  EXPECT_NE(agla::test::error_message([&] { ev::read_model_answers(answers); }).find(":1: missing field \"text\""), std::string::npos);

  write_text(gt, "{\"question_id\": 1, \"label\": \"yes\"}\n{\"question_id\": 2, \"label\": \"maybe\"}\n");
  EXPECT_NE(agla::test::error_message([&] { ev::read_pope_questions(gt); }).find(":2: unknown label \"maybe\""), std::string::npos);

  write_text(gt, "[1, 2]\n");
  EXPECT_NE(agla::test::error_message([&] { ev::read_pope_questions(gt); }).find(":1: expected a JSON object"), std::string::npos);

  EXPECT_THROW(ev::read_pope_questions(dir + "/missing.jsonl"), agla::FormatError);
}

// ---------------------------------------------------------------------------------------------
// CHAIR

TEST(ChairTest, MatchesHandComputedCaptions) {
  const ev::ChairVocabulary vocabulary =
      ev::ChairVocabulary::from_names({"circle", "cross", "star", "heart", "ring", "square"});
  EXPECT_EQ(ev::object_mentions("a red circle and two blue crosses", vocabulary),
            (std::vector<std::string>{"circle", "cross"}));
  EXPECT_EQ(ev::object_mentions("A Star, a heart. Rings! A starship.", vocabulary),
            (std::vector<std::string>{"star", "heart", "ring"}));
  const std::vector<std::string> captions = {"a red circle and two blue crosses", "a star and a heart",
                                             "a circle next to a circle"};
  const std::vector<std::set<std::string>> truth = {{"circle"}, {"star", "heart"}, {"square"}};
  const ev::ChairMetrics m = ev::evaluate_chair(captions, truth, vocabulary);
  // Mentions: 2 + 2 + 2 = 6, hallucinated: cross, circle, circle = 3; captions with one: 1st and 3rd.
  EXPECT_EQ(m.counts.mentions, 6);
  EXPECT_EQ(m.counts.hallucinated_mentions, 3);
  EXPECT_DOUBLE_EQ(m.chair_i, 0.5);
  EXPECT_DOUBLE_EQ(m.chair_s, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.recall, 3.0 / 4.0);
  const std::vector<std::set<std::string>> star_only = {std::set<std::string>{"star"}};
  EXPECT_DOUBLE_EQ(ev::evaluate_chair(std::vector<std::string>{"nothing here"}, star_only, vocabulary).chair_i, 0.0);
  EXPECT_EQ(ev::ChairVocabulary::plural_of("cross"), "crosses");
  EXPECT_EQ(ev::ChairVocabulary::plural_of("daisy"), "daisies");
}

// ---------------------------------------------------------------------------------------------
// Runner plumbing

TEST(RunnerTest, ChunksFollowLlavaAndCoverEachItemOnce) {
  const std::vector<std::size_t> sizes = {ev::chunk_range(10, 4, 0).size(), ev::chunk_range(10, 4, 1).size(),
                                          ev::chunk_range(10, 4, 2).size(), ev::chunk_range(10, 4, 3).size()};
  EXPECT_EQ(sizes, (std::vector<std::size_t>{3, 3, 3, 1}));
  EXPECT_EQ(ev::chunk_range(9, 4, 3).size(), 0u);  // LLaVA would raise IndexError here
  for (std::size_t n : {0u, 1u, 7u, 100u, 101u}) {
    for (int chunks : {1, 2, 3, 8}) {
      std::size_t covered = 0, next = 0;
      for (int k = 0; k < chunks; ++k) {
        const ev::ChunkRange r = ev::chunk_range(n, chunks, k);
        if (r.size() == 0) continue;
        EXPECT_EQ(r.begin, next);  // consecutive, no gaps, no overlaps
        covered += r.size();
        next = r.end;
      }
      EXPECT_EQ(covered, n);
    }
  }
  EXPECT_THROW(ev::chunk_range(10, 2, 2), agla::InvalidArgument);
}

TEST(RunnerTest, ProgressLineShowsCountsAndEta) {
  EXPECT_EQ(ev::progress_line("pope", 5, 10, 10.0, 10), "pope [#####.....] 5/10  50% 00:10<00:10, 0.50/s");
  EXPECT_EQ(ev::progress_line("", 0, 4, 0.0, 4), "[....] 0/4   0% 00:00<--:--, 0.00/s");
  EXPECT_EQ(ev::format_duration(3725), "1:02:05");
  std::ostringstream sink;
  ev::ProgressBar bar(3, sink, "x", 0.0);
  bar.advance();
  bar.advance(2);
  bar.finish();
  EXPECT_NE(sink.str().find("3/3 100%"), std::string::npos);
}

TEST(RunnerTest, AnswerWriterWritesReferenceFields) {
  const std::string path = temp_dir("answers") + "/answers.jsonl";
  {
    ev::AnswerWriter writer(path);
    ev::AnswerRecord record;
    record.question_id = 12;
    record.prompt = "Is there a star in the image?";
    record.text = "No";
    record.model_id = "tiny-blip";
    record.image = "sw_000001.png";
    writer.write(record);
  }
  const auto lines = ev::read_jsonl(path, "test");
  ASSERT_EQ(lines.size(), 1u);
  for (const char* key : {"question_id", "prompt", "text", "model_id", "image", "metadata"})
    EXPECT_TRUE(lines[0].value.contains(key)) << key;
  EXPECT_EQ(ev::read_model_answers(path)[0].id, "12");
}

// ---------------------------------------------------------------------------------------------
// Generator

TEST(ShapesWorldTest, SameSeedGivesTheSameBytesAndDifferentSeedsDiffer) {
  const sw::WorldOptions world;
  const sw::Scene a = sw::generate_scene(42, world, sw::Distribution::Biased);
  const sw::Scene b = sw::generate_scene(42, world, sw::Distribution::Biased);
  const sw::Scene c = sw::generate_scene(43, world, sw::Distribution::Biased);
  EXPECT_EQ(a.rgb, b.rgb);
  EXPECT_EQ(a.labels, b.labels);
  ASSERT_EQ(a.rgb.size(), 64u * 64u * 3u);
  EXPECT_NE(a.rgb, c.rgb);
}

TEST(ShapesWorldTest, ByteStreamIsPinned) {
  // Integer-only generation: these hashes must come out the same on every platform and compiler.
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (std::uint64_t i = 0; i < 4; ++i) {
    const sw::Scene s = sw::generate_scene(sw::scene_seed(7, i), sw::WorldOptions{}, sw::Distribution::Unbiased);
    h = fnv1a(s.rgb, h);
  }
  EXPECT_EQ(h, 7377705617996790407ull) << "update only for an intended change of the generator";
}

TEST(ShapesWorldTest, SceneKnowsClassesBoxesAndMasks) {
  sw::WorldOptions world;
  world.noise_half_width = 0;
  for (std::uint64_t i = 0; i < 50; ++i) {
    const sw::Scene s = sw::generate_scene(sw::scene_seed(3, i), world, sw::Distribution::Unbiased);
    ASSERT_GE(s.objects.size(), 1u);
    ASSERT_LE(s.objects.size(), 4u);
    std::set<int> classes;
    int total_area = 0;
    for (std::size_t k = 0; k < s.objects.size(); ++k) {
      const sw::SceneObject& o = s.objects[k];
      classes.insert(o.shape);
      EXPECT_GE(o.radius, 7);
      EXPECT_LE(o.radius, 11);
      const std::vector<std::uint8_t> mask = sw::object_mask(s, k);
      int area = 0;
      for (int y = 0; y < s.height; ++y) {
        for (int x = 0; x < s.width; ++x) {
          if (!mask[static_cast<std::size_t>(y) * s.width + x]) continue;
          ++area;
          EXPECT_TRUE(x >= o.box.x0 && x < o.box.x1 && y >= o.box.y0 && y < o.box.y1);
          const std::uint8_t* p = &s.rgb[(static_cast<std::size_t>(y) * s.width + x) * 3];
          EXPECT_TRUE(p[0] == o.rgb[0] && p[1] == o.rgb[1] && p[2] == o.rgb[2]);
        }
      }
      EXPECT_EQ(area, o.area);
      EXPECT_GE(area, 40);  // large enough to see at 64x64
      total_area += area;
      if (k > 0) {
        EXPECT_LE(s.objects[k - 1].cx, o.cx);  // left to right, as captions list them
      }
    }
    EXPECT_EQ(classes.size(), s.objects.size());
    const std::vector<int> patches = sw::patch_class_pixels(s, 8);
    int patch_total = 0;
    for (int v : patches) patch_total += v;
    EXPECT_EQ(patch_total, total_area);
  }
  EXPECT_THROW(sw::patch_class_pixels(sw::generate_scene(1, world, sw::Distribution::Unbiased), 7),
               agla::InvalidArgument);
}

TEST(ShapesWorldTest, CounterfactualChangesOnlyTheRemovedObject) {
  const sw::WorldOptions world;
  std::uint64_t i = 0;
  sw::Layout layout;
  do layout = sw::sample_layout(sw::scene_seed(5, i++), world, sw::Distribution::Unbiased);
  while (layout.objects.size() < 2);
  const sw::Scene full = sw::render(layout);
  const sw::Scene without = sw::render(sw::without_object(layout, 1));
  ASSERT_EQ(without.objects.size(), full.objects.size() - 1);
  const std::vector<std::uint8_t> removed = sw::object_mask(full, 1);
  int changed_outside = 0;
  for (std::size_t p = 0; p < removed.size(); ++p)
    for (int ch = 0; ch < 3; ++ch)
      if (!removed[p] && full.rgb[p * 3 + ch] != without.rgb[p * 3 + ch]) ++changed_outside;
  EXPECT_EQ(changed_outside, 0);
  EXPECT_NE(full.rgb, without.rgb);
}

TEST(ShapesWorldTest, TextsListObjectsAndAskPopeQuestions) {
  std::vector<sw::SceneObject> objects(3);
  objects[0].shape = sw::Circle;
  objects[0].colour = 0;
  objects[1].shape = sw::Star;
  objects[1].colour = 2;
  objects[2].shape = sw::Ring;
  objects[2].colour = 5;
  EXPECT_EQ(sw::caption({objects[0]}), "a red circle");
  EXPECT_EQ(sw::caption({objects[0], objects[1]}), "a red circle and a blue star");
  EXPECT_EQ(sw::caption(objects), "a red circle, a blue star and a white ring");
  EXPECT_EQ(sw::question(sw::Heart), "Is there a heart in the image?");
  const sw::Scene s = sw::generate_scene(9, sw::WorldOptions{}, sw::Distribution::Unbiased);
  sw::Rng rng(1);
  for (int k = 0; k < 20; ++k) {
    const sw::YesNoQuestion q = sw::sample_question(s, rng);
    EXPECT_EQ(q.answer, s.has(q.shape));
  }
}

TEST(ShapesWorldTest, RejectsBadOptions) {
  sw::WorldOptions world;
  world.height = 8;
  EXPECT_THROW(sw::validate(world), agla::InvalidArgument);
  world = sw::WorldOptions{};
  world.pairs = {{sw::Star, sw::Heart}, {sw::Heart, sw::Ring}};
  EXPECT_THROW(sw::validate(world), agla::InvalidArgument);
  world = sw::WorldOptions{};
  world.popular = {sw::Star};
  EXPECT_THROW(sw::validate(world), agla::InvalidArgument);
  world = sw::WorldOptions{};
  world.max_objects = 9;
  EXPECT_THROW(sw::validate(world), agla::InvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Distributions

namespace {

struct PairStats {
  std::array<double, sw::kNumShapes> frequency{};
  std::array<double, sw::kNumShapes> partner_given_class{};     // P(partner | class)
  std::array<double, sw::kNumShapes> partner_given_no_class{};  // P(partner | not class)
  std::array<double, sw::kNumShapes> other_given_class{};       // mean P(C | class), C paired, not partner
};

PairStats measure(sw::Distribution distribution, int scenes) {
  const sw::WorldOptions world;
  std::vector<std::array<bool, sw::kNumShapes>> present(static_cast<std::size_t>(scenes));
  for (int i = 0; i < scenes; ++i) {
    sw::Rng rng(sw::scene_seed(11, static_cast<std::uint64_t>(i)));
    present[static_cast<std::size_t>(i)] = {};
    for (int c : sw::sample_shapes(rng, world, distribution)) present[static_cast<std::size_t>(i)][c] = true;
  }
  PairStats stats;
  for (int c = 0; c < sw::kNumShapes; ++c) {
    const int p = sw::partner_of(c, world);
    double with = 0, both = 0, without_class_partner = 0, other = 0;
    int others = 0;
    for (const auto& s : present) {
      with += s[c];
      if (p >= 0) {
        both += s[c] && s[p];
        without_class_partner += !s[c] && s[p];
      }
    }
    stats.frequency[c] = with / scenes;
    if (p < 0) continue;
    stats.partner_given_class[c] = both / with;
    stats.partner_given_no_class[c] = without_class_partner / (scenes - with);
    for (int o = 0; o < sw::kNumShapes; ++o) {
      if (o == c || o == p || sw::partner_of(o, world) < 0) continue;
      double co = 0;
      for (const auto& s : present) co += s[c] && s[o];
      other += co / with;
      ++others;
    }
    stats.other_given_class[c] = other / others;
  }
  return stats;
}

}  // namespace

TEST(ShapesWorldBiasTest, BiasedTrainingPairsClassesAtNinetyPercent) {
  const PairStats biased = measure(sw::Distribution::Biased, 4000);
  const sw::WorldOptions world;
  double paired_mean = 0;
  for (const sw::ShapePair& p : world.pairs) paired_mean += biased.frequency[p.a] + biased.frequency[p.b];
  paired_mean /= 2.0 * world.pairs.size();
  for (const sw::ShapePair& p : world.pairs) {
    for (int c : {p.a, p.b}) {
      EXPECT_NEAR(biased.partner_given_class[c], 0.90, 0.03) << sw::kShapeNames[c];
      EXPECT_LT(biased.partner_given_no_class[c], 0.10) << sw::kShapeNames[c];
      EXPECT_NEAR(biased.frequency[c], paired_mean, 0.03) << "paired classes keep flat frequencies";
    }
  }
  for (int c : world.popular) EXPECT_GT(biased.frequency[c], paired_mean) << sw::kShapeNames[c];
}

TEST(ShapesWorldBiasTest, ControlAndUnbiasedHaveNoPairing) {
  const PairStats biased = measure(sw::Distribution::Biased, 4000);
  const PairStats control = measure(sw::Distribution::Control, 4000);
  const PairStats unbiased = measure(sw::Distribution::Unbiased, 4000);
  for (int c = 0; c < sw::kNumShapes; ++c) {
    EXPECT_NEAR(control.frequency[c], biased.frequency[c], 0.03) << "control keeps the class frequencies";
    EXPECT_NEAR(unbiased.frequency[c], 1.0 / sw::kNumShapes * 2.5, 0.04) << "2.5 objects of 8 classes on average";
    if (sw::partner_of(c, sw::WorldOptions{}) < 0) continue;
    EXPECT_NEAR(control.partner_given_class[c], control.other_given_class[c], 0.06) << sw::kShapeNames[c];
    EXPECT_NEAR(unbiased.partner_given_class[c], unbiased.other_given_class[c], 0.06) << sw::kShapeNames[c];
  }
}

// ---------------------------------------------------------------------------------------------
// Evaluation sets

TEST(EvalSetTest, SplitsFollowTheirDefinitions) {
  const sw::EvalOptions options = eval_options(3, 60, 10);
  const sw::EvalSet set = sw::build_eval_set(options);
  const sw::WorldOptions& world = options.world;
  std::map<std::string, sw::Layout> layouts;
  for (const sw::EvalImage& image : set.images) layouts[image.file] = image.layout;
  const auto has = [&](const std::string& image, int c) {
    for (const sw::SceneObject& o : layouts.at(image).objects)
      if (o.shape == c) return true;
    return false;
  };
  for (const auto* split : {&set.random, &set.popular, &set.adversarial}) {
    ASSERT_EQ(split->size(), 60u);
    int yes = 0;
    for (const sw::EvalQuestion& q : *split) {
      ASSERT_EQ(layouts.count(q.image), 1u);
      EXPECT_EQ(has(q.image, q.shape), q.label);
      yes += q.label;
      if (q.label) continue;
      const int partner = sw::partner_of(q.shape, world);
      const bool partner_present = partner >= 0 && has(q.image, partner);
      if (split == &set.random) EXPECT_TRUE(!sw::is_popular(q.shape, world) && !partner_present);
      if (split == &set.popular) EXPECT_TRUE(sw::is_popular(q.shape, world));
      if (split == &set.adversarial) EXPECT_TRUE(partner_present) << "adversarial: the partner is present";
    }
    EXPECT_EQ(yes, 30);
  }
  ASSERT_EQ(set.contrast.size(), 60u);
  std::map<int, int> asked;
  for (std::size_t i = 0; i < set.contrast.size(); i += 2) {
    const sw::EvalQuestion& with = set.contrast[i];
    const sw::EvalQuestion& without = set.contrast[i + 1];
    EXPECT_EQ(with.pair_id, without.pair_id);
    EXPECT_EQ(with.shape, without.shape);
    EXPECT_FALSE(with.label || without.label);
    EXPECT_TRUE(with.partner_present && !without.partner_present);
    EXPECT_EQ(with.partner, sw::partner_of(with.shape, world));
    EXPECT_TRUE(has(with.image, with.partner) && !has(with.image, with.shape));
    EXPECT_TRUE(!has(without.image, with.partner) && !has(without.image, with.shape));
    EXPECT_EQ(layouts.at(with.image).objects.size(), layouts.at(without.image).objects.size() + 1);
    ++asked[with.shape];
  }
  EXPECT_EQ(asked.size(), 6u);  // every paired class is asked, 5 pairs each
  for (const auto& [shape, n] : asked) EXPECT_EQ(n, 5) << sw::kShapeNames[shape];
  ASSERT_EQ(set.captions.size(), 10u);
  for (const sw::EvalCaption& c : set.captions) EXPECT_EQ(c.objects.size(), layouts.at(c.image).objects.size());

  const sw::EvalSet again = sw::build_eval_set(options);
  ASSERT_EQ(again.images.size(), set.images.size());
  for (std::size_t i = 0; i < set.images.size(); ++i) EXPECT_EQ(again.images[i].file, set.images[i].file);
  EXPECT_EQ(sw::question_json(again.adversarial[7]), sw::question_json(set.adversarial[7]));
}

TEST(EvalSetTest, EndToEndThroughFiles) {
  const sw::EvalOptions options = eval_options(5, 20, 8);
  const sw::EvalSet set = sw::build_eval_set(options);
  const std::string dir = temp_dir("shapesworld_eval");
  sw::write_eval_set(set, dir, write_png);

  // Images come back byte-identical (PNG is lossless).
  for (const sw::EvalImage& image : set.images) {
    int height = 0, width = 0;
    const std::vector<std::uint8_t> pixels = read_png(dir + "/images/" + image.file, height, width);
    ASSERT_EQ(height, 64);
    ASSERT_EQ(width, 64);
    EXPECT_EQ(pixels, sw::render(image.layout).rgb) << image.file;
  }

  // Questions come back as written; a synthetic model answers "yes" to every present object and
  // to every fourth absent one.
  for (const char* split : {"random", "popular", "adversarial", "contrast"}) {
    const std::string gt = dir + "/" + sw::eval_files().at(split);
    const std::vector<ev::PopeQuestion> questions = ev::read_pope_questions(gt);
    ASSERT_EQ(questions.size(), 20u) << split;
    std::ofstream answers(dir + "/answers.jsonl", std::ios::trunc);
    ev::PopeCounts expected;
    for (std::size_t i = questions.size(); i-- > 0;) {  // reversed order: matching is by id
      const ev::PopeQuestion& q = questions[i];
      const bool says_yes = q.label == Answer::Yes || std::stoi(q.id) % 4 == 0;
      expected.add(says_yes ? Answer::Yes : Answer::No, q.label);
      ev::AnswerRecord record;
      record.question_id = q.question_id;
      record.prompt = q.text;
      record.text = says_yes ? "Yes, there is." : "No, there is not.";
      record.image = q.image;
      answers << ev::answer_json(record).dump() << '\n';
    }
    answers.close();
    for (const auto parser : {ev::AnswerParser::Pope, ev::AnswerParser::Substring}) {
      const ev::PopeReport report = ev::evaluate_pope_files(gt, dir + "/answers.jsonl", parser);
      expect_counts(report.overall.counts, expected, split);
      EXPECT_EQ(report.partner_present.has_value(), std::string(split) == "contrast");
    }
  }

  // Captions: the reference caption of every image, with an extra "heart" in every second one
  // whose image has none.
  const std::string gt = dir + "/" + sw::eval_files().at("captions");
  const std::vector<ev::JsonLine> lines = ev::read_jsonl(gt, "test");
  ASSERT_EQ(lines.size(), 8u);
  std::ofstream answers(dir + "/captions_answers.jsonl", std::ios::trunc);
  long long hallucinated = 0, mentions = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const nlohmann::json& line = lines[i].value;
    std::string text = line.at("caption").get<std::string>();
    mentions += static_cast<long long>(line.at("objects").size());
    const bool has_heart =
        std::find(line.at("objects").begin(), line.at("objects").end(), "heart") != line.at("objects").end();
    if (i % 2 == 1 && !has_heart) {
      text += " and two hearts";
      ++hallucinated;
      ++mentions;
    }
    answers << nlohmann::json{{"question_id", line.at("question_id")}, {"text", text}}.dump() << '\n';
  }
  answers.close();
  std::vector<std::string> names(sw::kShapeNames.begin(), sw::kShapeNames.end());
  const ev::ChairMetrics chair =
      ev::evaluate_chair_files(gt, dir + "/captions_answers.jsonl", ev::ChairVocabulary::from_names(names));
  EXPECT_EQ(chair.counts.captions, 8);
  EXPECT_EQ(chair.counts.mentions, mentions);
  EXPECT_EQ(chair.counts.hallucinated_mentions, hallucinated);
  EXPECT_EQ(chair.counts.hallucinated_captions, hallucinated);
  EXPECT_DOUBLE_EQ(chair.recall, 1.0);

  const nlohmann::json world = ev::read_jsonl(dir + "/world.json", "test").at(0).value;
  EXPECT_EQ(world.at("images"), set.images.size());
  std::filesystem::remove_all(dir);
}

TEST(ShapesWorldTensorTest, ConvertsScenesToTensors) {
  const sw::Scene s = sw::generate_scene(2, sw::WorldOptions{}, sw::Distribution::Unbiased);
  const at::Tensor image = sw::image_tensor(s);
  EXPECT_EQ(image.sizes(), (at::IntArrayRef{64, 64, 3}));
  EXPECT_EQ(image.scalar_type(), at::kByte);
  EXPECT_EQ(image[10][20][1].item<std::uint8_t>(), s.rgb[(10 * 64 + 20) * 3 + 1]);
  const at::Tensor batch = sw::image_batch({s, s});
  EXPECT_EQ(batch.sizes(), (at::IntArrayRef{2, 3, 64, 64}));
  EXPECT_FLOAT_EQ(batch[1][1][10][20].item<float>(), s.rgb[(10 * 64 + 20) * 3 + 1] / 255.0f);
  EXPECT_EQ(sw::presence_tensor(s).sum().item<float>(), static_cast<float>(s.objects.size()));
  const at::Tensor coverage = sw::patch_coverage_tensor(s, 8);
  EXPECT_EQ(coverage.sizes(), (at::IntArrayRef{8, 8, sw::kNumShapes}));
  int area = 0;
  for (const sw::SceneObject& o : s.objects) area += o.area;
  EXPECT_NEAR(coverage.sum().item<float>() * 64, static_cast<float>(area), 1e-3);
  EXPECT_EQ(sw::label_tensor(s).max().item<std::int8_t>(), static_cast<std::int8_t>(s.objects.size() - 1));
}
