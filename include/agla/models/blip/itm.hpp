#pragma once
/// \file
/// BLIP image-text matching (`BlipForImageTextRetrieval` weights, e.g. `Salesforce/blip-itm-large-coco`)
/// with the ITM model contract of docs/design.md §4 that `agla::ipm::ImagePromptMatcher` uses: the image
/// encoded once, the match logits with one layer's cross-attention probabilities as an autograd leaf,
/// and the ITC similarity. Input conventions follow LAVIS `BlipITM.forward` (ITM: first token `[ENC]`;
/// ITC: `[CLS]`, text-only encoder).

#include <torch/nn/module.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/image.hpp"
#include "agla/io/checkpoint.hpp"
#include "agla/io/module_loader.hpp"
#include "agla/models/blip/config.hpp"
#include "agla/models/blip/text.hpp"
#include "agla/text/wordpiece.hpp"
#include "agla/models/common/layers.hpp"
#include "agla/models/common/vit.hpp"

namespace agla::blip {

/// Longest tokenised prompt LAVIS feeds the ITM (`max_length=35`).
inline constexpr size_t kItmMaxTokens = 35;

/// Tokenised prompts for `BlipItm`, right-padded to the longest, on the model's device.
struct TextBatch {
  at::Tensor input_ids;       ///< `[P, L]` int64, `[CLS] ... [SEP] [PAD]...` (ITC input)
  at::Tensor itm_input_ids;   ///< `[P, L]` int64, first id replaced by `[ENC]` (ITM input)
  at::Tensor attention_mask;  ///< `[P, L]` int64, 1 for real tokens, 0 for padding
};

/// ITM scores of P texts against an image, with the captured cross-attention.
struct ItmScore {
  at::Tensor logits;     ///< `[P, 2]` model dtype; column 1 = "match"; differentiable w.r.t. `attention` only
  at::Tensor attention;  ///< `[P, H, L, N]` cross-attention probabilities of the chosen text layer (autograd leaf)
};

namespace detail {

/// Checkpoint keys that older Hugging Face BLIP files saved but the modules no longer own.
inline bool blip_ignorable_key(const std::string& key, const io::StateDict& dict) {
  const std::string position_ids = "embeddings.position_ids";
  if (key.size() >= position_ids.size() &&
      key.compare(key.size() - position_ids.size(), position_ids.size(), position_ids) == 0) {
    return true;
  }
  // `cls.predictions.decoder.bias` is the same Parameter as `cls.predictions.bias` upstream.
  const std::string decoder_bias = "cls.predictions.decoder.bias";
  if (key.size() >= decoder_bias.size() &&
      key.compare(key.size() - decoder_bias.size(), decoder_bias.size(), decoder_bias) == 0) {
    return dict.count(key.substr(0, key.size() - decoder_bias.size()) + "cls.predictions.bias") != 0;
  }
  return false;
}

/// Refuses a tokenizer whose ids (including `[DEC]`/`[ENC]`) do not fit the model's vocabulary.
inline void check_tokenizer(const char* fn, const text::WordPieceTokenizer& tokenizer, const BlipConfig& config) {
  check<FormatError>(static_cast<int64_t>(tokenizer.size()) <= config.text.vocab_size, fn, ": the tokenizer has ",
                     tokenizer.size(), " ids but the model's vocabulary has ", config.text.vocab_size);
}

/// Sets every parameter to requires_grad = false (inference only; GradCAM needs no parameter gradients).
inline void freeze(torch::nn::Module& module) {
  for (auto& p : module.parameters(true)) p.set_requires_grad(false);
}

/// The tokenizer of a model directory: its `vocab.txt` when present, else the built-in
/// bert-base-uncased vocabulary with `[DEC]`/`[ENC]`.
inline text::WordPieceTokenizer tokenizer_for(const std::string& dir) {
  const std::string vocab = dir + "/vocab.txt";
  if (io::detail::file_exists(vocab)) return text::WordPieceTokenizer::from_vocab_file(vocab);
  return text::WordPieceTokenizer::bert_base_uncased();
}

/// Builds a `Module` holder from `dir/config.json` and binds the directory's checkpoint to it
/// (`agla::io::load_module`, BLIP's ignorable keys added to `hooks`); `fn` names the caller.
template <typename Module>
Module load_blip_module(const char* fn, const std::string& dir, const io::LoadOptions& options,
                        io::LoadHooks hooks = {}) {
  options.validate(fn);
  Module model(BlipConfig::from_file(dir + "/config.json"));
  hooks.ignorable = blip_ignorable_key;
  io::load_module(*model, io::load_checkpoint(dir), dir, options, hooks);
  return model;
}

/// Readies a wrapped module for inference: checks the tokenizer, sets eval mode and freezes it.
/// Returns the device and dtype of its parameters.
template <typename Module>
std::pair<at::Device, at::ScalarType> prepare_for_inference(const char* fn, Module& model,
                                                            const text::WordPieceTokenizer& tokenizer) {
  check_tokenizer(fn, tokenizer, model->config());
  model->eval();
  freeze(*model);
  const at::Tensor any = model->parameters().front();
  return {any.device(), any.scalar_type()};
}

}  // namespace detail

/// The `BlipForImageTextRetrieval` module: `vision_model`, `text_encoder`, `vision_proj`,
/// `text_proj`, `itm_head` (checkpoint keys map one to one).
class BlipItmModelImpl : public torch::nn::Module {
 public:
  explicit BlipItmModelImpl(const BlipConfig& c) : config_(c) {
    c.validate();
    vision_model = register_module("vision_model", models::VisionTransformer(c.vision));
    text_encoder = register_module("text_encoder", BlipTextModel(c.text));
    vision_proj = register_module("vision_proj", models::Linear(c.vision.hidden_size, c.image_text_hidden_size));
    text_proj = register_module("text_proj", models::Linear(c.text.hidden_size, c.image_text_hidden_size));
    itm_head = register_module("itm_head", models::Linear(c.text.hidden_size, 2));
  }

  /// The configuration the module was built from.
  const BlipConfig& config() const { return config_; }

  models::VisionTransformer vision_model{nullptr};
  BlipTextModel text_encoder{nullptr};
  models::Linear vision_proj{nullptr}, text_proj{nullptr}, itm_head{nullptr};

 private:
  BlipConfig config_;
};
TORCH_MODULE(BlipItmModel);

/// BLIP ITM/ITC model for image-prompt matching. Parameters are frozen; all methods are const and
/// run on the model's device and dtype (inputs are moved there).
class BlipItm {
 public:
  /// Loads `dir` (`config.json`, weights via `agla::io::load_checkpoint`, optional `vocab.txt`) as
  /// `options` place it. Throws `agla::FormatError` listing missing/unexpected weight names.
  static BlipItm load(const std::string& dir, const io::LoadOptions& options = {}) {
    BlipItmModel model = detail::load_blip_module<BlipItmModel>("agla::blip::BlipItm::load", dir, options);
    return BlipItm(model, detail::tokenizer_for(dir));
  }

  /// Wraps a built module (loaded, shared with another `BlipItm`, or initialised with
  /// `agla::models::init_parameters`) where its parameters are; freezes it.
  BlipItm(BlipItmModel model, text::WordPieceTokenizer tokenizer)
      : model_(std::move(model)),
        tokenizer_(std::make_shared<text::WordPieceTokenizer>(std::move(tokenizer))),
        device_(at::kCPU),
        dtype_(at::kFloat) {
    std::tie(device_, dtype_) = detail::prepare_for_inference("agla::blip::BlipItm", model_, *tokenizer_);
  }

  /// Normalised pixels `[B, 3, S, S]` (any float dtype/device) -> post-LN image tokens `[B, N, D]`
  /// (N = 1 + g*g, model dtype/device), computed without autograd.
  at::Tensor encode_image(const at::Tensor& pixel_values) const {
    at::NoGradGuard no_grad;
    return model_->vision_model->forward(pixel_values.to(device_, dtype_));
  }

  /// LAVIS `text::pre_caption` + WordPiece (at most 35 ids) for each prompt, right-padded with `[PAD]`.
  /// Throws `agla::InvalidArgument` for no prompts or a prompt that is empty after pre-processing.
  TextBatch encode_text(const std::vector<std::string>& prompts) const {
    check<InvalidArgument>(!prompts.empty(), "agla::blip::BlipItm::encode_text: no prompts given");
    std::vector<std::vector<int64_t>> ids;
    size_t longest = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::string text = text::pre_caption(prompts[i]);
      check<InvalidArgument>(!text.empty(), "agla::blip::BlipItm::encode_text: prompt ", i, " ('", prompts[i],
                             "') is empty after caption pre-processing");
      ids.push_back(tokenizer_->encode(text, kItmMaxTokens));
      longest = std::max(longest, ids.back().size());
    }
    const int64_t p = static_cast<int64_t>(prompts.size()), l = static_cast<int64_t>(longest);
    at::Tensor input_ids = at::full({p, l}, tokenizer_->pad_id(), at::kLong);
    at::Tensor mask = at::zeros({p, l}, at::kLong);
    auto id_acc = input_ids.accessor<int64_t, 2>();
    auto mask_acc = mask.accessor<int64_t, 2>();
    for (int64_t i = 0; i < p; ++i) {
      for (size_t j = 0; j < ids[static_cast<size_t>(i)].size(); ++j) {
        id_acc[i][static_cast<int64_t>(j)] = ids[static_cast<size_t>(i)][j];
        mask_acc[i][static_cast<int64_t>(j)] = 1;
      }
    }
    at::Tensor itm_ids = input_ids.clone();
    itm_ids.select(1, 0).fill_(tokenizer_->enc_id());
    return {input_ids.to(device_), itm_ids.to(device_), mask.to(device_)};
  }

  /// ITM logits `[P, 2]` of `itm_input_ids` `[P, L]` (first id `[ENC]`) with `attention_mask` `[P, L]`
  /// against `image_embeds` `[1, N, D]` (shared by all P) or `[P, N, D]`, plus the cross-attention
  /// probabilities `[P, H, L, N]` of text layer `attention_layer` as an autograd leaf: the logits are
  /// differentiable w.r.t. that tensor only, so `torch::autograd::grad({logits.select(1, 1).sum()},
  /// {attention})` gives LAVIS `compute_gradcam`'s gradients. Runs with autograd enabled regardless of
  /// the caller's grad mode.
  ItmScore score_itm(const at::Tensor& image_embeds, const at::Tensor& itm_input_ids, const at::Tensor& attention_mask,
                     int64_t attention_layer) const {
    check<InvalidArgument>(attention_layer >= 0 && attention_layer < num_text_layers(),
                           "agla::blip::BlipItm::score_itm: attention_layer must be in [0, ", num_text_layers(),
                           "); got ", attention_layer);
    at::AutoGradMode grad_mode(true);
    ItmScore out;
    out.logits = itm_forward("agla::blip::BlipItm::score_itm", image_embeds, itm_input_ids, attention_mask,
                             attention_layer, &out.attention);
    return out;
  }

  /// ITM logits `[P, 2]` as `score_itm` computes them, without attention capture or autograd.
  at::Tensor itm_logits(const at::Tensor& image_embeds, const at::Tensor& itm_input_ids,
                        const at::Tensor& attention_mask) const {
    at::NoGradGuard no_grad;
    return itm_forward("agla::blip::BlipItm::itm_logits", image_embeds, itm_input_ids, attention_mask, -1, nullptr);
  }

  /// Text-only encoder output `[P, L, D]` of `input_ids` `[P, L]` (`[CLS]` first) with `attention_mask`.
  at::Tensor encode_text_only(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
    at::NoGradGuard no_grad;
    check_ids("agla::blip::BlipItm::encode_text_only", input_ids, attention_mask);
    TextRun run;
    run.attention_mask = attention_mask;
    return model_->text_encoder->forward(input_ids.to(device_), run);
  }

  /// ITC cosine similarities `[B_img, P]`: `normalize(vision_proj(image_embeds[:, 0])) @
  /// normalize(text_proj(text_only(input_ids)[:, 0])).T` (LAVIS `match_head="itc"`, no temperature).
  at::Tensor itc_similarity(const at::Tensor& image_embeds, const at::Tensor& input_ids,
                            const at::Tensor& attention_mask) const {
    at::NoGradGuard no_grad;
    check_image(image_embeds, "agla::blip::BlipItm::itc_similarity");
    const at::Tensor text = encode_text_only(input_ids, attention_mask);
    const at::Tensor image_feat =
        normalize(model_->vision_proj->forward(image_embeds.to(device_, dtype_).select(1, 0)));
    const at::Tensor text_feat = normalize(model_->text_proj->forward(text.select(1, 0)));
    return at::matmul(image_feat, text_feat.t());
  }

  /// Number of text layers (valid `attention_layer`s are `[0, num_text_layers())`).
  int64_t num_text_layers() const { return config().text.num_hidden_layers; }
  /// Cross-attention heads H.
  int64_t num_heads() const { return config().text.num_attention_heads; }
  /// Input side S of `encode_image`.
  int64_t image_size() const { return config().vision.image_size; }
  /// Patch grid side g (N = 1 + g*g); `agla::InvalidArgument` when image_size is not a multiple of patch_size.
  int64_t patch_grid() const {
    const auto& v = config().vision;
    check<InvalidArgument>(v.image_size % v.patch_size == 0, "agla::blip::BlipItm::patch_grid: image_size ",
                           v.image_size, " is not a multiple of patch_size ", v.patch_size);
    return v.image_size / v.patch_size;
  }
  /// Device of the parameters.
  at::Device device() const { return device_; }
  /// Dtype of the parameters.
  at::ScalarType dtype() const { return dtype_; }
  /// BLIP's normalisation mean (RGB, OpenAI CLIP statistics).
  std::array<float, 3> image_mean() const { return io::kClipMean; }
  /// BLIP's normalisation standard deviation (RGB).
  std::array<float, 3> image_std() const { return io::kClipStd; }
  /// The configuration.
  const BlipConfig& config() const { return model_->config(); }
  /// The tokenizer `encode_text` uses.
  const text::WordPieceTokenizer& tokenizer() const { return *tokenizer_; }
  /// The underlying module (a holder sharing it; frozen, eval mode).
  BlipItmModel module() const { return model_; }

 private:
  static at::Tensor normalize(const at::Tensor& x) {
    // torch.nn.functional.normalize(x, dim=-1): x / max(||x||, 1e-12).
    return x / x.norm(2, -1, true).clamp_min(1e-12);
  }

  void check_image(const at::Tensor& image_embeds, const char* fn) const {
    check<ShapeError>(image_embeds.dim() == 3 && image_embeds.size(2) == config().vision.hidden_size, fn,
                      ": image_embeds must be [B, N, ", config().vision.hidden_size, "]; got ", image_embeds.sizes());
  }

  static void check_ids(const char* fn, const at::Tensor& ids, const at::Tensor& mask) {
    check<ShapeError>(ids.dim() == 2 && ids.scalar_type() == at::kLong && ids.size(1) > 0, fn,
                      ": input ids must be [P, L] int64; got ", ids.sizes(), " ", ids.scalar_type());
    check<ShapeError>(mask.defined() && mask.sizes() == ids.sizes(), fn, ": attention_mask must be ", ids.sizes(),
                      "; got ", mask.defined() ? mask.sizes() : at::IntArrayRef{});
  }

  at::Tensor itm_forward(const char* fn, const at::Tensor& image_embeds, const at::Tensor& ids, const at::Tensor& mask,
                         int64_t layer, at::Tensor* captured) const {
    check_image(image_embeds, fn);
    check_ids(fn, ids, mask);
    check<ShapeError>(image_embeds.size(0) == 1 || image_embeds.size(0) == ids.size(0), fn,
                      ": image_embeds batch must be 1 or P = ", ids.size(0), "; got ", image_embeds.size(0));
    TextRun run;
    run.attention_mask = mask;
    run.encoder_hidden_states = image_embeds.to(device_, dtype_).detach();
    run.capture_layer = layer;
    run.captured = captured;
    const at::Tensor text = model_->text_encoder->forward(ids.to(device_), run);
    return model_->itm_head->forward(text.select(1, 0));
  }

  mutable BlipItmModel model_;
  std::shared_ptr<const text::WordPieceTokenizer> tokenizer_;
  at::Device device_;
  at::ScalarType dtype_;
};

}  // namespace agla::blip
