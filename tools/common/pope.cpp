// agla_pope: runs an LVLM with one decoding method over a POPE-format question file (or
// ShapesWorld's caption split) and scores the answers; scores answer files (--evaluate); turns the
// results of many runs into markdown tables (--summarize).

#include "agla/eval/pope.hpp"

#include <ATen/ATen.h>

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
#include "agla/io/image.hpp"
#include "agla/runtime.hpp"
#include "agla/shapesworld/world.hpp"
#include "common/cli.hpp"
#include "common/data.hpp"
#include "common/methods.hpp"
#include "common/models.hpp"
#include "common/programs.hpp"
#include "common/protocols.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

const std::string kProgram = "agla_pope";
const std::string kQuestionKey = "{question}";

void usage(std::ostream& out) {
  out << "usage: agla_pope --questions FILE.jsonl --method NAME [options]      run a model, write answers, score\n"
         "       agla_pope --evaluate GT.jsonl ANSWERS.jsonl [--parser pope|substring] [--json]\n"
         "       agla_pope --summarize RESULTS.jsonl                            markdown tables of many runs\n"
         "Run mode:\n"
         "  --questions FILE      POPE question file (question_id, image, text, label) or a caption file\n"
         "                        (question_id, image, objects: CHAIR); a line may carry prompt_ids (token ids\n"
         "                        used as given, for checkpoints without a tokenizer)\n"
         "  --image-folder DIR    where the images are (default: FILE's folder + /images, ShapesWorld's layout)\n"
         "  --protocol NAME       agla | vcd | greedy: the reference scripts' prompt, sampling, seeds, token cap,\n"
         "                        preprocessing and parser (docs/reproducing.md); explicit options override it;\n"
         "                        every answer and results line records the resolved protocol\n"
      << method_options_help()
      << "                        (default method agla)\n"
         "  --lvlm DIR            BLIP captioning, llava-hf LLaVA-1.5 or InstructBLIP directory (default:\n"
         "                        data/models/shapesworld-lvlm)\n"
         "  --itm DIR             BLIP ITM directory for the IPM views (default: data/models/shapesworld-itm);\n"
         "                        when given it is loaded and checked even if the method needs no IPM view\n"
         "  --answers FILE        answers jsonl to write (default answers.jsonl)\n"
         "  --model-id NAME       model_id written with each answer (default: the LVLM folder's name)\n"
         "  --temperature T, --top-k K, --top-p P, --greedy   sampling (defaults 1, 0 = off, 1 = off, sampling)\n"
         "  --seed N              seed (default 1); question i samples from its own generator\n"
         "  --max-new-tokens N    [1, 4096]; default 16 for questions, 64 for captions\n"
         "  --question-suffix S   appended to each question to make the instruction the LVLM's prompt template\n"
         "                        receives (default ' Please answer this question with one word.', as the\n"
         "                        AGLA reference asks POPE questions)\n"
         "  --question-template T the instruction with {question} replaced by the question (instead of\n"
         "                        --question-suffix)\n"
         "  --caption-prompt T    captioning instruction (default: none)\n"
         "  --itm-caption-prompt T  IPM's text for captions (default: the caption prompt, else 'the image')\n"
         "  --prompt-ids IDS      comma-separated prompt token ids for every item without its own prompt_ids\n"
         "                        (e.g. the caption prompt of a checkpoint without a tokenizer)\n"
         "  --qformer-prompt-ids IDS  InstructBLIP without a tokenizer: the Q-Former's ids ([CLS] ... [SEP]) for\n"
         "                        every item without its own qformer_prompt_ids\n"
         "  --llava-hf-template   LLaVA: the bare llava-hf template instead of llava_v1 (system prompt)\n"
         "  --pad-to-square       LLaVA: pad images to square (original LLaVA) instead of centre-cropping\n"
         "  --num-chunks N --chunk-idx I   run chunk I of N (LLaVA's split; concatenate the answer files)\n"
         "  --limit N             only the first N questions\n"
         "  --results FILE        append one JSON line with the run's tags and metrics (for --summarize)\n"
         "  --quiet               no progress bar\n"
         "  --no-image-cache      compute each image's encoding (and LLaVA's prompt prefix) for every question\n"
         "                        (default: once per image; the answers are the same)\n"
         "Scoring:\n"
         "  --parser NAME         pope (default): POPE's evaluate.py -- first sentence, 'no' if it has the word\n"
         "                        No/no/not, else 'yes'; substring: the AGLA/VCD scripts -- 'yes' in the answer for\n"
         "                        yes-questions, 'no' in the answer for no-questions\n"
         "  --json                print the metrics as one JSON object\n"
         "  --threads N           intra-op threads, [0, 1024] (default 0 = automatic: 1 for small models,\n"
         "                        else the physical cores)\n"
         "Exit status: 0 on success, 1 on any error (message on stderr).\n"
      << data_dir_help() << "\n";
}

struct Options {
  enum class Mode { Run, Evaluate, Summarize } mode = Mode::Run;
  std::string questions, image_folder, lvlm, itm, answers = "answers.jsonl", model_id, results;
  std::string ground_truth, summarize;  // evaluate: ground_truth + answers; summarize: results file
  Method method = Method::Agla;
  SamplingSettings sampling;
  MethodSettings method_settings;
  std::uint64_t seed = 1;
  std::optional<std::int64_t> max_new_tokens;
  LvlmSettings lvlm_settings;
  std::string question_template = kQuestionKey + kPopeQuestionSuffix;
  std::string caption_prompt;
  std::optional<std::string> itm_caption_prompt;
  int num_chunks = 1, chunk_idx = 0;
  std::optional<std::int64_t> limit;
  std::optional<std::vector<std::int64_t>> prompt_ids;  // for every item without its own prompt_ids
  std::vector<std::int64_t> qformer_prompt_ids;         // likewise, InstructBLIP's Q-Former ids
  bool quiet = false, json = false, help = false;
  bool image_cache = true;  // --no-image-cache turns the per-image cache of the LVLM off
  eval::AnswerParser parser = eval::AnswerParser::Pope;
  int threads = 0;
  std::optional<std::string> protocol;  // --protocol
  std::set<std::string> given;          // the options named on the command line (they override a protocol)
};

Options parse_options(const std::vector<std::string>& args) {
  Options o;
  bool evaluate = false, summarize = false, run = false, suffix = false, templated = false;
  ArgCursor cursor(args, kProgram);
  while (cursor.more()) {
    const std::string arg = cursor.next();
    o.given.insert(arg);
    if (arg == "--help" || arg == "-h") {
      o.help = true;
    } else if (arg == "--protocol") {
      o.protocol = parse_protocol_name(kProgram, cursor.value(arg));
    } else if (arg == "--evaluate") {
      o.ground_truth = cursor.value(arg);
      check<InvalidArgument>(cursor.more(), "agla_pope: --evaluate needs GT.jsonl and ANSWERS.jsonl");
      o.answers = cursor.value(arg);
      evaluate = true;
    } else if (arg == "--summarize") {
      o.summarize = cursor.value(arg);
      summarize = true;
    } else if (arg == "--questions") {
      o.questions = cursor.value(arg);
      run = true;
    } else if (arg == "--image-folder") {
      o.image_folder = cursor.value(arg);
    } else if (arg == "--method") {
      o.method = parse_method(cursor.value(arg));
    } else if (arg == "--lvlm") {
      o.lvlm = cursor.value(arg);
    } else if (arg == "--itm") {
      o.itm = cursor.value(arg);
    } else if (arg == "--answers") {
      o.answers = cursor.value(arg);
    } else if (arg == "--model-id") {
      o.model_id = cursor.value(arg);
    } else if (parse_sampling_option(arg, cursor, o.sampling)) {
    } else if (parse_method_option(arg, cursor, o.method_settings)) {
    } else if (arg == "--seed") {
      o.seed = parse_seed(kProgram, arg, cursor.value(arg));
    } else if (arg == "--max-new-tokens") {
      o.max_new_tokens = parse_integer(kProgram, arg, cursor.value(arg), 1, 4096);
    } else if (arg == "--question-suffix") {
      o.question_template = kQuestionKey + cursor.value(arg);
      suffix = true;
    } else if (arg == "--question-template") {
      o.question_template = cursor.value(arg);
      check<InvalidArgument>(o.question_template.find(kQuestionKey) != std::string::npos,
                             "agla_pope: --question-template must contain {question}; got '", o.question_template, "'");
      templated = true;
    } else if (arg == "--caption-prompt") {
      o.caption_prompt = cursor.value(arg);
    } else if (arg == "--itm-caption-prompt") {
      o.itm_caption_prompt = cursor.value(arg);
    } else if (arg == "--llava-hf-template") {
      o.lvlm_settings.llava_hf_template = true;
    } else if (arg == "--pad-to-square") {
      o.lvlm_settings.pad_to_square = true;
    } else if (arg == "--num-chunks") {
      o.num_chunks = static_cast<int>(parse_integer(kProgram, arg, cursor.value(arg), 1, 1 << 20));
    } else if (arg == "--chunk-idx") {
      o.chunk_idx = static_cast<int>(parse_integer(kProgram, arg, cursor.value(arg), 0, 1 << 20));
    } else if (arg == "--prompt-ids") {
      o.prompt_ids = parse_id_list(kProgram, arg, cursor.value(arg));
    } else if (arg == "--qformer-prompt-ids") {
      o.qformer_prompt_ids = parse_id_list(kProgram, arg, cursor.value(arg));
    } else if (arg == "--limit") {
      o.limit = parse_integer(kProgram, arg, cursor.value(arg), 1, 100000000);
    } else if (arg == "--results") {
      o.results = cursor.value(arg);
    } else if (arg == "--no-image-cache") {
      o.image_cache = false;
    } else if (arg == "--quiet") {
      o.quiet = true;
    } else if (arg == "--parser") {
      o.parser = eval::parse_answer_parser(cursor.value(arg));
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--threads") {
      o.threads = parse_threads(kProgram, cursor.value(arg));
    } else {
      throw InvalidArgument("agla_pope: unknown option '" + arg + "' (see --help)");
    }
  }
  if (o.help) return o;
  check<InvalidArgument>(static_cast<int>(evaluate) + static_cast<int>(summarize) + static_cast<int>(run) == 1,
                         "agla_pope: give exactly one of --questions FILE (run), --evaluate GT ANSWERS or "
                         "--summarize RESULTS (see --help)");
  check<InvalidArgument>(!(suffix && templated), "agla_pope: give --question-suffix or --question-template, not both");
  o.mode = evaluate ? Options::Mode::Evaluate : summarize ? Options::Mode::Summarize : Options::Mode::Run;
  check<InvalidArgument>(o.chunk_idx < o.num_chunks, "agla_pope: --chunk-idx must be below --num-chunks (",
                         o.num_chunks, "); got ", o.chunk_idx);
  check_method_settings(kProgram, o.method, o.method_settings);
  check_sampling_settings(kProgram, o.method, o.sampling);
  method_options(o.method, o.sampling, o.method_settings);  // combinations the ranges allow but the method does not
  if (o.protocol && !o.given.count("--parser"))
    o.parser = eval::parse_answer_parser(resolve_protocol(*o.protocol, Benchmark::Pope, "").parser);
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
  if (o.limit && static_cast<std::size_t>(*o.limit) < all.size()) all.resize(static_cast<std::size_t>(*o.limit));
  // Questions grouped by image: a chunk never splits an image, and each image is read, encoded and
  // prefilled once per run (docs/performance.md); answers are written in file order.
  std::vector<std::string> image_keys;
  for (const RunItem& item : all) image_keys.push_back(item.image);
  const std::vector<std::size_t> chunk = eval::grouped_chunk(image_keys, o.num_chunks, o.chunk_idx);
  const std::string folder =
      !o.image_folder.empty() ? o.image_folder : (std::filesystem::path(o.questions).parent_path() / "images").string();

  const bool needs_itm = method_needs_itm(o.method);
  const std::string lvlm_dir = o.lvlm.empty() ? shipped_model(kProgram, "shapesworld-lvlm", "--lvlm") : o.lvlm;
  // A given --itm is always loaded, so a broken path fails now rather than in the run that needs it.
  const std::string itm_dir = !o.itm.empty() ? o.itm
                              : needs_itm    ? shipped_model(kProgram, "shapesworld-itm", "--itm")
                                             : std::string();
  // The protocol fills what the command line left open; its record goes with every answer.
  const std::string family = detect_model_family(lvlm_dir).name;
  const Benchmark benchmark = captions ? Benchmark::Chair : Benchmark::Pope;
  RunSettings settings{captions ? o.caption_prompt : o.question_template,
                       o.sampling,
                       o.seed,
                       o.max_new_tokens.value_or(captions ? 64 : 16),
                       o.method_settings.noise_step_value(),
                       o.lvlm_settings,
                       eval::parser_name(o.parser)};
  const nlohmann::json protocol = apply_protocol(
      o.protocol ? std::optional<Protocol>(resolve_protocol(*o.protocol, benchmark, family)) : std::nullopt, o.given,
      method_name(o.method), benchmark, family, settings);
  (captions ? o.caption_prompt : o.question_template) = settings.instruction;
  o.sampling = settings.sampling;
  o.seed = settings.seed;
  o.max_new_tokens = settings.max_new_tokens;
  adopt_noise_step(o.method, settings, o.method_settings);
  o.lvlm_settings = settings.lvlm;
  if (!captions) o.parser = eval::parse_answer_parser(settings.parser);
  const int threads =
      use_threads(o.threads, weight_bytes(lvlm_dir) + (needs_itm ? weight_bytes(itm_dir) : std::uintmax_t{0}));
  if (auto warning = agla::blas_warning()) err << *warning << "\n";
  AnyLvlm lvlm = load_lvlm(lvlm_dir, o.lvlm_settings);
  // Two entries: the original image and a reusable extra view of it.
  if (o.image_cache) std::visit([](auto& model) { agla::enable_image_cache(model, 2); }, lvlm);
  std::optional<blip::BlipItm> itm;
  if (!itm_dir.empty()) itm.emplace(load_itm(itm_dir));
  if (!needs_itm) itm.reset();  // checked, not needed by this method
  const ViewBuilder views(itm ? &*itm : nullptr, lvlm, o.method_settings.noise_step_value());
  const DecodeOptions decoding = method_options(o.method, o.sampling, o.method_settings);
  const bool pai_applied =
      o.method == Method::Pai && lvlm_set_pai_attention(lvlm, o.method_settings.pai_attention());
  const nlohmann::json parameters = method_parameters(o.method, decoding, o.method_settings, pai_applied);
  const std::int64_t max_new_tokens = o.max_new_tokens.value_or(captions ? 64 : 16);
  const std::string model_id =
      !o.model_id.empty() ? o.model_id : std::filesystem::path(lvlm_dir).lexically_normal().filename().string();
  const std::string itm_caption_prompt =
      o.itm_caption_prompt ? *o.itm_caption_prompt
                           : (o.caption_prompt.empty() ? std::string(kCaptionItmText) : o.caption_prompt);
  std::optional<Prompt> caption_prompt;

  eval::AnswerWriter writer(o.answers);
  std::optional<eval::ProgressBar> bar;
  if (!o.quiet) bar.emplace(chunk.size(), err, "agla_pope " + std::string(method_name(o.method)));
  std::vector<double> itcs, kept;
  std::map<std::string, std::string> texts;
  long long generated = 0;
  std::size_t itm_unknown_items = 0, prompt_unknown_items = 0;
  std::vector<std::pair<std::size_t, eval::AnswerRecord>> records;
  CurrentImage current;
  const auto start = std::chrono::steady_clock::now();
  for (const std::size_t i : chunk) {
    const RunItem& item = all[i];
    current.load(kProgram, "the image of question " + item.key, (std::filesystem::path(folder) / item.image).string(),
                 lvlm);
    const at::Tensor& image = current.image;
    const at::Tensor& original = current.original;
    Prompt prompt;
    std::optional<std::string> instruction;  // the prompt's text, when it came as text
    std::vector<std::string> prompt_unknown;
    if (item.prompt_ids || o.prompt_ids) {
      prompt = lvlm_prompt_from_ids(kProgram, lvlm, item.prompt_ids ? *item.prompt_ids : *o.prompt_ids,
                                    item.qformer_prompt_ids ? *item.qformer_prompt_ids : o.qformer_prompt_ids);
    } else if (captions) {
      if (!caption_prompt) caption_prompt = lvlm_prompt(lvlm, o.caption_prompt);
      prompt = *caption_prompt;
      instruction = o.caption_prompt;
      prompt_unknown = check_lvlm_text(kProgram, "--caption-prompt", lvlm, o.caption_prompt);
    } else {
      instruction = question_instruction(o.question_template, item.text);
      prompt_unknown = check_lvlm_text(kProgram, "the instruction of question " + item.key, lvlm, *instruction);
      prompt = lvlm_prompt(lvlm, *instruction);
    }
    const std::string itm_prompt = captions ? itm_caption_prompt : item.text;
    std::vector<std::string> itm_unknown;
    if (itm) itm_unknown = check_itm_text(kProgram, "the IPM text of question " + item.key, *itm, itm_prompt);
    // Independent draws for the views (noise, random mask, transform) and for sampling, per question.
    const MethodViews view =
        views.build_views(o.method, o.method_settings, image, itm_prompt, prompt, instruction, original,
                          seeded_generator(question_seed(o.seed ^ 0x5EEDF00Dull, item.index)), kProgram);
    const std::vector<std::int64_t> ids =
        lvlm_generate(lvlm, prompt, original, view.views, decoding, max_new_tokens,
                      seeded_generator(question_seed(o.seed, item.index)), kProgram);
    generated += static_cast<long long>(ids.size());

    eval::AnswerRecord record;
    record.question_id = item.question_id;
    record.prompt = captions ? o.caption_prompt : item.text;
    record.text = lvlm_decode(lvlm, ids);
    record.model_id = model_id;
    record.image = item.image;
    record.metadata = {{"method", method_name(o.method)}, {"seed", o.seed},    {"alpha", decoding.alpha},
                       {"beta", decoding.beta},           {"output_ids", ids}, {"prompt_ids", prompt.ids},
                       {"parameters", parameters},        {"views", view.record}};
    if (!prompt.instruction_ids.empty()) record.metadata["qformer_prompt_ids"] = prompt.instruction_ids;
    record.metadata["protocol"] = protocol;
    if (view.match) {
      record.metadata["itc"] = view.itc;
      record.metadata["kept_fraction"] = view.kept_fraction;
      record.metadata["ipm_ms"] = view.ms;
      itcs.push_back(view.itc);
      kept.push_back(view.kept_fraction);
    }
    if (!itm_unknown.empty()) {
      record.metadata["itm_unknown_words"] = itm_unknown;
      ++itm_unknown_items;
    }
    if (!prompt_unknown.empty()) {
      record.metadata["prompt_unknown_words"] = prompt_unknown;
      ++prompt_unknown_items;
    }
    texts[item.key] = record.text;
    records.emplace_back(i, std::move(record));
    if (bar) bar->advance();
  }
  if (bar) bar->finish();
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [index, record] : records) writer.write(record);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const auto& [count, what, field] : {std::tuple{itm_unknown_items, "IPM texts", "itm_unknown_words"},
                                           std::tuple{prompt_unknown_items, "prompts", "prompt_unknown_words"}})
    if (count > 0)
      err << "agla_pope: warning: " << count << " of " << chunk.size() << " " << what
          << " have words outside the model's vocabulary, read as [UNK] (listed per answer in metadata." << field
          << ")\n";

  nlohmann::json summary{{"model_id", model_id},
                         {"method", method_name(o.method)},
                         {"seed", o.seed},
                         {"alpha", decoding.alpha},
                         {"beta", decoding.beta},
                         {"split", split_name(o.questions)},
                         {"protocol", protocol},
                         {"parameters", parameters},
                         {"questions", chunk.size()},
                         {"image_cache", o.image_cache},
                         {"answers", o.answers},
                         {"threads", threads},
                         {"seconds", seconds},
                         {"tokens_per_second", seconds > 0 ? static_cast<double>(generated) / seconds : 0.0}};
  if (!itcs.empty()) {
    summary["mean_itc"] = finite_mean(itcs);
    summary["mean_kept_fraction"] = finite_mean(kept);
  }
  if (itm_unknown_items > 0) summary["items_with_itm_unknown_words"] = itm_unknown_items;
  if (prompt_unknown_items > 0) summary["items_with_prompt_unknown_words"] = prompt_unknown_items;
  if (o.num_chunks > 1) {
    out << "agla_pope: wrote " << chunk.size() << " answers (chunk " << o.chunk_idx << " of " << o.num_chunks << ") to "
        << o.answers << "; score the concatenated chunks with agla_pope --evaluate " << o.questions
        << " ANSWERS.jsonl\n";
    if (o.json) out << summary.dump() << "\n";
    return 0;
  }

  // Score the answered items (the whole file, or its first --limit items). Answers of a checkpoint
  // without a tokenizer are token ids: any text parser would read them as "yes", so they stay unscored.
  if (!lvlm_has_tokenizer(lvlm)) {
    const std::string why = "answers are token ids (the LVLM has no tokenizer); not scored";
    summary["metrics"] = nullptr;
    summary["not_scored"] = why;
    if (o.json)
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
    if (o.json)
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
    if (o.json)
      out << summary.dump() << "\n";
    else
      out << eval::format_report(report);
  }
  if (!o.json) {
    out << "Model: " << model_id << ", method " << method_name(o.method) << " (alpha " << decoding.alpha << ", beta "
        << decoding.beta << "), seed " << o.seed << ", " << chunk.size() << " items in " << std::fixed
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
    out << (o.json ? eval::to_json(metrics).dump() + "\n" : eval::format_chair(metrics));
    return 0;
  }
  const std::vector<eval::ModelAnswer> answers = eval::read_model_answers(o.answers);
  for (const eval::ModelAnswer& a : answers)
    check<FormatError>(!is_token_id_text(a.text), "agla_pope: ", o.answers, ":", a.line, ": answer '", a.text,
                       "' is token ids (an LVLM run without a tokenizer), not text; score it after decoding the ids");
  const eval::PopeReport report = eval::evaluate_pope(eval::read_pope_questions(o.ground_truth), answers, o.parser);
  out << (o.json ? eval::to_json(report).dump() + "\n" : eval::format_report(report));
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

}  // namespace

int run_pope(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_guarded(kProgram, err, [&] {
    const Options o = parse_options(args);
    if (o.help) {
      usage(out);
      return 0;
    }
    if (o.mode == Options::Mode::Run) return run_questions(o, out, err);
    use_threads(o.threads, 0);
    return o.mode == Options::Mode::Evaluate ? run_evaluate(o, out) : run_summarize(o, out);
  });
}

}  // namespace agla::tools
