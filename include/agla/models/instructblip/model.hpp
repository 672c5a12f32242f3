#pragma once
/// \file
/// InstructBLIP with a LLaMA / Vicuna language model (`InstructBlipForConditionalGeneration`,
/// `modeling_instructblip.py`, transformers v4.37.2): the BLIP-2 vision encoder, the Q-Former that
/// reads the instruction with its learned queries, the language projection, and the LLaMA decoder
/// whose input is the projected queries **prepended** to the prompt's token embeddings (the
/// release's "legacy" layout: no image placeholder in `input_ids`). Module names follow Hugging Face
/// so that checkpoint keys map one to one.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/module_loader.hpp"
#include "agla/io/state_dict.hpp"
#include "agla/models/common/layers.hpp"
#include "agla/models/common/vit.hpp"
#include "agla/models/instructblip/config.hpp"
#include "agla/models/instructblip/qformer.hpp"
#include "agla/models/llama/model.hpp"

namespace agla::instructblip {

/// The language model's input: `inputs_embeds` `[B, M, Dt]` (model dtype), `attention_mask` `[B, M]`
/// int64 (0 = padding) and `position_ids` `[B, M]` int64, M = Q + L with the query rows, else L.
struct LmInputs {
  at::Tensor inputs_embeds;   ///< `[B, M, Dt]`
  at::Tensor attention_mask;  ///< `[B, M]` int64
  at::Tensor position_ids;    ///< `[B, M]` int64
  bool padded = false;        ///< whether any mask entry is 0
};

/// InstructBLIP: `vision_model`, `query_tokens`, `qformer`, `language_projection`, `language_model`.
class InstructBlipModelImpl : public torch::nn::Module {
 public:
  /// Builds the modules for `config` (upstream order); weights stay uninitialised until loaded
  /// (`load_weights`).
  explicit InstructBlipModelImpl(const InstructBlipConfig& config) : config_(config) {
    vision_model = register_module("vision_model", models::VisionTransformer(config.vision));
    query_tokens =
        register_parameter("query_tokens", at::empty({1, config.num_query_tokens, config.qformer.hidden_size}), false);
    qformer = register_module("qformer", QFormerModel(config.qformer));
    language_projection = register_module(
        "language_projection", models::Linear(config.qformer.hidden_size, config.text.hidden_size, true));
    language_model = register_module("language_model", llama::LlamaForCausalLM(config.text));
  }

  /// The configuration the model was built from.
  const InstructBlipConfig& config() const { return config_; }
  /// Device of the weights.
  at::Device device() const { return language_projection->weight.device(); }
  /// Floating-point type of the weights.
  at::ScalarType dtype() const { return language_projection->weight.scalar_type(); }

  /// The image embeddings the Q-Former attends to, `post_layernorm` of the vision encoder's last
  /// layer with the CLS row: `pixel_values` `[N, 3, S, S]` (any float dtype, any device) ->
  /// `[N, 1 + P, Dv]` in the model dtype on its device. `hidden_states`, if given, receives the
  /// encoder input and every layer's output (before `post_layernorm`).
  at::Tensor image_embeds(const at::Tensor& pixel_values, std::vector<at::Tensor>* hidden_states = nullptr) {
    check<ShapeError>(pixel_values.defined() && pixel_values.dim() == 4,
                      "agla::instructblip::InstructBlipModel::image_embeds: pixel_values must be [N, 3, S, S]; got ",
                      pixel_values.defined() ? pixel_values.sizes() : at::IntArrayRef{});
    return vision_model(pixel_values.to(device(), dtype()), hidden_states);
  }

  /// The Q-Former's query rows `[N, Q, Dq]` for `image_embeds` `[N, 1 + P, Dv]` and the instruction:
  /// int64 `qformer_input_ids` `[N, T]` (`[CLS] ... [SEP]`, right-padded) with its 0/1 mask `[N, T]`
  /// (undefined = all ones). `hidden_states`, if given, receives the Q-Former's hidden states
  /// (embedding output, then every layer's output; queries and instruction rows).
  at::Tensor query_output(const at::Tensor& image_embeds, const at::Tensor& qformer_input_ids,
                          const at::Tensor& qformer_attention_mask = {},
                          std::vector<at::Tensor>* hidden_states = nullptr) {
    check<ShapeError>(image_embeds.defined() && image_embeds.dim() == 3,
                      "agla::instructblip::InstructBlipModel::query_output: image_embeds must be [N, 1 + P, ",
                      config_.vision.hidden_size, "]; got ", image_embeds.defined() ? image_embeds.sizes() : at::IntArrayRef{});
    const at::Tensor queries = query_tokens.expand({image_embeds.size(0), -1, -1});
    const at::Tensor last = qformer(queries, qformer_input_ids, qformer_attention_mask, image_embeds, hidden_states);
    return last.narrow(1, 0, config_.num_query_tokens);
  }

  /// The projected queries `[N, Q, Dt]` prepended to the prompt: vision encoder, Q-Former over the
  /// instruction (arguments as `image_embeds` and `query_output`), `language_projection`.
  at::Tensor language_model_inputs(const at::Tensor& pixel_values, const at::Tensor& qformer_input_ids,
                                   const at::Tensor& qformer_attention_mask = {}) {
    return language_projection(query_output(image_embeds(pixel_values), qformer_input_ids, qformer_attention_mask));
  }

  /// Token embeddings of int64 ids `[B, T]` -> `[B, T, Dt]`; throws `agla::InvalidArgument` for ids
  /// outside the vocabulary.
  at::Tensor embed(const at::Tensor& ids) {
    return language_model->model->embed(ids, "agla::instructblip::InstructBlipModel::embed");
  }

  /// The language model's input as v4.37.2's `generate` forms it: `cat(language_model_inputs,
  /// embed(input_ids))` (queries first; undefined `language_model_inputs` = no image, the prompt
  /// alone), mask `cat(ones(Q), attention_mask)` (undefined `attention_mask` = all ones) and
  /// positions `cumsum(mask) - 1` (padded slots 1; `arange(M)` without padding, as `forward` uses).
  LmInputs lm_inputs(const at::Tensor& language_model_inputs, const at::Tensor& input_ids,
                     const at::Tensor& attention_mask = {}) {
    const char* fn = "agla::instructblip::InstructBlipModel::lm_inputs: ";
    const at::Tensor text = embed(input_ids);
    const int64_t b = input_ids.size(0), l = input_ids.size(1);
    at::Tensor mask = attention_mask.defined() ? attention_mask : at::ones({b, l}, at::kLong);
    check<ShapeError>(mask.dim() == 2 && mask.size(0) == b && mask.size(1) == l, fn, "attention_mask must be [", b,
                      ", ", l, "]; got ", mask.sizes());
    mask = (mask.to(device()) != 0).to(at::kLong);
    LmInputs out;
    out.inputs_embeds = text;
    if (language_model_inputs.defined()) {
      check<ShapeError>(language_model_inputs.dim() == 3 && language_model_inputs.size(0) == b &&
                            language_model_inputs.size(2) == config_.text.hidden_size,
                        fn, "language_model_inputs must be [", b, ", Q, ", config_.text.hidden_size, "]; got ",
                        language_model_inputs.sizes());
      out.inputs_embeds = at::cat({language_model_inputs.to(text.device(), text.scalar_type()), text}, 1);
      mask = at::cat({at::ones({b, language_model_inputs.size(1)}, mask.options()), mask}, 1);
    }
    out.attention_mask = mask;
    out.padded = (mask == 0).any().item<bool>();
    out.position_ids = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1);
    return out;
  }

  /// Full forward without cache: float32 logits `[B, M, V]` for every position of int64 `input_ids`
  /// `[B, L]` (BOS first, optional left-padding `attention_mask` `[B, L]`) after the queries of
  /// `pixel_values` `[B, 3, S, S]` read with the instruction `qformer_input_ids` `[B, T]` (optional
  /// `qformer_attention_mask`). Undefined `pixel_values`: the prompt alone (no query rows).
  at::Tensor forward(const at::Tensor& pixel_values, const at::Tensor& qformer_input_ids, const at::Tensor& input_ids,
                     const at::Tensor& qformer_attention_mask = {}, const at::Tensor& attention_mask = {}) {
    check<ShapeError>(input_ids.defined() && input_ids.dim() == 2 && input_ids.size(1) > 0 &&
                          (!pixel_values.defined() || (pixel_values.dim() == 4 && pixel_values.size(0) == input_ids.size(0))),
                      "agla::instructblip::InstructBlipModel::forward: pixel_values [B, 3, S, S] and input_ids [B, L] "
                      "(L > 0) must agree on B; got ",
                      pixel_values.defined() ? pixel_values.sizes() : at::IntArrayRef{}, " and ",
                      input_ids.defined() ? input_ids.sizes() : at::IntArrayRef{});
    const at::Tensor queries = pixel_values.defined()
                                   ? language_model_inputs(pixel_values, qformer_input_ids, qformer_attention_mask)
                                   : at::Tensor();
    const LmInputs in = lm_inputs(queries, input_ids, attention_mask);
    return language_model(in.inputs_embeds, in.position_ids, in.padded ? in.attention_mask : at::Tensor());
  }

  models::VisionTransformer vision_model{nullptr};   ///< BLIP-2 vision encoder
  at::Tensor query_tokens;                           ///< `[1, Q, Dq]` learned queries
  QFormerModel qformer{nullptr};                     ///< Q-Former
  models::Linear language_projection{nullptr};       ///< `[Dt, Dq]` with bias
  llama::LlamaForCausalLM language_model{nullptr};   ///< LLaMA / Vicuna

 private:
  InstructBlipConfig config_;
};
TORCH_MODULE(InstructBlipModel);

/// Binds the tensors of `dict` to `model` by exact Hugging Face name (`agla::io::load_module`: strict,
/// zero-copy where dtype and device already match; `source` names the checkpoint in errors). Keys
/// older transformers releases persisted and this implementation recomputes are accepted and
/// ignored (`qformer.embeddings.position_ids`, LLaMA's `rotary_emb.inv_freq`), and with tied
/// embeddings a stored `language_model.lm_head.weight`.
inline void load_weights(InstructBlipModel& model, const io::StateDict& dict, const std::string& source,
                         const io::LoadOptions& options = {}) {
  const bool tied = model->config().text.tie_word_embeddings;
  io::LoadHooks hooks;
  hooks.ignorable = [tied](const std::string& name, const io::StateDict&) {
    return (tied && name == "language_model.lm_head.weight") || name == "qformer.embeddings.position_ids" ||
           (name.rfind("language_model.model.layers.", 0) == 0 && llama::is_recomputed_buffer(name));
  };
  io::load_module(*model, dict, source, options, hooks);
}

}  // namespace agla::instructblip
