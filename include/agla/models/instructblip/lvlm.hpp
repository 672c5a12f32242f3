#pragma once
/// \file
/// InstructBLIP as an LVLM (the contract of `agla/models/lvlm.hpp`): one generation at a time, B
/// streams, 1 + K views, one KV cache row per stream and view (`llama::ViewDecoder`), and every view
/// in one batched forward when asked (`[(1 + K) B, V]`).
///
/// Sequences: each row is the view's Q projected query rows followed by the prompt's embeddings
/// (image and text views), or the prompt alone (no-image views). At a prefill the images of all the
/// views asked for go through the vision encoder and the Q-Former as one batch (each image read
/// with its view's instruction, right-padded as LAVIS pads it) and the rows through one language
/// model forward, left-padded to a common length.
///
/// Image cache (`set_image_cache`): the Q-Former reads the instruction, so the query outputs -- the
/// first language-model positions -- depend on the question and no language-model prefix is
/// shared between questions; what depends on the image alone is the vision encoder's output, which
/// is kept per image and reused (the original view and image views marked `ExtraView::reusable`).

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agla/decode/view.hpp"
#include "agla/error.hpp"
#include "agla/io/checkpoint.hpp"
#include "agla/io/module_loader.hpp"
#include "agla/models/common/image_processing.hpp"
#include "agla/models/instructblip/config.hpp"
#include "agla/models/instructblip/model.hpp"
#include "agla/models/instructblip/prompt.hpp"
#include "agla/models/llama/views.hpp"
#include "agla/models/lvlm.hpp"
#include "agla/text/sentencepiece.hpp"
#include "agla/text/wordpiece.hpp"

namespace agla::instructblip {

/// The tokenizers of an InstructBLIP checkpoint directory.
struct InstructBlipTokenizers {
  std::shared_ptr<const text::SentencePieceTokenizer> llm;  ///< `tokenizer.model`, or null
  std::shared_ptr<const text::WordPieceTokenizer> qformer;  ///< `qformer_tokenizer/vocab.txt` (bert-base-uncased), or null
  SpecialTokens special;  ///< BOS/EOS/UNK/pad ids of the LLM tokenizer files (all -1 without `tokenizer.model`)

  /// Reads `dir`: `tokenizer.model` with its special-token files (`read_special_tokens`), and the
  /// Q-Former's `qformer_tokenizer/vocab.txt` -- the built-in bert-base-uncased vocabulary (what
  /// the reference loads) when that file is absent. Without `tokenizer.model` nothing is loaded.
  static InstructBlipTokenizers load(const std::string& dir) {
    namespace fs = std::filesystem;
    InstructBlipTokenizers t;
    const fs::path model = fs::path(dir) / "tokenizer.model";
    if (!fs::is_regular_file(model)) return t;
    t.llm = std::make_shared<const text::SentencePieceTokenizer>(model.string());
    t.special = read_special_tokens(dir, *t.llm);
    const fs::path vocab = fs::path(dir) / "qformer_tokenizer" / "vocab.txt";
    t.qformer = std::make_shared<const text::WordPieceTokenizer>(
        fs::is_regular_file(vocab) ? text::WordPieceTokenizer::from_vocab_file(vocab.string())
                                   : text::WordPieceTokenizer::bert_base_uncased());
    return t;
  }
};

/// PAI's attention part (see `llama::PaiAttention`).
using llama::PaiAttention;

/// One view of an InstructBLIP generation (`InstructBlipLvlm`'s state).
struct InstructBlipViewRows {
  ViewKind kind;
  std::vector<at::Tensor> prompts;       ///< B rows of real (unpadded) language model ids, CPU int64
  std::vector<at::Tensor> instructions;  ///< B rows of real Q-Former ids (empty without image), CPU int64
  at::Tensor pixels;                     ///< [B, 3, S, S] or undefined (no image)
  bool reusable = false;                 ///< the image cache may serve the rows' vision encodings
};

/// InstructBLIP LVLM over a shared `InstructBlipModel` (see the file comment). Call `begin` per
/// generation, then the library calls `operator()` with the prompt first and one new token per
/// stream after that. The forward forms, `reset` and PAI's option come from `llama::ViewLvlm`.
class InstructBlipLvlm : public llama::ViewLvlm<InstructBlipLvlm, InstructBlipViewRows> {
  using ViewRows = InstructBlipViewRows;
  friend class llama::ViewLvlm<InstructBlipLvlm, ViewRows>;

 public:
  /// Loads a Hugging Face `InstructBlipForConditionalGeneration` directory: `config.json` (full or
  /// sparse), `model.safetensors` or a sharded index (or `pytorch_model.bin`), and the tokenizers
  /// when `tokenizer.model` is present (`InstructBlipTokenizers::load`). Weights are memory-mapped
  /// and bound without a copy when `options` match the file.
  static InstructBlipLvlm load(const std::string& dir, const io::LoadOptions& options = {}) {
    options.validate("agla::instructblip::InstructBlipLvlm::load");
    InstructBlipModel model(read_config((std::filesystem::path(dir) / "config.json").string()));
    load_weights(model, io::load_checkpoint(dir), "checkpoint '" + dir + "'", options);
    model->eval();
    return InstructBlipLvlm(model, InstructBlipTokenizers::load(dir));
  }

  /// Wraps `model` (shared, not copied) and its tokenizers; a second `InstructBlipLvlm` over the same
  /// model serves another generation concurrently.
  explicit InstructBlipLvlm(InstructBlipModel model, InstructBlipTokenizers tokenizers = {})
      : model_(std::move(model)), tokenizers_(std::move(tokenizers)) {}

  /// RGB uint8 `[H, W, 3]` (CPU) -> float32 `[3, S, S]` (CPU): `BlipImageProcessor` at the vision
  /// encoder's input size (bicubic squash to a square, rescale, OpenAI CLIP mean/std).
  at::Tensor preprocess(const at::Tensor& image) const {
    return models::blip_image_processor(image, model_->config().vision.image_size);
  }

  /// Whether `tokenizer.model` was loaded (else prompts must be given as ids).
  bool has_tokenizer() const { return tokenizers_.llm != nullptr && tokenizers_.qformer != nullptr; }

  /// `instruction` tokenised for both readers (no template; the caller appends e.g. POPE's
  /// " Please answer this question with one word."): `ids` = BOS + SentencePiece pieces,
  /// `instruction_ids` = `[CLS] pieces [SEP]` truncated from the left to 128 ids (and to the
  /// Q-Former's `max_position_embeddings`). Throws `agla::InvalidArgument` without a tokenizer or
  /// when a tokenizer yields ids outside the model's vocabularies.
  Prompt prompt(const std::string& instruction) const {
    const char* fn = "agla::instructblip::InstructBlipLvlm::prompt: ";
    const auto& c = model_->config();
    check<InvalidArgument>(has_tokenizer(), fn, "cannot tokenise '", instruction,
                           "': the checkpoint has no tokenizer.model; give the prompt as token ids (language model "
                           "ids with BOS, and the Q-Former's [CLS] ... [SEP] ids)");
    Prompt p;
    p.ids = llm_prompt_ids(*tokenizers_.llm, tokenizers_.special, instruction);
    p.instruction_ids = qformer_prompt_ids(
        *tokenizers_.qformer, instruction,
        std::min<size_t>(kQFormerMaxTokens, static_cast<size_t>(c.qformer.max_position_embeddings)));
    check<InvalidArgument>(!p.ids.empty(), fn, "'", instruction, "' gives no language model ids");
    const auto llm_max = *std::max_element(p.ids.begin(), p.ids.end());
    const auto qformer_max = *std::max_element(p.instruction_ids.begin(), p.instruction_ids.end());
    check<InvalidArgument>(llm_max < c.text.vocab_size, fn, "tokenizer.model gives id ", llm_max,
                           " for '", instruction, "', outside the language model's vocabulary [0, ",
                           c.text.vocab_size, ")");
    check<InvalidArgument>(qformer_max < c.qformer.vocab_size, fn, "the Q-Former tokenizer gives id ", qformer_max,
                           " for '", instruction, "', outside the Q-Former's vocabulary [0, ", c.qformer.vocab_size,
                           ")");
    return p;
  }

  /// ICD's text view (p1k0pan/ICD `icd_ib_pope.py`, the `question` variant): the disturbance goes
  /// only into the Q-Former's text, directly before the instruction (no space, as upstream joins
  /// them); the language model's prompt is the instruction's, unchanged.
  Prompt disturbed_prompt(const std::string& instruction, const std::string& disturbance) const {
    Prompt p = prompt(instruction);
    p.instruction_ids = prompt(disturbance + instruction).instruction_ids;
    return p;
  }

  /// Text of generated ids: 0 first becomes 2 when the config's text architecture is
  /// "LLaMAForCausalLM" (v4.37.2's `generate`), then the tokenizer's special tokens and EOS are
  /// skipped (`skip_special_tokens=True`). Without a tokenizer the ids in brackets, EOS dropped.
  std::string decode(const std::vector<int64_t>& ids) const {
    const auto& c = model_->config();
    std::vector<int64_t> kept;
    for (int64_t id : ids) {
      if (id == 0 && c.maps_zero_to_eos()) id = 2;
      if (id == c.text.eos_token_id || tokenizers_.special.is_special(id)) continue;
      kept.push_back(id);
    }
    if (tokenizers_.llm) return tokenizers_.llm->decode(kept);
    std::string text = "[";
    for (int64_t id : kept) text += (text.size() > 1 ? " " : "") + std::to_string(id);
    return text + "]";
  }

  /// EOS (`text_config.eos_token_id`, the id the reference's `generate` stops on) as the stop id; the
  /// pad id (the tokenizer's pad when inside the vocabulary, else `text_config.pad_token_id`, else 0);
  /// the vocabulary size.
  TokenSpec tokens() const {
    const auto& c = model_->config();
    const int64_t tokenizer_pad = tokenizers_.special.pad_id;
    const int64_t pad = tokenizer_pad >= 0 && tokenizer_pad < c.text.vocab_size ? tokenizer_pad
                                                                                 : std::max<int64_t>(0, c.text_pad_token_id);
    return TokenSpec{{c.text.eos_token_id}, pad, c.text.vocab_size};
  }

  /// New tokens that fit after the longest row of `prompt` and the Q query rows within
  /// `max_position_embeddings`.
  int64_t room(const PromptBatch& prompt) const {
    const auto& c = model_->config();
    return c.text.max_position_embeddings - (c.num_query_tokens + prompt.ids.size(1));
  }

  /// Starts a generation (dropping earlier state): validates every view's prompts and pixels now
  /// rather than at the first step, sizes the KV cache for `inputs.max_new_tokens`, and returns the
  /// first step's tokens, `inputs.prompt.ids` on the model's device. The original prompt needs its
  /// instruction ids (the Q-Former's). Views: `Image` with pixels `[B, 3, S, S]` (the original
  /// instruction); `Text` with its own prompt batch, instruction ids included (the original image);
  /// `NoImage` (the original prompt, no query rows).
  at::Tensor begin(const LvlmInputs& inputs) {
    const std::string fn = "agla::instructblip::InstructBlipLvlm::begin";
    reset();
    const PromptBatch& prompt = inputs.prompt;
    const int64_t b = agla::detail::check_inputs(inputs, fn);
    std::vector<ViewRows> views = agla::detail::checked_view_rows<ViewRows>(
        inputs, b, model_->config().vision, fn,
        [&] {
          return ViewRows{ViewKind::Image, rows_of(prompt, fn, "prompt"), instructions_of(prompt, b, fn, "prompt"),
                          inputs.pixels, true};
        },
        [&](const ExtraView& view, const ViewRows& original, const std::string& name) {
          switch (view.kind) {
            case ViewKind::Image:
              return ViewRows{view.kind, original.prompts, original.instructions, view.pixels, view.reusable};
            case ViewKind::Text:
              return ViewRows{view.kind, rows_of(view.prompt, fn, name + " prompt"),
                              instructions_of(view.prompt, b, fn, name + " prompt"), original.pixels, true};
            default:  // NoImage: the original prompt without query rows
              return ViewRows{view.kind, original.prompts, {}, at::Tensor()};
          }
        });
    // Each row's prefill: its query rows (with an image) and its ids.
    const int64_t queries = model_->config().num_query_tokens;
    return start(model_->language_model, prompt.ids, std::move(views), inputs.max_new_tokens,
                 [queries](const at::Tensor& row, bool with_image) { return row.size(0) + (with_image ? queries : 0); });
  }

  /// The wrapped model.
  const InstructBlipModel& model() const { return model_; }
  /// The tokenizers (null pointers when the checkpoint has none).
  const InstructBlipTokenizers& tokenizers() const { return tokenizers_; }

  /// Keeps the vision encoder's output `[1 + P, Dv]` of up to `entries` images across generations,
  /// least recently used dropped first (0 = off, the default; see the file comment).
  void set_image_cache(int64_t entries) {
    images_.resize(entries, "agla::instructblip::InstructBlipLvlm::set_image_cache");
  }
  /// Hits, misses and entries of the image cache.
  ImageCacheStats image_cache_stats() const { return images_.stats(); }
  /// Drops the image cache's entries (it stays on).
  void clear_image_cache() { images_.clear(); }

 private:
  std::vector<at::Tensor> rows_of(const PromptBatch& batch, const std::string& fn, const std::string& name) const {
    return agla::detail::unpadded_rows(batch.ids, batch.mask, model_->config().text.vocab_size, fn, name);
  }

  // The real Q-Former ids of each row of `batch` (required: every view with an image reads them).
  std::vector<at::Tensor> instructions_of(const PromptBatch& batch, int64_t b, const std::string& fn,
                                          const std::string& name) const {
    const auto& q = model_->config().qformer;
    const at::Tensor& ids = batch.instruction_ids;
    check<InvalidArgument>(ids.defined(), fn, ": ", name,
                           " has no instruction ids: the Q-Former reads the instruction as [CLS] ... [SEP] ids "
                           "(Prompt::instruction_ids)");
    check<ShapeError>(ids.dim() == 2 && ids.size(0) == b && ids.size(1) > 0 && ids.scalar_type() == at::kLong, fn,
                      ": ", name, " instruction ids must be int64 [", b, ", T] with T > 0; got ", ids.sizes(), " ",
                      ids.scalar_type());
    auto rows = agla::detail::unpadded_rows(ids, batch.instruction_mask, q.vocab_size, fn, name + " instruction");
    for (size_t r = 0; r < rows.size(); ++r)
      check<InvalidArgument>(rows[r].size(0) <= q.max_position_embeddings, fn, ": ", name, " instruction row ", r,
                             " has ", rows[r].size(0), " ids; the Q-Former reads at most ", q.max_position_embeddings);
    return rows;
  }

  static constexpr const char* kName = "agla::instructblip::InstructBlipLvlm";

  at::Tensor embed_ids(const at::Tensor& ids) { return model_->embed(ids); }

  at::Tensor prefill(int64_t first, int64_t count) {
    const auto device = model_->device();
    const int64_t b = decoder_.batch();
    // Every image of these views through the vision encoder and the Q-Former in one batch, each read
    // with its view's instruction; instruction rows right-padded (LAVIS pads the Q-Former text on the
    // right, so text positions stay 0..T-1).
    std::vector<at::Tensor> pixel_blocks;
    std::vector<const at::Tensor*> instructions;
    bool cached = false;
    for (int64_t v = first; v < first + count; ++v) {
      const ViewRows& view = views_[static_cast<size_t>(v)];
      if (!view.pixels.defined()) continue;
      cached = cached || (view.reusable && images_.enabled());
      pixel_blocks.push_back(view.pixels.to(device, model_->dtype()));
      for (const at::Tensor& row : view.instructions) instructions.push_back(&row);
    }
    at::Tensor queries;
    if (!pixel_blocks.empty()) {
      int64_t longest = 0;
      for (const at::Tensor* row : instructions) longest = std::max(longest, row->size(0));
      const auto n = static_cast<int64_t>(instructions.size());
      at::Tensor ids = at::full({n, longest}, model_->config().qformer.pad_token_id, at::kLong);
      at::Tensor mask = at::zeros({n, longest}, at::kLong);
      bool padded = false;
      for (int64_t i = 0; i < n; ++i) {
        const at::Tensor& row = *instructions[static_cast<size_t>(i)];
        ids[i].narrow(0, 0, row.size(0)).copy_(row);
        mask[i].narrow(0, 0, row.size(0)).fill_(1);
        padded = padded || row.size(0) < longest;
      }
      const at::Tensor qformer_mask = padded ? mask.to(device) : at::Tensor();
      queries = cached ? model_->language_projection(
                             model_->query_output(image_embeds(first, count), ids.to(device), qformer_mask))
                       : model_->language_model_inputs(at::cat(pixel_blocks), ids.to(device), qformer_mask);
    }
    std::vector<at::Tensor> rows;
    std::vector<llama::ImageSpan> images;  // the query outputs are the image positions (PAI)
    int64_t query_row = 0;
    for (int64_t v = first; v < first + count; ++v) {
      const ViewRows& view = views_[static_cast<size_t>(v)];
      for (int64_t r = 0; r < b; ++r) {
        at::Tensor embeds = model_->embed(view.prompts[static_cast<size_t>(r)].to(device).unsqueeze(0)).squeeze(0);
        if (view.pixels.defined()) embeds = at::cat({queries[query_row++].to(embeds.scalar_type()), embeds});
        images.push_back(llama::ImageSpan{0, view.pixels.defined() ? model_->config().num_query_tokens : 0});
        rows.push_back(embeds);
      }
    }
    return decoder_.prefill(first, count, rows, images);
  }

  // The vision encoder's output `[N, 1 + P, Dv]` for every image row of views [first, first + count),
  // rows of reusable views through the image cache.
  at::Tensor image_embeds(int64_t first, int64_t count) {
    std::vector<at::Tensor> blocks;
    std::vector<bool> reusable;
    for (int64_t v = first; v < first + count; ++v) {
      const ViewRows& view = views_[static_cast<size_t>(v)];
      if (!view.pixels.defined()) continue;
      blocks.push_back(view.pixels);
      reusable.push_back(view.reusable);
    }
    return agla::detail::encode_image_rows(images_, blocks, reusable,
                                           [this](const at::Tensor& pixels) { return model_->image_embeds(pixels); });
  }

  InstructBlipModel model_;
  InstructBlipTokenizers tokenizers_;
  agla::detail::ImageCache<at::Tensor> images_;
};

}  // namespace agla::instructblip
