#include "common/protocols.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <tuple>

#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/names.hpp"
#include "agla/runtime.hpp"
#include "common/cli.hpp"
#include "common/data.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

const std::string kPopeSuffix = kPopeQuestionSuffix;
// CHAIR's instruction in the AGLA runners, less-is-more and OPERA alike.
const std::string kCaptionInstruction = "Please describe this image in detail.";

bool is_instructblip(const std::string& family) { return family == "instructblip"; }

}  // namespace

const char* benchmark_name(Benchmark benchmark) {
  static constexpr NamedValue<Benchmark> kNames[] = {
      {Benchmark::Pope, "pope"}, {Benchmark::Mme, "mme"}, {Benchmark::Chair, "chair"}};
  return name_of(benchmark, kNames);
}

const std::vector<std::string>& protocol_names() {
  static const std::vector<std::string> names{"agla", "vcd", "greedy", "greedy-64"};
  return names;
}

std::string parse_protocol_name(const std::string& program, const std::string& name) {
  const auto& names = protocol_names();
  if (std::find(names.begin(), names.end(), name) != names.end()) return name;
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : "|") + n;
  throw InvalidArgument(detail::concat(program, ": --protocol must be one of ", list, "; got '", name, "'"));
}

Protocol resolve_protocol(const std::string& name, Benchmark benchmark, const std::string& family) {
  Protocol p;
  p.name = name;
  p.benchmark = benchmark;
  p.family = family;
  const bool blip = is_instructblip(family);
  p.instruction = benchmark == Benchmark::Pope  ? "{question}" + kPopeSuffix
                  : benchmark == Benchmark::Mme ? std::string("{question}")
                                                : kCaptionInstruction;
  p.parser = benchmark == Benchmark::Pope ? "substring" : benchmark == Benchmark::Mme ? "mme" : "chair";
  // LAVIS generate: max_length 256 counts one placeholder token; the LLaVA runners: 1024 new tokens.
  const std::int64_t reference_cap = blip ? 255 : 1024;
  if (name == "agla" || name == "vcd") {
    // Both reference runners sample: temperature 1, top_p 1; LLaVA passes top_k=None (off), LAVIS
    // passes none, so transformers' default top_k 50 applies to InstructBLIP.
    p.sampling.temperature = 1.0;
    p.sampling.top_p = 1.0;
    p.sampling.top_k = blip ? 50 : 0;
    p.max_new_tokens = reference_cap;
    if (name == "agla") {
      p.sampling.alpha = kAglaAlpha;
      p.sampling.beta = kAglaBeta;
      p.fusion_methods = {"agla", "agla-released", "agla-random-mask"};
      p.seeds = {1, 2, 3};
      p.reference = "Lackel/AGLA@efa1263 eval/run_llava.py, eval/run_instructblip.py, eval/instructblip_pope.bash";
    } else {
      // LLaVA POPE: experiments/cd_scripts/llava1.5_pope.bash (seed 55, cd_beta 0.2); elsewhere the
      // Python defaults (seed 42, cd_beta 0.1). The InstructBLIP script drops cd_alpha, so the
      // sampler's default 0.5 applies.
      p.sampling.alpha = blip ? 0.5 : kVcdAlpha;
      p.sampling.beta = !blip && benchmark == Benchmark::Pope ? 0.2 : kVcdBeta;
      p.fusion_methods = {"vcd"};
      p.seeds = {blip ? 42u : 55u};
      p.reference =
          "DAMO-NLP-SG/VCD@d6568ff experiments/eval/object_hallucination_vqa_{llava,instructblip}.py, "
          "experiments/cd_scripts/llava1.5_pope.bash";
    }
    if (benchmark == Benchmark::Chair)
      p.reference += "; CHAIR images and prompt: yuezih/less-is-more@f26e187 CHAIR-eval/data/chair-500.jsonl";
  } else if (name == "greedy" || name == "greedy-64") {
    check<InvalidArgument>(name == "greedy" || benchmark == Benchmark::Chair,
                           "agla::tools::resolve_protocol: protocol 'greedy-64' is defined for CHAIR only; got ",
                           benchmark_name(benchmark));
    p.sampling.greedy = true;
    // POPE and MME answers are a word or two: the reference cap never binds. CHAIR: OPERA's 512, or
    // 64 tokens with the cut sentence dropped (shikiw/OPERA issue #30).
    p.max_new_tokens = benchmark != Benchmark::Chair ? reference_cap : name == "greedy" ? 512 : 64;
    p.drop_incomplete_sentence = name == "greedy-64";
    p.reference = benchmark == Benchmark::Chair ? "shikiw/OPERA@61426ef chair_eval.py (greedy, max_new_tokens 512; "
                                                  "64 with the incomplete last sentence dropped, issue #30)"
                                                : "the reference prompts and parser with argmax decoding";
  } else {
    throw InvalidArgument(detail::concat("agla::tools::resolve_protocol: unknown protocol '", name, "'"));
  }
  return p;
}

const std::vector<std::string>& protocol_options() {
  static const std::vector<std::string> options{
      "--question-suffix", "--question-template", "--caption-prompt", "--temperature",       "--top-k",
      "--top-p",           "--greedy",            "--alpha",          "--beta",              "--seed",
      "--max-new-tokens",  "--noise-step",        "--pad-to-square",  "--llava-hf-template", "--parser",
      "--drop-incomplete-sentence"};
  return options;
}

nlohmann::json apply_protocol(const std::optional<Protocol>& protocol, const std::set<std::string>& given,
                              const std::string& method, Benchmark benchmark, const std::string& family,
                              RunSettings& s) {
  const auto free = [&](std::initializer_list<const char*> options) {
    for (const char* option : options)
      if (given.count(option)) return false;
    return true;
  };
  std::vector<std::string> overridden;
  if (protocol) {
    const Protocol& p = *protocol;
    const bool instruction_given = benchmark == Benchmark::Chair ? !free({"--caption-prompt"})
                                                                 : !free({"--question-suffix", "--question-template"});
    if (!instruction_given) s.instruction = p.instruction;
    if (free({"--temperature"})) s.sampling.temperature = p.sampling.temperature;
    if (free({"--top-k"})) s.sampling.top_k = p.sampling.top_k;
    if (free({"--top-p"})) s.sampling.top_p = p.sampling.top_p;
    if (free({"--greedy"})) s.sampling.greedy = p.sampling.greedy;
    const bool pins_fusion =
        std::find(p.fusion_methods.begin(), p.fusion_methods.end(), method) != p.fusion_methods.end();
    if (pins_fusion && free({"--alpha"})) s.sampling.alpha = p.sampling.alpha;
    if (pins_fusion && free({"--beta"})) s.sampling.beta = p.sampling.beta;
    if (!p.seeds.empty() && free({"--seed"})) s.seed = p.seeds.front();
    if (free({"--max-new-tokens"})) s.max_new_tokens = p.max_new_tokens;
    if (free({"--noise-step"})) s.noise_step = p.noise_step;
    if (free({"--pad-to-square"})) s.lvlm.pad_to_square = p.pad_to_square;
    if (free({"--llava-hf-template"})) s.lvlm.llava_hf_template = p.llava_hf_template;
    if (free({"--parser"})) s.parser = p.parser;
    if (free({"--drop-incomplete-sentence"})) s.drop_incomplete_sentence = p.drop_incomplete_sentence;
    for (const std::string& option : protocol_options())
      if (given.count(option)) overridden.push_back(option);
  }
  const auto optional_number = [](const std::optional<double>& v) {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
  };
  nlohmann::json record{
      {"name", protocol ? protocol->name : std::string("custom")},
      {"benchmark", benchmark_name(benchmark)},
      {"family", family},
      {"method", method},
      {"instruction", s.instruction},
      {"decoding", s.sampling.greedy || method == "greedy" ? "greedy" : "sample"},
      {"temperature", s.sampling.temperature},
      {"top_k", s.sampling.top_k},
      {"top_p", s.sampling.top_p},
      {"alpha", optional_number(s.sampling.alpha)},
      {"beta", optional_number(s.sampling.beta)},
      {"seed", s.seed},
      {"max_new_tokens", s.max_new_tokens},
      {"noise_step", s.noise_step},
      {"pad_to_square", s.lvlm.pad_to_square},
      {"llava_hf_template", s.lvlm.llava_hf_template},
      {"parser", s.parser},
      {"drop_incomplete_sentence", s.drop_incomplete_sentence},
      {"overridden", overridden}};
  if (protocol) {
    record["reference_seeds"] = protocol->seeds;
    record["reference"] = protocol->reference;
  }
  return record;
}

std::string drop_incomplete_sentence(const std::string& text) {
  const std::size_t end = text.find_last_of(".!?");
  return end == std::string::npos ? text : text.substr(0, end + 1);
}

std::string lvlm_directory(const std::string& program, const std::string& given) {
  return given.empty() ? shipped_model(program, "shapesworld-lvlm", "--lvlm") : given;
}

void adopt_noise_step(Method method, const RunSettings& settings, MethodSettings& method_settings) {
  if (!method_views(method).empty() && settings.noise_step != method_settings.noise_step_value())
    method_settings.noise_step = settings.noise_step;
}

bool parse_run_option(const std::string& arg, ArgCursor& cursor, RunOptions& o) {
  const std::string& program = cursor.program();
  if (arg == "--protocol") {
    o.protocol = parse_protocol_name(program, cursor.value(arg));
  } else if (arg == "--method") {
    o.method = parse_method(cursor.value(arg));
  } else if (arg == "--lvlm") {
    o.lvlm = cursor.value(arg);
  } else if (arg == "--itm") {
    o.itm = cursor.value(arg);
  } else if (arg == "--model-id") {
    o.model_id = cursor.value(arg);
  } else if (parse_sampling_option(arg, cursor, o.settings.sampling)) {
  } else if (parse_method_option(arg, cursor, o.method_settings)) {
    if (o.method_settings.noise_step) o.settings.noise_step = *o.method_settings.noise_step;
  } else if (arg == "--seed") {
    o.settings.seed = parse_seed(program, arg, cursor.value(arg));
  } else if (arg == "--max-new-tokens") {
    o.settings.max_new_tokens = parse_integer(program, arg, cursor.value(arg), 1, 4096);
  } else if (arg == "--llava-hf-template") {
    o.settings.lvlm.llava_hf_template = true;
  } else if (arg == "--pad-to-square") {
    o.settings.lvlm.pad_to_square = true;
  } else if (arg == "--num-chunks") {
    o.num_chunks = static_cast<int>(parse_integer(program, arg, cursor.value(arg), 1, 1 << 20));
  } else if (arg == "--chunk-idx") {
    o.chunk_idx = static_cast<int>(parse_integer(program, arg, cursor.value(arg), 0, 1 << 20));
  } else if (arg == "--limit") {
    o.limit = parse_integer(program, arg, cursor.value(arg), 1, 100000000);
  } else if (arg == "--quiet") {
    o.quiet = true;
  } else if (arg == "--json") {
    o.json = true;
  } else if (arg == "--threads") {
    o.threads = parse_threads(program, cursor.value(arg));
  } else {
    return false;
  }
  return true;
}

void check_run_options(const std::string& program, const RunOptions& o) {
  check<InvalidArgument>(o.chunk_idx < o.num_chunks, program, ": --chunk-idx must be below --num-chunks (",
                         o.num_chunks, "); got ", o.chunk_idx);
  check_method_settings(program, o.method, o.method_settings);
  check_sampling_settings(program, o.method, o.settings.sampling);
  // Combinations the ranges allow but the method does not.
  method_options(o.method, o.settings.sampling, o.method_settings);
}

PreparedRun prepare_run(const std::string& program, RunOptions& o, const std::set<std::string>& given,
                        Benchmark benchmark) {
  PreparedRun run;
  const std::string lvlm_dir = lvlm_directory(program, o.lvlm);
  run.family = detect_model_family(lvlm_dir).name;
  std::optional<Protocol> protocol;
  if (o.protocol) protocol = resolve_protocol(*o.protocol, benchmark, run.family);
  run.record = apply_protocol(protocol, given, method_name(o.method), benchmark, run.family, o.settings);
  adopt_noise_step(o.method, o.settings, o.method_settings);
  method_options(o.method, o.settings.sampling, o.method_settings);
  run.generator.program = program;
  run.generator.lvlm_dir = lvlm_dir;
  run.generator.itm_dir = o.itm;
  run.generator.method = o.method;
  run.generator.method_settings = o.method_settings;
  run.generator.settings = o.settings;
  run.generator.threads = o.threads;
  run.model_id =
      !o.model_id.empty() ? o.model_id : std::filesystem::path(lvlm_dir).lexically_normal().filename().string();
  return run;
}

std::string run_summary_line(const PreparedRun& run, std::size_t items, const std::string& what, double seconds) {
  std::ostringstream line;
  line << "Model: " << run.model_id << ", method " << method_name(run.generator.method) << ", protocol "
       << run.record["name"].get<std::string>() << ", seed " << run.generator.settings.seed << ", " << items << " "
       << what << " in "
       << std::fixed << std::setprecision(1) << seconds << " s\n";
  return line.str();
}

struct ItemGenerator::Models {
  AnyLvlm lvlm;
  std::optional<blip::BlipItm> itm;
  std::optional<ViewBuilder> views;
  TokenSpec tokens;
  CurrentImage current;  // the image last read, kept for the next item about it
};

ItemGenerator::ItemGenerator(const GeneratorOptions& options, std::ostream& err) : options_(options) {
  const std::string& program = options_.program;
  const bool needs_itm = method_needs_itm(options_.method);
  // A given --itm is always loaded, so a broken path fails now rather than in the run that needs it.
  const std::string itm_dir = !options_.itm_dir.empty() ? options_.itm_dir
                              : needs_itm ? shipped_model(program, "shapesworld-itm", "--itm")
                                          : std::string();
  threads_ = use_threads(options_.threads, weight_bytes(options_.lvlm_dir) +
                                               (needs_itm ? weight_bytes(itm_dir) : std::uintmax_t{0}));
  if (auto warning = agla::blas_warning()) err << *warning << "\n";
  models_ = std::make_unique<Models>(Models{load_lvlm(options_.lvlm_dir, options_.settings.lvlm), {}, {}, {}, {}});
  // The questions of one image come one after another: its encoding (and LLaVA's prompt prefix)
  // is computed once (docs/performance.md); two entries: the original and a reusable extra view.
  if (options_.image_cache) std::visit([](auto& model) { agla::enable_image_cache(model, 2); }, models_->lvlm);
  if (!itm_dir.empty()) models_->itm.emplace(load_itm(itm_dir));
  if (!needs_itm) models_->itm.reset();  // checked, not needed by this method
  models_->views.emplace(models_->itm ? &*models_->itm : nullptr, models_->lvlm,
                         options_.method_settings.noise_step_value());
  models_->tokens = lvlm_tokens(models_->lvlm);
  family_ = lvlm_family_name(models_->lvlm);
  decoding_ = method_options(options_.method, options_.settings.sampling, options_.method_settings);
  const bool pai_applied = options_.method == Method::Pai &&
                           lvlm_set_pai_attention(models_->lvlm, options_.method_settings.pai_attention());
  parameters_ = method_parameters(options_.method, decoding_, options_.method_settings, pai_applied);
}

ItemGenerator::~ItemGenerator() = default;

bool ItemGenerator::has_tokenizer() const { return lvlm_has_tokenizer(models_->lvlm); }

Prompt ItemGenerator::prompt_from_ids(const std::vector<std::int64_t>& ids,
                                      const std::vector<std::int64_t>& qformer_ids) const {
  return lvlm_prompt_from_ids(options_.program, models_->lvlm, ids, qformer_ids);
}

Generation ItemGenerator::generate(const Item& item) {
  const std::string& program = options_.program;
  const std::string name = item.name.empty() ? item.image_path : item.name;
  models_->current.load(program, "the image of " + name, item.image_path, models_->lvlm);
  const at::Tensor& image = models_->current.image;
  const at::Tensor& original = models_->current.original;
  Generation g;
  std::vector<std::string> prompt_unknown;
  std::optional<std::string> instruction;  // the prompt's text, when it came as text
  if (!item.prompt) {
    instruction = item.instruction;
    prompt_unknown = check_lvlm_text(program, "the instruction of " + name, models_->lvlm, item.instruction);
  }
  const Prompt prompt = item.prompt ? *item.prompt : lvlm_prompt(models_->lvlm, item.instruction);
  g.prompt_ids = prompt.ids;
  std::vector<std::string> itm_unknown;
  if (models_->itm) itm_unknown = check_itm_text(program, "the IPM text of " + name, *models_->itm, item.itm_text);
  const std::uint64_t seed = options_.settings.seed;
  // Independent draws for the views (noise, random mask, transform) and for sampling, per item.
  const MethodViews view = models_->views->build_views(
      options_.method, options_.method_settings, image, item.itm_text, prompt, instruction, original,
      seeded_generator(question_seed(seed ^ 0x5EEDF00Dull, item.index)), program);
  const std::int64_t cap = options_.settings.max_new_tokens;
  g.ids = lvlm_generate(models_->lvlm, prompt, original, view.views, decoding_, cap,
                        seeded_generator(question_seed(seed, item.index)), program);
  generated_ += static_cast<long long>(g.ids.size());
  const auto& stops = models_->tokens.stop_ids;
  g.hit_cap = static_cast<std::int64_t>(g.ids.size()) >= cap &&
              (g.ids.empty() || std::find(stops.begin(), stops.end(), g.ids.back()) == stops.end());
  g.text = lvlm_decode(models_->lvlm, g.ids);
  g.metadata = {{"method", method_name(options_.method)},
                {"seed", seed},
                {"alpha", decoding_.alpha},
                {"beta", decoding_.beta},
                {"output_ids", g.ids},
                {"prompt_ids", g.prompt_ids},
                {"hit_token_cap", g.hit_cap},
                {"parameters", parameters_},
                {"views", view.record}};
  if (!prompt.instruction_ids.empty()) g.metadata["qformer_prompt_ids"] = prompt.instruction_ids;
  if (view.match) {
    g.metadata["itc"] = view.itc;
    g.metadata["kept_fraction"] = view.kept_fraction;
    g.metadata["ipm_ms"] = view.ms;
  }
  if (!itm_unknown.empty()) {
    g.metadata["itm_unknown_words"] = itm_unknown;
    ++itm_unknown_items_;
  }
  if (!prompt_unknown.empty()) {
    g.metadata["prompt_unknown_words"] = prompt_unknown;
    ++prompt_unknown_items_;
  }
  return g;
}

nlohmann::json ItemGenerator::run_record(const PreparedRun& run, const RunOptions& options, double seconds) const {
  return {{"program", options_.program},
          {"model_id", run.model_id},
          {"lvlm", options_.lvlm_dir},
          {"method", method_name(options_.method)},
          {"protocol", run.record},
          {"alpha", decoding_.alpha},
          {"beta", decoding_.beta},
          {"chunk", {{"index", options.chunk_idx}, {"count", options.num_chunks}}},
          {"threads", threads_},
          {"seconds", seconds},
          {"tokens_per_second", seconds > 0 ? static_cast<double>(generated_) / seconds : 0.0}};
}

void ItemGenerator::warn_unknown_words(std::ostream& err, std::size_t items) const {
  for (const auto& [count, what, field] : {std::tuple{itm_unknown_items_, "IPM texts", "itm_unknown_words"},
                                           std::tuple{prompt_unknown_items_, "prompts", "prompt_unknown_words"}})
    if (count > 0)
      err << options_.program << ": warning: " << count << " of " << items << " " << what
          << " have words outside the model's vocabulary, read as [UNK] (listed per answer in metadata." << field
          << ")\n";
}

}  // namespace agla::tools
