#pragma once
/// \file
/// One interface over the LVLMs the example programs drive: BLIP captioning checkpoints
/// (`BlipForConditionalGeneration`, e.g. `Salesforce/blip-image-captioning-*` or the ShapesWorld
/// LVLM) and LLaVA-1.5 checkpoints (`llava-hf` layout). The kind is read from the directory's
/// `config.json` (`model_type` / `architectures`). Each implementation preprocesses images its own
/// way, builds prompts (its tokenizer and template) and runs `agla::generate` with its own functor,
/// so the functor's batched two-view form is found at compile time.
///
/// A LLaVA checkpoint's `tokenizer.model` is read by agla's own SentencePiece reader
/// (`agla/text/sentencepiece.hpp`, no libsentencepiece); a checkpoint without one is driven by
/// token ids (`--prompt-ids`) and its answers are reported as ids.

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agla/decode.hpp"
#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/io/image.hpp"
#include "agla/models/blip.hpp"
#include "agla/models/llava.hpp"
#include "agla/text/sentencepiece.hpp"

namespace agla::examples {

/// What a model directory holds, from its `config.json`.
enum class ModelKind {
  BlipCaption,  ///< `BlipForConditionalGeneration`: an LVLM (captioning / question answering)
  BlipItm,      ///< `BlipForImageTextRetrieval`: the ITM model IPM needs
  Llava,        ///< `LlavaForConditionalGeneration` (`model_type` "llava")
};

/// The name of `kind` as programs print it.
inline const char* model_kind_name(ModelKind kind) {
  switch (kind) {
    case ModelKind::BlipCaption:
      return "blip-caption";
    case ModelKind::BlipItm:
      return "blip-itm";
    case ModelKind::Llava:
      return "llava";
  }
  return "?";
}

/// Reads `dir/config.json` and tells the model kind; throws `agla::FormatError` for a missing
/// file or a model type the programs do not run.
inline ModelKind detect_model_kind(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  check<FormatError>(std::filesystem::is_regular_file(path), "agla::examples::detect_model_kind: no config.json in '",
                     dir, "' (expected a Hugging Face model directory)");
  const nlohmann::json config = io::read_json_file(path);
  check<FormatError>(config.is_object(), "agla::examples::detect_model_kind: ", path, " is not a JSON object");
  std::vector<std::string> architectures;
  if (config.contains("architectures") && config["architectures"].is_array())
    for (const auto& a : config["architectures"])
      if (a.is_string()) architectures.push_back(a.get<std::string>());
  const std::string type = config.contains("model_type") && config["model_type"].is_string()
                               ? config["model_type"].get<std::string>()
                               : std::string();
  const auto has = [&](const char* name) {
    for (const auto& a : architectures)
      if (a == name) return true;
    return false;
  };
  if (type == "llava" || has("LlavaForConditionalGeneration")) return ModelKind::Llava;
  if (has("BlipForImageTextRetrieval")) return ModelKind::BlipItm;
  if (has("BlipForConditionalGeneration")) return ModelKind::BlipCaption;
  if (type == "blip" && architectures.empty()) return ModelKind::BlipCaption;
  std::string listed;
  for (const auto& a : architectures) listed += (listed.empty() ? "" : ", ") + a;
  throw FormatError(detail::concat("agla::examples::detect_model_kind: ", path, ": model_type '", type,
                                   "', architectures [", listed,
                                   "]; expected BlipForConditionalGeneration, BlipForImageTextRetrieval or "
                                   "LlavaForConditionalGeneration"));
}

/// How prompts are built for an LVLM.
struct PromptOptions {
  /// BLIP: the text fed after `[DEC]` for a question; `{question}` is replaced by the question.
  /// Default: the question with POPE's one-word suffix, as the reference asks LLaVA (and as the
  /// ShapesWorld LVLM was trained and gated).
  std::string blip_question_template = std::string("{question}") + llava::kPopeSuffix;
  /// LLaVA: the bare llava-hf template (`USER: <image>\n... ASSISTANT:`) instead of `llava_v1`
  /// with its system prompt (the AGLA reference's `--conv-mode llava_v1`).
  bool llava_hf_template = false;
  /// LLaVA: pad to square (original LLaVA) instead of the CLIP centre crop (llava-hf, reference).
  bool llava_pad_to_square = false;
};

/// An LVLM the programs drive (see the file comment).
class Lvlm {
 public:
  virtual ~Lvlm() = default;
  /// The checkpoint kind.
  virtual ModelKind kind() const = 0;
  /// RGB uint8 `[H, W, 3]` (CPU) -> the model's normalised input `[1, 3, S, S]` float32 (CPU).
  virtual at::Tensor pixel_values(const at::Tensor& image) const = 0;
  /// Whether text prompts can be tokenised (else only `--prompt-ids` drive the model).
  virtual bool has_tokenizer() const = 0;
  /// Prompt ids for free captioning with instruction `prompt` (BLIP: `[DEC]` + its word pieces).
  virtual std::vector<int64_t> caption_prompt(const std::string& prompt) const = 0;
  /// Prompt ids for a yes/no question (BLIP: the question template; LLaVA: the conversation
  /// template with POPE's one-word suffix, as the reference asks POPE questions).
  virtual std::vector<int64_t> question_prompt(const std::string& question) const = 0;
  /// Text of generated ids (special tokens skipped; without a tokenizer the ids in brackets).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  /// Ids at which generation stops.
  virtual std::vector<int64_t> stop_ids() const = 0;
  /// The id fed to finished streams.
  virtual int64_t pad_id() const = 0;
  /// Vocabulary size (prompt ids must be below it).
  virtual int64_t vocab_size() const = 0;
  /// Positions the text model has (`max_position_embeddings`).
  virtual int64_t max_positions() const = 0;
  /// Positions `prompt` takes in the text model's sequence.
  virtual int64_t prompt_positions(const std::vector<int64_t>& prompt) const = 0;
  /// Generates from `prompt` ids for one stream on `original` pixels `[1, 3, S, S]` and, when
  /// defined, `augmented` pixels (required whenever `options` runs the local view).
  virtual GenerateResult generate(const std::vector<int64_t>& prompt, const at::Tensor& original,
                                  const at::Tensor& augmented, const DecodeOptions& options,
                                  const GenerateOptions& limits, const at::Generator& generator) = 0;

 protected:
  void check_prompt(const char* who, const std::vector<int64_t>& prompt) const {
    check<InvalidArgument>(!prompt.empty(), who, ": the prompt has no token ids");
    for (int64_t id : prompt)
      check<InvalidArgument>(id >= 0 && id < vocab_size(), who, ": prompt token id ", id,
                             " is outside the vocabulary [0, ", vocab_size(), ")");
  }
  /// `limits` with max_new_tokens capped so prompt and answer fit the model's positions.
  GenerateOptions fit(const char* who, const std::vector<int64_t>& prompt, GenerateOptions limits) const {
    const int64_t room = max_positions() - prompt_positions(prompt);
    check<InvalidArgument>(room >= 1, who, ": the prompt takes ", prompt_positions(prompt),
                           " positions; the model has ", max_positions(), ", leaving none to generate");
    limits.max_new_tokens = std::min(limits.max_new_tokens, room);
    return limits;
  }
  static void check_views(const char* who, const at::Tensor& augmented, const DecodeOptions& options) {
    check<InvalidArgument>(augmented.defined() || !options.uses_local_view(0), who,
                           ": this decoding method needs an augmented view; none was given");
  }
  static at::Tensor as_tensor(const std::vector<int64_t>& ids) {
    return at::tensor(at::ArrayRef<int64_t>(ids), at::kLong).view({1, -1});
  }
  static std::string ids_text(const std::vector<int64_t>& ids) {
    std::ostringstream out;
    out << '[';
    for (std::size_t i = 0; i < ids.size(); ++i) out << (i ? " " : "") << ids[i];
    out << ']';
    return out.str();
  }
};

/// A BLIP captioning checkpoint as an `Lvlm`.
class BlipLvlm final : public Lvlm {
 public:
  /// Loads `dir` on the CPU in float32.
  BlipLvlm(const std::string& dir, PromptOptions prompts)
      : model_(blip::BlipCaptioner::load(dir)), prompts_(std::move(prompts)) {}

  ModelKind kind() const override { return ModelKind::BlipCaption; }
  at::Tensor pixel_values(const at::Tensor& image) const override {
    // BlipImageProcessor: bicubic resize to S x S, rescale and normalise as transformers does.
    return model_.preprocess(image).unsqueeze(0);
  }
  bool has_tokenizer() const override { return true; }
  std::vector<int64_t> caption_prompt(const std::string& prompt) const override { return ids_of(prompt); }
  std::vector<int64_t> question_prompt(const std::string& question) const override {
    std::string text = prompts_.blip_question_template;
    const std::string key = "{question}";
    const auto at = text.find(key);
    check<InvalidArgument>(at != std::string::npos,
                           "agla::examples::BlipLvlm: the question template must contain {question}; got '", text, "'");
    text.replace(at, key.size(), question);
    return ids_of(text);
  }
  std::string decode(const std::vector<int64_t>& ids) const override { return model_.decode(ids); }
  std::vector<int64_t> stop_ids() const override { return model_.tokens().stop_ids; }
  int64_t pad_id() const override { return model_.tokens().pad_id; }
  int64_t vocab_size() const override { return model_.tokens().vocab_size; }
  int64_t max_positions() const override { return model_.config().text.max_position_embeddings; }
  int64_t prompt_positions(const std::vector<int64_t>& prompt) const override {
    return static_cast<int64_t>(prompt.size());
  }
  GenerateResult generate(const std::vector<int64_t>& prompt, const at::Tensor& original, const at::Tensor& augmented,
                          const DecodeOptions& options, const GenerateOptions& limits,
                          const at::Generator& generator) override {
    check_prompt("agla::examples::BlipLvlm::generate", prompt);
    check_views("agla::examples::BlipLvlm::generate", augmented, options);
    const GenerateOptions fitted = fit("agla::examples::BlipLvlm::generate", prompt, limits);
    std::vector<at::Tensor> views;
    if (options.uses_local_view(0)) views.push_back(augmented);
    return agla::generate(model_, model_.begin(LvlmInputs::images(as_tensor(prompt), original, views)), options,
                          fitted, generator);
  }
  /// The wrapped captioner.
  const blip::BlipCaptioner& captioner() const { return model_; }

 private:
  std::vector<int64_t> ids_of(const std::string& text) const {
    return model_.prompt(text).ids;
  }

  blip::BlipCaptioner model_;
  PromptOptions prompts_;
};

/// A LLaVA-1.5 checkpoint as an `Lvlm`.
class LlavaLvlmAdapter final : public Lvlm {
 public:
  /// Loads `dir` on the CPU in float32 (memory-mapped), with `tokenizer.model` when present.
  LlavaLvlmAdapter(const std::string& dir, PromptOptions prompts)
      : lvlm_(llava::LlavaLvlm::load(dir)), model_(lvlm_.model()), prompts_(std::move(prompts)) {
    const std::string path = (std::filesystem::path(dir) / "tokenizer.model").string();
    if (std::filesystem::is_regular_file(path)) tokenizer_ = std::make_shared<text::SentencePieceTokenizer>(path);
  }

  ModelKind kind() const override { return ModelKind::Llava; }
  at::Tensor pixel_values(const at::Tensor& image) const override {
    return llava::preprocess_image(
               image.to(at::kCPU).contiguous(), model_->config().vision.image_size,
               prompts_.llava_pad_to_square ? llava::AspectMode::PadToSquare : llava::AspectMode::CenterCrop)
        .unsqueeze(0);
  }
  bool has_tokenizer() const override {
    return tokenizer_ != nullptr;
  }
  std::vector<int64_t> caption_prompt(const std::string& prompt) const override { return encode(prompt, false); }
  std::vector<int64_t> question_prompt(const std::string& question) const override { return encode(question, true); }
  std::string decode(const std::vector<int64_t>& ids) const override {
    if (tokenizer_) return tokenizer_->decode(ids);
    std::vector<int64_t> kept;
    for (int64_t id : ids)
      if (id != model_->config().text.eos_token_id) kept.push_back(id);
    return ids_text(kept);
  }
  std::vector<int64_t> stop_ids() const override { return {model_->config().text.eos_token_id}; }
  int64_t pad_id() const override { return std::max<int64_t>(0, model_->config().pad_token_id); }
  int64_t vocab_size() const override { return model_->config().text.vocab_size; }
  int64_t max_positions() const override { return model_->config().text.max_position_embeddings; }
  int64_t prompt_positions(const std::vector<int64_t>& prompt) const override {
    // The image token expands to the image features.
    return static_cast<int64_t>(prompt.size()) - 1 + model_->config().image_tokens();
  }
  GenerateResult generate(const std::vector<int64_t>& prompt, const at::Tensor& original, const at::Tensor& augmented,
                          const DecodeOptions& options, const GenerateOptions& limits,
                          const at::Generator& generator) override {
    check_prompt("agla::examples::LlavaLvlmAdapter::generate", prompt);
    check_views("agla::examples::LlavaLvlmAdapter::generate", augmented, options);
    const GenerateOptions fitted = fit("agla::examples::LlavaLvlmAdapter::generate", prompt, limits);
    const at::Tensor ids = as_tensor(prompt);
    std::vector<at::Tensor> views;
    if (options.uses_local_view(0)) views.push_back(augmented);
    return agla::generate(lvlm_, lvlm_.begin(LvlmInputs::images(ids, original, views, fitted.max_new_tokens)),
                          options, fitted, generator);
  }

 private:
  std::vector<int64_t> encode(const std::string& text, bool pope) const {
    if (tokenizer_) {
      const auto conversation = prompts_.llava_hf_template ? llava::llava_hf_template() : llava::llava_v1_template();
      return llava::encode_prompt(*tokenizer_, llava::build_prompt(text, conversation, pope),
                                       model_->config().image_token_index);
    }
    throw InvalidArgument(detail::concat("agla::examples::LlavaLvlmAdapter: cannot tokenise '", text, "': ",
                                         "the checkpoint has no tokenizer.model",
                                         "; pass the prompt as token ids (--prompt-ids, with one image token ",
                                         model_->config().image_token_index, ")"));
  }

  llava::LlavaLvlm lvlm_;
  llava::LlavaModel model_;
  PromptOptions prompts_;
  std::shared_ptr<text::SentencePieceTokenizer> tokenizer_;
};

/// Loads the LVLM in `dir` (kind from its config.json); throws `agla::FormatError` when `dir`
/// holds an ITM model or an unknown kind.
inline std::unique_ptr<Lvlm> load_lvlm(const std::string& dir, const PromptOptions& prompts = {}) {
  const ModelKind kind = detect_model_kind(dir);
  check<FormatError>(kind != ModelKind::BlipItm, "agla::examples::load_lvlm: '", dir,
                     "' holds a BLIP ITM model (BlipForImageTextRetrieval); --lvlm needs a captioning or LLaVA "
                     "checkpoint");
  if (kind == ModelKind::Llava) return std::make_unique<LlavaLvlmAdapter>(dir, prompts);
  return std::make_unique<BlipLvlm>(dir, prompts);
}

/// Loads the BLIP ITM model in `dir`; throws `agla::FormatError` when `dir` holds another kind.
inline blip::BlipItm load_itm(const std::string& dir) {
  const ModelKind kind = detect_model_kind(dir);
  check<FormatError>(kind == ModelKind::BlipItm, "agla::examples::load_itm: '", dir, "' holds a ",
                     model_kind_name(kind), " model; --itm needs a BLIP ITM checkpoint (BlipForImageTextRetrieval)");
  return blip::BlipItm::load(dir);
}

}  // namespace agla::examples
