// agla_pope: runs an LVLM with one decoding method over a POPE-format question file (or
// ShapesWorld's caption split) and scores the answers; scores answer files (--evaluate); turns the
// results of many runs into markdown tables (--summarize).

#include "agla/eval/pope.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/chair.hpp"
#include "agla/eval/jsonl.hpp"
#include "agla/eval/runner.hpp"
#include "agla/shapesworld/world.hpp"
#include "common/cli.hpp"
#include "common/methods.hpp"
#include "common/models.hpp"
#include "common/programs.hpp"
#include "common/protocols.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

const std::string kProgram = "agla_pope";
const std::string kQuestionKey = "{question}";

struct Options {
  enum class Mode { Run, Evaluate, Summarize } mode = Mode::Run;
  RunOptions run;  // protocol, method, models, decoding settings, chunking, output, threads
  std::string questions, image_folder, answers = "answers.jsonl", results;
  std::string ground_truth, summarize;  // evaluate: ground_truth + answers; summarize: results file
  std::string question_template = kQuestionKey + kPopeQuestionSuffix;
  std::string caption_prompt;
  std::optional<std::string> itm_caption_prompt;
  std::optional<std::vector<std::int64_t>> prompt_ids;  // for every item without its own prompt_ids
  std::vector<std::int64_t> qformer_prompt_ids;         // likewise, InstructBLIP's Q-Former ids
  bool image_cache = true;  // --no-image-cache turns the per-image cache of the LVLM off
  eval::AnswerParser parser = eval::AnswerParser::Pope;
  std::set<std::string> given;  // the options named on the command line (they override a protocol)
};

/// The options of a run; nullopt for --help.
std::optional<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  OptionParser parser(kProgram);
  parser.text("--questions", o.questions).text("--summarize", o.summarize);
  parser.group([&](const std::string& arg, ArgCursor& cursor) {
    if (arg != "--evaluate") return false;
    o.ground_truth = cursor.value(arg);
    check<InvalidArgument>(cursor.more(), "agla_pope: --evaluate needs GT.jsonl and ANSWERS.jsonl");
    o.answers = cursor.value(arg);
    return true;
  });
  parser.text("--image-folder", o.image_folder).text("--answers", o.answers).text("--results", o.results);
  parser.value("--question-suffix", [&](const std::string& v) { o.question_template = kQuestionKey + v; });
  parser.value("--question-template", [&](const std::string& v) {
    check<InvalidArgument>(v.find(kQuestionKey) != std::string::npos,
                           "agla_pope: --question-template must contain {question}; got '", v, "'");
    o.question_template = v;
  });
  parser.text("--caption-prompt", o.caption_prompt).text("--itm-caption-prompt", o.itm_caption_prompt);
  parser.ids("--prompt-ids", o.prompt_ids).ids("--qformer-prompt-ids", o.qformer_prompt_ids);
  parser.flag("--no-image-cache", o.image_cache, false);
  parser.value("--parser", [&](const std::string& v) { o.parser = eval::parse_answer_parser(v); });
  parser.group([&](const std::string& arg, ArgCursor& cursor) { return parse_run_option(arg, cursor, o.run); });
  if (!parser.parse(args)) return std::nullopt;
  o.given = parser.given();
  const bool evaluate = parser.named("--evaluate"), summarize = parser.named("--summarize");
  check<InvalidArgument>(evaluate + summarize + parser.named("--questions") == 1,
                         "agla_pope: give exactly one of --questions FILE (run), --evaluate GT ANSWERS or "
                         "--summarize RESULTS (see --help)");
  check<InvalidArgument>(!(parser.named("--question-suffix") && parser.named("--question-template")),
                         "agla_pope: give --question-suffix or --question-template, not both");
  o.mode = evaluate ? Options::Mode::Evaluate : summarize ? Options::Mode::Summarize : Options::Mode::Run;
  check_run_options(kProgram, o.run);
  if (o.run.protocol && !o.given.count("--parser"))
    o.parser = eval::parse_answer_parser(resolve_protocol(*o.run.protocol, Benchmark::Pope, "").parser);
  return o;
}

/// The instruction for `question` under `question_template`.
std::string question_instruction(const std::string& question_template, const std::string& question) {
  std::string text = question_template;
  text.replace(text.find(kQuestionKey), kQuestionKey.size(), question);
  return text;
}

/// The ShapesWorld class names, CHAIR's vocabulary for the caption split.
eval::ChairVocabulary shapesworld_vocabulary() {
  std::vector<std::string> names(shapesworld::kShapeNames.begin(), shapesworld::kShapeNames.end());
  return eval::ChairVocabulary::from_names(names);
}

/// True for a caption ground-truth file (lines with `objects` and no `label`).
bool is_caption_file(const std::vector<eval::JsonLine>& lines) {
  return !lines.empty() && lines.front().value.contains("objects") && !lines.front().value.contains("label");
}

/// One question (or caption item) to run.
struct RunItem {
  nlohmann::json question_id;
  std::string key;    // question_id as a matching key
  std::string image;  // file name relative to the image folder
  std::string text;   // the question (empty for captions)
  std::optional<std::vector<std::int64_t>> prompt_ids, qformer_prompt_ids;
  std::size_t index = 0;  // 0-based position in the file (seeds derive from it)
};

/// Reads the items of a question or caption file; throws `agla::FormatError` naming file and line.
std::vector<RunItem> read_run_items(const std::vector<eval::JsonLine>& lines, const std::string& path, bool captions) {
  std::vector<RunItem> items;
  std::set<std::string> seen;
  for (const eval::JsonLine& line : lines) {
    RunItem item;
    item.index = items.size();
    item.key = eval::id_field(line, path, kProgram);
    item.question_id = line.value.at("question_id");
    item.image = eval::string_field(line, "image", path, kProgram);
    if (!captions) item.text = eval::string_field(line, "text", path, kProgram);
    for (const auto& [field, target] : {std::pair{"prompt_ids", &item.prompt_ids},
                                        std::pair{"qformer_prompt_ids", &item.qformer_prompt_ids}}) {
      const auto it = line.value.find(field);
      if (it == line.value.end()) continue;
      check<FormatError>(it->is_array() && !it->empty() && it->size() <= 4096, kProgram, ": ", path, ":", line.line,
                         ": field \"", field, "\" must be a list of 1 to 4096 token ids");
      std::vector<std::int64_t> ids;
      for (const auto& id : *it) {
        check<FormatError>(id.is_number_integer() && id.get<std::int64_t>() >= 0, kProgram, ": ", path, ":", line.line,
                           ": ", field, " must hold non-negative integers; got ", id.dump());
        ids.push_back(id.get<std::int64_t>());
      }
      *target = std::move(ids);
    }
    check<FormatError>(seen.insert(item.key).second, kProgram, ": ", path, ":", line.line, ": question_id ", item.key,
                       " repeats");
    items.push_back(std::move(item));
  }
  check<FormatError>(!items.empty(), kProgram, ": ", path, ": no questions");
  return items;
}

/// The split name of a question file: its file name without `.jsonl` and ShapesWorld's prefix.
std::string split_name(const std::string& path) {
  std::string name = std::filesystem::path(path).filename().string();
  for (const std::string prefix : {"shapesworld_pope_", "shapesworld_"})
    if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  const auto dot = name.rfind(".jsonl");
  return dot == std::string::npos ? name : name.substr(0, dot);
}

/// Mean of the finite values (NaN when none).
double finite_mean(const std::vector<double>& values) {
  double sum = 0;
  int n = 0;
  for (double v : values)
    if (std::isfinite(v)) {
      sum += v;
      ++n;
    }
  return n == 0 ? std::numeric_limits<double>::quiet_NaN() : sum / n;
}

/// Run mode: answers every item of the chunk, then scores the answers when the run covers them.
int run_questions(Options o, std::ostream& out, std::ostream& err) {
  require_file(kProgram, "--questions", o.questions);
  const std::vector<eval::JsonLine> lines = eval::read_jsonl(o.questions, kProgram);
  check<FormatError>(!lines.empty(), "agla_pope: ", o.questions, ": no questions");
  const bool captions = is_caption_file(lines);
  std::vector<RunItem> all = read_run_items(lines, o.questions, captions);
  if (o.run.limit && static_cast<std::size_t>(*o.run.limit) < all.size())
    all.resize(static_cast<std::size_t>(*o.run.limit));
  // Questions grouped by image: a chunk never splits an image, and each image is read, encoded and
  // prefilled once per run (docs/performance.md); answers are written in file order.
  std::vector<std::string> image_keys;
  for (const RunItem& item : all) image_keys.push_back(item.image);
  const std::vector<std::size_t> chunk = eval::grouped_chunk(image_keys, o.run.num_chunks, o.run.chunk_idx);
  const std::string folder =
      !o.image_folder.empty() ? o.image_folder : (std::filesystem::path(o.questions).parent_path() / "images").string();

  // The protocol fills what the command line left open; its record goes with every answer.
  RunOptions& r = o.run;
  r.settings.instruction = captions ? o.caption_prompt : o.question_template;
  r.settings.parser = eval::parser_name(o.parser);
  if (captions && !o.given.count("--max-new-tokens")) r.settings.max_new_tokens = 64;
  PreparedRun prepared = prepare_run(kProgram, r, o.given, captions ? Benchmark::Chair : Benchmark::Pope);
  if (!captions) o.parser = eval::parse_answer_parser(r.settings.parser);
  prepared.generator.image_cache = o.image_cache;
  ItemGenerator generator(prepared.generator, err);
  const std::string itm_caption_prompt =
      o.itm_caption_prompt ? *o.itm_caption_prompt
                           : (r.settings.instruction.empty() ? std::string(kCaptionItmText) : r.settings.instruction);

  eval::AnswerWriter writer(o.answers);
  std::optional<eval::ProgressBar> bar;
  if (!r.quiet) bar.emplace(chunk.size(), err, "agla_pope " + std::string(method_name(r.method)));
  std::vector<double> itcs, kept;
  std::map<std::string, std::string> texts;
  std::vector<std::pair<std::size_t, eval::AnswerRecord>> records;
  const auto start = std::chrono::steady_clock::now();
  for (const std::size_t i : chunk) {
    const RunItem& item = all[i];
    Item asked{(std::filesystem::path(folder) / item.image).string(),
               captions ? r.settings.instruction : question_instruction(r.settings.instruction, item.text),
               std::nullopt,
               captions ? itm_caption_prompt : item.text,
               item.index,
               "question " + item.key};
    if (item.prompt_ids || o.prompt_ids)
      asked.prompt = generator.prompt_from_ids(item.prompt_ids ? *item.prompt_ids : *o.prompt_ids,
                                               item.qformer_prompt_ids ? *item.qformer_prompt_ids : o.qformer_prompt_ids);
    Generation g = generator.generate(asked);
    if (g.metadata.contains("itc")) {
      itcs.push_back(g.metadata["itc"].get<double>());
      kept.push_back(g.metadata["kept_fraction"].get<double>());
    }
    eval::AnswerRecord record;
    record.question_id = item.question_id;
    record.prompt = captions ? r.settings.instruction : item.text;
    record.text = g.text;
    record.model_id = prepared.model_id;
    record.image = item.image;
    record.metadata = std::move(g.metadata);
    record.metadata["protocol"] = prepared.record;
    texts[item.key] = record.text;
    records.emplace_back(i, std::move(record));
    if (bar) bar->advance();
  }
  if (bar) bar->finish();
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [index, record] : records) writer.write(record);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  generator.warn_unknown_words(err, chunk.size());

  const DecodeOptions& decoding = generator.decoding();
  nlohmann::json summary = generator.run_record(prepared, r, seconds);
  summary["seed"] = r.settings.seed;
  summary["split"] = split_name(o.questions);
  summary["parameters"] = generator.parameters();
  summary["questions"] = chunk.size();
  summary["image_cache"] = o.image_cache;
  summary["answers"] = o.answers;
  if (!itcs.empty()) {
    summary["mean_itc"] = finite_mean(itcs);
    summary["mean_kept_fraction"] = finite_mean(kept);
  }
  const auto [itm_unknown_items, prompt_unknown_items] = generator.unknown_word_items();
  if (itm_unknown_items > 0) summary["items_with_itm_unknown_words"] = itm_unknown_items;
  if (prompt_unknown_items > 0) summary["items_with_prompt_unknown_words"] = prompt_unknown_items;
  if (r.num_chunks > 1) {
    out << "agla_pope: wrote " << chunk.size() << " answers (chunk " << r.chunk_idx << " of " << r.num_chunks << ") to "
        << o.answers << "; score the concatenated chunks with agla_pope --evaluate " << o.questions
        << " ANSWERS.jsonl\n";
    if (o.run.json) out << summary.dump() << "\n";
    return 0;
  }

  // Score the answered items (the whole file, or its first --limit items). Answers of a checkpoint
  // without a tokenizer are token ids: any text parser would read them as "yes", so they stay unscored.
  if (!generator.has_tokenizer()) {
    const std::string why = "answers are token ids (the LVLM has no tokenizer); not scored";
    summary["metrics"] = nullptr;
    summary["not_scored"] = why;
    if (o.run.json)
      out << summary.dump() << "\n";
    else
      out << why << "\n";
  } else if (captions) {
    const eval::ChairVocabulary vocabulary = shapesworld_vocabulary();
    std::vector<std::string> caption_texts;
    std::vector<std::set<std::string>> objects;
    for (std::size_t i = 0; i < all.size(); ++i) {
      const auto it = lines[all[i].index].value.find("objects");
      check<FormatError>(it != lines[all[i].index].value.end() && it->is_array(), "agla_pope: ", o.questions, ":",
                         lines[all[i].index].line, ": field \"objects\" must be a list of object names");
      std::set<std::string> truth;
      for (const auto& name : *it) {
        check<FormatError>(name.is_string() && vocabulary.knows_object(name.get<std::string>()),
                           "agla_pope: ", o.questions, ":", lines[all[i].index].line, ": unknown object ", name.dump());
        truth.insert(name.get<std::string>());
      }
      objects.push_back(truth);
      caption_texts.push_back(texts.at(all[i].key));
    }
    const eval::ChairMetrics metrics = eval::evaluate_chair(caption_texts, objects, vocabulary);
    summary["metrics"] = eval::to_json(metrics);
    if (o.run.json)
      out << summary.dump() << "\n";
    else
      out << eval::format_chair(metrics);
  } else {
    std::vector<eval::PopeQuestion> questions = eval::read_pope_questions(o.questions);
    questions.resize(all.size());
    std::vector<eval::ModelAnswer> answers;
    for (const auto& q : questions) answers.push_back(eval::ModelAnswer{q.id, texts.at(q.id), 0});
    const eval::PopeReport report = eval::evaluate_pope(questions, answers, o.parser);
    summary["metrics"] = eval::to_json(report);
    if (o.run.json)
      out << summary.dump() << "\n";
    else
      out << eval::format_report(report);
  }
  if (!o.run.json) {
    out << "Model: " << prepared.model_id << ", method " << method_name(r.method) << " (alpha " << decoding.alpha
        << ", beta " << decoding.beta << "), seed " << r.settings.seed << ", " << chunk.size() << " items in " << std::fixed
        << std::setprecision(1) << seconds << " s\n";
    if (!itcs.empty())
      out << "IPM: mean ITC " << std::setprecision(3) << finite_mean(itcs) << ", mean kept fraction "
          << finite_mean(kept) << " (per answer in its metadata)\n";
    out << "Answers: " << o.answers << "\n";
  }
  if (!o.results.empty()) {
    std::ofstream results(o.results, std::ios::app | std::ios::binary);
    check<FormatError>(results.good(), "agla_pope: cannot open '", o.results, "' for appending");
    results << summary.dump() << "\n";
  }
  return 0;
}

/// True for the answer text of an LVLM without a tokenizer: token ids in brackets, "[12 7 2]".
bool is_token_id_text(const std::string& text) {
  if (text.size() < 2 || text.front() != '[' || text.back() != ']') return false;
  return text.find_first_not_of("0123456789 ", 1) == text.size() - 1;
}

/// Evaluate-only mode (POPE or CHAIR ground truth).
int run_evaluate(const Options& o, std::ostream& out) {
  require_file(kProgram, "--evaluate (ground truth)", o.ground_truth);
  require_file(kProgram, "--evaluate (answers)", o.answers);
  if (is_caption_file(eval::read_jsonl(o.ground_truth, kProgram))) {
    const eval::ChairMetrics metrics = eval::evaluate_chair_files(o.ground_truth, o.answers, shapesworld_vocabulary());
    print_report(out, o.run.json, metrics, eval::format_chair);
    return 0;
  }
  const std::vector<eval::ModelAnswer> answers = eval::read_model_answers(o.answers);
  for (const eval::ModelAnswer& a : answers)
    check<FormatError>(!is_token_id_text(a.text), "agla_pope: ", o.answers, ":", a.line, ": answer '", a.text,
                       "' is token ids (an LVLM run without a tokenizer), not text; score it after decoding the ids");
  const eval::PopeReport report = eval::evaluate_pope(eval::read_pope_questions(o.ground_truth), answers, o.parser);
  print_report(out, o.run.json, report, eval::format_report);
  return 0;
}

/// Mean and sample standard deviation (0 for one value) of `values`.
std::pair<double, double> mean_sd(const std::vector<double>& values) {
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  double ss = 0;
  for (double v : values) ss += (v - mean) * (v - mean);
  const double sd = values.size() > 1 ? std::sqrt(ss / static_cast<double>(values.size() - 1)) : 0.0;
  return {mean, sd};
}

/// "mean ± sd" in percent with one decimal.
std::string percent_cell(const std::vector<double>& values) {
  if (values.empty()) return "–";
  const auto [mean, sd] = mean_sd(values);
  std::ostringstream cell;
  cell << std::fixed << std::setprecision(1) << 100.0 * mean << " ± " << 100.0 * sd;
  return cell.str();
}

/// `--summarize`: reads the results lines of many runs (`--results`) and prints markdown tables,
/// per model: each POPE split (accuracy, F1, yes-ratio, false-positive rate), the contrast split
/// (false-positive rate with and without the partner, and their difference) and CHAIR, each with
/// the mean share of pixels the augmented views kept. Cells are mean ± sample standard deviation
/// over the seeds, in percent.
int run_summarize(const Options& o, std::ostream& out) {
  const std::string path = o.summarize;
  require_file(kProgram, "--summarize", path);
  const std::vector<eval::JsonLine> lines = eval::read_jsonl(path, "agla_pope --summarize");
  check<FormatError>(!lines.empty(), "agla_pope --summarize: ", path, ": no results");
  // model -> split -> method -> metric -> values over seeds
  std::map<std::string, std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>>> data;
  std::map<std::string, std::set<std::uint64_t>> seeds;
  std::vector<std::string> method_order;
  for (Method m : all_methods()) method_order.push_back(method_name(m));
  for (const eval::JsonLine& line : lines) {
    const nlohmann::json& j = line.value;
    for (const char* key : {"model_id", "method", "split", "metrics"})
      check<FormatError>(j.contains(key), "agla_pope --summarize: ", path, ":", line.line, ": missing field \"", key,
                         "\"");
    check<FormatError>(j["metrics"].is_object(), "agla_pope --summarize: ", path, ":", line.line,
                       ": the run has no metrics (", j.value("not_scored", std::string("\"metrics\" is not an object")),
                       ")");
    std::string method = j["method"].get<std::string>();
    // Runs with non-default alpha/beta get their own row.
    const Method m = parse_method(method);
    SamplingSettings defaults;
    const DecodeOptions d = method_options(m, defaults);
    if (j.contains("alpha") && j.contains("beta") &&
        (std::abs(j["alpha"].get<double>() - d.alpha) > 1e-12 || std::abs(j["beta"].get<double>() - d.beta) > 1e-12)) {
      std::ostringstream tag;
      tag << method << " (alpha " << j["alpha"].get<double>() << ", beta " << j["beta"].get<double>() << ")";
      method = tag.str();
      if (std::find(method_order.begin(), method_order.end(), method) == method_order.end()) {
        const auto base = std::find(method_order.begin(), method_order.end(), method_name(m));
        method_order.insert(base + 1, method);
      }
    }
    const std::string model = j["model_id"].get<std::string>();
    auto& cell = data[model][j["split"].get<std::string>()][method];
    const nlohmann::json& metrics = j["metrics"];
    for (auto it = metrics.begin(); it != metrics.end(); ++it)
      if (it->is_number_float()) cell[it.key()].push_back(it->get<double>());
    if (metrics.contains("partner_present")) {
      cell["fp_present"].push_back(metrics["partner_present"]["false_positive_rate"].get<double>());
      cell["fp_absent"].push_back(metrics["partner_absent"]["false_positive_rate"].get<double>());
    }
    if (j.contains("mean_kept_fraction")) cell["kept"].push_back(j["mean_kept_fraction"].get<double>());
    if (j.contains("seed")) seeds[model].insert(j["seed"].get<std::uint64_t>());
  }
  const auto table = [&](const std::string& title, const auto& splits, const std::string& split,
                         const std::vector<std::pair<std::string, std::string>>& columns) {
    const auto found = splits.find(split);
    if (found == splits.end()) return;
    out << "\n" << title << "\n\n| method |";
    for (const auto& c : columns) out << " " << c.second << " |";
    out << "\n| --- |";
    for (std::size_t i = 0; i < columns.size(); ++i) out << " ---: |";
    out << "\n";
    for (const std::string& method : method_order) {
      const auto row = found->second.find(method);
      if (row == found->second.end()) continue;
      out << "| " << method << " |";
      for (const auto& c : columns) {
        const auto values = row->second.find(c.first);
        out << " " << (values == row->second.end() ? std::string("–") : percent_cell(values->second)) << " |";
      }
      out << "\n";
    }
  };
  for (const auto& [model, splits] : data) {
    out << "\n### " << model << " (" << seeds[model].size() << " seed" << (seeds[model].size() == 1 ? "" : "s")
        << "; mean ± sd over seeds, percent)\n";
    const std::vector<std::pair<std::string, std::string>> pope = {{"accuracy", "accuracy"},
                                                                   {"f1", "F1"},
                                                                   {"yes_ratio", "yes-ratio"},
                                                                   {"false_positive_rate", "FP rate"},
                                                                   {"kept", "pixels kept"}};
    for (const std::string split : {"random", "popular", "adversarial"})
      table("POPE " + split + ":", splits, split, pope);
    table("Within-class contrast (all questions are 'no'):", splits, "contrast",
          {{"fp_present", "FP rate, partner present"},
           {"fp_absent", "FP rate, partner absent"},
           {"false_positive_rate_difference", "difference"},
           {"kept", "pixels kept"}});
    table("CHAIR (caption split):", splits, "captions",
          {{"chair_i", "CHAIR_i"}, {"chair_s", "CHAIR_s"}, {"recall", "recall"}, {"kept", "pixels kept"}});
    for (const auto& [split, methods] : splits) {
      if (split == "random" || split == "popular" || split == "adversarial" || split == "contrast" ||
          split == "captions")
        continue;
      table("Split " + split + ":", splits, split, pope);
    }
  }
  return 0;
}

/// Runs the mode the options chose.
int run(const Options& o, std::ostream& out, std::ostream& err) {
  if (o.mode == Options::Mode::Run) return run_questions(o, out, err);
  use_threads(o.run.threads, 0);
  return o.mode == Options::Mode::Evaluate ? run_evaluate(o, out) : run_summarize(o, out);
}

}  // namespace

int run_pope(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_program(kProgram, args, out, err, parse_options, run);
}

}  // namespace agla::tools
