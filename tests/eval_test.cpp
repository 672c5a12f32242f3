// MME scoring (the official calculation.py rules) and CHAIR on COCO (the reference chair.py
// rules), on small benchmark trees, results folders and annotation files the tests write; the
// expected values are worked out by hand in the comments.
#include "agla/eval.hpp"
#include "support/expect.hpp"
#include "support/scratch.hpp"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ev = agla::eval;
namespace fs = std::filesystem;

namespace {

using agla::test::error_message;
using agla::test::read;
using agla::test::write;

std::string temp_dir(const std::string& name) {
  return agla::test::fresh_dir(fs::temp_directory_path(), "agla_eval_test_" + name);
}

}  // namespace

TEST(MmeTest, ParsesPredictionsAsCalculationPy) {
  using ev::MmeAnswer;
  EXPECT_EQ(ev::mme_answer("Yes\n"), MmeAnswer::Yes);
  EXPECT_EQ(ev::mme_answer("yes"), MmeAnswer::Yes);  // last line of a file: no line ending
  EXPECT_EQ(ev::mme_answer("NO\n"), MmeAnswer::No);
  EXPECT_EQ(ev::mme_answer("No, there is none.\n"), MmeAnswer::No);
  EXPECT_EQ(ev::mme_answer(" yes\n"), MmeAnswer::Yes);     // " yes" is within four characters
  EXPECT_EQ(ev::mme_answer("  yes\n"), MmeAnswer::Other);  // "  ye"
  EXPECT_EQ(ev::mme_answer("The answer is yes.\n"), MmeAnswer::Other);
  EXPECT_EQ(ev::mme_answer("nope\n"), MmeAnswer::No);
  EXPECT_EQ(ev::mme_answer("I don't know\n"), MmeAnswer::Other);  // "i do"
  EXPECT_EQ(ev::mme_answer("know\n"), MmeAnswer::No);             // contains "no"
  EXPECT_EQ(ev::mme_answer("Yesterday\n"), MmeAnswer::Yes);
  EXPECT_EQ(ev::mme_answer("\n"), MmeAnswer::Other);  // a missing answer
  EXPECT_EQ(ev::mme_answer(""), MmeAnswer::Other);
  // Four characters, not bytes: "é no" holds "no" in its first four characters (five bytes).
  EXPECT_EQ(ev::mme_answer("\xC3\xA9 no\n"), MmeAnswer::No);
  // Python lower-cases U+0130 into two characters, pushing "no" out of the first four.
  EXPECT_EQ(ev::mme_answer("\xC4\xB0 no\n"), MmeAnswer::Other);
  EXPECT_EQ(ev::mme_answer("\xC4\xB0no\n"), MmeAnswer::No);
}

TEST(MmeTest, PrintsScoresAsPython) {
  EXPECT_EQ(ev::python_float_repr(195.0), "195.0");
  EXPECT_EQ(ev::python_float_repr(1.0 / 3.0 * 100), "33.33333333333333");
  EXPECT_EQ(ev::python_float_repr(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(ev::python_float_repr(0.0), "0.0");
  EXPECT_EQ(ev::python_float_repr(1e16), "1e+16");
  EXPECT_EQ(ev::python_float_repr(1.5e-5), "1.5e-05");
  EXPECT_EQ(ev::python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(ev::python_float_repr(123456789012345680.0), "1.2345678901234568e+17");
  EXPECT_EQ(ev::python_float_repr(-2.5), "-2.5");
}

TEST(MmeTest, ReadsBothBenchmarkLayouts) {
  const fs::path root = temp_dir("mme_tree");
  // existence: images and question files side by side.
  write(root / "existence" / "0002.png", "png");
  write(root / "existence" / "0002.txt",
        "Is there a dog? Please answer yes or no.\tYes\nIs there a cat? Please answer yes or no.\tNo\n");
  write(root / "existence" / "0001.jpg", "jpg");
  write(root / "existence" / "0001.txt",
        "Is there a car?  Please answer yes or no.\tNo\r\nIs there a bus? Please answer yes or no.\tyes \r\n\n");
  // artwork: images/ and questions_answers_YN/.
  write(root / "artwork" / "images" / "10002.jpg", "jpg");
  write(root / "artwork" / "questions_answers_YN" / "10002.txt", "Is it a painting?\tYes\nIs it glassware?\tNo\n");

  const std::vector<ev::MmeQuestion> qs = ev::read_mme_benchmark(root.string(), {"artwork", "existence"});
  ASSERT_EQ(qs.size(), 6u);
  // The tool's subtask order (existence before artwork), images by name, questions in file order.
  EXPECT_EQ(qs[0].id(), "existence/0001.jpg/1");
  EXPECT_EQ(qs[0].question, "Is there a car?  Please answer yes or no.");
  EXPECT_EQ(qs[0].label, ev::Answer::No);
  EXPECT_EQ(qs[1].ground_truth, "yes");
  EXPECT_EQ(qs[1].label, ev::Answer::Yes);
  EXPECT_EQ(qs[2].id(), "existence/0002.png/1");
  EXPECT_EQ(qs[4].id(), "artwork/10002.jpg/1");
  EXPECT_EQ(qs[4].image_path, (root / "artwork" / "images" / "10002.jpg").string());
  EXPECT_EQ(qs[5].label, ev::Answer::No);

  EXPECT_NE(error_message([&] { ev::read_mme_benchmark(root.string(), {"count"}); }).find("no subtask folder"),
            std::string::npos);
  EXPECT_THROW(ev::read_mme_benchmark(root.string(), {"colour"}), agla::InvalidArgument);
  write(root / "color" / "1.jpg", "jpg");
  write(root / "color" / "1.txt", "Is it red?\tYes\nIs it blue? No\n");
  const std::string bad_line = error_message([&] { ev::read_mme_benchmark(root.string(), {"color"}); });
  EXPECT_NE(bad_line.find((root / "color" / "1.txt").string() + ":2:"), std::string::npos) << bad_line;
  write(root / "color" / "1.txt", "Is it red?\tYes\nIs it blue?\tNo\nIs it green?\tNo\n");
  EXPECT_NE(error_message([&] { ev::read_mme_benchmark(root.string(), {"color"}); }).find("two questions per image"),
            std::string::npos);
  write(root / "color" / "2.txt", "Is it red?\tYes\nIs it blue?\tNo\n");
  fs::remove(root / "color" / "1.txt");
  EXPECT_NE(error_message([&] { ev::read_mme_benchmark(root.string(), {"color"}); }).find("no image named '2.*'"),
            std::string::npos);
}

TEST(MmeTest, WritesResultsInTheToolFormatAndScoresThem) {
  const fs::path root = temp_dir("mme_write");
  write(root / "tree" / "count" / "a.jpg", "jpg");
  write(root / "tree" / "count" / "a.txt", "Two dogs?\tYes\nThree dogs?\tNo\n");
  write(root / "tree" / "count" / "b.jpg", "jpg");
  write(root / "tree" / "count" / "b.txt", "One cat?\tNo\nTwo cats?\tYes\n");
  const std::vector<ev::MmeQuestion> qs = ev::read_mme_benchmark((root / "tree").string(), {"count"});
  // a/1 right, a/2 right (tab and newline inside become spaces), b/1 wrong, b/2 missing.
  const std::vector<ev::ModelAnswer> answers{
      {"count/a.jpg/1", "Yes", 1}, {"count/a.jpg/2", "No\tthere\nare two", 2}, {"count/b.jpg/1", "Yes", 3}};
  EXPECT_EQ(ev::write_mme_results((root / "results").string(), qs, answers), 1u);
  EXPECT_EQ(read(root / "results" / "count.txt"),
            "a.jpg\tTwo dogs?\tYes\tYes\n"
            "a.jpg\tThree dogs?\tNo\tNo there are two\n"
            "b.jpg\tOne cat?\tNo\tYes\n"
            "b.jpg\tTwo cats?\tYes\t\n");
  const ev::MmeReport report = ev::evaluate_mme_results((root / "results").string());
  ASSERT_EQ(report.subtasks.size(), 1u);
  const ev::MmeSubtaskScore& s = report.subtasks[0];
  EXPECT_EQ(s.correct, 2);
  EXPECT_EQ(s.other, 1);  // the missing answer
  EXPECT_DOUBLE_EQ(s.acc, 0.5);
  EXPECT_DOUBLE_EQ(s.acc_plus, 0.5);
  EXPECT_DOUBLE_EQ(s.score, 100.0);
  EXPECT_THROW(ev::write_mme_results((root / "results").string(), qs, {{"count/c.jpg/1", "Yes", 1}}),
               agla::FormatError);
  EXPECT_THROW(
      ev::write_mme_results((root / "results").string(), qs, {{"count/a.jpg/1", "Yes", 1}, {"count/a.jpg/1", "No", 2}}),
      agla::FormatError);
}

TEST(MmeTest, ScoresAResultsFolderByHand) {
  const fs::path dir = temp_dir("mme_results");
  // existence, 3 images: img1 both right; img2 one wrong (tie: one of two right, no acc+);
  // img3 two `other` answers ("  yes" and "I don't know"). acc = 3/6, acc+ = 1/3,
  // score = 50 + 33.33333333333333 = 83.33333333333333.
  write(dir / "existence.txt",
        "1.jpg\tDog?\tYes\tYes\n1.jpg\tCat?\tNo\tNo\n"
        "2.jpg\tDog?\tYes\tno, there is not\n2.jpg\tCat?\tNo\tNo\n"
        "3.jpg\tDog?\tYes\t  yes\n3.jpg\tCat?\tNo\tI don't know\n");
  // count, CRLF endings and no ending on the last line: 3 of 4 right, 1 of 2 images:
  // 75 + 50 = 125.0.
  write(dir / "count.txt", "a.jpg\tq\tYes\tYes\r\na.jpg\tq\tNo\tno\r\nb.jpg\tq\tNo\tYes, two\r\nb.jpg\tq\tyes\tyes");
  write(dir / "position.txt", "p.jpg\tq\tYes\tYes\np.jpg\tq\tNo\tNo\n");        // 200.0
  write(dir / "code_reasoning.txt", "c.png\tq\tYes\tNo\nc.png\tq\tNo\tYes\n");  // 0.0
  write(dir / "notes.md", "not a subtask");

  const ev::MmeReport report = ev::evaluate_mme_results(dir.string());
  ASSERT_EQ(report.subtasks.size(), 4u);
  EXPECT_EQ(report.subtasks[0].name, "existence");
  EXPECT_EQ(report.subtasks[0].correct, 3);
  EXPECT_EQ(report.subtasks[0].both_correct, 1);
  EXPECT_EQ(report.subtasks[0].other, 2);
  EXPECT_DOUBLE_EQ(report.subtasks[0].acc, 0.5);
  EXPECT_DOUBLE_EQ(report.subtasks[0].acc_plus, 1.0 / 3.0);
  EXPECT_EQ(ev::python_float_repr(report.subtasks[0].score), "83.33333333333333");
  EXPECT_EQ(report.subtasks[1].name, "count");
  EXPECT_EQ(report.subtasks[1].score, 125.0);
  EXPECT_EQ(report.subtasks[2].score, 200.0);
  EXPECT_EQ(report.subtasks[3].name, "code_reasoning");
  EXPECT_EQ(report.subtasks[3].score, 0.0);
  // Totals in the tool's order from 0: ((0 + 83.33333333333333) + 125) + 200.
  ASSERT_TRUE(report.perception && report.hallucination && report.cognition);
  EXPECT_EQ(ev::python_float_repr(*report.perception), "408.3333333333333");
  EXPECT_EQ(ev::python_float_repr(*report.hallucination), "408.3333333333333");
  EXPECT_EQ(*report.cognition, 0.0);
  EXPECT_EQ(report.ignored, std::vector<std::string>{"notes.md"});

  const nlohmann::json j = ev::to_json(report);
  EXPECT_DOUBLE_EQ(j["subtasks"]["existence"]["acc"].get<double>(), 0.5);
  EXPECT_EQ(j["subtasks"]["existence"]["other"].get<long long>(), 2);
  EXPECT_EQ(j["subtasks"]["count"]["score"].get<double>(), 125.0);
  EXPECT_EQ(j["hallucination"].get<double>(), *report.hallucination);
  EXPECT_FALSE(j["subtasks"].contains("color"));

  const std::string text = ev::format_mme_report(report);
  EXPECT_NE(text.find("=========== Perception ===========\ntotal score: 408.3333333333333 \n\n"
                      "\t existence  score: 83.33333333333333\n\t count  score: 125.0\n\t position  score: 200.0\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("=========== Cognition ===========\ntotal score: 0.0 \n\n\t code_reasoning  score: 0.0\n"),
            std::string::npos);
  EXPECT_NE(text.find("total 408.3333333333333"), std::string::npos);

  // Only cognition present: perception and hallucination are absent (null in JSON).
  const fs::path cognition = temp_dir("mme_cognition");
  write(cognition / "text_translation.txt", "t.png\tq\tYes\tYes\nt.png\tq\tNo\tNo\n");
  const nlohmann::json only = ev::to_json(ev::evaluate_mme_results(cognition.string()));
  EXPECT_TRUE(only["perception"].is_null());
  EXPECT_TRUE(only["hallucination"].is_null());
  EXPECT_EQ(only["cognition"].get<double>(), 200.0);
}

TEST(MmeTest, RejectsMalformedResultsNamingFileAndLine) {
  const fs::path dir = temp_dir("mme_bad");
  const std::string file = (dir / "color.txt").string();
  const auto error = [&](const std::string& content) {
    write(file, content);
    return error_message([&] { ev::evaluate_mme_results(dir.string()); });
  };
  EXPECT_NE(error("a\tq\tYes\tYes\na\tq\tNo\tNo\nb\tq\tYes\tYes\n").find(file + ":3: the second question"),
            std::string::npos);
  EXPECT_NE(error("a\tq\tYes\tYes\na\tq\tNo\n").find(file + ":2: expected 4 tab-separated fields"), std::string::npos);
  EXPECT_NE(error("a\tq\tYes\tYes\ta\tq\tNo\tNo\n").find(file + ":1:"), std::string::npos);
  EXPECT_NE(error("a\tq\tYes \tYes\na\tq\tNo\tNo\n").find(file + ":1: ground truth"), std::string::npos);
  EXPECT_NE(error("a\tq\tYes\tYes\n\na\tq\tNo\tNo\n").find(file + ":2:"), std::string::npos);  // blank line
  EXPECT_NE(error("a\tq\tYes\tYes\na\tq\tNo\tN\xFF\n").find(file + ":2: not valid UTF-8"), std::string::npos);
  EXPECT_NE(error("").find("no lines"), std::string::npos);
  // A lone carriage return ends a line, as in Python's text mode.
  EXPECT_NE(error("a\tq\tYes\tYes\ra\tq\tNo\tNo\rc\n").find(file + ":3:"), std::string::npos);
  fs::remove(file);
  EXPECT_NE(error_message([&] { ev::evaluate_mme_results(dir.string()); }).find("no results files"), std::string::npos);
}

TEST(ChairWordsTest, TokenizesAsNltk) {
  // Expected lists from NLTK 3.8 (Punkt sentences, then NLTKWordTokenizer) on the lower-cased text.
  EXPECT_EQ(ev::word_tokenize("a man's dog, sitting (on) a bench. the dogs' toys aren't here; \"cannot\" wait..."),
            (std::vector<std::string>{"a",    "man",   "'s", "dog", ",",    "sitting", "(",    "on",  ")",
                                      "a",    "bench", ".",  "the", "dogs", "'",       "toys", "are", "n't",
                                      "here", ";",     "``", "can", "not",  "''",      "wait", "..."}));
  EXPECT_EQ(ev::word_tokenize("two hot-dogs: 3,000 cups/mugs & 'bout 2.5 kg!"),
            (std::vector<std::string>{"two", "hot-dogs", ":", "3,000", "cups/mugs", "&", "'bout", "2.5", "kg", "!"}));
  // Without a sentence break the treebank rules keep a non-final period on its word.
  EXPECT_EQ(ev::treebank_tokenize("a dog. a cat."), (std::vector<std::string>{"a", "dog.", "a", "cat", "."}));
  EXPECT_EQ(ev::split_sentences("a dog. a cat? e.g. a bus... a car."),
            (std::vector<std::string>{"a dog.", "a cat?", "e.g. a bus... a car."}));
}

namespace {

// A tiny WordNet database in the files' own format (licence lines start with a space).
std::string write_wordnet(const fs::path& dir) {
  const std::string header = "  1 This software and database is being provided to you, the LICENSEE\n";
  std::string nouns = header;
  for (const char* w :
       {"adult",   "baby",  "bathroom", "bear",  "bike",  "cat",   "cell",      "chair",  "desk",   "dog",   "glass",
        "glasses", "grass", "hot",      "man",   "motor", "mouse", "passenger", "people", "person", "phone", "puppy",
        "seat",    "ski",   "suit",     "table", "teddy", "tie",   "toilet",    "track",  "train",  "wine"})
    nouns += std::string(w) + " n 1 0 1 0 00000000\n";
  write(dir / "index.noun", nouns);
  write(dir / "noun.exc", "mice mouse\nmen man\n");
  std::string verbs = header;
  for (const char* w : {"bear", "seat", "sit", "ski", "tie", "train", "wear"})
    verbs += std::string(w) + " v 1 0 1 0 00000000\n";
  write(dir / "index.verb", verbs);
  write(dir / "verb.exc", "bore bear\nsat sit\n");
  return dir.string();
}

const char* kSynonyms =
    "person, girl, boy, man, woman, people, baby, adult, passenger\n"
    "dog, puppy\n"
    "bear, panda\n"
    "teddy bear, teddybear\n"
    "motorcycle, scooter,  motor bike, motorbike\n"
    "hot dog\n"
    "tie, bow, bow tie\n"
    "chair, seat, stool\n"
    "toilet, urinal\n"
    "dining table, table, desk\n"
    "skis, ski\n"
    "mouse\n"
    "train, locomotive\n"
    "wine glass\n"
    "cell phone, phone\n";

}  // namespace

TEST(ChairWordsTest, LemmatizesWithWordNetMorphy) {
  const ev::WordNetMorphy wn = ev::WordNetMorphy::load(write_wordnet(temp_dir("wordnet")));
  using ev::WordNetPos;
  EXPECT_EQ(wn.lemmatize("dogs", WordNetPos::Noun), "dog");
  EXPECT_EQ(wn.lemmatize("glasses", WordNetPos::Noun), "glass");  // "glasses" and "glass": the shorter
  EXPECT_EQ(wn.lemmatize("mice", WordNetPos::Noun), "mouse");     // exception list
  EXPECT_EQ(wn.lemmatize("skis", WordNetPos::Noun), "ski");
  EXPECT_EQ(wn.lemmatize("puppies", WordNetPos::Noun), "puppy");  // ies -> y
  EXPECT_EQ(wn.lemmatize("tied", WordNetPos::Noun), "tied");      // no noun form
  EXPECT_EQ(wn.lemmatize("tied", WordNetPos::Verb), "tie");
  EXPECT_EQ(wn.lemmatize("skiing", WordNetPos::Verb), "ski");
  EXPECT_EQ(wn.lemmatize("bore", WordNetPos::Verb), "bear");
  EXPECT_EQ(wn.lemmatize("zzzs", WordNetPos::Noun), "zzzs");  // nothing in WordNet: the word itself
  EXPECT_EQ(wn.lemmatize(std::string(5000, 's') + "es", WordNetPos::Verb), std::string(5000, 's') + "es");
  EXPECT_NE(error_message([] { ev::WordNetMorphy::load(temp_dir("no_wordnet")); }).find("index.noun"),
            std::string::npos);
}

namespace {

// COCO-style annotation files for six images (see CocoChairTest.ScoresCaptionsByHand).
void write_coco(const fs::path& dir) {
  write(dir / "instances.json", R"({"info": {"year": 2014}, "images": [{"id": 1, "file_name": "x.jpg"}],
    "annotations": [
      {"segmentation": [[1.5, 2.0, 3.0, 4.0]], "area": 10.0, "iscrowd": 0, "image_id": 1, "bbox": [1, 2, 3, 4], "category_id": 18, "id": 100},
      {"segmentation": {"counts": [1, 2, 3], "size": [4, 5]}, "image_id": 2, "category_id": 23, "id": 101},
      {"image_id": 3, "category_id": 70, "id": 102},
      {"image_id": 4, "category_id": 1, "id": 103}, {"image_id": 4, "category_id": 32, "id": 104},
      {"image_id": 5, "category_id": 18, "id": 105}, {"image_id": 5, "category_id": 67, "id": 106},
      {"image_id": 6, "category_id": 62, "id": 107},
      {"image_id": 99, "category_id": 999, "id": 108}],
    "categories": [{"supercategory": "person", "id": 1, "name": "person"}, {"id": 18, "name": "dog"},
      {"id": 23, "name": "bear"}, {"id": 32, "name": "tie"}, {"id": 62, "name": "chair"},
      {"id": 67, "name": "dining table"}, {"id": 70, "name": "toilet"}]})");
  write(dir / "captions.json", R"({"annotations": [
      {"image_id": 1, "id": 1, "caption": "A dog on the grass."},
      {"image_id": 2, "id": 2, "caption": "A bear eating a hot dog."},
      {"image_id": 3, "id": 3, "caption": "A bathroom with a toilet."},
      {"image_id": 4, "id": 4, "caption": "A man in a suit."},
      {"image_id": 5, "id": 5, "caption": "A dog under a desk."},
      {"image_id": 6, "id": 6, "caption": "Empty chairs."},
      {"image_id": 99, "id": 7, "caption": "Not evaluated."}]})");
}

}  // namespace

TEST(CocoChairTest, ReadsCaptionsAsTheReference) {
  const ev::CocoChair chair(ev::ChairSynonyms::parse(kSynonyms, "synonyms"),
                            ev::WordNetMorphy::load(write_wordnet(temp_dir("wordnet_words"))));
  const auto objects = [&](const std::string& caption) {
    std::vector<std::string> out;
    for (const ev::ChairMention& m : chair.caption_words(caption).mentions) out.push_back(m.word + ">" + m.object);
    return out;
  };
  using V = std::vector<std::string>;
  // Plural and synonym ("puppy" is a dog); "teddy bear" is one object, not a bear.
  EXPECT_EQ(objects("Two dogs and a puppy play near a teddy bear."),
            (V{"dog>dog", "puppy>dog", "teddy bear>teddy bear"}));
  // "baby bear" counts as "bear" (not a person); "motor bike" is listed as " motor bike" after a
  // double space and so mentions nothing; "hot dogs" is a hot dog, not a dog.
  EXPECT_EQ(objects("A baby bear sits on a motor bike next to hot dogs."), (V{"bear>bear", "hot dog>hot dog"}));
  // "toilet seat" is a toilet; then every "seat" (here from "seated", read as a verb) is dropped.
  EXPECT_EQ(objects("The toilet seat is up and a man is seated on a chair."),
            (V{"toilet>toilet", "man>person", "chair>chair"}));
  // "bow tie" is a tie; "skis" a ski; "train tracks" mentions nothing; "mice" is a mouse.
  EXPECT_EQ(objects("A man wearing a bow tie and skis, with train tracks and mice."),
            (V{"man>person", "tie>tie", "ski>skis", "mouse>mouse"}));
  // "tied" after a noun reads as the verb "tie"; "wine glasses" and "cell phone" are two-word objects.
  EXPECT_EQ(objects("A dog tied to a table with wine glasses and a cell phone."),
            (V{"dog>dog", "tie>tie", "table>dining table", "wine glass>wine glass", "cell phone>cell phone"}));
  // After an article "seated" stays an adjective: no chair.
  EXPECT_EQ(objects("The seated people."), (V{"people>person"}));
  EXPECT_EQ(chair.caption_words("The seated people.").length, 4u);
  // 13 tokens, three two-word merges (baby bear, motor bike, hot dog).
  EXPECT_EQ(chair.caption_words("A baby bear sits on a motor bike next to hot dogs.").length, 10u);
}

TEST(CocoChairTest, ScoresCaptionsByHand) {
  const fs::path dir = temp_dir("coco_chair");
  write_coco(dir);
  write(dir / "synonyms.txt", kSynonyms);
  write_wordnet(dir / "wordnet");
  write(dir / "captions.jsonl",
        "{\"image_id\": 1, \"caption\": \"Two dogs and a puppy play near a teddy bear.\"}\n"
        "{\"image_id\": \"COCO_val2014_000000000002.jpg\", \"caption\": \"A baby bear sits on a motor bike next to hot "
        "dogs.\"}\n"
        "{\"image_id\": \"3\", \"caption\": \"The toilet seat is up and a man is seated on a chair.\"}\n"
        "{\"image_id\": 4, \"caption\": \"A man wearing a bow tie and skis, with train tracks and mice.\"}\n"
        "{\"image_id\": 5, \"caption\": \"A dog tied to a table with wine glasses and a cell phone.\"}\n"
        "{\"image_id\": 6, \"caption\": \"The seated people.\"}\n");
  ev::CocoChairFiles files;
  files.captions = (dir / "captions.jsonl").string();
  files.instances = {(dir / "instances.json").string()};
  files.reference_captions = {(dir / "captions.json").string()};
  files.synonyms = (dir / "synonyms.txt").string();
  files.wordnet = (dir / "wordnet").string();
  const ev::CocoChairReport report = ev::evaluate_coco_chair_files(files);
  // Ground truth (instances + reference captions) and the captions' mentions:
  //   1 {dog}:               dog, dog, teddy bear            -> 1 hallucinated, recall 1/1
  //   2 {bear, hot dog}:     bear, hot dog                   -> 0,              recall 2/2
  //   3 {toilet}:            toilet, person, chair           -> 2,              recall 1/1
  //   4 {person, tie}:       person, tie, skis, mouse        -> 2,              recall 2/2
  //   5 {dog, dining table}: dog, tie, dining table, wine glass, cell phone -> 3, recall 2/2
  //   6 {chair}:             person                          -> 1,              recall 0/1
  // CHAIR_s = 5/6, CHAIR_i = 9/18, recall = 8/9.
  const ev::ChairCounts& c = report.metrics.counts;
  EXPECT_EQ(c.captions, 6);
  EXPECT_EQ(c.hallucinated_captions, 5);
  EXPECT_EQ(c.mentions, 18);
  EXPECT_EQ(c.hallucinated_mentions, 9);
  EXPECT_EQ(c.ground_truth_objects, 9);
  EXPECT_EQ(c.recalled_objects, 8);
  EXPECT_DOUBLE_EQ(report.metrics.chair_s, 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(report.metrics.chair_i, 0.5);
  EXPECT_DOUBLE_EQ(report.metrics.recall, 8.0 / 9.0);
  ASSERT_EQ(report.captions.size(), 6u);
  EXPECT_EQ(report.captions[1].image_id, 2);
  EXPECT_EQ(report.captions[1].ground_truth, (std::set<std::string>{"bear", "hot dog"}));
  EXPECT_TRUE(report.captions[1].hallucinated.empty());
  ASSERT_EQ(report.captions[4].hallucinated.size(), 3u);
  EXPECT_EQ(report.captions[4].hallucinated[0].word, "tie");
  EXPECT_EQ(report.captions[5].recalled, std::set<std::string>{});

  const nlohmann::json j = ev::to_json(report);
  EXPECT_DOUBLE_EQ(j["chair_i"].get<double>(), 0.5);
  EXPECT_EQ(j["sentences"][3]["hallucinated"], nlohmann::json::parse(R"([["ski", "skis"], ["mouse", "mouse"]])"));
  EXPECT_FALSE(ev::to_json(report, false).contains("sentences"));
  const std::string text = ev::format_coco_chair(report);
  EXPECT_NE(text.find("CHAIRs    : 83.3\nCHAIRi    : 50.0\nRecall    : 88.9\n"), std::string::npos) << text;
}

TEST(CocoChairTest, RejectsBadInputs) {
  const fs::path dir = temp_dir("coco_chair_bad");
  write_coco(dir);
  const ev::CocoChair chair(ev::ChairSynonyms::parse(kSynonyms, "synonyms"),
                            ev::WordNetMorphy::load(write_wordnet(dir / "wordnet")));
  const std::vector<std::string> instances{(dir / "instances.json").string()};
  const std::vector<std::string> captions{(dir / "captions.json").string()};
  // Image 7 has no reference caption: the wrong annotation files.
  EXPECT_NE(error_message([&] {
              ev::read_coco_ground_truth(instances, captions, {1, 7}, chair);
            }).find("first image_id 7"),
            std::string::npos);
  // Image 99's category 999 is not in "categories".
  EXPECT_NE(error_message([&] { ev::read_coco_ground_truth(instances, captions, {99}, chair); }).find("category_id 999"),
            std::string::npos);
  write(dir / "broken.json", R"({"annotations": [{"image_id": 1, "category_id": 18,)");
  EXPECT_NE(error_message([&] {
              ev::read_coco_ground_truth({(dir / "broken.json").string()}, captions, {1}, chair);
            }).find("not valid JSON"),
            std::string::npos);
  EXPECT_THROW(ev::ChairSynonyms::parse("\n\n", "empty"), agla::FormatError);
  write(dir / "bad.jsonl",
        "{\"image_id\": 1, \"caption\": \"ok\"}\n{\"image_id\": \"val_1.png\", \"caption\": \"x\"}\n");
  EXPECT_NE(error_message([&] {
              ev::read_generated_captions((dir / "bad.jsonl").string());
            }).find((dir / "bad.jsonl").string() + ":2:"),
            std::string::npos);
}

TEST(RunnerTest, GroupedChunksKeepEachImageWholeAndCoverEveryItemOnce) {
  // Images in first-appearance order a, b, c; their items in file order inside each group.
  const std::vector<std::string> keys = {"a", "b", "a", "c", "b", "a", "c"};
  EXPECT_EQ(ev::grouped_chunk(keys, 1, 0), (std::vector<std::size_t>{0, 2, 5, 1, 4, 3, 6}));
  // Two chunks over three groups: ceil(3 / 2) = 2 groups, then 1 (as chunk_range splits items).
  EXPECT_EQ(ev::grouped_chunk(keys, 2, 0), (std::vector<std::size_t>{0, 2, 5, 1, 4}));
  EXPECT_EQ(ev::grouped_chunk(keys, 2, 1), (std::vector<std::size_t>{3, 6}));
  // More chunks than images: the extra chunks are empty.
  EXPECT_TRUE(ev::grouped_chunk(keys, 5, 4).empty());
  EXPECT_TRUE(ev::grouped_chunk({}, 2, 0).empty());
  EXPECT_THROW(ev::grouped_chunk(keys, 2, 2), agla::InvalidArgument);
}
