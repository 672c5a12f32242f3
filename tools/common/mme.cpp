// agla_mme: runs an LVLM with one decoding method over the MME benchmark's own layout, writes the
// official evaluation tool's results files and scores them as its calculation.py does; scores
// results folders made elsewhere (--evaluate).

#include "agla/eval/mme.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/runner.hpp"
#include "common/cli.hpp"
#include "common/data.hpp"
#include "common/methods.hpp"
#include "common/models.hpp"
#include "common/programs.hpp"
#include "common/protocols.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

const std::string kProgram = "agla_mme";
const std::string kQuestionKey = "{question}";

struct Options {
  bool evaluate = false;
  std::string benchmark, results = "mme_results", evaluate_dir;
  std::vector<std::string> subtasks;
  RunOptions run;
  std::set<std::string> given;  // the options named on the command line (they override a protocol)
};

std::vector<std::string> parse_subtasks(const std::string& text) {
  if (text == "all") return eval::mme_subtasks();
  if (text == "hallucination") return eval::mme_hallucination_subtasks();
  std::vector<std::string> names;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string name = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    check<InvalidArgument>(eval::is_mme_subtask(name), kProgram, ": --subtasks: unknown subtask '", name,
                           "'; expected 'all', 'hallucination' or a comma-separated list of existence, count, "
                           "position, color, posters, celebrity, scene, landmark, artwork, OCR, "
                           "commonsense_reasoning, numerical_calculation, text_translation, code_reasoning");
    check<InvalidArgument>(std::find(names.begin(), names.end(), name) == names.end(), kProgram,
                           ": --subtasks: '", name, "' repeats");
    names.push_back(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return names;
}

/// The options of a run; nullopt for --help.
std::optional<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  o.run.settings.instruction = kQuestionKey;
  o.run.settings.parser = "mme";
  OptionParser parser(kProgram);
  parser.text("--evaluate", o.evaluate_dir).text("--benchmark", o.benchmark);
  parser.value("--subtasks", [&](const std::string& v) { o.subtasks = parse_subtasks(v); }).text("--results", o.results);
  parser.value("--question-template", [&](const std::string& v) {
    check<InvalidArgument>(v.find(kQuestionKey) != std::string::npos,
                           "agla_mme: --question-template must contain {question}; got '", v, "'");
    o.run.settings.instruction = v;
  });
  parser.group([&](const std::string& arg, ArgCursor& cursor) { return parse_run_option(arg, cursor, o.run); });
  if (!parser.parse(args)) return std::nullopt;
  o.given = parser.given();
  o.evaluate = parser.named("--evaluate");
  check<InvalidArgument>(o.evaluate != parser.named("--benchmark"),
                         "agla_mme: give exactly one of --benchmark DIR (run) or --evaluate RESULTS_DIR (see --help)");
  check_run_options(kProgram, o.run);
  return o;
}

int run_benchmark(Options o, std::ostream& out, std::ostream& err) {
  namespace fs = std::filesystem;
  if (o.subtasks.empty()) {
    std::error_code ec;
    for (const std::string& name : eval::mme_subtasks())
      if (fs::is_directory(fs::path(o.benchmark) / name, ec)) o.subtasks.push_back(name);
    check<FormatError>(!o.subtasks.empty(), kProgram, ": --benchmark: no subtask folder (existence, count, ...) in '",
                       o.benchmark, "'",
                       fs::is_directory(fs::path(o.benchmark) / "MME_Benchmark", ec)
                           ? "; they are in " + (fs::path(o.benchmark) / "MME_Benchmark").string()
                           : std::string());
  }
  std::vector<eval::MmeQuestion> questions = eval::read_mme_benchmark(o.benchmark, o.subtasks);
  std::size_t images = questions.size() / 2;  // two consecutive questions per image
  if (o.run.limit && static_cast<std::size_t>(*o.run.limit) < images)
    images = static_cast<std::size_t>(*o.run.limit);
  const eval::ChunkRange chunk = eval::chunk_range(images, o.run.num_chunks, o.run.chunk_idx);

  RunOptions& r = o.run;
  const PreparedRun prepared = prepare_run(kProgram, r, o.given, Benchmark::Mme);
  const nlohmann::json& record = prepared.record;
  const std::string& model_id = prepared.model_id;
  ItemGenerator generator(prepared.generator, err);

  make_directory(kProgram, o.results);
  eval::AnswerWriter writer((fs::path(o.results) / "answers.jsonl").string());
  std::optional<eval::ProgressBar> bar;
  if (!r.quiet) bar.emplace(chunk.size() * 2, err, "agla_mme " + std::string(method_name(r.method)));
  std::vector<eval::MmeQuestion> asked;
  std::vector<eval::ModelAnswer> answers;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t q = chunk.begin * 2; q < chunk.end * 2; ++q) {
    const eval::MmeQuestion& question = questions[q];
    std::string instruction = r.settings.instruction;
    instruction.replace(instruction.find(kQuestionKey), kQuestionKey.size(), question.question);
    Generation answer = generator.generate(Item{question.image_path, instruction, {}, question.question, q, {}});
    eval::AnswerRecord a;
    a.question_id = question.id();
    a.prompt = question.question;
    a.text = answer.text;
    a.model_id = model_id;
    a.image = question.subtask + "/" + question.image;
    a.metadata = std::move(answer.metadata);
    a.metadata["protocol"] = record;
    writer.write(a);
    asked.push_back(question);
    answers.push_back(eval::ModelAnswer{question.id(), answer.text, 0});
    if (bar) bar->advance();
  }
  if (bar) bar->finish();
  generator.warn_unknown_words(err, chunk.size() * 2);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  eval::write_mme_results(o.results, asked, answers);

  nlohmann::json run = generator.run_record(prepared, r, seconds);
  run["benchmark"] = o.benchmark;
  run["images"] = chunk.size();
  run["questions"] = chunk.size() * 2;
  run["results"] = o.results;
  run["seconds_per_1000_questions"] = chunk.size() > 0 ? seconds * 500.0 / chunk.size() : 0.0;
  {
    const std::string path = (fs::path(o.results) / "run.json").string();
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file << run.dump(2) << "\n";
    check<FormatError>(file.good(), kProgram, ": cannot write '", path, "'");
  }
  if (r.num_chunks > 1 || chunk.size() == 0) {
    if (r.json) {
      out << nlohmann::json{{"run", run}}.dump() << "\n";
      return 0;
    }
    out << "agla_mme: wrote " << chunk.size() * 2 << " answers (chunk " << r.chunk_idx << " of " << r.num_chunks
        << ") to " << o.results << "; concatenate the chunks' <subtask>.txt files and score them with agla_mme "
        << "--evaluate DIR\n";
    return 0;
  }
  if (!generator.has_tokenizer()) {
    const std::string why = "answers are token ids (the LVLM has no tokenizer); not scored";
    if (r.json)
      out << nlohmann::json{{"run", run}, {"not_scored", why}}.dump() << "\n";
    else
      out << why << "\n";
    return 0;
  }
  const eval::MmeReport report = eval::evaluate_mme_results(o.results);
  if (r.json) {
    nlohmann::json j = eval::to_json(report);
    j["run"] = run;
    out << j.dump() << "\n";
  } else {
    out << eval::format_mme_report(report)
        << run_summary_line(prepared, chunk.size() * 2, "questions", seconds)
        << "Results: " << o.results << "\n";
  }
  return 0;
}

/// Runs the mode the options chose.
int run(const Options& o, std::ostream& out, std::ostream& err) {
  if (!o.evaluate) return run_benchmark(o, out, err);
  use_threads(o.run.threads, 0);
  print_report(out, o.run.json, eval::evaluate_mme_results(o.evaluate_dir), eval::format_mme_report);
  return 0;
}

}  // namespace

int run_mme(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_program(kProgram, args, out, err, parse_options, run);
}

}  // namespace agla::tools
