#pragma once
/// \file
/// The vision transformer settings every shipped vision tower shares (`vision_config` of BLIP, CLIP
/// and InstructBLIP checkpoints), and the BLIP-family ViT itself -- `BlipVisionModel` of
/// `modeling_blip.py` and `InstructBlipVisionModel` of `modeling_instructblip.py` (v4.37.2) are the
/// same network: CLS + conv patches + learned positions, no pre-encoder LayerNorm, pre-LN blocks
/// with a fused `qkv` projection, final `post_layernorm`. Modules are registered under the upstream
/// attribute names so `vision_model.<...>` checkpoint keys map one to one.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/hf_config.hpp"
#include "agla/io/limits.hpp"
#include "agla/models/common/layers.hpp"

namespace agla::models {

/// Largest value a size field of a model config may hold (defined once in agla/io/limits.hpp).
using io::kMaxConfigSize;

/// Throws `agla::FormatError` (`where: name must be in [1, 2^24]; got v`) unless `value` is a valid size.
inline void check_config_size(int64_t value, const std::string& where, const std::string& name) {
  check<FormatError>(value > 0 && value <= kMaxConfigSize, where, ": ", name, " must be in [1, ", kMaxConfigSize,
                     "]; got ", value);
}

/// `check_config_size` for every (name, value) of `sizes`, each name prefixed with `prefix`.
inline void check_config_sizes(const std::string& where, const std::string& prefix,
                               std::initializer_list<std::pair<const char*, int64_t>> sizes) {
  for (const auto& [name, value] : sizes) check_config_size(value, where, prefix + name);
}

/// A vision tower's `vision_config` (`BlipVisionConfig`, `CLIPVisionConfig`, `InstructBlipVisionConfig`).
struct VisionConfig {
  int64_t hidden_size = 768;         ///< width of the image tokens
  int64_t intermediate_size = 3072;  ///< MLP width
  int64_t num_hidden_layers = 12;    ///< transformer blocks
  int64_t num_attention_heads = 12;  ///< self-attention heads
  int64_t num_channels = 3;          ///< input channels (RGB)
  int64_t image_size = 224;          ///< input side S
  int64_t patch_size = 16;           ///< patch side; grid g = S / patch_size
  double layer_norm_eps = 1e-5;      ///< every LayerNorm of the tower
  std::string hidden_act = "gelu";   ///< MLP activation: "gelu" (exact erf) or "quick_gelu"

  /// A tower `hidden_size` wide with an MLP `intermediate_size` wide, `layers` blocks of `heads` heads,
  /// RGB input of `image_size` px cut in `patch_size` px patches; the defaults of a config class.
  static VisionConfig sized(int64_t hidden_size, int64_t intermediate_size, int64_t layers, int64_t heads,
                            int64_t image_size, int64_t patch_size, double layer_norm_eps, std::string hidden_act) {
    return VisionConfig{hidden_size, intermediate_size, layers, heads, 3, image_size, patch_size, layer_norm_eps,
                        std::move(hidden_act)};
  }

  /// Patches per side, image_size / patch_size.
  int64_t grid() const { return image_size / patch_size; }
  /// Patches per image, grid^2.
  int64_t num_patches() const { return grid() * grid(); }

  /// Throws `agla::ShapeError` (`where: name must be float [B, C, S, S]; got ...`) unless `pixels` is a
  /// floating tensor of the tower's input size with `batch` images (any number when `batch` < 0).
  void check_pixels(const at::Tensor& pixels, int64_t batch, const std::string& where, const std::string& name) const {
    check<ShapeError>(pixels.defined() && pixels.dim() == 4 && (batch < 0 || pixels.size(0) == batch) &&
                          pixels.size(1) == num_channels && pixels.size(2) == image_size &&
                          pixels.size(3) == image_size && at::isFloatingType(pixels.scalar_type()),
                      where, ": ", name, " must be float [", batch < 0 ? std::string("N") : std::to_string(batch),
                      ", ", num_channels, ", ", image_size, ", ", image_size, "]; got ",
                      pixels.defined() ? pixels.sizes() : at::IntArrayRef{}, " ",
                      pixels.defined() ? pixels.scalar_type() : at::kFloat);
  }

  /// Checks every size; throws `agla::FormatError` naming `where` and the field (`vision_config.*`).
  void validate(const std::string& where) const {
    check_config_sizes(where, "vision_config.",
                       {{"hidden_size", hidden_size}, {"intermediate_size", intermediate_size},
                        {"num_hidden_layers", num_hidden_layers}, {"num_attention_heads", num_attention_heads},
                        {"num_channels", num_channels}, {"image_size", image_size}, {"patch_size", patch_size}});
    check<FormatError>(hidden_size % num_attention_heads == 0, where, ": vision_config.hidden_size (", hidden_size,
                       ") must be divisible by vision_config.num_attention_heads (", num_attention_heads, ")");
    check<FormatError>(image_size % patch_size == 0, where, ": vision_config.image_size (", image_size,
                       ") must be a multiple of vision_config.patch_size (", patch_size, ")");
    check<FormatError>(layer_norm_eps > 0, where, ": vision_config.layer_norm_eps must be positive; got ",
                       layer_norm_eps);
    parse_activation(hidden_act, where + ": vision_config.hidden_act");
  }

  /// Reads the keys of `json` (a `vision_config` object), keeping `defaults` for absent ones (the
  /// upstream defaults of the config class, which `save_pretrained` omits). Does not validate.
  static VisionConfig read(const io::JsonConfig& json, const VisionConfig& defaults) {
    VisionConfig c = defaults;
    json.read({{"hidden_size", &c.hidden_size}, {"intermediate_size", &c.intermediate_size},
               {"num_hidden_layers", &c.num_hidden_layers}, {"num_attention_heads", &c.num_attention_heads},
               {"num_channels", &c.num_channels}, {"image_size", &c.image_size}, {"patch_size", &c.patch_size},
               {"layer_norm_eps", &c.layer_norm_eps}, {"hidden_act", &c.hidden_act}});
    return c;
  }
};

/// `BlipVisionEmbeddings`: `[CLS] + conv patches + learned positions` -> `[B, 1 + g*g, D]`.
class VitEmbeddingsImpl : public torch::nn::Module, public ResetParameters {
 public:
  /// Registers `class_embedding` `[1, 1, D]`, `patch_embedding` (conv with bias), `position_embedding`
  /// `[1, 1 + g*g, D]` (parameters, not `nn.Embedding`).
  explicit VitEmbeddingsImpl(const VisionConfig& c) {
    class_embedding = register_parameter("class_embedding", at::empty({1, 1, c.hidden_size}));
    patch_embedding =
        register_module("patch_embedding", PatchEmbedding(c.num_channels, c.hidden_size, c.patch_size, true));
    position_embedding = register_parameter("position_embedding", at::empty({1, c.num_patches() + 1, c.hidden_size}));
  }

  /// `[B, C, S, S]` -> `[B, 1 + g*g, D]`; patch index = row * g + col.
  at::Tensor forward(const at::Tensor& pixel_values) {
    const at::Tensor patches = patch_embedding(pixel_values);
    const at::Tensor cls = class_embedding.expand({pixel_values.size(0), 1, -1});
    const at::Tensor tokens = at::cat({cls, patches}, 1);
    return tokens + position_embedding.narrow(1, 0, tokens.size(1));
  }

  /// BLIP's initialisation, in its construction order: `randn * 0.02` for the CLS token, the
  /// convolution's PyTorch default, `randn * 0.02` for the positions.
  void reset_parameters() override {
    torch::NoGradGuard no_grad;
    class_embedding.copy_(at::randn(class_embedding.sizes()) * 0.02);
    patch_embedding->reset_parameters();
    position_embedding.copy_(at::randn(position_embedding.sizes()) * 0.02);
  }

  at::Tensor class_embedding;                 ///< `[1, 1, D]`
  PatchEmbedding patch_embedding{nullptr};    ///< `[D, C, p, p]` + `[D]`
  at::Tensor position_embedding;              ///< `[1, 1 + g*g, D]`
};
TORCH_MODULE(VitEmbeddings);

/// `BlipAttention`: fused `qkv` projection (rows: all q, all k, all v), scores scaled by dh^-0.5.
class FusedQkvAttentionImpl : public torch::nn::Module {
 public:
  /// Registers `qkv` `[3D, D]` and `projection` `[D, D]`, both with biases.
  explicit FusedQkvAttentionImpl(const VisionConfig& c)
      : num_heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads) {
    qkv = register_module("qkv", Linear(c.hidden_size, 3 * c.hidden_size));
    projection = register_module("projection", Linear(c.hidden_size, c.hidden_size));
  }

  /// `[B, N, D]` -> `[B, N, D]` (upstream `mixed_qkv.reshape(B, N, 3, H, dh).permute(2, 0, 3, 1, 4)`).
  at::Tensor forward(const at::Tensor& x) {
    const int64_t b = x.size(0), n = x.size(1);
    const at::Tensor mixed = qkv(x).reshape({b, n, 3, num_heads_, head_dim_}).permute({2, 0, 3, 1, 4});
    const at::Tensor q = mixed[0], k = mixed[1], v = mixed[2];
    const at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) * std::pow(static_cast<double>(head_dim_), -0.5);
    const at::Tensor context = at::matmul(at::softmax(scores, -1), v).permute({0, 2, 1, 3}).reshape({b, n, -1});
    return projection(context);
  }

  Linear qkv{nullptr}, projection{nullptr};  ///< projections

 private:
  int64_t num_heads_, head_dim_;
};
TORCH_MODULE(FusedQkvAttention);

/// `BlipEncoderLayer`: pre-LN, `x + attn(LN1 x)`, then `x + mlp(LN2 x)`.
class VitLayerImpl : public torch::nn::Module {
 public:
  /// Registers `self_attn`, `layer_norm1`, `mlp`, `layer_norm2` (upstream construction order).
  explicit VitLayerImpl(const VisionConfig& c) {
    self_attn = register_module("self_attn", FusedQkvAttention(c));
    layer_norm1 = register_module("layer_norm1", LayerNorm(c.hidden_size, c.layer_norm_eps));
    mlp = register_module("mlp", Mlp(c.hidden_size, c.intermediate_size,
                                     parse_activation(c.hidden_act, "vision_config.hidden_act")));
    layer_norm2 = register_module("layer_norm2", LayerNorm(c.hidden_size, c.layer_norm_eps));
  }
  /// `[B, N, D]` -> `[B, N, D]`.
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = x + self_attn(layer_norm1(x));
    return h + mlp(layer_norm2(h));
  }

  FusedQkvAttention self_attn{nullptr};  ///< attention
  LayerNorm layer_norm1{nullptr};        ///< before attention
  Mlp mlp{nullptr};                      ///< feed-forward
  LayerNorm layer_norm2{nullptr};        ///< before the feed-forward
};
TORCH_MODULE(VitLayer);

/// `BlipVisionModel` / `InstructBlipVisionModel`: `embeddings` -> `encoder.layers.*` -> `post_layernorm`.
class VisionTransformerImpl : public torch::nn::Module {
 public:
  /// Registers every submodule under its Hugging Face name; `config` must be valid.
  explicit VisionTransformerImpl(const VisionConfig& c) : config_(c) {
    c.validate("agla::models::VisionTransformer");
    embeddings = register_module("embeddings", VitEmbeddings(c));
    auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    layers = register_blocks(*encoder, "layers", c.num_hidden_layers, blocks_, [&](int64_t) { return VitLayer(c); });
    post_layernorm = register_module("post_layernorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
  }

  /// `pixel_values` `[B, C, S, S]` (any float dtype) -> `last_hidden_state` `[B, 1 + g*g, D]`
  /// (post-LayerNorm: what cross-attention, ITC and the Q-Former consume). `hidden_states`, if given,
  /// receives the encoder's input and each layer's output (before `post_layernorm`).
  at::Tensor forward(const at::Tensor& pixel_values, std::vector<at::Tensor>* hidden_states = nullptr) {
    check<ShapeError>(pixel_values.dim() == 4 && pixel_values.size(1) == config_.num_channels &&
                          pixel_values.size(2) == config_.image_size && pixel_values.size(3) == config_.image_size &&
                          at::isFloatingType(pixel_values.scalar_type()),
                      "agla::models::VisionTransformer: pixel_values must be float [B, ", config_.num_channels, ", ",
                      config_.image_size, ", ", config_.image_size, "]; got ", pixel_values.sizes(), " ",
                      pixel_values.scalar_type());
    at::Tensor x = embeddings(pixel_values);
    for (auto& block : blocks_) {
      if (hidden_states) hidden_states->push_back(x);
      x = block(x);
    }
    if (hidden_states) hidden_states->push_back(x);
    return post_layernorm(x);
  }

  /// The configuration the module was built from.
  const VisionConfig& config() const { return config_; }

  VitEmbeddings embeddings{nullptr};      ///< CLS, patches, positions
  torch::nn::ModuleList layers{nullptr};  ///< `encoder.layers.*`
  LayerNorm post_layernorm{nullptr};      ///< final LayerNorm

 private:
  VisionConfig config_;
  std::vector<VitLayer> blocks_;
};
TORCH_MODULE(VisionTransformer);

}  // namespace agla::models
