// The benchmark programs (agla_mme, agla_chair) and the evaluation protocols they share with
// agla_pope: --evaluate on hand-made results and caption files with hand-worked scores, malformed
// lines named by file and line, option ranges, and runs in-process on the shipped ShapesWorld
// models over an MME-layout tree and a COCO-style image list the tests write, with the protocol
// recorded in every output.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agla/eval/jsonl.hpp"
#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/tensor.hpp"
#include "agla/io/image.hpp"
#include "common/programs.hpp"
#include "support/programs.hpp"
#include "support/scratch.hpp"
#include "common/protocols.hpp"

namespace tl = agla::tools;
namespace fs = std::filesystem;

namespace {

using namespace agla::test;

// A fresh folder per test in this process's scratch folder.
const Scratch kScratch("agla_eval_tools_test");
std::string temp_dir(const std::string& name) { return kScratch.fresh(name); }

// Expects every field of the JSON object `want` in `j`, with the same value.
void expect_fields(const nlohmann::json& j, const std::string& want) {
  const nlohmann::json fields = nlohmann::json::parse(want);
  for (const auto& field : fields.items())
    EXPECT_EQ(j.value(field.key(), nlohmann::json()), field.value()) << field.key();
}

// An MME results folder whose scores are worked out by hand in MmeProgramTest.EvaluatesAResultsFolderByHand.
void write_results(const fs::path& dir) {
  write(dir / "existence.txt",
        "1.jpg\tIs there a dog? Please answer yes or no.\tYes\tYes\n"
        "1.jpg\tIs there a cat? Please answer yes or no.\tNo\tNo.\n"
        "2.jpg\tIs there a dog? Please answer yes or no.\tYes\tI think yes\n"
        "2.jpg\tIs there a cat? Please answer yes or no.\tNo\tnope\n"
        "3.jpg\tIs there a dog? Please answer yes or no.\tYes\t\n"
        "3.jpg\tIs there a cat? Please answer yes or no.\tNo\t  yes\n");
  write(dir / "count.txt",
        "4.jpg\tAre there two dogs? Please answer yes or no.\tYes\tyes\n"
        "4.jpg\tAre there three dogs? Please answer yes or no.\tNo\tNo\n"
        "5.jpg\tAre there two cats? Please answer yes or no.\tYes\tYes, there are two.\r\n"
        "5.jpg\tAre there three cats? Please answer yes or no.\tNo\tNot sure\n");
  write(dir / "color.txt",
        "6.jpg\tIs the dog red? Please answer yes or no.\tNo\tyes\n"
        "6.jpg\tIs the dog black? Please answer yes or no.\tYes\tYES");
  write(dir / "code_reasoning.txt",
        "7.png\tDoes the code print 3? Please answer yes or no.\tYes\tYes\n"
        "7.png\tDoes the code print 4? Please answer yes or no.\tNo\tNo\n");
  write(dir / "notes.md", "not a subtask file\n");
}

}  // namespace

TEST(MmeProgramTest, EvaluatesAResultsFolderByHand) {
  const std::string dir = temp_dir("mme_by_hand");
  write_results(dir);
  const Output o = mme({"--evaluate", dir, "--json"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  // existence: "Yes" and "No." right (image 1 both right); "I think yes" is other (first four
  // characters "i th"), "nope" is no (right); the missing answer and "  yes" are other.
  // 3 of 6 right, 1 of 3 images both right: 0.5 * 100 + (1/3) * 100.
  const nlohmann::json& e = j["subtasks"]["existence"];
  EXPECT_DOUBLE_EQ(e["acc"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(e["acc_plus"].get<double>(), 1.0 / 3.0);
  EXPECT_EQ(e["score"].get<double>(), 0.5 * 100 + (1.0 / 3.0) * 100);
  EXPECT_EQ(e["other"], 3);
  // count: "Yes, there are two." (its \r\n ending read as \n) is yes, "Not sure" is no ("not "
  // holds "no"): all right, 200.
  EXPECT_EQ(j["subtasks"]["count"]["score"].get<double>(), 200.0);
  EXPECT_EQ(j["subtasks"]["count"]["other"], 0);
  // color: "yes" for a no-question is wrong, "YES" (no line ending) right: acc 0.5, acc+ 0.
  EXPECT_EQ(j["subtasks"]["color"]["score"].get<double>(), 50.0);
  EXPECT_FALSE(j["subtasks"].contains("position"));
  // Totals over the subtasks present, summed in the tool's order.
  const double hallucination = 0.5 * 100 + (1.0 / 3.0) * 100 + 200.0 + 50.0;
  EXPECT_EQ(j["hallucination"].get<double>(), hallucination);
  EXPECT_EQ(j["perception"].get<double>(), hallucination);
  EXPECT_EQ(j["cognition"].get<double>(), 200.0);

  // The text report prints the tool's lines, with Python's float formatting.
  const Output text = mme({"--evaluate", dir});
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("total score: 333.3333333333333 \n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("\t existence  score: 83.33333333333333\n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("Hallucination subset: existence 83.33333333333333, count 200.0, color 50.0, total "
                          "333.3333333333333\n"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("Ignored (not a subtask file): notes.md"), std::string::npos) << text.out;
}

TEST(MmeProgramTest, RejectsMalformedFilesAndOptions) {
  const std::string dir = temp_dir("mme_bad");
  const std::string path = dir + "/position.txt";
  write(path, "1.jpg\tq?\tYes\tyes\n1.jpg\tq?\tNo\n");
  Output o = mme({"--evaluate", dir});
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.err.find(path + ":2: expected 4 tab-separated fields"), std::string::npos) << o.err;
  write(path, "1.jpg\tq?\tYes\tyes\n1.jpg\tq?\tmaybe\tno\n");
  o = mme({"--evaluate", dir});
  EXPECT_NE(o.err.find(path + ":2: ground truth must be yes or no"), std::string::npos) << o.err;
  write(path, "1.jpg\tq?\tYes\tyes\n1.jpg\tq?\tNo\tno\n2.jpg\tq?\tYes\tyes\n");
  o = mme({"--evaluate", dir});
  EXPECT_NE(o.err.find(path + ":3: the second question of the image '2.jpg' is missing"), std::string::npos) << o.err;
  o = mme({"--evaluate", temp_dir("mme_empty")});
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.err.find("no results files"), std::string::npos) << o.err;

  // Every option range-checked, the message naming the option; each case runs on --benchmark DIR.
  std::vector<std::pair<std::vector<std::string>, std::string>> bad{
      {{"--num-chunks", "0"}, "--num-chunks"},
      {{"--num-chunks", "2", "--chunk-idx", "2"}, "--chunk-idx"},
      {{"--subtasks", "existence,halluc"}, "--subtasks"},
      {{"--subtasks", "count,count"}, "--subtasks"},
      {{"--protocol", "greedy-ish"}, "--protocol"},
      {{"--max-new-tokens", "5000"}, "--max-new-tokens"},
      {{"--temperature", "0"}, "--temperature"},
      {{"--limit", "-1"}, "--limit"},
      {{"--question-template", "no key"}, "--question-template"},
      {{"--threads", "5000"}, "--threads"},
      {{"--evaluate", dir}, "exactly one"}};
  for (auto& [args, option] : bad) args.insert(args.begin(), {"--benchmark", dir});
  bad.push_back({{"--bogus"}, "--bogus"});
  expect_errors(tl::run_mme, bad);
  EXPECT_EQ(mme({"--help"}).status, 0);
}

namespace {

// An MME-layout tree of two subtasks over the ShapesWorld sample image: existence keeps images and
// question files side by side (two images), count uses images/ and questions_answers_YN/ (one).
std::string write_mme_tree(const fs::path& root) {
  const std::string yes_no = "Please answer yes or no.";
  for (const char* image : {"a", "b"}) {
    fs::create_directories(root / "existence");
    fs::copy_file(kShippedSample, root / "existence" / (std::string(image) + ".png"));
    write(root / "existence" / (std::string(image) + ".txt"),
          "Is there a circle in the image? " + yes_no + "\tYes\nIs there a heart in the image? " + yes_no + "\tNo\n");
  }
  fs::create_directories(root / "count" / "images");
  fs::copy_file(kShippedSample, root / "count" / "images" / "c.png");
  write(root / "count" / "questions_answers_YN" / "c.txt",
        "Is there one circle in the image? " + yes_no + "\tYes\nAre there five stars in the image? " + yes_no +
            "\tNo\n");
  return root.string();
}

}  // namespace

TEST(MmeProgramTest, RunsTheShippedModelsOverAnMmeTree) {
  const std::string dir = temp_dir("mme_run");
  const std::string tree = write_mme_tree(fs::path(dir) / "MME_Benchmark");
  const std::vector<std::string> common{"--benchmark", tree, "--lvlm", kShippedLvlm, "--itm", kShippedItm,
                                        "--protocol", "agla", "--max-new-tokens", "6", "--threads", "1",
                                        "--quiet", "--json"};
  std::vector<std::string> args = common;
  args.insert(args.end(), {"--results", dir + "/whole"});
  const Output whole = mme(args);
  ASSERT_EQ(whole.status, 0) << whole.err;
  const nlohmann::json j = nlohmann::json::parse(whole.out);
  EXPECT_EQ(j["run"]["questions"], 6);
  EXPECT_EQ(j["subtasks"]["existence"]["questions"], 4);
  EXPECT_EQ(j["subtasks"]["count"]["questions"], 2);
  EXPECT_DOUBLE_EQ(j["hallucination"].get<double>(), j["subtasks"]["existence"]["score"].get<double>() +
                                                         j["subtasks"]["count"]["score"].get<double>());
  // The protocol with its resolved settings and the option that overrode it.
  const nlohmann::json& protocol = j["run"]["protocol"];
  expect_fields(protocol, R"({"name": "agla", "benchmark": "mme", "decoding": "sample", "instruction": "{question}",
                            "seed": 1, "reference_seeds": [1, 2, 3], "alpha": 2.0, "max_new_tokens": 6,
                            "parser": "mme", "overridden": ["--max-new-tokens"]})");
  EXPECT_EQ(nlohmann::json::parse(read(dir + "/whole/run.json"))["protocol"], protocol);
  const std::vector<nlohmann::json> answers = read_lines(dir + "/whole/answers.jsonl");
  ASSERT_EQ(answers.size(), 6u);
  EXPECT_EQ(answers[0]["question_id"], "existence/a.png/1");
  EXPECT_EQ(answers[0]["metadata"]["protocol"], protocol);
  EXPECT_TRUE(answers[0]["metadata"].contains("kept_fraction"));  // AGLA's IPM view
  // "or" is no word of the ShapesWorld vocabulary: each answer lists it, the run warns once.
  EXPECT_EQ(answers[0]["metadata"]["prompt_unknown_words"], nlohmann::json::parse(R"(["or"])"));
  EXPECT_NE(whole.err.find("agla_mme: warning: 6 of 6 prompts have words outside the model's vocabulary"),
            std::string::npos)
      << whole.err;

  // The official results format: image, question, ground truth, prediction; pairs in order.
  const std::string existence = read(dir + "/whole/existence.txt");
  std::istringstream lines(existence);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    EXPECT_EQ(std::count(line.begin(), line.end(), '\t'), 3) << line;
    EXPECT_EQ(line.rfind(n <= 2 ? "a.png\tIs there a " : "b.png\tIs there a ", 0), 0u) << line;
  }
  EXPECT_EQ(n, 4);
  // --evaluate on the folder scores what the run printed.
  const Output scored = mme({"--evaluate", dir + "/whole", "--json"});
  ASSERT_EQ(scored.status, 0) << scored.err;
  EXPECT_EQ(nlohmann::json::parse(scored.out)["subtasks"], j["subtasks"]);

  // Two chunks (by image) give the same answers: concatenated, they score as the whole run.
  for (const char* chunk : {"0", "1"}) {
    std::vector<std::string> chunk_args = common;
    chunk_args.insert(chunk_args.end(),
                      {"--results", dir + "/chunk" + chunk, "--num-chunks", "2", "--chunk-idx", chunk});
    const Output c = mme(chunk_args);
    ASSERT_EQ(c.status, 0) << c.err;
    EXPECT_EQ(nlohmann::json::parse(c.out)["run"]["chunk"]["index"], std::stoi(chunk));
  }
  EXPECT_EQ(read(dir + "/chunk0/existence.txt") + read(dir + "/chunk1/existence.txt"), existence);
  EXPECT_FALSE(fs::exists(dir + "/chunk0/count.txt"));  // chunk 0 holds images a and b
  EXPECT_EQ(read(dir + "/chunk1/count.txt"), read(dir + "/whole/count.txt"));

  // Without --subtasks: the subtask folders present. A missing subtask folder asked for is named.
  const Output none = mme({"--benchmark", dir, "--lvlm", kShippedLvlm, "--quiet"});
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.err.find("no subtask folder (existence, count, ...) in '" + dir + "'; they are in " + tree),
            std::string::npos)
      << none.err;
  const Output missing = mme({"--benchmark", tree, "--subtasks", "color", "--lvlm", kShippedLvlm, "--quiet"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("no subtask folder"), std::string::npos) << missing.err;
}

namespace {

// A tiny WordNet database in the files' own format (licence lines start with a space).
std::string write_wordnet(const fs::path& dir) {
  std::string nouns = "  1 This software and database is being provided to you, the LICENSEE\n";
  for (const char* w : {"bear", "circle", "dog", "heart", "hot", "man", "puppy", "square", "star", "teddy", "toilet"})
    nouns += std::string(w) + " n 1 0 1 0 00000000\n";
  write(dir / "index.noun", nouns);
  write(dir / "noun.exc", "men man\n");
  write(dir / "index.verb", "  1 licence\nsit v 1 0 1 0 00000000\n");
  write(dir / "verb.exc", "");
  return dir.string();
}

// Instance and caption annotations of images 1-3 and the synonym list (COCO's format and
// CHAIR's synonyms.txt), with categories that include the ShapesWorld shapes.
void write_annotations(const fs::path& dir) {
  write(dir / "instances.json", R"({"annotations": [
      {"image_id": 1, "category_id": 18, "id": 1}, {"image_id": 2, "category_id": 23, "id": 2},
      {"image_id": 3, "category_id": 70, "id": 3}, {"image_id": 1, "category_id": 91, "id": 4},
      {"image_id": 2, "category_id": 92, "id": 5}],
    "categories": [{"id": 18, "name": "dog"}, {"id": 23, "name": "bear"}, {"id": 70, "name": "toilet"},
      {"id": 91, "name": "circle"}, {"id": 92, "name": "square"}]})");
  write(dir / "captions.json", R"({"annotations": [
      {"image_id": 1, "id": 1, "caption": "A dog on the grass."},
      {"image_id": 2, "id": 2, "caption": "A bear eating a hot dog."},
      {"image_id": 3, "id": 3, "caption": "A bathroom with a toilet."}]})");
  write(dir / "synonyms.txt",
        "person, man, woman\ndog, puppy\nbear\nteddy bear\nhot dog\ntoilet\ncircle, ring\nsquare\nstar\n"
        "heart\ntriangle\ncross\ndiamond\n");
  write_wordnet(dir / "wordnet");
}

std::vector<std::string> annotation_args(const fs::path& dir) {
  return {"--instances", (dir / "instances.json").string(), "--coco-captions", (dir / "captions.json").string(),
          "--synonyms",  (dir / "synonyms.txt").string(),   "--wordnet",       (dir / "wordnet").string()};
}

}  // namespace

TEST(ChairProgramTest, EvaluatesCaptionsByHand) {
  const fs::path dir = temp_dir("chair_by_hand");
  write_annotations(dir);
  // AGLA's answer format: the image as a COCO file name, the caption in "text".
  write(dir / "answers.jsonl",
        "{\"image\": \"COCO_val2014_000000000001.jpg\", \"text\": \"Two dogs and a puppy near a teddy bear.\"}\n"
        "{\"image\": \"COCO_val2014_000000000002.jpg\", \"text\": \"A bear with hot dogs.\"}\n"
        "{\"image\": \"COCO_val2014_000000000003.jpg\", \"text\": \"Men next to a toilet.\"}\n");
  std::vector<std::string> args{"--evaluate",   (dir / "answers.jsonl").string(), "--image-id-key", "image",
                                "--caption-key", "text",                          "--json"};
  const std::vector<std::string> annotations = annotation_args(dir);
  args.insert(args.end(), annotations.begin(), annotations.end());
  const Output o = chair(args);
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  // Ground truth: 1 {dog, circle}, 2 {bear, hot dog, square}, 3 {toilet}.
  //   1: dog (plural), dog (synonym "puppy"), teddy bear (two words, not a bear) -> 1 hallucinated
  //   2: bear, hot dog (two words, plural; not a dog)                        -> 0
  //   3: person ("men": WordNet's exception list), toilet                    -> 1
  // CHAIR_s = 2/3, CHAIR_i = 2/7; recall = (1 + 2 + 1) / (2 + 3 + 1) = 4/6.
  EXPECT_DOUBLE_EQ(j["chair_s"].get<double>(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(j["chair_i"].get<double>(), 2.0 / 7.0);
  EXPECT_DOUBLE_EQ(j["recall"].get<double>(), 4.0 / 6.0);
  ASSERT_EQ(j["sentences"].size(), 3u);
  EXPECT_EQ(j["sentences"][0]["hallucinated"], nlohmann::json::parse(R"([["teddy bear", "teddy bear"]])"));
  EXPECT_EQ(j["sentences"][1]["hallucinated"], nlohmann::json::array());
  EXPECT_EQ(j["sentences"][2]["hallucinated"], nlohmann::json::parse(R"([["man", "person"]])"));
  EXPECT_EQ(j["sentences"][2]["image_id"], 3);

  const Output text = chair({args.begin(), args.end() - 9});  // without --json and the annotations
  EXPECT_EQ(text.status, 1);
  EXPECT_NE(text.err.find("--instances"), std::string::npos) << text.err;

  // A malformed line is named by file and line.
  write(dir / "bad.jsonl", "{\"image_id\": 1, \"caption\": \"A dog.\"}\n{\"image_id\": 2}\n");
  std::vector<std::string> bad{"--evaluate", (dir / "bad.jsonl").string()};
  bad.insert(bad.end(), annotations.begin(), annotations.end());
  const Output b = chair(bad);
  EXPECT_EQ(b.status, 1);
  EXPECT_NE(b.err.find((dir / "bad.jsonl").string() + ":2:"), std::string::npos) << b.err;
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--num-chunks", "0"}, {"--max-new-tokens", "0"}, {"--top-p", "1.5"}, {"--protocol", "opera"},
           {"--seed", "-3"}, {"--noise-step", "1000"}}) {
    const Output r = chair({"--images", dir.string(), option, value});
    EXPECT_EQ(r.status, 1) << option;
    EXPECT_NE(r.err.find(option), std::string::npos) << r.err;
  }
}

TEST(ChairProgramTest, CaptionsAnImageListWithTheShippedModels) {
  const fs::path dir = temp_dir("chair_run");
  write_annotations(dir);
  fs::create_directories(dir / "images");
  for (const char* name : {"COCO_val2014_000000000001.png", "COCO_val2014_000000000002.png", "unlisted.png"})
    fs::copy_file(kShippedSample, dir / "images" / name);
  // less-is-more's chair-500.jsonl format.
  write(dir / "list.jsonl",
        "{\"question_id\": 0, \"image\": \"COCO_val2014_000000000001.png\", \"text\": \"Please describe.\"}\n"
        "{\"question_id\": 1, \"image\": \"COCO_val2014_000000000002.png\", \"text\": \"Please describe.\"}\n");
  std::vector<std::string> args{"--images",   (dir / "images").string(), "--image-list", (dir / "list.jsonl").string(),
                                "--lvlm",     kShippedLvlm,
                                "--protocol", "greedy-64",               "--method",     "greedy",
                                "--caption-prompt", "",                  "--max-new-tokens", "12",
                                "--captions", (dir / "captions.jsonl").string(), "--threads", "1", "--quiet", "--json"};
  const std::vector<std::string> annotations = annotation_args(dir);
  args.insert(args.end(), annotations.begin(), annotations.end());
  const Output o = chair(args);
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  const nlohmann::json& protocol = j["run"]["protocol"];
  expect_fields(protocol, R"({"name": "greedy-64", "benchmark": "chair", "decoding": "greedy", "instruction": "",
                            "max_new_tokens": 12, "drop_incomplete_sentence": true,
                            "overridden": ["--caption-prompt", "--max-new-tokens"]})");
  const std::vector<nlohmann::json> captions = read_lines((dir / "captions.jsonl").string());
  ASSERT_EQ(captions.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(captions[i]["image_id"], i + 1);
    EXPECT_EQ(captions[i]["method"], "greedy");
    EXPECT_EQ(captions[i]["protocol"], protocol);
    EXPECT_EQ(j["sentences"][i]["caption"], captions[i]["caption"]);
  }
  // The same image twice, greedy: the same caption.
  EXPECT_EQ(captions[0]["caption"], captions[1]["caption"]);
  EXPECT_FALSE(captions[0]["caption"].get<std::string>().empty());
  // The captions file scores the same in evaluate-only mode.
  std::vector<std::string> evaluate{"--evaluate", (dir / "captions.jsonl").string(), "--json"};
  evaluate.insert(evaluate.end(), annotations.begin(), annotations.end());
  const Output scored = chair(evaluate);
  ASSERT_EQ(scored.status, 0) << scored.err;
  const nlohmann::json s = nlohmann::json::parse(scored.out);
  for (const char* key : {"chair_s", "chair_i", "recall"}) EXPECT_EQ(s[key], j[key]) << key;

  // Two chunks, concatenated, hold the whole run's captions; a chunk is not scored.
  std::string parts;
  for (const char* chunk : {"0", "1"}) {
    const std::string part = (dir / (std::string("part") + chunk + ".jsonl")).string();
    const Output c = chair({"--images", (dir / "images").string(), "--image-list", (dir / "list.jsonl").string(),
                            "--lvlm", kShippedLvlm, "--protocol", "greedy-64", "--method", "greedy",
                            "--caption-prompt", "", "--max-new-tokens", "12", "--captions", part, "--num-chunks", "2",
                            "--chunk-idx", chunk, "--quiet", "--json"});
    ASSERT_EQ(c.status, 0) << c.err;
    EXPECT_NE(nlohmann::json::parse(c.out)["not_scored"].get<std::string>().find("one chunk of 2"), std::string::npos);
    parts += read(part);
  }
  EXPECT_EQ(parts, read(dir / "captions.jsonl"));

  // Without a list: every image of the folder, by name; a name without an image id is an error.
  const Output unlisted = chair({"--images", (dir / "images").string(), "--lvlm", kShippedLvlm, "--method", "greedy",
                                 "--captions", (dir / "all.jsonl").string(), "--quiet"});
  EXPECT_EQ(unlisted.status, 1);
  EXPECT_NE(unlisted.err.find("'unlisted.png' holds no COCO image id"), std::string::npos) << unlisted.err;
  write(dir / "bad_list.txt", "COCO_val2014_000000000001.png\n\nCOCO_val2014_000000000001.png\n");
  const Output repeated = chair({"--images", (dir / "images").string(), "--image-list",
                                 (dir / "bad_list.txt").string(), "--lvlm", kShippedLvlm, "--quiet"});
  EXPECT_EQ(repeated.status, 1);
  EXPECT_NE(repeated.err.find((dir / "bad_list.txt").string() + ":3: image id 1 repeats"), std::string::npos)
      << repeated.err;
}

TEST(ProtocolTest, ResolvesTheReferenceSettings) {
  const tl::Protocol agla = tl::resolve_protocol("agla", tl::Benchmark::Pope, "llava");
  EXPECT_EQ(agla.instruction, "{question} Please answer this question with one word.");
  EXPECT_FALSE(agla.sampling.greedy);
  EXPECT_EQ(agla.sampling.temperature, 1.0);
  EXPECT_EQ(agla.sampling.top_k, 0);  // LLaVA runner: top_k=None
  EXPECT_EQ(agla.sampling.top_p, 1.0);
  EXPECT_EQ(agla.seeds, (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(agla.max_new_tokens, 1024);
  EXPECT_EQ(agla.parser, "substring");
  EXPECT_FALSE(agla.pad_to_square);
  const tl::Protocol blip = tl::resolve_protocol("agla", tl::Benchmark::Mme, "instructblip");
  EXPECT_EQ(blip.sampling.top_k, 50);  // transformers' default under LAVIS
  EXPECT_EQ(blip.max_new_tokens, 255);
  EXPECT_EQ(blip.instruction, "{question}");
  EXPECT_EQ(blip.parser, "mme");
  const tl::Protocol vcd = tl::resolve_protocol("vcd", tl::Benchmark::Pope, "llava");
  EXPECT_EQ(vcd.sampling.alpha, 1.0);
  EXPECT_EQ(vcd.sampling.beta, 0.2);
  EXPECT_EQ(vcd.seeds, std::vector<std::uint64_t>{55});
  EXPECT_EQ(tl::resolve_protocol("vcd", tl::Benchmark::Mme, "instructblip").sampling.alpha, 0.5);
  const tl::Protocol greedy = tl::resolve_protocol("greedy", tl::Benchmark::Chair, "llava");
  EXPECT_TRUE(greedy.sampling.greedy);
  EXPECT_EQ(greedy.instruction, "Please describe this image in detail.");
  EXPECT_EQ(greedy.max_new_tokens, 512);
  EXPECT_EQ(tl::resolve_protocol("greedy-64", tl::Benchmark::Chair, "llava").max_new_tokens, 64);
  EXPECT_THROW(tl::resolve_protocol("greedy-64", tl::Benchmark::Pope, "llava"), agla::InvalidArgument);
  EXPECT_THROW(tl::resolve_protocol("opera", tl::Benchmark::Pope, "llava"), agla::InvalidArgument);

  // Explicit options win and are recorded; alpha/beta are pinned only for the protocol's methods.
  tl::RunSettings settings;
  settings.instruction = "{question}";
  settings.sampling.top_k = 7;
  nlohmann::json record = tl::apply_protocol(agla, {"--top-k"}, "regular", tl::Benchmark::Pope, "llava", settings);
  EXPECT_EQ(settings.sampling.top_k, 7);
  EXPECT_FALSE(settings.sampling.alpha.has_value());
  EXPECT_EQ(settings.instruction, agla.instruction);
  EXPECT_EQ(record["overridden"], nlohmann::json::parse(R"(["--top-k"])"));
  EXPECT_EQ(record["alpha"], nullptr);
  tl::RunSettings agla_settings;
  record = tl::apply_protocol(agla, {}, "agla-released", tl::Benchmark::Pope, "llava", agla_settings);
  EXPECT_EQ(agla_settings.sampling.alpha, 2.0);
  EXPECT_EQ(record["name"], "agla");
  EXPECT_EQ(tl::apply_protocol(std::nullopt, {}, "agla", tl::Benchmark::Pope, "llava", agla_settings)["name"],
            "custom");

  EXPECT_EQ(tl::drop_incomplete_sentence("A cat on a mat. A dog is"), "A cat on a mat.");
  EXPECT_EQ(tl::drop_incomplete_sentence("A cat on a"), "A cat on a");
}

TEST(ProtocolTest, AglaPopeRecordsItsProtocol) {
  const std::string dir = temp_dir("pope_protocol");
  write_shapesworld_eval_set(dir, 2, 1);
  const std::string questions = dir + "/shapesworld_pope_random.jsonl";
  const Output o = pope({"--questions", questions, "--lvlm", kShippedLvlm, "--method", "regular", "--protocol", "vcd",
                         "--max-new-tokens", "4", "--answers", dir + "/answers.jsonl", "--results",
                         dir + "/results.jsonl", "--threads", "1", "--quiet", "--json"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json summary = nlohmann::json::parse(o.out);
  EXPECT_EQ(summary["protocol"]["name"], "vcd");
  EXPECT_EQ(summary["protocol"]["seed"], 55);
  EXPECT_EQ(summary["seed"], 55);
  EXPECT_EQ(summary["protocol"]["parser"], "substring");
  EXPECT_EQ(summary["protocol"]["alpha"], nullptr);  // the regular method has no fusion weight to pin
  for (const nlohmann::json& line : read_lines(dir + "/answers.jsonl"))
    EXPECT_EQ(line["metadata"]["protocol"], summary["protocol"]);
  EXPECT_EQ(read_lines(dir + "/results.jsonl")[0]["protocol"], summary["protocol"]);
  // --evaluate takes the protocol's parser.
  const Output scored = pope({"--evaluate", questions, dir + "/answers.jsonl", "--protocol", "vcd", "--json"});
  ASSERT_EQ(scored.status, 0) << scored.err;
  EXPECT_EQ(nlohmann::json::parse(scored.out)["parser"], "substring");
  const Output help = pope({"--help"});
  EXPECT_NE(help.out.find("--protocol NAME"), std::string::npos);
  const Output bad = pope({"--questions", questions, "--lvlm", kShippedLvlm, "--protocol", "greedy-64"});
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("CHAIR only"), std::string::npos) << bad.err;
}
