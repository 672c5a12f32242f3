// agla_pope: the POPE / CHAIR benchmark tool.
//
// Evaluate-only mode: scores an answers jsonl file (question_id, text; as the reference scripts and
// this tool's run mode write them) against a ground-truth file:
//   - a POPE question file (question_id, label "yes"/"no"): accuracy, precision, recall, F1,
//     yes-ratio, false-positive rate and the counts, with POPE's answer parser (default) or the
//     AGLA/VCD scripts' substring parser; ShapesWorld's contrast file adds the metrics with the
//     partner present and absent;
//   - a caption ground-truth file (question_id, objects): CHAIR_i, CHAIR_s and recall over the
//     ShapesWorld class vocabulary.
//
//   agla_pope --evaluate GT.jsonl ANSWERS.jsonl [--parser pope|substring] [--json]
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/chair.hpp"
#include "agla/eval/jsonl.hpp"
#include "agla/eval/pope.hpp"
#include "agla/runtime.hpp"
#include "agla/shapesworld/world.hpp"

namespace {

void usage(std::ostream& out) {
  out << "usage: agla_pope --evaluate GT.jsonl ANSWERS.jsonl [--parser pope|substring] [--json]\n"
         "  --evaluate GT ANSWERS  score an answers file (question_id, text) against a POPE question file\n"
         "                         (question_id, label) or a caption file (question_id, objects: CHAIR)\n"
         "  --parser NAME          pope (default): POPE's evaluate.py -- first sentence, 'no' if it has the\n"
         "                         word No/no/not, else 'yes'; substring: the AGLA/VCD scripts -- 'yes' in the\n"
         "                         answer for yes-questions, 'no' in the answer for no-questions\n"
         "  --json                 print one JSON object instead of text\n"
         "  --threads N            intra-op threads (0 = all cores; default 1)\n";
}

struct Options {
  std::string ground_truth;
  std::string answers;
  agla::eval::AnswerParser parser = agla::eval::AnswerParser::Pope;
  bool json = false;
  int threads = 1;
};

Options parse_options(int argc, char** argv) {
  Options options;
  bool evaluate = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      agla::check<agla::InvalidArgument>(i + 1 < argc, "agla_pope: ", arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      usage(std::cout);
      std::exit(0);
    } else if (arg == "--evaluate") {
      agla::check<agla::InvalidArgument>(i + 2 < argc, "agla_pope: --evaluate needs GT.jsonl and ANSWERS.jsonl");
      options.ground_truth = argv[++i];
      options.answers = argv[++i];
      evaluate = true;
    } else if (arg == "--parser") {
      options.parser = agla::eval::parse_answer_parser(value());
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--threads") {
      const std::string v = value();
      char* end = nullptr;
      options.threads = static_cast<int>(std::strtol(v.c_str(), &end, 10));
      agla::check<agla::InvalidArgument>(!v.empty() && *end == '\0', "agla_pope: --threads expects an integer; got '",
                                         v, "'");
    } else {
      usage(std::cerr);
      throw agla::InvalidArgument("agla_pope: unknown option '" + arg + "'");
    }
  }
  if (!evaluate) {
    usage(std::cerr);
    throw agla::InvalidArgument(
        "agla_pope: no mode given; this build provides the evaluate-only mode (--evaluate GT.jsonl ANSWERS.jsonl)");
  }
  return options;
}

// A caption ground-truth file lists objects per image; a POPE file labels questions.
bool is_caption_file(const std::string& path) {
  const std::vector<agla::eval::JsonLine> lines = agla::eval::read_jsonl(path, "agla_pope");
  agla::check<agla::FormatError>(!lines.empty(), "agla_pope: ", path, ": no lines");
  return lines.front().value.contains("objects") && !lines.front().value.contains("label");
}

int run_evaluate(const Options& options) {
  if (is_caption_file(options.ground_truth)) {
    std::vector<std::string> names(agla::shapesworld::kShapeNames.begin(), agla::shapesworld::kShapeNames.end());
    const agla::eval::ChairMetrics metrics = agla::eval::evaluate_chair_files(
        options.ground_truth, options.answers, agla::eval::ChairVocabulary::from_names(names));
    if (options.json)
      std::cout << agla::eval::to_json(metrics).dump() << '\n';
    else
      std::cout << agla::eval::format_chair(metrics);
    return 0;
  }
  const agla::eval::PopeReport report =
      agla::eval::evaluate_pope_files(options.ground_truth, options.answers, options.parser);
  if (options.json)
    std::cout << agla::eval::to_json(report).dump() << '\n';
  else
    std::cout << agla::eval::format_report(report);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse_options(argc, argv);
    agla::configure_threads(options.threads);
    return run_evaluate(options);
  } catch (const std::exception& e) {
    std::cerr << e.what() << '\n';
    return 1;
  }
}
