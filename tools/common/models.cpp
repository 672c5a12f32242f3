#include "common/models.hpp"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>
#include <utility>

#include "agla/decode/generate.hpp"
#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/io/image.hpp"
#include "agla/text/wordpiece.hpp"
#include "agla/views/selection.hpp"
#include "common/cli.hpp"

namespace agla::tools {

namespace {

/// The index of `Model` among the alternatives of `Variant`.
template <typename Model, typename Variant>
struct AlternativeIndex;
template <typename Model, typename... Alternatives>
struct AlternativeIndex<Model, std::variant<Alternatives...>> {
  static constexpr std::size_t value = [] {
    constexpr bool same[] = {std::is_same_v<Model, Alternatives>...};
    for (std::size_t i = 0; i < sizeof...(Alternatives); ++i)
      if (same[i]) return i;
    return sizeof...(Alternatives);
  }();
  static_assert(value < sizeof...(Alternatives), "the model is not an alternative of AnyLvlm");
};

/// Loads `dir` as `Model` on the CPU in float32 with the settings its family honours.
template <typename Model>
AnyLvlm load_as(const std::string& dir, const LvlmSettings& settings) {
  Model model = Model::load(dir);
  if constexpr (std::is_same_v<Model, llava::LlavaLvlm>) {
    llava::LlavaPromptOptions prompts;
    prompts.conversation = settings.llava_hf_template ? llava::llava_hf_template() : llava::llava_v1_template();
    prompts.aspect = settings.pad_to_square ? llava::AspectMode::PadToSquare : llava::AspectMode::CenterCrop;
    model.set_prompt_options(std::move(prompts));
  }
  return AnyLvlm(std::in_place_type<Model>, std::move(model));
}

/// The table row of an LVLM family; checks the LVLM contract at compile time.
template <typename Model>
ModelFamily lvlm_family(const char* name, const char* architecture, const char* model_type) {
  static_assert(check_lvlm<Model>());
  return ModelFamily{name, architecture, model_type, &load_as<Model>, AlternativeIndex<Model, AnyLvlm>::value};
}

/// The family row that loads alternative `index` of `AnyLvlm`.
const ModelFamily& family_of_alternative(std::size_t index) {
  for (const ModelFamily& family : model_families())
    if (family.load != nullptr && family.alternative == index) return family;
  throw Error(detail::concat("agla::tools: AnyLvlm alternative ", index, " has no row in model_families()"));
}

/// Words of `text` (split at white space) with a piece `tokenizer` reads as `[UNK]`.
std::vector<std::string> wordpiece_unknown_words(const text::WordPieceTokenizer& tokenizer, const std::string& text) {
  std::vector<std::string> unknown;
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    const std::vector<std::string> pieces = tokenizer.tokenize(word);
    const std::vector<std::int64_t> ids = tokenizer.tokens_to_ids(pieces);
    if (std::find(ids.begin(), ids.end(), tokenizer.unk_id()) != ids.end()) unknown.push_back(word);
  }
  return unknown;
}

/// Throws `agla::InvalidArgument` when `unknown` holds every word of `read` (the text as the model
/// reads it; `shown` as the user gave it).
void refuse_all_unknown(const std::string& program, const std::string& what, const std::string& read,
                        const std::string& shown, const std::vector<std::string>& unknown, const char* vocabulary,
                        const char* consequence) {
  std::istringstream words(read);
  std::size_t count = 0;
  for (std::string word; words >> word;) ++count;
  check<InvalidArgument>(count == 0 || unknown.size() < count, program, ": every word of ", what, " '", shown,
                         "' is outside ", vocabulary, " ([UNK]), so ", consequence,
                         " would not depend on it; use words the model knows");
}

template <typename Model>
std::vector<std::int64_t> generate_with(Model& model, const Prompt& prompt, const at::Tensor& original,
                                        const std::vector<ExtraView>& views, const DecodeOptions& options,
                                        std::int64_t max_new_tokens, const at::Generator& generator,
                                        const std::string& program) {
  const TokenSpec tokens = model.tokens();
  check<InvalidArgument>(!prompt.ids.empty(), program, ": the prompt has no token ids");
  for (std::int64_t id : prompt.ids)
    check<InvalidArgument>(id >= 0 && id < tokens.vocab_size, program, ": prompt token id ", id,
                           " is outside the vocabulary [0, ", tokens.vocab_size, ")");
  const bool extra = options.uses_local_view(0);
  const auto needed = static_cast<std::size_t>(options.extra_views());
  check<InvalidArgument>(!extra || views.size() == needed, program, ": this decoding method fuses ", needed,
                         " extra view(s); ", views.size(), " were given");
  LvlmInputs inputs;
  inputs.prompt = batch_prompts({prompt}, tokens.pad_id);
  inputs.pixels = original;
  if (extra) inputs.views = views;
  const std::int64_t room = model.room(inputs.prompt);
  check<InvalidArgument>(room >= 1, program, ": the prompt (", prompt.ids.size(),
                         " token ids) fills the model's positions, leaving none to generate");
  GenerateOptions limits;
  limits.max_new_tokens = std::min(max_new_tokens, room);
  limits.eos_token_ids = tokens.stop_ids;
  limits.pad_token_id = tokens.pad_id;
  inputs.max_new_tokens = limits.max_new_tokens;
  const GenerateResult result = agla::generate(model, model.begin(inputs), options, limits, generator);
  model.reset();
  const at::Tensor row = result.tokens[0].narrow(0, 0, result.lengths[0]).contiguous();
  return std::vector<std::int64_t>(row.data_ptr<std::int64_t>(), row.data_ptr<std::int64_t>() + row.numel());
}

}  // namespace

const std::vector<ModelFamily>& model_families() {
  // Adding an LVLM family: one alternative of AnyLvlm and one row here.
  static const std::vector<ModelFamily> families = {
      lvlm_family<blip::BlipCaptioner>("blip-caption", "BlipForConditionalGeneration", "blip"),
      ModelFamily{"blip-itm", "BlipForImageTextRetrieval", nullptr, nullptr, 0},
      lvlm_family<llava::LlavaLvlm>("llava", "LlavaForConditionalGeneration", "llava"),
      lvlm_family<instructblip::InstructBlipLvlm>("instructblip", "InstructBlipForConditionalGeneration",
                                                  "instructblip"),
  };
  return families;
}

const ModelFamily& detect_model_family(const std::string& dir) {
  const char* fn = "agla::tools::detect_model_family";
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  check<FormatError>(std::filesystem::is_regular_file(path), fn, ": no config.json in '", dir,
                     "' (expected a Hugging Face model directory)");
  const nlohmann::json config = io::read_json_file(path);
  check<FormatError>(config.is_object(), fn, ": ", path, " is not a JSON object");
  std::vector<std::string> architectures;
  if (const auto it = config.find("architectures"); it != config.end() && it->is_array())
    for (const auto& a : *it)
      if (a.is_string()) architectures.push_back(a.get<std::string>());
  const auto type_it = config.find("model_type");
  const std::string type = type_it != config.end() && type_it->is_string() ? type_it->get<std::string>() : "";
  for (const ModelFamily& family : model_families())
    if (std::find(architectures.begin(), architectures.end(), family.architecture) != architectures.end())
      return family;
  for (const ModelFamily& family : model_families())
    if (family.model_type != nullptr && type == family.model_type) return family;
  std::string listed, known;
  for (const auto& a : architectures) listed += (listed.empty() ? "" : ", ") + a;
  for (const ModelFamily& family : model_families())
    known += (known.empty() ? "" : ", ") + std::string(family.architecture);
  throw FormatError(detail::concat(fn, ": ", path, ": model_type '", type, "', architectures [", listed,
                                   "]; expected one of ", known));
}

AnyLvlm load_lvlm(const std::string& dir, const LvlmSettings& settings, const std::string& option) {
  const ModelFamily& family = detect_model_family(dir);
  if (family.load == nullptr) {
    std::string lvlms;
    for (const ModelFamily& f : model_families())
      if (f.load != nullptr) lvlms += (lvlms.empty() ? "" : ", ") + std::string(f.architecture);
    throw FormatError(detail::concat("agla::tools::load_lvlm: '", dir, "' holds a ", family.name, " model (",
                                     family.architecture, "); ", option, " needs an LVLM checkpoint (", lvlms, ")"));
  }
  return family.load(dir, settings);
}

blip::BlipItm load_itm(const std::string& dir, const std::string& option) {
  const ModelFamily& family = detect_model_family(dir);
  check<FormatError>(family.load == nullptr && std::string(family.name) == "blip-itm", "agla::tools::load_itm: '", dir,
                     "' holds a ", family.name, " model; ", option,
                     " needs a BLIP ITM checkpoint (BlipForImageTextRetrieval)");
  return blip::BlipItm::load(dir);
}

const char* lvlm_family_name(const AnyLvlm& lvlm) { return family_of_alternative(lvlm.index()).name; }

void CurrentImage::load(const std::string& program, const std::string& what, const std::string& image_path,
                        const AnyLvlm& lvlm) {
  if (image.defined() && image_path == path) return;
  require_file(program, what, image_path);
  image = io::read_image(image_path);
  original = lvlm_pixels(lvlm, image);
  path = image_path;
}

at::Tensor lvlm_pixels(const AnyLvlm& lvlm, const at::Tensor& image) {
  return std::visit([&](const auto& model) { return model.preprocess(image).unsqueeze(0); }, lvlm);
}

bool lvlm_has_tokenizer(const AnyLvlm& lvlm) {
  return std::visit([](const auto& model) { return model.has_tokenizer(); }, lvlm);
}

Prompt lvlm_prompt(const AnyLvlm& lvlm, const std::string& instruction) {
  return std::visit([&](const auto& model) { return model.prompt(instruction); }, lvlm);
}

std::string lvlm_decode(const AnyLvlm& lvlm, const std::vector<std::int64_t>& ids) {
  return std::visit([&](const auto& model) { return model.decode(ids); }, lvlm);
}

TokenSpec lvlm_tokens(const AnyLvlm& lvlm) {
  return std::visit([](const auto& model) { return model.tokens(); }, lvlm);
}

std::vector<std::string> check_lvlm_text(const std::string& program, const std::string& what, const AnyLvlm& lvlm,
                                         const std::string& text) {
  std::vector<std::string> unknown = std::visit(
      [&](const auto& model) -> std::vector<std::string> {
        if constexpr (std::is_same_v<std::decay_t<decltype(model)>, blip::BlipCaptioner>) {
          return wordpiece_unknown_words(model.tokenizer(), text);
        } else {
          return {};  // SentencePiece falls back to bytes: no word is unknown
        }
      },
      lvlm);
  refuse_all_unknown(program, what, text, text, unknown, "the LVLM's vocabulary", "the model's output");
  return unknown;
}

std::vector<std::string> check_itm_text(const std::string& program, const std::string& what, const blip::BlipItm& itm,
                                        const std::string& text) {
  const std::string read = text::pre_caption(text);
  std::vector<std::string> unknown = wordpiece_unknown_words(itm.tokenizer(), read);
  refuse_all_unknown(program, what, read, text, unknown, "the ITM model's vocabulary", "IPM's relevance map and mask");
  return unknown;
}

Prompt lvlm_prompt_from_ids(const std::string& program, const AnyLvlm& lvlm, const std::vector<std::int64_t>& ids,
                            const std::vector<std::int64_t>& qformer_ids) {
  Prompt prompt{ids, qformer_ids};
  if (const auto* model = std::get_if<instructblip::InstructBlipLvlm>(&lvlm)) {
    check<InvalidArgument>(!qformer_ids.empty(), program,
                           ": an InstructBLIP checkpoint without a tokenizer needs the Q-Former's prompt ids too "
                           "(--qformer-prompt-ids, [CLS] ... [SEP])");
    const std::int64_t vocab = model->model()->config().qformer.vocab_size;
    for (std::int64_t id : qformer_ids)
      check<InvalidArgument>(id >= 0 && id < vocab, program, ": Q-Former prompt id ", id,
                             " is outside the Q-Former's vocabulary [0, ", vocab, ")");
  } else {
    check<InvalidArgument>(qformer_ids.empty(), program, ": Q-Former prompt ids were given, but the ",
                           lvlm_family_name(lvlm), " model has no Q-Former (they are for InstructBLIP)");
  }
  return prompt;
}

Prompt lvlm_disturbed_prompt(const AnyLvlm& lvlm, const std::string& instruction, const std::string& disturbance) {
  return std::visit([&](const auto& model) { return model.disturbed_prompt(instruction, disturbance); }, lvlm);
}

bool lvlm_set_pai_attention(AnyLvlm& lvlm, const std::optional<llama::PaiAttention>& pai) {
  return std::visit(
      [&](auto& model) {
        if constexpr (std::is_same_v<std::decay_t<decltype(model)>, blip::BlipCaptioner>) {
          return false;
        } else {
          model.set_pai_attention(pai);
          return true;
        }
      },
      lvlm);
}

std::vector<double> lvlm_view_distances(AnyLvlm& lvlm, const Prompt& prompt, const at::Tensor& original,
                                        const std::vector<ExtraView>& candidates, const std::string& program) {
  check<InvalidArgument>(!candidates.empty(), program, ": no candidate views to choose from");
  return std::visit(
      [&](auto& model) {
        LvlmInputs inputs;
        inputs.prompt = batch_prompts({prompt}, model.tokens().pad_id);
        inputs.pixels = original;
        inputs.views = candidates;
        inputs.max_new_tokens = 1;
        at::Tensor logits;
        {
          const at::NoGradGuard no_grad;
          logits = model(model.begin(inputs), AllViews{}).to(at::kCPU, at::kFloat);
        }
        model.reset();
        const std::vector<at::Tensor> blocks = logits.chunk(static_cast<std::int64_t>(candidates.size()) + 1, 0);
        const at::Tensor distances = agla::views::softmax_distances(blocks).to(at::kDouble).contiguous();
        return std::vector<double>(distances.data_ptr<double>(), distances.data_ptr<double>() + distances.numel());
      },
      lvlm);
}

std::vector<std::int64_t> lvlm_generate(AnyLvlm& lvlm, const Prompt& prompt, const at::Tensor& original,
                                        const std::vector<ExtraView>& views, const DecodeOptions& options,
                                        std::int64_t max_new_tokens, const at::Generator& generator,
                                        const std::string& program) {
  return std::visit(
      [&](auto& model) {
        return generate_with(model, prompt, original, views, options, max_new_tokens, generator, program);
      },
      lvlm);
}

}  // namespace agla::tools
