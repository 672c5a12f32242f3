#pragma once
/// \file
/// Evaluation protocols: named presets that pin everything a benchmark table depends on besides the
/// method -- the instruction (prompt template and suffix), sampling or greedy decoding,
/// temperature, top-k, top-p, the seeds of the runs, the new-token cap, image preprocessing
/// (pad-to-square or centre crop), the prompt template variant and the answer parser -- as the AGLA
/// and VCD reference scripts ran POPE, MME and CHAIR, plus a greedy protocol (docs/reproducing.md).
/// Explicit options override a protocol's settings; every answer and results file records the
/// protocol's name, the settings the run resolved and the options that overrode it. Also: one
/// item's generation under a run's settings (model loading, augmented view, decoding), which the
/// MME and CHAIR programs share.

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "common/methods.hpp"
#include "common/models.hpp"

namespace agla::tools {

/// The benchmarks a protocol is defined for.
enum class Benchmark { Pope, Mme, Chair };

/// "pope", "mme" or "chair".
const char* benchmark_name(Benchmark benchmark);

/// A protocol resolved for one benchmark and one LVLM family.
struct Protocol {
  std::string name;                  ///< "agla", "vcd", "greedy", "greedy-64"; "custom" when none was chosen
  Benchmark benchmark = Benchmark::Pope;
  std::string family;                ///< the LVLM family it was resolved for ("llava", "instructblip", ...)
  std::string instruction;           ///< POPE/MME: template with {question}; CHAIR: the caption prompt
  SamplingSettings sampling;         ///< alpha/beta set only where the protocol pins them for `fusion_methods`
  std::vector<std::string> fusion_methods;  ///< methods whose alpha/beta the protocol pins
  std::vector<std::uint64_t> seeds;  ///< the seeds of the reference runs (empty: deterministic decoding)
  std::int64_t max_new_tokens = 16;  ///< new-token cap
  std::int64_t noise_step = 500;     ///< VCD's diffusion step
  bool pad_to_square = false;        ///< LLaVA: pad to square (official LLaVA) instead of the CLIP centre crop
  bool llava_hf_template = false;    ///< LLaVA: the bare llava-hf template instead of llava_v1
  std::string parser;                ///< "substring" or "pope" (POPE), "mme" (calculation.py), "chair"
  bool drop_incomplete_sentence = false;  ///< CHAIR: drop a trailing sentence the token cap cut off
  std::string reference;             ///< the upstream scripts the protocol follows
};

/// The protocol names `--protocol` accepts.
const std::vector<std::string>& protocol_names();

/// Throws `agla::InvalidArgument` naming `program` and `--protocol` unless `name` is a protocol.
std::string parse_protocol_name(const std::string& program, const std::string& name);

/// Protocol `name` for `benchmark` on an LVLM of family `family` (the reference values differ
/// between LLaVA and InstructBLIP: top-k, token cap, VCD's alpha). Throws `agla::InvalidArgument`
/// for an unknown name or a protocol not defined for `benchmark`.
Protocol resolve_protocol(const std::string& name, Benchmark benchmark, const std::string& family);

/// The settings a protocol sets in a program, with the program's own defaults before it applies.
struct RunSettings {
  std::string instruction;  ///< template with {question} (POPE, MME) or caption prompt (CHAIR)
  SamplingSettings sampling;
  std::uint64_t seed = 1;
  std::int64_t max_new_tokens = 16;
  std::int64_t noise_step = 500;
  LvlmSettings lvlm;
  std::string parser;
  bool drop_incomplete_sentence = false;
};

/// The options a protocol pins, by command-line name (an explicit one overrides the protocol).
const std::vector<std::string>& protocol_options();

/// Gives the views of `method` the noise step `settings` resolved (the command line's or the
/// protocol's); `method_settings` is what builds the views.
void adopt_noise_step(Method method, const RunSettings& settings, MethodSettings& method_settings);

/// Applies `protocol` to `settings` for `method`, leaving alone every setting whose option is in
/// `given` (the options the command line named), and returns the record every answer and results
/// file carries: name, benchmark, family, reference, the resolved settings and the options that
/// overrode the protocol. With `protocol` unset the record names "custom" and holds `settings`.
nlohmann::json apply_protocol(const std::optional<Protocol>& protocol, const std::set<std::string>& given,
                              const std::string& method, Benchmark benchmark, const std::string& family,
                              RunSettings& settings);

/// `text` with its trailing incomplete sentence dropped: cut after the last '.', '!' or '?'; the
/// whole text when it has no sentence end (a caption of one cut sentence stays what it is).
std::string drop_incomplete_sentence(const std::string& text);

/// The LVLM directory of a run: `given`, else the shipped ShapesWorld LVLM.
std::string lvlm_directory(const std::string& program, const std::string& given);

/// The run options `agla_mme` and `agla_chair` share: protocol, method, models, decoding settings,
/// chunking, output and threads.
struct RunOptions {
  std::optional<std::string> protocol;  ///< `--protocol`
  Method method = Method::Agla;
  MethodSettings method_settings;  ///< the method's own options (disturbance, PAI, M3ID, noise step)
  std::string lvlm, itm, model_id;
  RunSettings settings;
  int num_chunks = 1, chunk_idx = 0, threads = 0;
  std::optional<std::int64_t> limit;  ///< only the first N items
  bool quiet = false, json = false;
};

/// Consumes `arg` when it is one of the shared run options (`--protocol`, `--method`, `--lvlm`,
/// `--itm`, `--model-id`, the sampling and method options, `--seed`, `--max-new-tokens`,
/// `--llava-hf-template`, `--pad-to-square`, `--num-chunks`, `--chunk-idx`, `--limit`, `--quiet`,
/// `--json`, `--threads`) and stores its range-checked value; false otherwise.
bool parse_run_option(const std::string& arg, ArgCursor& cursor, RunOptions& options);

/// Checks what the shared options allow one by one but not together (chunk index, method and
/// sampling); throws `agla::InvalidArgument` naming `program` and the option.
void check_run_options(const std::string& program, const RunOptions& options);

/// What one program run needs to generate: models, method and settings.
struct GeneratorOptions {
  std::string program;
  std::string lvlm_dir;  ///< resolved (see `lvlm_directory`)
  std::string itm_dir;   ///< empty: the shipped ShapesWorld ITM when the method needs one
  Method method = Method::Agla;
  MethodSettings method_settings;
  RunSettings settings;
  int threads = 0;          ///< 0: the thread policy's default
  bool image_cache = true;  ///< encode each image (and LLaVA's prompt prefix) once for its items
};

/// One item of a run: the image, what the LVLM is asked about it and what IPM matches.
struct Item {
  std::string image_path;
  std::string instruction;      ///< templated instruction; ignored when `prompt` is given
  std::optional<Prompt> prompt; ///< prompt ids used as they are (checkpoints without a tokenizer)
  std::string itm_text;         ///< what IPM matches
  std::size_t index = 0;        ///< the item's position in the whole run (its seeds derive from it)
  std::string name;             ///< the item in messages ("question 12"; empty: the image path)
};

/// One item's answer and what the run recorded about it.
struct Generation {
  std::string text;            ///< decoded answer
  std::vector<std::int64_t> ids, prompt_ids;
  bool hit_cap = false;        ///< the token cap ended the generation
  nlohmann::json metadata;     ///< method, seed, alpha, beta, ids, IPM measurements, unknown words
};

/// A run made ready: its LVLM directory and family, its settings with the protocol applied, the
/// protocol record and the model id.
struct PreparedRun {
  GeneratorOptions generator;
  std::string family, model_id;
  nlohmann::json record;  ///< see `apply_protocol`
};

/// Resolves the LVLM directory and family of `options`, applies its protocol for `benchmark`
/// (options named in `given` win) and returns what the run needs; `options.settings` is updated.
PreparedRun prepare_run(const std::string& program, RunOptions& options, const std::set<std::string>& given,
                        Benchmark benchmark);

/// Prints a scoring `report` (an `agla::eval` report type) as one JSON line (`json`, `--json`) or
/// as `format(report)`.
template <class Report, class Format>
void print_report(std::ostream& out, bool json, const Report& report, Format format) {
  out << (json ? to_json(report).dump() + "\n" : format(report));  // eval::to_json, found by its argument
}

/// The line a run's text report ends with: "Model: M, method X, protocol P, seed S, N <items> in T s".
std::string run_summary_line(const PreparedRun& run, std::size_t items, const std::string& what, double seconds);

/// Loads the models of a run once and generates one item at a time: the prompt from the
/// instruction, the method's augmented view and the decoding, each item drawing from its own
/// generators (seeded by the run seed and the item's index), so chunks of a run answer as the
/// whole run does.
class ItemGenerator {
 public:
  /// Loads the LVLM (and the ITM model when the method needs one or `itm_dir` is given); warnings
  /// go to `err`.
  ItemGenerator(const GeneratorOptions& options, std::ostream& err);
  ~ItemGenerator();
  ItemGenerator(const ItemGenerator&) = delete;
  ItemGenerator& operator=(const ItemGenerator&) = delete;

  /// Answers `item`: its prompt, the method's views of its image, the decoding.
  Generation generate(const Item& item);

  /// The LVLM's prompt from token ids given as they are (`qformer_ids`: InstructBLIP's Q-Former ids).
  Prompt prompt_from_ids(const std::vector<std::int64_t>& ids, const std::vector<std::int64_t>& qformer_ids) const;

  /// Whether the LVLM has a tokenizer (else answers are token ids and cannot be scored as text).
  bool has_tokenizer() const;
  /// The LVLM family name.
  const std::string& family() const { return family_; }
  /// Intra-op threads in use.
  int threads() const { return threads_; }
  /// The decoding options of the run.
  const DecodeOptions& decoding() const { return decoding_; }
  /// The method's parameters as every answer records them.
  const nlohmann::json& parameters() const { return parameters_; }
  /// Generated tokens so far.
  long long generated_tokens() const { return generated_; }
  /// Writes one warning to `err` for each kind of text (prompts, IPM texts) in which some of the
  /// `items` generated so far had words outside the model's vocabulary (listed per item in its
  /// metadata); nothing when there were none.
  void warn_unknown_words(std::ostream& err, std::size_t items) const;
  /// Items so far whose IPM text, and whose prompt, had words outside the vocabulary.
  std::pair<std::size_t, std::size_t> unknown_word_items() const { return {itm_unknown_items_, prompt_unknown_items_}; }

  /// What a run's record says of every run of `options` that took `seconds`: program, model, LVLM
  /// directory, method, protocol, alpha, beta, chunk, threads, seconds, tokens/s.
  nlohmann::json run_record(const PreparedRun& run, const RunOptions& options, double seconds) const;

 private:
  struct Models;
  GeneratorOptions options_;
  std::unique_ptr<Models> models_;
  std::string family_;
  int threads_ = 1;
  DecodeOptions decoding_;
  nlohmann::json parameters_;  // the method's parameters as every answer records them
  long long generated_ = 0;
  std::size_t prompt_unknown_items_ = 0, itm_unknown_items_ = 0;
};

}  // namespace agla::tools
