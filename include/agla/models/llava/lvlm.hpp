#pragma once
/// \file
/// LLaVA-1.5 as an LVLM (the contract of `agla/models/lvlm.hpp`): one generation at a time, B
/// streams, 1 + K views, one KV cache row per stream and view, and every view in one batched
/// forward when asked (`[(1 + K) B, V]`).
///
/// Sequences: each row is the prompt with the image features spliced in at its image token (image
/// and text views), or the prompt without the image token (no-image views). Rows of different
/// lengths -- left-padded prompts, text views with another prompt, no-image views -- are left-padded
/// to one length M at the prefill, masked out of attention, and take positions `cumsum(mask) - 1`,
/// as transformers v4.37.2 does for left-padded batches. So every view has the same cached length
/// and the views can be batched at any step.

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

/// PAI's attention part (LALBJ/PAI `attention.py`, README defaults for LLaVA-1.5): in layers
/// `[start_layer, end_layer)` the last query row's pre-softmax scores on the image tokens become
/// `a + alpha |a|`; views without an image are not boosted, as upstream runs its no-image pass
/// without the intervention.
struct PaiAttention {
  double alpha = 0.2;       ///< Boost, >= 0.
  int64_t start_layer = 2;  ///< First boosted decoder layer.
  int64_t end_layer = 32;   ///< One past the last boosted layer (clipped to the model's layers).
};

/// LLaVA-1.5 LVLM over a shared `LlavaModel` (see the file comment). Call `begin` per generation,
/// then the library calls `operator()` with the prompt first and one new token per stream after that.
class LlavaLvlm {
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
    const char* fn = "agla::llava::LlavaLvlm::begin: ";
    reset();
    const PromptBatch& prompt = inputs.prompt;
    check<ShapeError>(prompt.ids.defined() && prompt.ids.dim() == 2 && prompt.ids.scalar_type() == at::kLong &&
                          prompt.ids.size(0) > 0 && prompt.ids.size(1) > 0,
                      fn, "prompt ids must be int64 [B, L] with B, L > 0; got ",
                      prompt.ids.defined() ? prompt.ids.sizes() : at::IntArrayRef{});
    check<InvalidArgument>(inputs.max_new_tokens >= 0, fn, "max_new_tokens must be >= 0; got ",
                           inputs.max_new_tokens);
    const int64_t b = prompt.ids.size(0);
    std::vector<ViewRows> views;
    views.push_back(ViewRows{ViewKind::Image, rows_of(prompt, fn, "prompt"), pixels_of(inputs.pixels, b, fn, "pixels")});
    for (size_t k = 0; k < inputs.views.size(); ++k) {
      const ExtraView& view = inputs.views[k];
      const std::string name = "view " + std::to_string(k + 1);
      switch (view.kind) {
        case ViewKind::Image:
          views.push_back(ViewRows{view.kind, views[0].prompts, pixels_of(view.pixels, b, fn, (name + " pixels").c_str())});
          break;
        case ViewKind::Text:
          check<ShapeError>(view.prompt.batch() == b, fn, name, " (text) needs prompts for ", b, " streams; got ",
                            view.prompt.batch());
          views.push_back(ViewRows{view.kind, rows_of(view.prompt, fn, (name + " prompt").c_str()), views[0].pixels});
          break;
        case ViewKind::NoImage: {
          std::vector<at::Tensor> stripped;
          for (const auto& row : views[0].prompts) stripped.push_back(row.masked_select(row != image_token()));
          views.push_back(ViewRows{view.kind, stripped, at::Tensor()});
          break;
        }
      }
    }
    prompt_ = prompt.ids.to(model_->device());
    views_ = std::move(views);
    batch_ = b;
    int64_t longest = 0;
    for (const auto& view : views_)
      for (const auto& row : view.prompts) longest = std::max(longest, merged_length(row, view.pixels.defined()));
    merged_length_ = longest;
    const auto& c = model_->config().text;
    cache_ = llama::KvCache(c.num_hidden_layers, static_cast<int64_t>(views_.size()) * b, c.num_key_value_heads, c.head_dim(),
                     merged_length_ + inputs.max_new_tokens,
                     at::TensorOptions().dtype(model_->dtype()).device(model_->device()));
    past_.assign(views_.size(), 0);
    return prompt_;
  }

  /// Drops the generation's state (caches, images, prompts).
  void reset() {
    cache_ = llama::KvCache();
    views_.clear();
    past_.clear();
    batch_ = 0;
    merged_mask_ = at::Tensor();
    next_position_ = at::Tensor();
    image_keys_ = at::Tensor();
    any_padding_ = false;
  }

  /// Next-token logits of one view, float32 `[B, V]`: the first call of a view takes the prompt
  /// (`step_tokens` equal to the prompt `begin` returned), later calls `[B, T]` new tokens.
  at::Tensor operator()(const at::Tensor& step_tokens, View view) {
    check<InvalidArgument>(cache_.defined(), "agla::llava::LlavaLvlm: call begin() before decoding");
    check<InvalidArgument>(view.index >= 0 && view.index < static_cast<int32_t>(views_.size()),
                           "agla::llava::LlavaLvlm: view ", view.index, " was requested but begin() set up views 0..",
                           views_.size() - 1);
    return run(step_tokens, view.index, 1);
  }

  /// Next-token logits of every view in one batched forward, float32 `[(1 + K) B, V]`, view-major.
  /// Every view must be at the same step.
  at::Tensor operator()(const at::Tensor& step_tokens, AllViews) {
    check<InvalidArgument>(cache_.defined(), "agla::llava::LlavaLvlm: call begin() before decoding");
    for (size_t v = 1; v < past_.size(); ++v)
      check<InvalidArgument>(past_[v] == past_[0],
                             "agla::llava::LlavaLvlm: every view must be at the same step for a batched call; view ",
                             v, " has ", past_[v], " cached positions, view 0 has ", past_[0]);
    return run(step_tokens, 0, static_cast<int64_t>(views_.size()));
  }

  /// Positions cached so far for `view` (0 before its prefill).
  int64_t cached_length(View view) const { return past_.at(static_cast<size_t>(view.index)); }
  /// Number of views (1 + K) of the current generation.
  int64_t num_views() const { return static_cast<int64_t>(views_.size()); }
  /// The wrapped model.
  const LlavaModel& model() const { return model_; }
  /// The tokenizer, or null.
  const std::shared_ptr<const text::SentencePieceTokenizer>& tokenizer() const { return tokenizer_; }
  /// The prompt and preprocessing options.
  const LlavaPromptOptions& prompt_options() const { return prompts_; }
  /// Sets the prompt and preprocessing options.
  void set_prompt_options(LlavaPromptOptions prompts) { prompts_ = std::move(prompts); }
  /// Turns PAI's attention intervention on (for the next `begin`) or off (`std::nullopt`).
  void set_pai_attention(std::optional<PaiAttention> pai) {
    if (pai) {
      check<InvalidArgument>(pai->alpha >= 0 && pai->alpha <= 100 && pai->start_layer >= 0 &&
                                 pai->start_layer <= pai->end_layer,
                             "agla::llava::LlavaLvlm::set_pai_attention: alpha must be in [0, 100] and 0 <= "
                             "start_layer <= end_layer; got alpha ",
                             pai->alpha, ", layers [", pai->start_layer, ", ", pai->end_layer, ")");
    }
    pai_ = pai;
  }
  /// PAI's attention intervention, when on.
  const std::optional<PaiAttention>& pai_attention() const { return pai_; }

 private:
  struct ViewRows {
    ViewKind kind;
    std::vector<at::Tensor> prompts;  // B rows of real (unpadded) prompt ids, CPU int64
    at::Tensor pixels;                // [B, 3, S, S] or undefined (no image)
  };

  int64_t image_token() const { return model_->config().image_token_index; }

  int64_t merged_length(const at::Tensor& row, bool with_image) const {
    return row.size(0) + (with_image ? model_->config().image_tokens() - 1 : 0);
  }

  // The real ids of each row of `batch` (padding removed), each with exactly one image token.
  std::vector<at::Tensor> rows_of(const PromptBatch& batch, const char* fn, const char* name) const {
    const at::Tensor ids = batch.ids.to(at::kCPU);
    const auto b = ids.size(0), l = ids.size(1);
    at::Tensor mask = batch.mask.defined() ? batch.mask.to(at::kCPU) : at::ones({b, l}, at::kLong);
    check<ShapeError>(mask.dim() == 2 && mask.size(0) == b && mask.size(1) == l, fn, name, " mask must be [", b, ", ",
                      l, "]; got ", mask.sizes());
    const auto vocab = model_->config().text.vocab_size;
    std::vector<at::Tensor> rows;
    for (int64_t r = 0; r < b; ++r) {
      const at::Tensor row = ids[r].masked_select(mask[r] != 0);
      check<InvalidArgument>(row.numel() > 0, fn, name, " row ", r, " has no tokens");
      const auto lo = row.min().item<int64_t>(), hi = row.max().item<int64_t>();
      check<InvalidArgument>(lo >= 0 && hi < vocab, fn, name, " ids must be in [0, ", vocab, "); row ", r,
                             " has values in [", lo, ", ", hi, "]");
      const auto images = (row == image_token()).sum().item<int64_t>();
      check<InvalidArgument>(images == 1, fn, name, " row ", r, " must hold exactly one image token (id ",
                             image_token(), "); it holds ", images);
      rows.push_back(row);
    }
    return rows;
  }

  at::Tensor pixels_of(const at::Tensor& pixels, int64_t b, const char* fn, const char* name) const {
    const auto& v = model_->config().vision;
    check<ShapeError>(pixels.defined() && pixels.dim() == 4 && pixels.size(0) == b && pixels.size(1) == v.num_channels &&
                          pixels.size(2) == v.image_size && pixels.size(3) == v.image_size &&
                          at::isFloatingType(pixels.scalar_type()),
                      fn, name, " must be float [", b, ", ", v.num_channels, ", ", v.image_size, ", ", v.image_size,
                      "]; got ", pixels.defined() ? pixels.sizes() : at::IntArrayRef{});
    return pixels;
  }

  // PAI's boost for views [first, first + count) whose keys are the merged prompt plus `generated`
  // positions (never image tokens); none when PAI is off.
  std::optional<llama::AttentionBoost> attention_boost(int64_t first, int64_t count, int64_t generated) const {
    if (!pai_) return std::nullopt;
    at::Tensor keys = image_keys_.narrow(0, first * batch_, count * batch_);
    if (generated > 0) keys = at::cat({keys, at::zeros({count * batch_, generated}, keys.options())}, 1);
    return llama::AttentionBoost{pai_->alpha, pai_->start_layer, pai_->end_layer, keys};
  }

  at::Tensor last_logits(const at::Tensor& hidden) {
    return model_->language_model->logits(hidden.select(1, hidden.size(1) - 1));
  }

  // The step of views [first, first + count): prefill on their first call, else one step.
  at::Tensor run(const at::Tensor& step_tokens, int64_t first, int64_t count) {
    if (past_[static_cast<size_t>(first)] == 0) {
      check<InvalidArgument>(step_tokens.sizes() == prompt_.sizes() && step_tokens.scalar_type() == at::kLong &&
                                 at::equal(step_tokens.to(prompt_.device()), prompt_),
                             "agla::llava::LlavaLvlm: the first step of a view must pass the prompt begin() returned (",
                             prompt_.sizes(), " int64); got ", step_tokens.sizes(), " ", step_tokens.scalar_type());
      return prefill(first, count);
    }
    check<ShapeError>(step_tokens.dim() == 2 && step_tokens.size(0) == batch_ && step_tokens.size(1) > 0 &&
                          step_tokens.scalar_type() == at::kLong,
                      "agla::llava::LlavaLvlm: step_tokens must be int64 [", batch_, ", T] with T > 0; got ",
                      step_tokens.sizes(), " ", step_tokens.scalar_type());
    return step(step_tokens, first, count);
  }

  at::Tensor prefill(int64_t first, int64_t count) {
    const auto device = model_->device();
    // Image features of every view with an image, in one vision-tower batch.
    std::vector<at::Tensor> pixel_blocks;
    for (int64_t v = first; v < first + count; ++v)
      if (views_[static_cast<size_t>(v)].pixels.defined()) pixel_blocks.push_back(views_[static_cast<size_t>(v)].pixels.to(device));
    const at::Tensor features = pixel_blocks.empty() ? at::Tensor() : model_->image_features(at::cat(pixel_blocks));
    std::vector<at::Tensor> rows, masks, image_keys;
    int64_t feature_row = 0;
    bool padded = false;
    for (int64_t v = first; v < first + count; ++v) {
      const ViewRows& view = views_[static_cast<size_t>(v)];
      for (int64_t r = 0; r < batch_; ++r) {
        const at::Tensor ids = view.prompts[static_cast<size_t>(r)].to(device);
        at::Tensor embeds = model_->embed(ids.unsqueeze(0)).squeeze(0);
        int64_t at_image = -1;
        if (view.pixels.defined()) {
          at_image = (ids == image_token()).nonzero().item<int64_t>();
          const int64_t l = ids.size(0);
          embeds = at::cat({embeds.narrow(0, 0, at_image), features[feature_row++].to(embeds.scalar_type()),
                            embeds.narrow(0, at_image + 1, l - at_image - 1)});
        }
        const int64_t pad = merged_length_ - embeds.size(0);
        at::Tensor keys = at::zeros({merged_length_}, at::kBool);
        if (at_image >= 0) keys.narrow(0, pad + at_image, model_->config().image_tokens()).fill_(true);
        image_keys.push_back(keys);
        padded = padded || pad > 0;
        rows.push_back(pad > 0 ? at::cat({at::zeros({pad, embeds.size(1)}, embeds.options()), embeds}) : embeds);
        masks.push_back(at::cat({at::zeros({pad}, at::kLong), at::ones({embeds.size(0)}, at::kLong)}));
      }
    }
    const at::Tensor inputs_embeds = at::stack(rows);
    const at::Tensor mask = at::stack(masks).to(device);
    const at::Tensor positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1);
    // Kept for the later steps of these rows (all views share M, so row blocks line up).
    if (!merged_mask_.defined()) {
      merged_mask_ = at::ones({num_views() * batch_, merged_length_}, mask.options());
      next_position_ = at::zeros({num_views() * batch_}, mask.options());
      image_keys_ = at::zeros({num_views() * batch_, merged_length_}, at::TensorOptions().dtype(at::kBool).device(device));
    }
    merged_mask_.narrow(0, first * batch_, count * batch_).copy_(mask);
    image_keys_.narrow(0, first * batch_, count * batch_).copy_(at::stack(image_keys));
    next_position_.narrow(0, first * batch_, count * batch_).copy_(positions.select(1, merged_length_ - 1) + 1);
    any_padding_ = any_padding_ || padded;
    cache_.reserve(merged_length_);
    llama::KvSlot slot{&cache_, first * batch_, 0};
    const auto boost = attention_boost(first, count, 0);
    const auto hidden = model_->language_model->model(inputs_embeds, positions, padded ? mask : at::Tensor(), &slot,
                                                      nullptr, boost ? &*boost : nullptr);
    for (int64_t v = first; v < first + count; ++v) past_[static_cast<size_t>(v)] = merged_length_;
    return last_logits(hidden);
  }

  at::Tensor step(const at::Tensor& tokens, int64_t first, int64_t count) {
    const int64_t past = past_[static_cast<size_t>(first)];
    const int64_t t = tokens.size(1);
    const int64_t rows = count * batch_;
    const at::Tensor ids = tokens.to(model_->device()).repeat({count, 1});
    const auto offsets = at::arange(t, next_position_.options()).view({1, t});
    const auto positions =
        next_position_.narrow(0, first * batch_, rows).view({rows, 1}) + (past - merged_length_) + offsets;
    at::Tensor key_mask;
    if (any_padding_) {
      key_mask = at::cat({merged_mask_.narrow(0, first * batch_, rows),
                          at::ones({rows, past + t - merged_length_}, merged_mask_.options())},
                         1);
    }
    cache_.reserve(past + t);
    llama::KvSlot slot{&cache_, first * batch_, past};
    const auto boost = attention_boost(first, count, past + t - merged_length_);
    const auto hidden =
        model_->language_model->model(model_->embed(ids), positions, key_mask, &slot, nullptr, boost ? &*boost : nullptr);
    for (int64_t v = first; v < first + count; ++v) past_[static_cast<size_t>(v)] = past + t;
    return last_logits(hidden);
  }

  LlavaModel model_;
  std::shared_ptr<const text::SentencePieceTokenizer> tokenizer_;
  LlavaPromptOptions prompts_;
  std::vector<ViewRows> views_;
  at::Tensor prompt_;
  llama::KvCache cache_;
  int64_t batch_ = 0;
  int64_t merged_length_ = 0;
  std::vector<int64_t> past_;
  bool any_padding_ = false;
  std::optional<PaiAttention> pai_;
  at::Tensor image_keys_;     // [(1 + K) B, M] bool: the image tokens' positions (PAI)
  at::Tensor merged_mask_;    // [(1 + K) B, M] int64 on the model's device
  at::Tensor next_position_;  // [(1 + K) B] position of each row's first generated token
};

}  // namespace agla::llava
