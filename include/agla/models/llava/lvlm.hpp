#pragma once
/// \file
/// LLaVA-1.5 as an LVLM (the contract of `agla/models/lvlm.hpp`): one generation at a time, B
/// streams, 1 + K views, one KV cache row per stream and view (`llama::ViewDecoder`), and every
/// view in one batched forward when asked (`[(1 + K) B, V]`).
///
/// Sequences: each row is the prompt with the image features spliced in at its image token (image
/// and text views), or the prompt without the image token (no-image views). Rows of different
/// lengths -- left-padded prompts, text views with another prompt, no-image views -- are left-padded
/// to one length M at the prefill, masked out of attention, and take positions `cumsum(mask) - 1`,
/// as transformers v4.37.2 does for left-padded batches. So every view has the same cached length
/// and the views can be batched at any step.
///
/// Image cache (`set_image_cache`): the prompt up to and including the image token (`llava_v1`:
/// system prompt, `USER: `, the image tokens) does not depend on the question, so its keys and
/// values are computed once per (image, prefix ids) and copied into every later generation that
/// starts with it (`llama::PrefixKv`); only the rest of the prompt goes through the language model,
/// and the vision tower does not run again. It applies to the original view, text views (their
/// own prefix, e.g. ICD's disturbed system prompt) and image views marked `ExtraView::reusable`
/// (VCD's noise drawn once per image), never to AGLA's masked view.

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agla/decode/view.hpp"
#include "agla/error.hpp"
#include "agla/io/checkpoint.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/models/llama/model.hpp"
#include "agla/models/llama/views.hpp"
#include "agla/models/llava/model.hpp"
#include "agla/models/llava/preprocess.hpp"
#include "agla/models/llava/prompt.hpp"
#include "agla/text/sentencepiece.hpp"
#include "agla/models/lvlm.hpp"

namespace agla::llava {

/// How `LlavaLvlm::prompt` and `LlavaLvlm::preprocess` shape inputs.
struct LlavaPromptOptions {
  /// The conversation around the instruction; `llava_v1` (with its system prompt) is what the AGLA
  /// and VCD reference scripts use (`--conv-mode llava_v1`).
  ConversationTemplate conversation = llava_v1_template();
  /// Centre crop (llava-hf processor, the reference scripts) or the original LLaVA's pad-to-square.
  AspectMode aspect = AspectMode::CenterCrop;
};

/// PAI's attention part (see `llama::PaiAttention`).
using llama::PaiAttention;

/// One view of a LLaVA generation (`LlavaLvlm`'s state).
struct LlavaViewRows {
  ViewKind kind;
  std::vector<at::Tensor> prompts;  ///< B rows of real (unpadded) prompt ids, CPU int64
  at::Tensor pixels;                ///< [B, 3, S, S] or undefined (no image)
  bool reusable = false;            ///< the image cache may serve the rows' prefixes
};

/// LLaVA-1.5 LVLM over a shared `LlavaModel` (see the file comment). Call `begin` per generation,
/// then the library calls `operator()` with the prompt first and one new token per stream after that.
/// The forward forms, `reset` and PAI's option come from `llama::ViewLvlm`.
class LlavaLvlm : public llama::ViewLvlm<LlavaLvlm, LlavaViewRows> {
  using ViewRows = LlavaViewRows;
  friend class llama::ViewLvlm<LlavaLvlm, ViewRows>;

 public:
  /// Loads a llava-hf checkpoint directory: `config.json` (full or sparse), `model.safetensors` or a
  /// sharded index (or `pytorch_model.bin`), and `tokenizer.model` when present. Weights are
  /// memory-mapped and bound without a copy when `options` match the file.
  static LlavaLvlm load(const std::string& dir, const io::LoadOptions& options = {}) {
    options.validate("agla::llava::LlavaLvlm::load");
    LlavaModel model(read_config((std::filesystem::path(dir) / "config.json").string()));
    load_weights(model, io::load_checkpoint(dir), "checkpoint '" + dir + "'", options);
    model->eval();
    std::shared_ptr<const text::SentencePieceTokenizer> tokenizer;
    const std::string path = (std::filesystem::path(dir) / "tokenizer.model").string();
    if (std::filesystem::is_regular_file(path)) tokenizer = std::make_shared<text::SentencePieceTokenizer>(path);
    return LlavaLvlm(model, tokenizer);
  }

  /// Wraps `model` (shared, not copied) and an optional tokenizer; a second `LlavaLvlm` over the same
  /// model serves another generation concurrently.
  explicit LlavaLvlm(LlavaModel model, std::shared_ptr<const text::SentencePieceTokenizer> tokenizer = nullptr,
                     LlavaPromptOptions prompts = {})
      : model_(std::move(model)), tokenizer_(std::move(tokenizer)), prompts_(std::move(prompts)) {}

  /// RGB uint8 `[H, W, 3]` (CPU) -> float32 `[3, S, S]` (CPU), as the prompt options' aspect mode says.
  at::Tensor preprocess(const at::Tensor& image) const {
    return preprocess_image(image.to(at::kCPU).contiguous(), model_->config().vision.image_size, prompts_.aspect);
  }

  /// Whether `tokenizer.model` was loaded (else prompts must be given as ids).
  bool has_tokenizer() const { return tokenizer_ != nullptr; }

  /// The conversation template around `instruction` with the image placeholder, tokenised as
  /// `tokenizer_image_token` does (BOS, pieces, one image token). Throws `agla::InvalidArgument`
  /// without a tokenizer.
  Prompt prompt(const std::string& instruction) const {
    check<InvalidArgument>(tokenizer_ != nullptr, "agla::llava::LlavaLvlm::prompt: cannot tokenise '", instruction,
                           "': the checkpoint has no tokenizer.model; give the prompt as token ids (with one image "
                           "token ",
                           model_->config().image_token_index, ")");
    return Prompt{encode_prompt(*tokenizer_, build_prompt(instruction, prompts_.conversation),
                                            model_->config().image_token_index),
                  {}};
  }

  /// ICD's text view: the conversation with `disturbance` in place of the system prompt, around the
  /// same instruction (p1k0pan/ICD `icd_llava_pope.py`: `conv_custom.system = preprompt`).
  Prompt disturbed_prompt(const std::string& instruction, const std::string& disturbance) const {
    check<InvalidArgument>(tokenizer_ != nullptr, "agla::llava::LlavaLvlm::disturbed_prompt: the checkpoint has no "
                           "tokenizer.model; give the disturbed prompt as token ids");
    ConversationTemplate conversation = prompts_.conversation;
    conversation.system = disturbance;
    return Prompt{encode_prompt(*tokenizer_, build_prompt(instruction, conversation), model_->config().image_token_index),
                  {}};
  }

  /// Text of generated ids (BOS, EOS, pad and the image id skipped); without a tokenizer the ids in
  /// brackets.
  std::string decode(const std::vector<int64_t>& ids) const {
    if (tokenizer_) return tokenizer_->decode(ids);
    std::string text = "[";
    for (int64_t id : ids) {
      if (id == model_->config().text.eos_token_id) continue;
      text += (text.size() > 1 ? " " : "") + std::to_string(id);
    }
    return text + "]";
  }

  /// EOS as the stop id, the pad id (0 when the config has none), the vocabulary size.
  TokenSpec tokens() const {
    const auto& c = model_->config();
    return TokenSpec{{c.text.eos_token_id}, std::max<int64_t>(0, c.pad_token_id), c.text.vocab_size};
  }

  /// New tokens that fit after the longest row of `prompt` (its image token expanded to the image
  /// features) within `max_position_embeddings`.
  int64_t room(const PromptBatch& prompt) const {
    const auto& c = model_->config();
    return c.text.max_position_embeddings - (prompt.ids.size(1) - 1 + c.image_tokens());
  }

  /// Starts a generation (dropping earlier state): validates every view's prompt and pixels now
  /// rather than at the first step, sizes the KV cache for `inputs.max_new_tokens`, and returns the
  /// first step's tokens, `inputs.prompt.ids` on the model's device. Each prompt row holds exactly one
  /// image token. Views: `Image` with pixels `[B, 3, S, S]`; `Text` with its own prompt batch;
  /// `NoImage` (the original prompt without its image token).
  at::Tensor begin(const LvlmInputs& inputs) {
    const std::string fn = "agla::llava::LlavaLvlm::begin";
    reset();
    const PromptBatch& prompt = inputs.prompt;
    const int64_t b = agla::detail::check_inputs(inputs, fn);
    std::vector<ViewRows> views = agla::detail::checked_view_rows<ViewRows>(
        inputs, b, model_->config().vision, fn,
        [&] { return ViewRows{ViewKind::Image, rows_of(prompt, fn, "prompt"), inputs.pixels, true}; },
        [&](const ExtraView& view, const ViewRows& original, const std::string& name) {
          if (view.kind == ViewKind::Image) return ViewRows{view.kind, original.prompts, view.pixels, view.reusable};
          if (view.kind == ViewKind::Text)
            return ViewRows{view.kind, rows_of(view.prompt, fn, name + " prompt"), original.pixels, true};
          std::vector<at::Tensor> stripped;  // NoImage: the original prompt without its image token
          for (const auto& row : original.prompts) stripped.push_back(row.masked_select(row != image_token()));
          return ViewRows{view.kind, stripped, at::Tensor()};
        });
    return start(model_->language_model, prompt.ids, std::move(views), inputs.max_new_tokens,
                 [this](const at::Tensor& row, bool with_image) { return merged_length(row, with_image); });
  }

  /// The wrapped model.
  const LlavaModel& model() const { return model_; }
  /// The tokenizer, or null.
  const std::shared_ptr<const text::SentencePieceTokenizer>& tokenizer() const { return tokenizer_; }
  /// The prompt and preprocessing options.
  const LlavaPromptOptions& prompt_options() const { return prompts_; }
  /// Sets the prompt and preprocessing options.
  void set_prompt_options(LlavaPromptOptions prompts) { prompts_ = std::move(prompts); }

  /// Keeps the KV cache of the prompt through the image token for up to `entries` (image, prefix)
  /// pairs across generations, least recently used dropped first (0 = off, the default; see the
  /// file comment). Each entry holds `layers x 2 x prefix positions x hidden` values in the model
  /// dtype (LLaVA-1.5-7B, float16: about 0.3 GB).
  void set_image_cache(int64_t entries) { prefixes_.resize(entries, "agla::llava::LlavaLvlm::set_image_cache"); }
  /// Hits, misses and entries of the image cache.
  ImageCacheStats image_cache_stats() const { return prefixes_.stats(); }
  /// Drops the image cache's entries (it stays on).
  void clear_image_cache() { prefixes_.clear(); }

 private:
  int64_t image_token() const { return model_->config().image_token_index; }

  int64_t merged_length(const at::Tensor& row, bool with_image) const {
    return row.size(0) + (with_image ? model_->config().image_tokens() - 1 : 0);
  }

  // The real ids of each row of `batch` (padding removed), each with exactly one image token.
  std::vector<at::Tensor> rows_of(const PromptBatch& batch, const std::string& fn, const std::string& name) const {
    auto rows = agla::detail::unpadded_rows(batch.ids, batch.mask, model_->config().text.vocab_size, fn, name);
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto images = (rows[r] == image_token()).sum().item<int64_t>();
      check<InvalidArgument>(images == 1, fn, ": ", name, " row ", r, " must hold exactly one image token (id ",
                             image_token(), "); it holds ", images);
    }
    return rows;
  }

  static constexpr const char* kName = "agla::llava::LlavaLvlm";

  at::Tensor embed_ids(const at::Tensor& ids) { return model_->embed(ids); }

  at::Tensor prefill(int64_t first, int64_t count) {
    const auto device = model_->device();
    const int64_t image_tokens = model_->config().image_tokens();
    // Rows whose prompt prefix through the image token the image cache serves (a hit, or stored
    // now) enter with that prefix's keys and values; every other row with an image gets its
    // features from one vision-tower batch.
    std::vector<llama::PrefillRow> rows;
    std::vector<int64_t> at_images;
    std::vector<at::Tensor> feature_pixels;
    for (int64_t v = first; v < first + count; ++v) {
      const ViewRows& view = views_[static_cast<size_t>(v)];
      for (int64_t r = 0; r < decoder_.batch(); ++r) {
        const at::Tensor& ids = view.prompts[static_cast<size_t>(r)];
        const int64_t at_image = view.pixels.defined() ? (ids == image_token()).nonzero().item<int64_t>() : -1;
        llama::PrefillRow row;
        if (at_image >= 0) row.image = llama::ImageSpan{at_image, image_tokens};
        if (view.reusable && prefixes_.enabled() && at_image >= 0 && at_image + 1 < ids.size(0)) {
          row.prefix = cached_prefix(view.pixels[r], ids.narrow(0, 0, at_image + 1));
          row.embeds = model_->embed(ids.narrow(0, at_image + 1, ids.size(0) - at_image - 1).to(device).unsqueeze(0))
                           .squeeze(0);
        } else if (at_image >= 0) {
          feature_pixels.push_back(view.pixels[r]);
        }
        rows.push_back(std::move(row));
        at_images.push_back(at_image);
      }
    }
    const at::Tensor features =
        feature_pixels.empty() ? at::Tensor() : model_->image_features(at::stack(feature_pixels).to(device));
    int64_t feature_row = 0;
    size_t i = 0;
    for (int64_t v = first; v < first + count; ++v) {
      const ViewRows& view = views_[static_cast<size_t>(v)];
      for (int64_t r = 0; r < decoder_.batch(); ++r, ++i) {
        llama::PrefillRow& row = rows[i];
        if (row.prefix) continue;
        const at::Tensor ids = view.prompts[static_cast<size_t>(r)].to(device);
        row.embeds = model_->embed(ids.unsqueeze(0)).squeeze(0);
        const int64_t at_image = at_images[i];
        if (at_image >= 0) row.embeds = splice(row.embeds, at_image, features[feature_row++]);
      }
    }
    return decoder_.prefill(first, count, rows);
  }

  // `embeds` [L, D] with the image token's row at `at_image` replaced by `features` [P, D].
  static at::Tensor splice(const at::Tensor& embeds, int64_t at_image, const at::Tensor& features) {
    const int64_t l = embeds.size(0);
    return at::cat({embeds.narrow(0, 0, at_image), features.to(embeds.scalar_type()),
                    embeds.narrow(0, at_image + 1, l - at_image - 1)});
  }

  // The keys and values of `prefix_ids` (ending with the image token) on `pixels` [3, S, S]: from
  // the image cache, else computed (vision tower, one unpadded language-model forward) and stored.
  std::shared_ptr<const llama::PrefixKv> cached_prefix(const at::Tensor& pixels, const at::Tensor& prefix_ids) {
    if (const auto* hit = prefixes_.find(pixels, prefix_ids)) return *hit;
    const auto device = model_->device();
    const at::Tensor features = model_->image_features(pixels.unsqueeze(0).to(device))[0];
    const at::Tensor embeds = splice(model_->embed(prefix_ids.to(device).unsqueeze(0)).squeeze(0),
                                     prefix_ids.size(0) - 1, features);
    return prefixes_.insert(pixels, prefix_ids,
                            std::make_shared<const llama::PrefixKv>(
                                llama::PrefixKv::encode(model_->language_model, embeds)));
  }

  LlavaModel model_;
  std::shared_ptr<const text::SentencePieceTokenizer> tokenizer_;
  LlavaPromptOptions prompts_;
  agla::detail::ImageCache<std::shared_ptr<const llama::PrefixKv>> prefixes_;
};

}  // namespace agla::llava
