#pragma once
/// \file
/// LLaVA-1.5 (`LlavaForConditionalGeneration`, models/llava/modeling_llava.py v4.37.2): CLIP vision
/// tower, two-layer GELU projector, LLaMA decoder, and the splice of the image features into the
/// token embeddings at the single `<image>` token. Loads `llava-hf` checkpoint directories
/// (`config.json` + single or sharded `model.safetensors`) with Hugging Face names, strictly and
/// without copying weights whose dtype and device already match.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/checkpoint.hpp"
#include "agla/io/module_loader.hpp"
#include "agla/io/state_dict.hpp"
#include "agla/models/llava/clip.hpp"
#include "agla/models/llava/config.hpp"
#include "agla/models/common/layers.hpp"
#include "agla/models/llama/model.hpp"

namespace agla::llava {

/// `LlavaMultiModalProjector`: `linear_2(gelu(linear_1(x)))`, vision width -> text width.
class ProjectorImpl : public torch::nn::Module {
 public:
  /// Registers `linear_1` `[Dt, Dv]` and `linear_2` `[Dt, Dt]`, both with biases.
  explicit ProjectorImpl(const LlavaConfig& c) {
    linear_1 = register_module("linear_1", models::Linear(c.vision.hidden_size, c.text.hidden_size, true));
    linear_2 = register_module("linear_2", models::Linear(c.text.hidden_size, c.text.hidden_size, true));
  }
  /// `[..., Dv]` -> `[..., Dt]`.
  at::Tensor forward(const at::Tensor& x) { return linear_2(at::gelu(linear_1(x))); }

  models::Linear linear_1{nullptr}, linear_2{nullptr};  ///< the two layers
};
TORCH_MODULE(Projector);

/// The LLaMA input after the image splice: embeddings `[B, M, Dt]` (model dtype), attention mask
/// `[B, M]` int64 (0 = left padding) and position ids `[B, M]` int64, M = L - 1 + image tokens.
struct MergedInputs {
  at::Tensor inputs_embeds;   ///< `[B, M, Dt]`
  at::Tensor attention_mask;  ///< `[B, M]` int64
  at::Tensor position_ids;    ///< `[B, M]` int64
  bool padded = false;        ///< whether any mask entry is 0
};

/// LLaVA-1.5: `vision_tower`, `multi_modal_projector`, `language_model` (HF names).
class LlavaModelImpl : public torch::nn::Module {
 public:
  /// Builds the modules for `config`; weights stay uninitialised until loaded (`load_model`, `load_weights`).
  explicit LlavaModelImpl(const LlavaConfig& config) : config_(config) {
    vision_tower = register_module("vision_tower", ClipVisionModel(config.vision));
    multi_modal_projector = register_module("multi_modal_projector", Projector(config));
    language_model = register_module("language_model", llama::LlamaForCausalLM(config.text));
  }

  /// The configuration the model was built from.
  const LlavaConfig& config() const { return config_; }
  /// Device of the weights.
  at::Device device() const { return multi_modal_projector->linear_1->weight.device(); }
  /// Floating-point type of the weights.
  at::ScalarType dtype() const { return multi_modal_projector->linear_1->weight.scalar_type(); }

  /// Selected CLIP features (`hidden_states[vision_feature_layer]`, CLS dropped by the "default"
  /// strategy) for `pixel_values` `[N, 3, S, S]`: `[N, P, Dv]` in the model dtype, on its device.
  at::Tensor selected_vision_features(const at::Tensor& pixel_values) {
    const auto& v = config_.vision;
    check<ShapeError>(pixel_values.dim() == 4 && pixel_values.size(1) == v.num_channels &&
                          pixel_values.size(2) == v.image_size && pixel_values.size(3) == v.image_size &&
                          at::isFloatingType(pixel_values.scalar_type()),
                      "agla::llava::LlavaModel: pixel_values must be float [N, ", v.num_channels, ", ", v.image_size,
                      ", ", v.image_size, "]; got ", pixel_values.sizes(), " ", pixel_values.scalar_type());
    const auto x = pixel_values.to(device(), dtype());
    const auto h = vision_tower->vision_model->forward(x, config_.vision_layers_used());
    return config_.vision_feature_select_strategy == "default" ? h.narrow(1, 1, h.size(1) - 1) : h;
  }

  /// Projected image features for `pixel_values` `[N, 3, S, S]`: `[N, P, Dt]` (the rows spliced into the sequence).
  at::Tensor image_features(const at::Tensor& pixel_values) {
    return multi_modal_projector(selected_vision_features(pixel_values));
  }

  /// Token embeddings of int64 ids `[B, T]` -> `[B, T, Dt]`; throws `agla::InvalidArgument` for ids
  /// outside the vocabulary.
  at::Tensor embed(const at::Tensor& ids) { return language_model->model->embed(ids, "agla::llava::LlavaModel::embed"); }

  /// Splices `image_features` `[B, P, Dt]` into the embeddings of `input_ids` `[B, L]` (int64, exactly
  /// one `image_token_index` per row) at the image token, as v4.37.2's
  /// `_merge_input_ids_with_image_features` does for one image per prompt: merged row = embeddings
  /// before the token, the P features in patch order, embeddings after it. `attention_mask` `[B, L]`
  /// (undefined = all ones) marks left padding; merged positions are `cumsum(mask) - 1`, padded
  /// slots get position 1 (as upstream).
  MergedInputs merge(const at::Tensor& input_ids, const at::Tensor& image_features,
                     const at::Tensor& attention_mask = {}) {
    const char* fn = "agla::llava::LlavaModel::merge: ";
    check<ShapeError>(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong && input_ids.size(1) > 0, fn,
                      "input_ids must be int64 [B, L] with L > 0; got ", input_ids.sizes(), " ",
                      input_ids.scalar_type());
    const auto b = input_ids.size(0), l = input_ids.size(1);
    check<ShapeError>(
        image_features.dim() == 3 && image_features.size(0) == b && image_features.size(2) == config_.text.hidden_size,
        fn, "image_features must be [", b, ", P, ", config_.text.hidden_size, "]; got ", image_features.sizes());
    at::Tensor mask = attention_mask;
    if (mask.defined()) {
      check<ShapeError>(mask.dim() == 2 && mask.size(0) == b && mask.size(1) == l, fn, "attention_mask must be [", b,
                        ", ", l, "]; got ", mask.sizes());
      mask = (mask.to(at::kCPU) != 0).to(at::kLong);
    } else {
      mask = at::ones({b, l}, at::kLong);
    }
    const auto ids_cpu = input_ids.to(at::kCPU);
    const auto is_image = (ids_cpu == config_.image_token_index) & (mask != 0);
    const auto per_row = is_image.sum(1);
    for (int64_t r = 0; r < b; ++r) {
      check<InvalidArgument>(per_row[r].item<int64_t>() == 1, fn, "row ", r, " must hold exactly one image token (id ",
                             config_.image_token_index, "); it holds ", per_row[r].item<int64_t>());
    }
    const auto positions_of_image = is_image.to(at::kLong).argmax(1);
    const auto embeds = embed(input_ids);
    const auto features = image_features.to(embeds.device(), embeds.scalar_type());
    const auto p = features.size(1);
    std::vector<at::Tensor> rows, masks;
    for (int64_t r = 0; r < b; ++r) {
      const auto at_image = positions_of_image[r].item<int64_t>();
      rows.push_back(at::cat(
          {embeds[r].narrow(0, 0, at_image), features[r], embeds[r].narrow(0, at_image + 1, l - at_image - 1)}));
      masks.push_back(at::cat({mask[r].narrow(0, 0, at_image), at::ones({p}, at::kLong),
                               mask[r].narrow(0, at_image + 1, l - at_image - 1)}));
    }
    MergedInputs out;
    out.inputs_embeds = at::stack(rows);
    const auto merged_mask = at::stack(masks);
    out.padded = (merged_mask == 0).any().item<bool>();
    out.position_ids = (merged_mask.cumsum(-1) - 1).masked_fill_(merged_mask == 0, 1).to(embeds.device());
    out.attention_mask = merged_mask.to(embeds.device());
    return out;
  }

  /// Full forward without cache: float32 logits `[B, M, V]` for every merged position, for int64
  /// `input_ids` `[B, L]` (one image token per row), `pixel_values` `[B, 3, S, S]` and optional
  /// `attention_mask` `[B, L]` (left padding).
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& pixel_values,
                     const at::Tensor& attention_mask = {}) {
    check<ShapeError>(pixel_values.dim() == 4 && input_ids.dim() == 2 && pixel_values.size(0) == input_ids.size(0),
                      "agla::llava::LlavaModel::forward: pixel_values [B, 3, S, S] and input_ids [B, L] must agree "
                      "on B; got ",
                      pixel_values.sizes(), " and ", input_ids.sizes());
    const auto merged = merge(input_ids, image_features(pixel_values), attention_mask);
    return language_model(merged.inputs_embeds, merged.position_ids,
                          merged.padded ? merged.attention_mask : at::Tensor());
  }

  ClipVisionModel vision_tower{nullptr};     ///< CLIP vision model
  Projector multi_modal_projector{nullptr};  ///< projector
  llama::LlamaForCausalLM language_model{nullptr};  ///< LLaMA

 private:
  LlavaConfig config_;
};
TORCH_MODULE(LlavaModel);

/// Binds the tensors of `dict` to `model` by exact Hugging Face name (`agla::io::load_module`: strict,
/// zero-copy where dtype and device already match). With tied embeddings a stored
/// `language_model.lm_head.weight` is accepted and ignored; so are the buffers older transformers
/// releases persisted and this implementation recomputes (CLIP's `embeddings.position_ids`, LLaMA's
/// `rotary_emb.inv_freq`).
inline void load_weights(LlavaModel& model, const io::StateDict& dict, const std::string& source,
                         const io::LoadOptions& options = {}) {
  const bool tied = model->config().text.tie_word_embeddings;
  io::LoadHooks hooks;
  hooks.ignorable = [tied](const std::string& name, const io::StateDict&) {
    return (tied && name == "language_model.lm_head.weight") ||
           name == "vision_tower.vision_model.embeddings.position_ids" ||
           (name.rfind("language_model.model.layers.", 0) == 0 && llama::is_recomputed_buffer(name));
  };
  io::load_module(*model, dict, source, options, hooks);
}

}  // namespace agla::llava
