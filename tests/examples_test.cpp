// The example programs' logic (examples/common): option parsing and its errors, the benchmark's
// method definitions, model-kind detection, and agla_caption / agla_pope end to end on the
// random-weight fixture models (file formats and JSON shapes, not scores).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../examples/common/caption_app.hpp"
#include "../examples/common/pope_app.hpp"
#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/random.hpp"
#include "agla/shapesworld/tensor.hpp"

namespace ex = agla::examples;
namespace fs = std::filesystem;

namespace {

const std::string kData = AGLA_TEST_DATA_DIR;
const std::string kItm = kData + "/blip/itm";
const std::string kCaption = kData + "/blip/caption";
const std::string kLlava = kData + "/llava/tiny_t";

struct Output {
  int status = 0;
  std::string out, err;
};

Output caption(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  Output o;
  o.status = ex::run_caption(args, out, err);
  o.out = out.str();
  o.err = err.str();
  return o;
}

Output pope(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  Output o;
  o.status = ex::run_pope(args, out, err);
  o.out = out.str();
  o.err = err.str();
  return o;
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  for (const auto& line : agla::eval::read_jsonl(path, "test")) lines.push_back(line.value);
  return lines;
}

// A fresh temporary folder per test.
std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("agla_examples_test_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// A small ShapesWorld evaluation set (4 questions per split, 2 captions), written once.
const std::string& eval_set_dir() {
  static const std::string dir = [] {
    const std::string d = temp_dir("eval_set");
    agla::shapesworld::EvalOptions options;
    options.questions_per_split = 4;
    options.captions = 2;
    agla::shapesworld::write_eval_set(agla::shapesworld::build_eval_set(options), d,
                                      [](const std::string& path, const agla::shapesworld::Scene& scene) {
                                        agla::io::write_png(path, agla::shapesworld::image_tensor(scene));
                                      });
    return d;
  }();
  return dir;
}

}  // namespace

TEST(ExampleCliTest, ParsesIdListsAndRejectsMalformedOnes) {
  EXPECT_EQ(ex::parse_id_list("p", "--prompt-ids", "126, 5,7"), (std::vector<int64_t>{126, 5, 7}));
  EXPECT_EQ(ex::parse_id_list("p", "--prompt-ids", "0"), (std::vector<int64_t>{0}));
  for (const std::string bad : {"", "1,,2", "1,", "a", "-3", "1.5", "99999999999999999999"})
    EXPECT_THROW(ex::parse_id_list("p", "--prompt-ids", bad), agla::InvalidArgument) << bad;
  EXPECT_THROW(ex::parse_number("p", "--alpha", "nan"), agla::InvalidArgument);
  EXPECT_THROW(ex::parse_integer("p", "--seed", "12x"), agla::InvalidArgument);
  EXPECT_THROW(ex::parse_threads("p", "-1"), agla::InvalidArgument);
}

TEST(ExampleCliTest, CaptionOptionErrorsExitWithStatusOne) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--frobnicate"}, "unknown option '--frobnicate'"},
      {{"--alpha"}, "--alpha needs a value"},
      {{"--top-p", "2"}, "top_p must be in (0, 1]"},
      {{"--beta", "0"}, "beta must be in (0, 1]"},
      {{"--temperature", "x"}, "--temperature expects a finite number"},
      {{"--max-new-tokens", "0"}, "--max-new-tokens must be in [1, 4096]"},
      {{"--prompt-ids", "1,x"}, "--prompt-ids (token id) expects an integer"},
      {{"--itm", kItm, "--lvlm", kCaption, "--image", "/nonexistent.png"}, "/nonexistent.png"},
      {{"--itm", kCaption, "--lvlm", kCaption}, "--itm needs a BLIP ITM checkpoint"},
      {{"--itm", kItm, "--lvlm", kItm}, "--lvlm needs a captioning or LLaVA checkpoint"},
      {{"--itm", kItm, "--lvlm", kData}, "no config.json"},
      {{"--itm", kItm, "--lvlm", kCaption, "--prompt-ids", "126,100000"}, "outside the vocabulary"},
  };
  for (const auto& [args, message] : cases) {
    const Output o = caption(args);
    EXPECT_EQ(o.status, 1) << args.front();
    EXPECT_NE(o.err.find(message), std::string::npos) << "stderr: " << o.err;
    EXPECT_TRUE(o.out.empty()) << o.out;
  }
  const Output help = caption({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("--prompt-ids"), std::string::npos);
}

TEST(ExampleMethodTest, DefinitionsFollowTheDesign) {
  ex::SamplingSettings s;
  const auto o = [&](ex::Method m) { return ex::method_options(m, s); };
  EXPECT_EQ(o(ex::Method::Regular).method, agla::FusionMethod::Plain);
  EXPECT_FALSE(o(ex::Method::Regular).greedy);
  EXPECT_TRUE(o(ex::Method::Greedy).greedy);
  EXPECT_EQ(o(ex::Method::Greedy).method, agla::FusionMethod::Plain);
  // Sharpened: assembly with the original standing in for the augmented view, from the first token.
  EXPECT_EQ(o(ex::Method::Sharpened).method, agla::FusionMethod::Assembly);
  EXPECT_EQ(o(ex::Method::Sharpened).local_view_tokens, 0);
  EXPECT_EQ(o(ex::Method::Sharpened).alpha, 2.0);
  EXPECT_EQ(o(ex::Method::CutoffOnly).alpha, 0.0);
  EXPECT_EQ(o(ex::Method::CutoffOnly).beta, 0.5);
  EXPECT_EQ(o(ex::Method::Vcd).method, agla::FusionMethod::Contrast);
  EXPECT_EQ(o(ex::Method::Vcd).alpha, 1.0);
  EXPECT_EQ(o(ex::Method::Vcd).beta, 0.1);
  EXPECT_EQ(o(ex::Method::Agla).local_view_tokens, agla::DecodeOptions::kEveryToken);
  EXPECT_EQ(o(ex::Method::AglaRandomMask).local_view_tokens, agla::DecodeOptions::kEveryToken);
  EXPECT_EQ(o(ex::Method::AglaReleased).local_view_tokens, 1);
  EXPECT_EQ(ex::method_view(ex::Method::Vcd), ex::ViewKind::Noise);
  EXPECT_EQ(ex::method_view(ex::Method::AglaRandomMask), ex::ViewKind::RandomMask);
  EXPECT_EQ(ex::method_view(ex::Method::Sharpened), ex::ViewKind::None);
  s.alpha = 2.0;
  s.beta = 0.5;
  EXPECT_EQ(o(ex::Method::Vcd).alpha, 2.0);
  EXPECT_EQ(o(ex::Method::Vcd).beta, 0.5);
  for (ex::Method m : ex::all_methods()) EXPECT_EQ(ex::parse_method(ex::method_name(m)), m);
  EXPECT_THROW(ex::parse_method("beam"), agla::InvalidArgument);

  // Sharpened = softmax((1 + alpha) l) under the beta cutoff; cutoff-only = softmax(l) under it.
  const at::Tensor l = at::tensor({2.0f, 1.5f, 0.0f, -1.0f}).view({1, 4});
  const auto log_probs = [&](ex::Method m) {
    at::Tensor out;
    agla::StepControl control;
    control.log_probs = &out;
    agla::decode_logits(l, l, o(m), ex::seeded_generator(1), control);
    return out;
  };
  const at::Tensor kept = l >= (std::log(0.5) + 2.0);
  const at::Tensor sharp = (3.0 * l).masked_fill(~kept, -INFINITY).log_softmax(-1);
  const at::Tensor cut = l.masked_fill(~kept, -INFINITY).log_softmax(-1);
  EXPECT_TRUE(at::allclose(log_probs(ex::Method::Sharpened).masked_fill(~kept, 0), sharp.masked_fill(~kept, 0)));
  EXPECT_TRUE(at::allclose(log_probs(ex::Method::CutoffOnly).masked_fill(~kept, 0), cut.masked_fill(~kept, 0)));
  EXPECT_TRUE(at::equal(log_probs(ex::Method::Sharpened).isinf(), ~kept));
}

TEST(ExampleMethodTest, RandomMaskKeepsTheRequestedFraction) {
  for (double keep : {0.3, 0.75, 0.9}) {
    const at::Tensor mask = ex::random_mask(8, 64, 64, keep, ex::seeded_generator(7));
    ASSERT_EQ(mask.sizes(), (at::IntArrayRef{64, 64}));
    EXPECT_NEAR(mask.to(at::kDouble).mean().item<double>(), keep, 2.0 / 4096) << keep;
  }
  EXPECT_TRUE(at::equal(ex::random_mask(8, 32, 32, 0.5, ex::seeded_generator(3)),
                        ex::random_mask(8, 32, 32, 0.5, ex::seeded_generator(3))));
  EXPECT_FALSE(at::equal(ex::random_mask(8, 32, 32, 0.5, ex::seeded_generator(3)),
                         ex::random_mask(8, 32, 32, 0.5, ex::seeded_generator(4))));
  EXPECT_NE(ex::question_seed(1, 0), ex::question_seed(1, 1));
  EXPECT_NE(ex::question_seed(1, 0), ex::question_seed(2, 0));
}

TEST(ExampleModelTest, DetectsModelKindsFromConfig) {
  EXPECT_EQ(ex::detect_model_kind(kItm), ex::ModelKind::BlipItm);
  EXPECT_EQ(ex::detect_model_kind(kCaption), ex::ModelKind::BlipCaption);
  EXPECT_EQ(ex::detect_model_kind(kLlava), ex::ModelKind::Llava);
  EXPECT_THROW(ex::detect_model_kind(kData), agla::FormatError);
  const std::string dir = temp_dir("kind");
  std::ofstream(dir + "/config.json") << R"({"model_type": "bert", "architectures": ["BertModel"]})";
  EXPECT_THROW(ex::detect_model_kind(dir), agla::FormatError);
}

TEST(ExampleSampleTest, SampleImageIsTheDocumentedShapesWorldScene) {
  // examples/data/README.md: scene 10 of seed 2025, unbiased distribution, default world.
  const at::Tensor sample = agla::io::read_image(ex::data_dir() + "/sample.png");
  const auto scene =
      agla::shapesworld::generate_scene(agla::shapesworld::scene_seed(2025, 10), agla::shapesworld::WorldOptions{},
                                        agla::shapesworld::Distribution::Unbiased);
  EXPECT_TRUE(at::equal(sample, agla::shapesworld::image_tensor(scene)));
  EXPECT_EQ(agla::shapesworld::caption(scene), "a red star, a yellow diamond and a purple circle");
}

TEST(ExampleCaptionTest, JsonReportOnFixtureModels) {
  const std::string out_dir = temp_dir("caption");
  const Output o = caption({"--itm", kItm, "--lvlm", kCaption, "--json", "--seed", "3", "--max-new-tokens", "6",
                            "--threads", "1", "--out", out_dir, "--prompt-ids", "126,5"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);  // exactly one JSON object
  EXPECT_EQ(j["prompt_ids"], (std::vector<int64_t>{126, 5}));
  EXPECT_EQ(j["lvlm"]["kind"], "blip-caption");
  for (const char* mode : {"regular", "agla"}) {
    ASSERT_TRUE(j[mode]["ids"].is_array()) << mode;
    EXPECT_GE(j[mode]["ids"].size(), 1u);
    EXPECT_LE(j[mode]["ids"].size(), 6u);
    EXPECT_TRUE(j[mode]["text"].is_string());
    EXPECT_GT(j[mode]["tokens_per_second"].get<double>(), 0.0);
  }
  EXPECT_GT(j["ipm"]["kept_fraction"].get<double>(), 0.0);
  EXPECT_LE(j["ipm"]["kept_fraction"].get<double>(), 1.0);
  for (const char* file : {"heatmap.png", "augmented.png", "mask.png"}) {
    const at::Tensor image = agla::io::read_image(out_dir + "/" + file);
    EXPECT_EQ(image.size(0), 32) << file;  // the fixture ITM's input size
  }
  // The same seed gives the same captions.
  const Output again = caption({"--itm", kItm, "--lvlm", kCaption, "--json", "--seed", "3", "--max-new-tokens", "6",
                                "--threads", "1", "--out", out_dir, "--prompt-ids", "126,5"});
  const nlohmann::json k = nlohmann::json::parse(again.out);
  EXPECT_EQ(j["regular"]["ids"], k["regular"]["ids"]);
  EXPECT_EQ(j["agla"]["ids"], k["agla"]["ids"]);

  // Prompt and caption never exceed the text model's positions (the fixture has 64).
  const Output capped = caption({"--itm", kItm, "--lvlm", kCaption, "--json", "--max-new-tokens", "4000", "--threads",
                                 "1", "--out", out_dir, "--prompt-ids", "126,5,7"});
  ASSERT_EQ(capped.status, 0) << capped.err;
  EXPECT_LE(nlohmann::json::parse(capped.out)["regular"]["ids"].size(), 61u);

  // Text mode names the random-weight models and prints both captions.
  const Output text = caption({"--itm", kItm, "--lvlm", kCaption, "--max-new-tokens", "4", "--threads", "1", "--out",
                               out_dir, "--prompt", "a picture of"});
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("regular"), std::string::npos);
  EXPECT_NE(text.out.find("AGLA"), std::string::npos);
  EXPECT_NE(text.out.find("tokens/s"), std::string::npos);
}

TEST(ExampleCaptionTest, DrivesLlavaByTokenIds) {
  const std::string out_dir = temp_dir("caption_llava");
  const Output o = caption({"--itm", kItm, "--lvlm", kLlava, "--json", "--greedy", "--max-new-tokens", "4", "--threads",
                            "1", "--out", out_dir, "--prompt-ids", "1,7,95,9"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["lvlm"]["kind"], "llava");
  EXPECT_EQ(j["regular"]["ids"].size(), 4u);
  EXPECT_EQ(j["agla"]["ids"].size(), 4u);
  // Without ids the fixture (no tokenizer.model) cannot be prompted by text, and says so.
  const Output text = caption({"--itm", kItm, "--lvlm", kLlava, "--out", out_dir, "--threads", "1"});
  EXPECT_EQ(text.status, 1);
  EXPECT_NE(text.err.find("--prompt-ids"), std::string::npos) << text.err;
  // A prompt without the image token is refused by the model.
  EXPECT_EQ(caption({"--itm", kItm, "--lvlm", kLlava, "--out", out_dir, "--prompt-ids", "1,7"}).status, 1);
}

TEST(ExamplePopeTest, OptionErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "give exactly one of"},
      {{"--questions", "q.jsonl", "--evaluate", "a", "b"}, "give exactly one of"},
      {{"--questions", "q.jsonl", "--method", "beam"}, "--method must be one of"},
      {{"--questions", "q.jsonl", "--num-chunks", "2", "--chunk-idx", "2"}, "--chunk-idx must be below"},
      {{"--questions", "/nonexistent.jsonl"}, "cannot open '/nonexistent.jsonl'"},
      {{"--questions", "q.jsonl", "--parser", "regex"}, "regex"},
      {{"--questions", "q.jsonl", "--question-template", "no placeholder"}, "must contain {question}"},
      {{"--evaluate", "only-one"}, "needs GT.jsonl and ANSWERS.jsonl"},
  };
  for (const auto& [args, message] : cases) {
    const Output o = pope(args);
    EXPECT_EQ(o.status, 1);
    EXPECT_NE(o.err.find(message), std::string::npos) << "stderr: " << o.err;
  }
}

TEST(ExamplePopeTest, RunsEveryMethodAndWritesReferenceAnswerLines) {
  const std::string dir = temp_dir("pope");
  const std::string questions = eval_set_dir() + "/shapesworld_pope_adversarial.jsonl";
  const std::string results = dir + "/results.jsonl";
  for (ex::Method method : ex::all_methods()) {
    const std::string answers = dir + "/" + ex::method_name(method) + ".jsonl";
    const Output o = pope({"--questions", questions, "--method", ex::method_name(method), "--itm", kItm, "--lvlm",
                           kCaption, "--answers", answers, "--max-new-tokens", "3", "--json", "--threads", "1",
                           "--results", results, "--model-id", "fixture"});
    ASSERT_EQ(o.status, 0) << ex::method_name(method) << ": " << o.err;
    EXPECT_NE(o.err.find("] 4/4"), std::string::npos) << o.err;  // the progress bar's last state
    const nlohmann::json summary = nlohmann::json::parse(o.out);
    EXPECT_EQ(summary["metrics"]["questions"], 4);
    EXPECT_EQ(summary["split"], "adversarial");
    const auto lines = read_lines(answers);
    ASSERT_EQ(lines.size(), 4u);
    for (const auto& line : lines) {
      for (const char* key : {"question_id", "prompt", "text", "model_id", "image", "metadata"})
        EXPECT_TRUE(line.contains(key)) << key;
      EXPECT_EQ(line["model_id"], "fixture");
      EXPECT_EQ(line["metadata"]["method"], ex::method_name(method));
      const bool ipm = ex::method_needs_itm(method);
      EXPECT_EQ(line["metadata"].contains("itc"), ipm);
      EXPECT_EQ(line["metadata"].contains("kept_fraction"), ipm);
    }
    // The answers file scores the same in evaluate-only mode.
    const Output scored = pope({"--evaluate", questions, answers, "--json"});
    ASSERT_EQ(scored.status, 0) << scored.err;
    EXPECT_EQ(nlohmann::json::parse(scored.out)["accuracy"], summary["metrics"]["accuracy"]);
  }
  EXPECT_EQ(read_lines(results).size(), ex::all_methods().size());
  const Output table = pope({"--summarize", results});
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find("### fixture"), std::string::npos);
  EXPECT_NE(table.out.find("POPE adversarial:"), std::string::npos);
  EXPECT_NE(table.out.find("| agla-random-mask |"), std::string::npos);
}

TEST(ExamplePopeTest, ChunksConcatenateToTheWholeRun) {
  const std::string dir = temp_dir("chunks");
  const std::string questions = eval_set_dir() + "/shapesworld_contrast.jsonl";
  const auto run = [&](const std::string& answers, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--questions", questions,          "--method", "agla",      "--itm",
                                     kItm,          "--lvlm",           kCaption,   "--answers", answers,
                                     "--quiet",     "--max-new-tokens", "3",        "--seed",    "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Output o = pope(args);
    EXPECT_EQ(o.status, 0) << o.err;
    return o;
  };
  const Output whole = run(dir + "/whole.jsonl", {});
  EXPECT_NE(whole.out.find("Partner present"), std::string::npos) << whole.out;
  run(dir + "/c0.jsonl", {"--num-chunks", "3", "--chunk-idx", "0"});
  run(dir + "/c1.jsonl", {"--num-chunks", "3", "--chunk-idx", "1"});
  const Output last = run(dir + "/c2.jsonl", {"--num-chunks", "3", "--chunk-idx", "2"});
  EXPECT_NE(last.out.find("--evaluate"), std::string::npos);
  std::vector<nlohmann::json> merged;
  for (const char* c : {"/c0.jsonl", "/c1.jsonl", "/c2.jsonl"})
    for (auto& line : read_lines(dir + c)) merged.push_back(line);
  std::vector<nlohmann::json> full = read_lines(dir + "/whole.jsonl");
  ASSERT_EQ(merged.size(), full.size());
  for (std::size_t i = 0; i < full.size(); ++i) {
    merged[i]["metadata"].erase("ipm_ms");  // wall-clock time, the only field that may differ
    full[i]["metadata"].erase("ipm_ms");
    EXPECT_EQ(merged[i], full[i]) << i;
  }
}

TEST(ExamplePopeTest, CaptionSplitGivesChair) {
  const std::string dir = temp_dir("chair");
  const Output o =
      pope({"--questions", eval_set_dir() + "/shapesworld_captions.jsonl", "--method", "agla-released", "--itm", kItm,
            "--lvlm", kCaption, "--answers", dir + "/a.jsonl", "--max-new-tokens", "5", "--json", "--quiet"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["split"], "captions");
  EXPECT_TRUE(j["metrics"].contains("chair_i"));
  EXPECT_TRUE(j["metrics"].contains("chair_s"));
  EXPECT_EQ(j["metrics"]["captions"], 2);
}

TEST(ExamplePopeTest, DrivesLlavaByPromptIdsInTheQuestionFile) {
  const std::string dir = temp_dir("pope_llava");
  const std::string questions = dir + "/questions.jsonl";
  {
    std::ofstream file(questions);
    file
        << R"({"question_id": 1, "image": "sw_000000.png", "text": "Is there a star in the image?", "label": "yes", "prompt_ids": [1, 7, 95, 9]})"
        << "\n"
        << R"({"question_id": 2, "image": "sw_000000.png", "text": "Is there a ring in the image?", "label": "no", "prompt_ids": [1, 8, 95, 9]})"
        << "\n";
  }
  const Output o =
      pope({"--questions", questions, "--image-folder", eval_set_dir() + "/images", "--method", "agla", "--itm", kItm,
            "--lvlm", kLlava, "--answers", dir + "/a.jsonl", "--max-new-tokens", "3", "--json", "--quiet"});
  ASSERT_EQ(o.status, 0) << o.err;
  const auto lines = read_lines(dir + "/a.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["metadata"]["prompt_ids"], (std::vector<int64_t>{1, 7, 95, 9}));
  EXPECT_EQ(lines[0]["text"].get<std::string>().front(), '[');  // no tokenizer: the ids in brackets
  // Token ids are not text: the run leaves them unscored, and --evaluate refuses them.
  const nlohmann::json summary = nlohmann::json::parse(o.out);
  EXPECT_TRUE(summary["metrics"].is_null()) << o.out;
  EXPECT_NE(summary.value("not_scored", "").find("token ids"), std::string::npos) << o.out;
  const Output scored = pope({"--evaluate", questions, dir + "/a.jsonl"});
  EXPECT_EQ(scored.status, 1);
  EXPECT_NE(scored.err.find("token ids"), std::string::npos) << scored.err;

  // Caption items carry no ids; --prompt-ids gives them one prompt.
  const Output captions = pope({"--questions", eval_set_dir() + "/shapesworld_captions.jsonl", "--method",
                                "agla-released", "--itm", kItm, "--lvlm", kLlava, "--answers", dir + "/c.jsonl",
                                "--prompt-ids", "1,95,9", "--max-new-tokens", "3", "--json", "--quiet"});
  ASSERT_EQ(captions.status, 0) << captions.err;
  EXPECT_EQ(read_lines(dir + "/c.jsonl")[1]["metadata"]["prompt_ids"], (std::vector<int64_t>{1, 95, 9}));
}
