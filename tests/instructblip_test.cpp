// Parity of the InstructBLIP implementation with Hugging Face transformers v4.37.2 on the fixture
// in tests/data/instructblip (tolerances from its README), stage by stage, plus the LVLM contract
// (views, padding, misuse), the loader, prompts and configs.

#include "agla/models/instructblip.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "agla/decode.hpp"
#include "agla/io/image.hpp"
#include "agla/io/safetensors.hpp"
#include "support/expect.hpp"
#include "support/generation.hpp"

namespace {

namespace ib = agla::instructblip;
namespace fs = std::filesystem;

static_assert(agla::check_lvlm<ib::InstructBlipLvlm>());

std::string fixture_dir() { return std::string(AGLA_TEST_DATA_DIR) + "/instructblip/tiny_t"; }
std::string tokenizer_model() { return std::string(AGLA_TEST_DATA_DIR) + "/llava/tokenizer/tiny_llama_bpe.model"; }

struct Fixture {
  ib::InstructBlipModel model{nullptr};
  agla::io::SafetensorsFile ref;
  at::Tensor get(const std::string& name) const { return ref.tensor(name); }
};

Fixture load_fixture(at::ScalarType dtype = at::kFloat) {
  agla::io::LoadOptions options;
  options.dtype = dtype;
  return Fixture{ib::InstructBlipLvlm::load(fixture_dir(), options).model(),
                 agla::io::SafetensorsFile::open(fixture_dir() + "/reference.safetensors")};
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// README tolerances: 1e-5 on vision, Q-Former and projection tensors; 5e-5 (+ rel 1e-5) on LM tensors.
// The measured error is printed for the documentation.
void expect_close(const at::Tensor& actual, const at::Tensor& expected, double atol, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const auto a = actual.to(at::kCPU).to(at::kDouble), e = expected.to(at::kDouble);
  const double rtol = atol < 5e-5 ? 0.0 : 1e-5;
  EXPECT_TRUE(at::allclose(a, e, rtol, atol)) << what << ": max |diff| = " << max_diff(a, e);
  std::printf("  %-48s max |diff| %.3g\n", what.c_str(), max_diff(a, e));
}

// A generation of prompt `ids` with instruction `qids` on `pixels`, one image view per `views`.
agla::LvlmInputs inputs(const at::Tensor& ids, const at::Tensor& qids, const at::Tensor& pixels,
                        const std::vector<at::Tensor>& views = {}, int64_t max_new_tokens = 16) {
  agla::LvlmInputs in = agla::LvlmInputs::images(ids, pixels, views, max_new_tokens);
  in.prompt.instruction_ids = qids;
  return in;
}

agla::ExtraView text_view(const at::Tensor& ids, const at::Tensor& qids) {
  agla::ExtraView view;
  view.kind = agla::ViewKind::Text;
  view.prompt.ids = ids;
  view.prompt.instruction_ids = qids;
  return view;
}

// A fresh directory under the system temp folder, removed by the destructor.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("agla_instructblip_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& text) const {
    fs::create_directories((path / name).parent_path());
    std::ofstream(path / name) << text;
  }
};

nlohmann::json sparse_json() { return nlohmann::json::parse(std::ifstream(fixture_dir() + "/config.sparse.json")); }

// The message of the FormatError `parse_config(json)` throws ("" when it throws none).
std::string config_error(const nlohmann::json& json) {
  return agla::test::error_message([&] { ib::parse_config(json); });
}

}  // namespace

TEST(InstructBlipConfigTest, SparseConfigGetsUpstreamDefaults) {
  const auto full = ib::read_config(fixture_dir() + "/config.json");
  const auto sparse = ib::read_config(fixture_dir() + "/config.sparse.json");
  for (const auto* c : {&full, &sparse}) {
    EXPECT_EQ(c->num_query_tokens, 4);
    EXPECT_EQ(c->vision.hidden_size, 32);
    EXPECT_EQ(c->vision.image_size, 32);
    EXPECT_EQ(c->vision.patch_size, 8);
    EXPECT_EQ(c->vision.hidden_act, "gelu");
    EXPECT_EQ(c->vision.layer_norm_eps, 1e-6);
    EXPECT_EQ(c->qformer.vocab_size, 120);
    EXPECT_EQ(c->qformer.layer_norm_eps, 1e-12);
    EXPECT_EQ(c->qformer.hidden_act, "gelu");
    EXPECT_EQ(c->qformer.cross_attention_frequency, 1);
    EXPECT_EQ(c->qformer.encoder_hidden_size, 32);
    EXPECT_EQ(c->qformer.max_position_embeddings, 64);
    EXPECT_EQ(c->text.vocab_size, 96);
    EXPECT_EQ(c->text.rms_norm_eps, 1e-6);
    EXPECT_EQ(c->text.eos_token_id, 2);
    EXPECT_EQ(c->text_architecture, "LlamaForCausalLM");
    EXPECT_FALSE(c->maps_zero_to_eos());
    EXPECT_EQ(c->text_pad_token_id, 0);
  }
  // Every default of v4.37.2 for a config that names only the text model.
  nlohmann::json minimal;
  minimal["text_config"] = {{"model_type", "llama"}};
  minimal["qformer_config"] = {{"encoder_hidden_size", 7}};
  const auto d = ib::parse_config(minimal);
  // The integer settings: name, parsed value, upstream default.
  const std::vector<std::tuple<const char*, int64_t, int64_t>> defaults = {
      {"num_query_tokens", d.num_query_tokens, 32},
      {"vision.hidden_size", d.vision.hidden_size, 1408},
      {"vision.intermediate_size", d.vision.intermediate_size, 6144},
      {"vision.num_hidden_layers", d.vision.num_hidden_layers, 39},
      {"vision.num_attention_heads", d.vision.num_attention_heads, 16},
      {"vision.image_size", d.vision.image_size, 224},
      {"vision.patch_size", d.vision.patch_size, 14},
      {"qformer.vocab_size", d.qformer.vocab_size, 30522},
      {"qformer.hidden_size", d.qformer.hidden_size, 768},
      {"qformer.num_hidden_layers", d.qformer.num_hidden_layers, 12},
      {"qformer.intermediate_size", d.qformer.intermediate_size, 3072},
      {"qformer.max_position_embeddings", d.qformer.max_position_embeddings, 512},
      {"qformer.cross_attention_frequency", d.qformer.cross_attention_frequency, 2},
      {"qformer.encoder_hidden_size (the vision width)", d.qformer.encoder_hidden_size, 1408},
      {"text.vocab_size", d.text.vocab_size, 32000},
      {"text.num_key_value_heads", d.text.num_key_value_heads, 32},
      {"text_pad_token_id", d.text_pad_token_id, -1},
  };
  for (const auto& [name, value, upstream] : defaults) EXPECT_EQ(value, upstream) << name;
  EXPECT_EQ(d.vision.layer_norm_eps, 1e-6);
  EXPECT_TRUE(d.qformer.has_cross_attention(0));
  EXPECT_FALSE(d.qformer.has_cross_attention(1));
  EXPECT_EQ(d.text_architecture, "");
  auto vicuna = minimal;
  vicuna["text_config"]["architectures"] = {"LLaMAForCausalLM"};
  EXPECT_TRUE(ib::parse_config(vicuna).maps_zero_to_eos());

  // With the default frequency 2, only even layers own cross-attention (and checkpoint keys).
  auto two = sparse_json();
  two["qformer_config"].erase("cross_attention_frequency");
  ib::InstructBlipModel model(ib::parse_config(two));
  const auto names = model->named_parameters(true).keys();
  auto has = [&](const std::string& name) { return std::find(names.begin(), names.end(), name) != names.end(); };
  EXPECT_TRUE(has("qformer.encoder.layer.0.crossattention.attention.key.weight"));
  EXPECT_FALSE(has("qformer.encoder.layer.1.crossattention.attention.key.weight"));
  EXPECT_TRUE(has("qformer.encoder.layer.1.intermediate_query.dense.weight"));

  EXPECT_TRUE(ib::is_instructblip_checkpoint(fixture_dir()));
  EXPECT_FALSE(ib::is_instructblip_checkpoint(std::string(AGLA_TEST_DATA_DIR) + "/llava/tiny_t"));
  EXPECT_FALSE(ib::is_instructblip_checkpoint(fixture_dir() + "/missing"));
}

TEST(InstructBlipConfigTest, RejectsBrokenConfigsNamingTheField) {
  const auto json = sparse_json();
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {[](nlohmann::json& j) { j["text_config"].erase("model_type"); }, "text_config.model_type"},
      {[](nlohmann::json& j) { j["text_config"]["model_type"] = "opt"; }, "text_config.model_type"},
      {[](nlohmann::json& j) { j["model_type"] = "blip-2"; }, "model_type"},
      {[](nlohmann::json& j) { j["num_query_tokens"] = 0; }, "num_query_tokens"},
      {[](nlohmann::json& j) { j["qformer_config"]["cross_attention_frequency"] = 0; }, "cross_attention_frequency"},
      {[](nlohmann::json& j) { j["qformer_config"]["num_attention_heads"] = 5; }, "qformer_config.hidden_size"},
      {[](nlohmann::json& j) { j["qformer_config"]["position_embedding_type"] = "relative_key"; },
       "qformer_config.position_embedding_type"},
      {[](nlohmann::json& j) { j["qformer_config"]["hidden_act"] = "relu"; }, "qformer_config.hidden_act"},
      {[](nlohmann::json& j) { j["qformer_config"]["layer_norm_eps"] = 0; }, "qformer_config.layer_norm_eps"},
      {[](nlohmann::json& j) { j["qformer_config"]["vocab_size"] = "120"; }, "vocab_size"},
      {[](nlohmann::json& j) { j["qformer_config"]["pad_token_id"] = 120; }, "qformer_config.pad_token_id"},
      {[](nlohmann::json& j) { j["vision_config"]["qkv_bias"] = false; }, "vision_config.qkv_bias"},
      {[](nlohmann::json& j) { j["vision_config"]["patch_size"] = 7; }, "vision_config.image_size"},
      {[](nlohmann::json& j) { j["text_config"]["num_key_value_heads"] = 3; }, "num_key_value_heads"},
      {[](nlohmann::json& j) { j["text_config"]["pad_token_id"] = 96; }, "text_config.pad_token_id"},
      {[](nlohmann::json& j) { j["text_config"]["architectures"] = "LlamaForCausalLM"; },
       "text_config.architectures"},
      {[](nlohmann::json& j) { j["vision_config"] = 3; }, "vision_config"},
  };
  for (const auto& [edit, field] : cases) {
    auto bad = json;
    edit(bad);
    const std::string message = config_error(bad);
    EXPECT_NE(message.find(field), std::string::npos) << field << ": \"" << message << "\"";
  }
  EXPECT_THROW(ib::parse_config(nlohmann::json::array()), agla::FormatError);
  EXPECT_THROW(ib::read_config(fixture_dir() + "/missing.json"), agla::FormatError);
  EXPECT_THROW(ib::read_config(fixture_dir() + "/model.safetensors"), agla::FormatError);
}

TEST(InstructBlipParityTest, PreprocessingMatchesPixelValues) {
  const auto ref = agla::io::SafetensorsFile::open(fixture_dir() + "/reference.safetensors");
  const auto image = agla::io::read_image(fixture_dir() + "/image.png");
  EXPECT_TRUE(at::equal(image, ref.tensor("image_uint8")));
  auto lvlm = ib::InstructBlipLvlm::load(fixture_dir());
  EXPECT_TRUE(at::equal(lvlm.preprocess(image), ref.tensor("pixel_values")[0]));
  EXPECT_TRUE(at::equal(lvlm.preprocess(agla::io::read_image(fixture_dir() + "/image_halfzero.png")),
                        ref.tensor("pixel_values_halfzero")[0]));
  // Any size is squashed to the encoder's square input (no crop).
  const auto wide = at::cat({image, image}, 1).contiguous();
  EXPECT_EQ(lvlm.preprocess(wide).sizes(), (std::vector<int64_t>{3, 32, 32}));
}

TEST(InstructBlipParityTest, VisionEncoderStates) {
  auto f = load_fixture();
  std::vector<at::Tensor> states;
  const auto last = f.model->image_embeds(f.get("pixel_values"), &states);
  const auto expected = f.get("vision_hidden_states");
  ASSERT_EQ(states.size(), 3u);
  for (size_t i = 0; i < states.size(); ++i)
    expect_close(states[i], expected[i], 1e-5, "vision_hidden_states[" + std::to_string(i) + "]");
  expect_close(last, f.get("vision_last_hidden_state"), 1e-5, "vision_last_hidden_state");
  // v4.37.2's pooled output applies post_layernorm a second time to the CLS row.
  expect_close(f.model->vision_model->post_layernorm(last.select(1, 0)), f.get("vision_pooled_output"), 1e-5,
               "vision_pooled_output");
}

TEST(InstructBlipParityTest, QFormerStatesAndQueryOutput) {
  auto f = load_fixture();
  const auto image = f.model->image_embeds(f.get("pixel_values"));
  std::vector<at::Tensor> states;
  const auto query = f.model->query_output(image, f.get("qformer_input_ids"), f.get("qformer_attention_mask"), &states);
  const auto expected = f.get("qformer_hidden_states");
  ASSERT_EQ(states.size(), 3u);
  for (size_t i = 0; i < states.size(); ++i)
    expect_close(states[i], expected[i], 1e-5, "qformer_hidden_states[" + std::to_string(i) + "]");
  expect_close(states.back(), f.get("qformer_last_hidden_state"), 1e-5, "qformer_last_hidden_state");
  expect_close(query, f.get("qformer_query_output"), 1e-5, "qformer_query_output");
  // An undefined mask means all ones.
  EXPECT_TRUE(at::equal(f.model->query_output(image, f.get("qformer_input_ids")), query));
}

TEST(InstructBlipParityTest, ProjectionAndLanguageModelInputs) {
  auto f = load_fixture();
  const auto projected = f.model->language_model_inputs(f.get("pixel_values"), f.get("qformer_input_ids"));
  expect_close(projected, f.get("language_projection_output"), 1e-5, "language_projection_output");
  const auto in = f.model->lm_inputs(projected, f.get("input_ids"), f.get("attention_mask"));
  expect_close(in.inputs_embeds, f.get("lm_inputs_embeds"), 1e-5, "lm_inputs_embeds");
  EXPECT_TRUE(at::equal(in.attention_mask, f.get("lm_attention_mask")));
  EXPECT_TRUE(at::equal(in.position_ids, f.get("lm_position_ids")));
  EXPECT_FALSE(in.padded);
}

TEST(InstructBlipParityTest, LanguageModelHiddenStatesLogitsAndCache) {
  auto f = load_fixture();
  const auto in = f.model->lm_inputs(
      f.model->language_model_inputs(f.get("pixel_values"), f.get("qformer_input_ids")), f.get("input_ids"));
  const auto& text = f.model->config().text;
  agla::llama::KvCache cache(text.num_hidden_layers, 1, text.num_key_value_heads, text.head_dim(), 11,
                             at::TensorOptions().dtype(at::kFloat));
  agla::llama::KvSlot slot{&cache, 0, 0};
  std::vector<at::Tensor> hidden;
  const auto normed = f.model->language_model->model->forward(in.inputs_embeds, in.position_ids, {}, &slot, &hidden);
  const auto expected = f.get("lm_hidden_states");
  ASSERT_EQ(hidden.size(), 3u);
  for (size_t i = 0; i < hidden.size(); ++i)
    expect_close(hidden[i], expected[i], 5e-5, "lm_hidden_states[" + std::to_string(i) + "]");
  expect_close(f.model->language_model->logits(normed), f.get("logits"), 5e-5, "logits (LM)");
  const auto keys = f.get("prefill_past_keys"), values = f.get("prefill_past_values");
  for (int64_t layer = 0; layer < text.num_hidden_layers; ++layer) {
    expect_close(cache.keys(layer), keys[layer], 5e-5, "prefill_past_keys[" + std::to_string(layer) + "]");
    expect_close(cache.values(layer), values[layer], 5e-5, "prefill_past_values[" + std::to_string(layer) + "]");
  }
  const auto logits = f.model->forward(f.get("pixel_values"), f.get("qformer_input_ids"), f.get("input_ids"),
                                       f.get("qformer_attention_mask"), f.get("attention_mask"));
  expect_close(logits, f.get("logits"), 5e-5, "logits");
  expect_close(logits.select(1, 10), f.get("first_step_logits"), 5e-5, "first_step_logits");
}

TEST(InstructBlipParityTest, GreedyWithKvCacheThroughLvlm) {
  auto f = load_fixture();
  ib::InstructBlipLvlm lvlm(f.model);
  const auto ids = f.get("input_ids");
  lvlm.begin(inputs(ids, f.get("qformer_input_ids"), f.get("pixel_values"), {}, 2));  // small: the cache grows
  const auto expected_tokens = f.get("greedy_tokens");
  const auto expected_logits = f.get("greedy_step_logits");
  at::Tensor step = ids;
  std::vector<int64_t> tokens;
  for (int64_t k = 0; k < 8; ++k) {
    const auto logits = lvlm(step, agla::View::Original);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, 96}));
    expect_close(logits[0], expected_logits[k], 5e-5, "greedy_step_logits[" + std::to_string(k) + "]");
    if (k == 0) {
      const auto keys = f.get("prefill_past_keys"), values = f.get("prefill_past_values");
      for (int64_t layer = 0; layer < 2; ++layer) {
        expect_close(lvlm.cache().keys(layer).narrow(2, 0, 11), keys[layer], 5e-5, "LVLM prefill keys");
        expect_close(lvlm.cache().values(layer).narrow(2, 0, 11), values[layer], 5e-5, "LVLM prefill values");
      }
    }
    const auto token = logits.argmax(-1);
    tokens.push_back(token.item<int64_t>());
    step = token.view({1, 1});
    EXPECT_EQ(lvlm.cached_length(agla::View::Original), 11 + k);
  }
  const auto generated = f.get("generate_output");
  EXPECT_EQ(tokens, std::vector<int64_t>(generated.data_ptr<int64_t>() + 1, generated.data_ptr<int64_t>() + 9));
  for (int64_t k = 0; k < 8; ++k) EXPECT_EQ(tokens[static_cast<size_t>(k)], expected_tokens[k].item<int64_t>());
}

TEST(InstructBlipParityTest, GreedyWithoutCache) {
  auto f = load_fixture();
  const auto expected_tokens = f.get("greedy_tokens_nocache");
  const auto expected_logits = f.get("greedy_step_logits_nocache");
  auto ids = f.get("input_ids");
  for (int64_t k = 0; k < 8; ++k) {
    const auto logits = f.model->forward(f.get("pixel_values"), f.get("qformer_input_ids"), ids);
    ASSERT_EQ(logits.size(1), 11 + k);
    const auto last = logits[0][-1];
    expect_close(last, expected_logits[k], 5e-5, "greedy_step_logits_nocache[" + std::to_string(k) + "]");
    const auto token = last.argmax();
    ASSERT_EQ(token.item<int64_t>(), expected_tokens[k].item<int64_t>()) << "step " << k;
    ids = at::cat({ids, token.view({1, 1})}, 1);
  }
}

TEST(InstructBlipParityTest, TwoImageBatch) {
  auto f = load_fixture();
  const auto pixels = f.get("batch2_pixel_values");
  const auto qids = f.get("batch2_qformer_input_ids"), ids = f.get("batch2_input_ids");
  const auto image = f.model->image_embeds(pixels);
  expect_close(f.model->query_output(image, qids), f.get("batch2_qformer_query_output"), 1e-5,
               "batch2_qformer_query_output");
  expect_close(f.model->forward(pixels, qids, ids), f.get("batch2_logits"), 5e-5, "batch2_logits");
  expect_close(f.model->forward(pixels.narrow(0, 1, 1), f.get("qformer_input_ids"), f.get("input_ids")),
               f.get("halfzero_logits_single"), 5e-5, "halfzero_logits_single");

  // Two streams greedily through the LVLM: batched generate()'s tokens and step logits.
  ib::InstructBlipLvlm lvlm(f.model);
  at::Tensor step = lvlm.begin(inputs(ids, qids, pixels));
  const auto expected = f.get("batch2_greedy_step_logits");
  const auto generated = f.get("batch2_generate_output");
  for (int64_t k = 0; k < 8; ++k) {
    const auto logits = lvlm(step, agla::View::Original);
    expect_close(logits, expected.select(1, k), 5e-5, "batch2_greedy_step_logits[:, " + std::to_string(k) + "]");
    step = logits.argmax(-1).view({2, 1});
    EXPECT_TRUE(at::equal(step.view({2}), generated.select(1, k + 1))) << "step " << k << ": " << step;
  }

  // The batched form ([2B, V], one forward) against the plain form (one forward per view).
  ib::InstructBlipLvlm batched(f.model), plain(f.model);
  const auto one = f.get("input_ids"), qone = f.get("qformer_input_ids");
  const auto original = pixels.narrow(0, 0, 1), augmented = pixels.narrow(0, 1, 1);
  batched.begin(inputs(one, qone, original, {augmented}));
  plain.begin(inputs(one, qone, original, {augmented}));
  step = one;
  for (int64_t k = 0; k < 6; ++k) {
    const auto both = batched(step, agla::BothViews{});
    ASSERT_EQ(both.sizes(), (std::vector<int64_t>{2, 96}));
    const auto a = plain(step, agla::View::Original), b = plain(step, agla::View::Augmented);
    expect_close(both[0], a[0], 5e-5, "batched original view, step " + std::to_string(k));
    expect_close(both[1], b[0], 5e-5, "batched augmented view, step " + std::to_string(k));
    if (k == 0) expect_close(both, f.get("batch2_first_step_logits"), 5e-5, "batched prefill vs batch2_first_step_logits");
    step = (both[0] + both[1]).argmax().view({1, 1});
  }
  EXPECT_EQ(batched.cached_length(agla::View::Augmented), 11 + 5);
}

TEST(InstructBlipParityTest, Float64MatchesFloat64Reference) {
  auto f = load_fixture(at::kDouble);
  std::vector<at::Tensor> vision, qformer;
  const auto image = f.model->image_embeds(f.get("pixel_values"), &vision);
  EXPECT_EQ(image.scalar_type(), at::kDouble);
  for (size_t i = 0; i < vision.size(); ++i)
    expect_close(vision[i], f.get("vision_hidden_states_f64")[i], 1e-5, "vision_hidden_states_f64");
  expect_close(image, f.get("vision_last_hidden_state_f64"), 1e-5, "vision_last_hidden_state_f64");
  const auto query = f.model->query_output(image, f.get("qformer_input_ids"), f.get("qformer_attention_mask"), &qformer);
  for (size_t i = 0; i < qformer.size(); ++i)
    expect_close(qformer[i], f.get("qformer_hidden_states_f64")[i], 1e-5, "qformer_hidden_states_f64");
  expect_close(query, f.get("qformer_query_output_f64"), 1e-5, "qformer_query_output_f64");
  const auto projected = f.model->language_projection(query);
  expect_close(projected, f.get("language_projection_output_f64"), 1e-5, "language_projection_output_f64");
  const auto in = f.model->lm_inputs(projected, f.get("input_ids"));
  std::vector<at::Tensor> hidden;
  f.model->language_model->model->forward(in.inputs_embeds, in.position_ids, {}, nullptr, &hidden);
  for (size_t i = 0; i < hidden.size(); ++i)
    expect_close(hidden[i], f.get("lm_hidden_states_f64")[i], 5e-5, "lm_hidden_states_f64");
  const auto logits = f.model->forward(f.get("pixel_values"), f.get("qformer_input_ids"), f.get("input_ids"));
  EXPECT_EQ(logits.scalar_type(), at::kDouble);
  expect_close(logits, f.get("logits_f64"), 5e-5, "logits_f64");
  expect_close(f.model->forward(f.get("batch2_pixel_values"), f.get("batch2_qformer_input_ids"), f.get("batch2_input_ids")),
               f.get("batch2_logits_f64"), 5e-5, "batch2_logits_f64");
  ib::InstructBlipLvlm lvlm(f.model);
  at::Tensor step = lvlm.begin(inputs(f.get("input_ids"), f.get("qformer_input_ids"), f.get("pixel_values")));
  for (int64_t k = 0; k < 8; ++k) {
    const auto l = lvlm(step, agla::View::Original);
    expect_close(l[0], f.get("greedy_step_logits_f64")[k], 5e-5, "greedy_step_logits_f64[" + std::to_string(k) + "]");
    step = l.argmax(-1).view({1, 1});
    EXPECT_EQ(step.item<int64_t>(), f.get("greedy_tokens")[k].item<int64_t>());
  }
}

TEST(InstructBlipParityTest, ReducedPrecisionStaysCloseToFloat32) {
  // bfloat16 keeps 8 significant bits: logits of size ~4 move by up to ~0.1 over the tiny model.
  std::vector<std::pair<at::Device, at::ScalarType>> runs = {{at::kCPU, at::kBFloat16}};
  if (at::hasCUDA()) {
    runs.push_back({at::Device(at::kCUDA, 0), at::kHalf});
    runs.push_back({at::Device(at::kCUDA, 0), at::kBFloat16});
  }
  const auto ref = agla::io::SafetensorsFile::open(fixture_dir() + "/reference.safetensors");
  const auto pixels = ref.tensor("batch2_pixel_values");
  for (const auto& [device, dtype] : runs) {
    agla::io::LoadOptions options;
    options.device = device;
    options.dtype = dtype;
    auto model = ib::InstructBlipLvlm::load(fixture_dir(), options).model();
    const double tol = dtype == at::kHalf ? 5e-2 : 2.5e-1;
    const auto logits = model->forward(pixels, ref.tensor("batch2_qformer_input_ids"), ref.tensor("batch2_input_ids"));
    EXPECT_EQ(logits.scalar_type(), at::kFloat);
    EXPECT_EQ(logits.device(), device);
    const auto diff = max_diff(logits.cpu(), ref.tensor("batch2_logits"));
    EXPECT_LT(diff, tol) << device << " " << dtype;
    // The cached LVLM agrees with the full forward in the same precision.
    ib::InstructBlipLvlm lvlm(model);
    const auto prompt = lvlm.begin(inputs(ref.tensor("input_ids"), ref.tensor("qformer_input_ids"),
                                          pixels.narrow(0, 0, 1), {pixels.narrow(0, 1, 1)}));
    const auto both = lvlm(prompt, agla::BothViews{});
    EXPECT_LT(max_diff(both.cpu(), logits.select(1, 10).cpu()), tol / 4) << device << " " << dtype;
    std::printf("%s %s: max |logits - float32 reference| = %.3g\n", device.str().c_str(), c10::toString(dtype), diff);
  }
}

TEST(InstructBlipLoaderTest, SparseConfigAndShardedCheckpointGiveTheSameModel) {
  TempDir dir("sharded");
  fs::copy_file(fixture_dir() + "/config.sparse.json", dir.path / "config.json");
  const auto dict = agla::io::read_safetensors(fixture_dir() + "/model.safetensors");
  agla::io::StateDict vision_part, rest;
  nlohmann::json index;
  for (const auto& item : dict) {
    const bool first = item.first.rfind("vision_model.", 0) == 0 || item.first.rfind("qformer.", 0) == 0;
    (first ? vision_part : rest)[item.first] = item.second;
    index["weight_map"][item.first] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  agla::io::write_safetensors((dir.path / "model-00001-of-00002.safetensors").string(), vision_part);
  agla::io::write_safetensors((dir.path / "model-00002-of-00002.safetensors").string(), rest);
  dir.write("model.safetensors.index.json", index.dump());
  auto model = ib::InstructBlipLvlm::load(dir.path.string()).model();
  const auto ref = agla::io::SafetensorsFile::open(fixture_dir() + "/reference.safetensors");
  expect_close(model->forward(ref.tensor("pixel_values"), ref.tensor("qformer_input_ids"), ref.tensor("input_ids")),
               ref.tensor("logits"), 5e-5, "sparse config, sharded checkpoint: logits");
}

TEST(InstructBlipLoaderTest, BindsWeightsWithoutCopyingAndAcceptsPersistedBuffers) {
  auto dict = agla::io::read_safetensors(fixture_dir() + "/model.safetensors");
  ib::InstructBlipModel model(ib::read_config(fixture_dir() + "/config.json"));
  dict["qformer.embeddings.position_ids"] = at::arange(64, at::kLong).view({1, 64});
  dict["language_model.model.layers.0.self_attn.rotary_emb.inv_freq"] = at::ones({6});
  ib::load_weights(model, dict, "tiny_t");
  const auto params = model->named_parameters(true);
  EXPECT_EQ(params.size(), dict.size() - 2);
  EXPECT_EQ(params.size(), 122u);
  for (const auto& item : params) EXPECT_EQ(item.value().data_ptr(), dict.at(item.key()).data_ptr()) << item.key();
}

TEST(InstructBlipLoaderTest, ReportsMissingUnexpectedAndMisshapedNames) {
  const auto config = ib::read_config(fixture_dir() + "/config.json");
  auto dict = agla::io::read_safetensors(fixture_dir() + "/model.safetensors");
  dict.erase("qformer.encoder.layer.1.output_query.dense.weight");
  dict["qformer.encoder.layer.1.crossattention.attention.extra"] = at::zeros({2});
  dict["query_tokens"] = at::zeros({1, 5, 32});
  ib::InstructBlipModel model(config);
  const std::string message = agla::test::error_message([&] { ib::load_weights(model, dict, "edited tiny_t"); });
  ASSERT_FALSE(message.empty()) << "expected agla::FormatError";
  agla::test::expect_contains(message, {"missing", "qformer.encoder.layer.1.output_query.dense.weight", "unexpected",
                                        "qformer.encoder.layer.1.crossattention.attention.extra", "query_tokens",
                                        "[1, 5, 32]"});
  TempDir empty("empty");
  fs::copy_file(fixture_dir() + "/config.json", empty.path / "config.json");
  EXPECT_THROW(ib::InstructBlipLvlm::load(empty.path.string()), agla::FormatError);  // no weights
  EXPECT_THROW(ib::InstructBlipLvlm::load(fixture_dir() + "/missing"), agla::FormatError);
}

TEST(InstructBlipLvlmTest, TextAndNoImageViewsMatchTheUncachedForward) {
  auto f = load_fixture();
  const auto ids = f.get("input_ids"), qids = f.get("qformer_input_ids"), pixels = f.get("pixel_values");
  const auto text_ids = at::tensor({1, 23, 60, 9, 5}, at::kLong).view({1, 5});
  const auto text_qids = at::tensor({101, 37, 80, 99, 45, 12, 3, 102}, at::kLong).view({1, 8});
  auto in = inputs(ids, qids, pixels);
  in.views.push_back(text_view(text_ids, text_qids));
  in.views.push_back(agla::ExtraView{agla::ViewKind::NoImage, {}, {}});
  for (const bool batched : {false, true}) {
    ib::InstructBlipLvlm lvlm(f.model);
    at::Tensor step = lvlm.begin(in);
    at::Tensor seq = ids, text_seq = text_ids;
    for (int64_t k = 0; k < 5; ++k) {
      at::Tensor all;
      if (batched) {
        all = lvlm(step, agla::AllViews{});
      } else {
        all = at::cat({lvlm(step, agla::View::Original), lvlm(step, agla::View::extra(1)), lvlm(step, agla::View::extra(2))});
      }
      ASSERT_EQ(all.sizes(), (std::vector<int64_t>{3, 96}));
      const std::string when = std::string(batched ? "batched" : "plain") + ", step " + std::to_string(k);
      expect_close(all[0], f.model->forward(pixels, qids, seq)[0][-1], 5e-5, "original view, " + when);
      expect_close(all[1], f.model->forward(pixels, text_qids, text_seq)[0][-1], 5e-5, "text view, " + when);
      expect_close(all[2], f.model->forward({}, {}, seq)[0][-1], 5e-5, "no-image view, " + when);
      step = all[0].argmax().view({1, 1});
      seq = at::cat({seq, step}, 1);
      text_seq = at::cat({text_seq, step}, 1);
    }
    EXPECT_EQ(lvlm.cached_length(agla::View::extra(2)), 11 + 4);  // every row padded to the longest (11)
  }
  // The no-image view really differs from the original one, and the text view too.
  const auto with_image = f.model->forward(pixels, qids, ids)[0][-1];
  EXPECT_GT(max_diff(with_image, f.model->forward({}, {}, ids)[0][-1]), 1e-2);
  EXPECT_GT(max_diff(with_image, f.model->forward(pixels, text_qids, ids)[0][-1]), 1e-2);
}

TEST(InstructBlipLvlmTest, LeftPaddedStreamsMatchUnpaddedRuns) {
  auto f = load_fixture();
  const auto ids = f.get("input_ids"), qids = f.get("qformer_input_ids");
  const auto pixels = f.get("batch2_pixel_values");
  // Stream 0: the fixture prompt and instruction, left-padded; stream 1: longer ones.
  const auto ids1 = at::tensor({1, 23, 57, 20, 21, 22, 9, 71, 40, 15}, at::kLong).view({1, 10});
  const auto qids1 = at::tensor({101, 37, 58, 12, 91, 44, 70, 71, 72, 102}, at::kLong).view({1, 10});
  std::vector<agla::Prompt> prompts(2);
  prompts[0].ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + 7);
  prompts[0].instruction_ids.assign(qids.data_ptr<int64_t>(), qids.data_ptr<int64_t>() + 7);
  prompts[1].ids.assign(ids1.data_ptr<int64_t>(), ids1.data_ptr<int64_t>() + 10);
  prompts[1].instruction_ids.assign(qids1.data_ptr<int64_t>(), qids1.data_ptr<int64_t>() + 10);
  agla::LvlmInputs padded_in;
  padded_in.prompt = agla::batch_prompts(prompts, 0);
  ASSERT_TRUE(padded_in.prompt.mask.defined());
  ASSERT_TRUE(padded_in.prompt.instruction_mask.defined());
  padded_in.pixels = pixels;
  padded_in.views = {{agla::ViewKind::Image, pixels.flip(0), {}}};

  ib::InstructBlipLvlm padded(f.model), single0(f.model), single1(f.model);
  at::Tensor step = padded.begin(padded_in);
  at::Tensor step0 = single0.begin(inputs(ids, qids, pixels.narrow(0, 0, 1), {pixels.narrow(0, 1, 1)}));
  at::Tensor step1 = single1.begin(inputs(ids1, qids1, pixels.narrow(0, 1, 1), {pixels.narrow(0, 0, 1)}));
  for (int64_t k = 0; k < 4; ++k) {
    const auto both = padded(step, agla::BothViews{});
    const auto a0 = single0(step0, agla::View::Original), b0 = single0(step0, agla::View::Augmented);
    const auto a1 = single1(step1, agla::View::Original), b1 = single1(step1, agla::View::Augmented);
    const std::string when = ", step " + std::to_string(k);
    expect_close(both[0], a0[0], 5e-5, "padded stream 0, original view" + when);
    expect_close(both[1], a1[0], 5e-5, "stream 1, original view" + when);
    expect_close(both[2], b0[0], 5e-5, "padded stream 0, augmented view" + when);
    expect_close(both[3], b1[0], 5e-5, "stream 1, augmented view" + when);
    const auto next = both.narrow(0, 0, 2).argmax(-1).view({2, 1});
    step = next;
    step0 = next.narrow(0, 0, 1);
    step1 = next.narrow(0, 1, 1);
  }
}

TEST(InstructBlipLvlmTest, RejectsMisuse) {
  auto f = load_fixture();
  ib::InstructBlipLvlm lvlm(f.model);
  const auto ids = f.get("input_ids"), qids = f.get("qformer_input_ids"), pixels = f.get("pixel_values");
  EXPECT_THROW(lvlm(ids, agla::View::Original), agla::InvalidArgument);  // no begin()
  EXPECT_THROW(lvlm(ids, agla::AllViews{}), agla::InvalidArgument);
  EXPECT_THROW(lvlm.begin(agla::LvlmInputs::images(ids, pixels)), agla::InvalidArgument);  // no instruction ids
  EXPECT_THROW(lvlm.begin(inputs(ids, qids.repeat({2, 1}), pixels)), agla::ShapeError);
  EXPECT_THROW(lvlm.begin(inputs(ids, qids.to(at::kInt), pixels)), agla::ShapeError);
  EXPECT_THROW(lvlm.begin(inputs(ids, at::full({1, 3}, 120, at::kLong), pixels)), agla::InvalidArgument);  // >= vocab
  EXPECT_THROW(lvlm.begin(inputs(ids, at::full({1, 65}, 5, at::kLong), pixels)), agla::InvalidArgument);  // too long
  EXPECT_THROW(lvlm.begin(inputs(at::full({1, 3}, 96, at::kLong), qids, pixels)), agla::InvalidArgument);
  EXPECT_THROW(lvlm.begin(inputs(at::full({1, 3}, -1, at::kLong), qids, pixels)), agla::InvalidArgument);
  EXPECT_THROW(lvlm.begin(inputs(ids, qids, pixels.squeeze(0))), agla::ShapeError);
  EXPECT_THROW(lvlm.begin(inputs(ids, qids, at::zeros({1, 3, 28, 28}))), agla::ShapeError);
  EXPECT_THROW(lvlm.begin(inputs(ids, qids, pixels, {at::zeros({2, 3, 32, 32})})), agla::ShapeError);
  auto missing = inputs(ids, qids, pixels);
  missing.views.push_back(text_view(ids, at::Tensor()));
  EXPECT_THROW(lvlm.begin(missing), agla::InvalidArgument);  // text view without instruction ids
  auto wrong_batch = inputs(ids, qids, pixels);
  wrong_batch.views.push_back(text_view(ids.repeat({2, 1}), qids.repeat({2, 1})));
  EXPECT_THROW(lvlm.begin(wrong_batch), agla::ShapeError);
  auto empty_row = inputs(ids, qids, pixels);
  empty_row.prompt.mask = at::zeros({1, 7}, at::kLong);
  EXPECT_THROW(lvlm.begin(empty_row), agla::InvalidArgument);

  lvlm.begin(inputs(ids, qids, pixels, {pixels}));
  EXPECT_THROW(lvlm(ids, agla::View::extra(2)), agla::InvalidArgument);  // no such view
  EXPECT_THROW(lvlm(ids.flip(1), agla::View::Original), agla::InvalidArgument);  // not the prompt
  lvlm(ids, agla::View::Original);
  EXPECT_THROW(lvlm(ids, agla::AllViews{}), agla::InvalidArgument);  // views at different steps
  EXPECT_THROW(lvlm(at::full({1, 1}, 96, at::kLong), agla::View::Original), agla::InvalidArgument);  // id >= vocab
  EXPECT_THROW(lvlm(at::full({2, 1}, 5, at::kLong), agla::View::Original), agla::ShapeError);
  EXPECT_THROW(lvlm(at::full({1, 1}, 5.0), agla::View::Original), agla::ShapeError);
  lvlm.reset();
  EXPECT_THROW(lvlm(at::full({1, 1}, 5, at::kLong), agla::View::Original), agla::InvalidArgument);
  EXPECT_THROW(lvlm.cached_length(agla::View::Original), agla::InvalidArgument);
  // The module's own checks.
  EXPECT_THROW(f.model->forward(at::zeros({1, 3, 28, 28}), qids, ids), agla::ShapeError);
  EXPECT_THROW(f.model->forward(pixels, qids, at::full({1, 2}, 100, at::kLong)), agla::InvalidArgument);
  EXPECT_THROW(f.model->query_output(f.model->image_embeds(pixels), at::full({1, 2}, 130, at::kLong)),
               agla::InvalidArgument);
  EXPECT_THROW(f.model->query_output(at::zeros({1, 17, 31}), qids), agla::ShapeError);
  EXPECT_THROW(lvlm.prompt("a dog"), agla::InvalidArgument);  // the fixture ships no tokenizer
  EXPECT_FALSE(lvlm.has_tokenizer());
}

TEST(InstructBlipLvlmTest, DrivesAglaGenerate) {
  auto f = load_fixture();
  const auto ids = f.get("input_ids"), qids = f.get("qformer_input_ids");
  const auto original = f.get("pixel_values"), augmented = f.get("pixel_values_halfzero");
  const agla::GenerateOptions limits = agla::test::max_new_tokens(8);
  ib::InstructBlipLvlm lvlm(f.model);
  const auto plain = agla::generate(lvlm, lvlm.begin(inputs(ids, qids, original, {augmented})),
                                    agla::test::greedy_regular(), limits);
  EXPECT_TRUE(at::equal(plain.tokens[0], f.get("greedy_tokens"))) << plain.tokens;
  EXPECT_EQ(lvlm.cached_length(agla::View::Augmented), 0);  // regular decoding never runs the augmented view

  // AGLA (Eq. 3 with the plausibility cutoff of Eqs. 4-5), greedy, against a cache-free recomputation.
  const agla::DecodeOptions assembly = agla::test::greedy_agla();
  const auto fused = agla::generate(lvlm, lvlm.begin(inputs(ids, qids, original, {augmented})), assembly, limits);
  agla::test::expect_cache_free_agla(fused.tokens, 8, ids, assembly, [&](const at::Tensor& seq, bool aug) {
    return f.model->forward(aug ? augmented : original, qids, seq)[0][-1];
  });
  EXPECT_EQ(lvlm.cached_length(agla::View::Augmented), 11 + 7);

  // The reference preset samples (top-k 50) and runs the local view for the first token only.
  const auto preset = agla::DecodeOptions::instructblip_reference();
  EXPECT_EQ(preset.method, agla::FusionMethod::Assembly);
  EXPECT_EQ(preset.alpha, 2.0);
  EXPECT_EQ(preset.beta, 0.5);
  EXPECT_EQ(preset.top_k, 50);
  EXPECT_EQ(preset.top_p, 1.0);
  EXPECT_EQ(preset.temperature, 1.0);
  EXPECT_FALSE(preset.greedy);
  EXPECT_EQ(preset.local_view_tokens, 1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const auto sampled = agla::generate(lvlm, lvlm.begin(inputs(ids, qids, original, {augmented})), preset, limits, gen);
  EXPECT_EQ(sampled.tokens.size(1), 8);
  EXPECT_EQ(lvlm.cached_length(agla::View::Augmented), 11);  // the local view shaped the first token only
  EXPECT_EQ(lvlm.tokens().stop_ids, std::vector<int64_t>{2});
  EXPECT_EQ(lvlm.tokens().pad_id, 0);
  EXPECT_EQ(lvlm.tokens().vocab_size, 96);
  EXPECT_EQ(lvlm.room(agla::batch_prompts({agla::Prompt{{1, 2, 3}, {101, 102}}}, 0)), 128 - 4 - 3);
  EXPECT_EQ(lvlm.decode({24, 0, 72, 2}), "[24 0 72]");
}

TEST(InstructBlipPromptTest, QFormerIdsAreClsPiecesSepTruncatedFromTheLeft) {
  const auto vocab = agla::text::WordPieceTokenizer::from_vocab_text(
      "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nis\nthere\na\ndog\nin\nthe\nimage\n?\nplease\nanswer\n##s\n", "test vocab");
  const auto ids = ib::qformer_prompt_ids(vocab, "Is there a dog in the image? Please answer");
  EXPECT_EQ(ids, (std::vector<int64_t>{2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3}));
  // Left truncation keeps the end of the instruction (LAVIS truncation_side="left").
  EXPECT_EQ(ib::qformer_prompt_ids(vocab, "Is there a dog in the image? Please answer", 5),
            (std::vector<int64_t>{2, 12, 13, 14, 3}));
  EXPECT_EQ(ib::qformer_prompt_ids(vocab, "", 5), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ib::qformer_prompt_ids(vocab, "dogs cat"), (std::vector<int64_t>{2, 8, 15, 1, 3}));
  EXPECT_THROW(ib::qformer_prompt_ids(vocab, "a", 1), agla::InvalidArgument);
  EXPECT_THROW(ib::qformer_prompt_ids(vocab, "\xff"), agla::InvalidArgument);
  // 200 words: 128 ids, the last 126 pieces.
  std::string longer;
  for (int i = 0; i < 200; ++i) longer += i < 199 ? "a " : "dog";
  const auto truncated = ib::qformer_prompt_ids(vocab, longer);
  ASSERT_EQ(truncated.size(), ib::kQFormerMaxTokens);
  EXPECT_EQ(truncated[126], 8);
  EXPECT_EQ(truncated[125], 7);
}

TEST(InstructBlipPromptTest, LanguageModelBosComesFromTheCheckpointFiles) {
  const agla::text::SentencePieceTokenizer sp(tokenizer_model());
  const std::string question = "Is there a dog in the image? Please answer this question with one word.";
  std::vector<int64_t> pieces = sp.encode(question);
  {
    TempDir dir("special_none");
    const auto t = ib::read_special_tokens(dir.path.string(), sp);
    EXPECT_EQ(t.bos_id, 1);  // tokenizer.model's <s>
    EXPECT_EQ(t.eos_id, 2);
    EXPECT_EQ(t.unk_id, 0);
    EXPECT_EQ(t.pad_id, -1);
    EXPECT_TRUE(t.add_bos);
  }
  {
    // The Vicuna InstructBLIP layout: BOS = EOS = UNK = "</s>", an added [PAD].
    TempDir dir("special_vicuna");
    dir.write("special_tokens_map.json",
              R"({"bos_token": "</s>", "eos_token": "</s>", "pad_token": "[PAD]", "unk_token": "</s>"})");
    dir.write("tokenizer_config.json", R"({"bos_token": {"content": "<s>", "lstrip": false}, "add_bos_token": true})");
    dir.write("added_tokens.json", R"({"[PAD]": 400})");
    const auto t = ib::read_special_tokens(dir.path.string(), sp);
    EXPECT_EQ(t.bos_id, 2);  // special_tokens_map.json wins over tokenizer_config.json
    EXPECT_EQ(t.eos_id, 2);
    EXPECT_EQ(t.unk_id, 2);
    EXPECT_EQ(t.pad_id, 400);
    std::vector<int64_t> expected{2};
    expected.insert(expected.end(), pieces.begin(), pieces.end());
    EXPECT_EQ(ib::llm_prompt_ids(sp, t, question), expected);
  }
  {
    TempDir dir("special_config");
    dir.write("tokenizer_config.json", R"({"bos_token": {"content": "</s>"}, "add_bos_token": false})");
    const auto t = ib::read_special_tokens(dir.path.string(), sp);
    EXPECT_EQ(t.bos_id, 2);
    EXPECT_FALSE(t.add_bos);
    EXPECT_EQ(ib::llm_prompt_ids(sp, t, question), pieces);
  }
  {
    TempDir dir("special_bad");
    dir.write("special_tokens_map.json", R"({"bos_token": "<nope>"})");
    EXPECT_THROW(ib::read_special_tokens(dir.path.string(), sp), agla::FormatError);
    dir.write("special_tokens_map.json", R"({"bos_token": 3})");
    EXPECT_THROW(ib::read_special_tokens(dir.path.string(), sp), agla::FormatError);
    dir.write("special_tokens_map.json", R"([1, 2])");
    EXPECT_THROW(ib::read_special_tokens(dir.path.string(), sp), agla::FormatError);
    dir.write("special_tokens_map.json", R"({"bos_token": "</s>")");
    EXPECT_THROW(ib::read_special_tokens(dir.path.string(), sp), agla::FormatError);
  }
}

TEST(InstructBlipPromptTest, LvlmPromptAndDecodeWithTokenizers) {
  const std::string question = "Is there a dog in the image? Please answer this question with one word.";
  TempDir dir("tokenizers");
  for (const char* name : {"config.json", "model.safetensors"}) fs::copy_file(fixture_dir() + "/" + name, dir.path / name);
  fs::copy_file(tokenizer_model(), dir.path / "tokenizer.model");
  dir.write("special_tokens_map.json", R"({"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>"})");
  dir.write("qformer_tokenizer/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nis\nthere\na\ndog\n");
  auto loaded = ib::InstructBlipLvlm::load(dir.path.string());
  EXPECT_TRUE(loaded.has_tokenizer());
  EXPECT_EQ(loaded.tokenizers().special.bos_id, 2);
  // The tiny SentencePiece model's pieces lie beyond the fixture's 96-token vocabulary.
  EXPECT_THROW(loaded.prompt(question), agla::InvalidArgument);

  // The same tokenizers over a model whose vocabularies fit them (weights are not needed for prompts).
  auto json = sparse_json();
  json["text_config"]["vocab_size"] = 400;
  json["text_config"]["architectures"] = {"LLaMAForCausalLM"};
  ib::InstructBlipLvlm lvlm(ib::InstructBlipModel(ib::parse_config(json)), loaded.tokenizers());
  const agla::Prompt p = lvlm.prompt(question);
  const agla::text::SentencePieceTokenizer sp(tokenizer_model());
  std::vector<int64_t> expected{2};
  const auto pieces = sp.encode(question);
  expected.insert(expected.end(), pieces.begin(), pieces.end());
  EXPECT_EQ(p.ids, expected);
  // [CLS] is there a dog [UNK]... [SEP]: the 64-position Q-Former keeps the last 62 pieces at most.
  ASSERT_GE(p.instruction_ids.size(), 6u);
  EXPECT_EQ(std::vector<int64_t>(p.instruction_ids.begin(), p.instruction_ids.begin() + 5),
            (std::vector<int64_t>{2, 5, 6, 7, 8}));
  EXPECT_EQ(p.instruction_ids.back(), 3);
  // Decoding: 0 becomes EOS for "LLaMAForCausalLM" (v4.37.2), special tokens are skipped.
  const auto answer = sp.encode("yes it is");
  std::vector<int64_t> generated{2};
  generated.insert(generated.end(), answer.begin(), answer.end());
  generated.push_back(0);
  generated.push_back(2);
  EXPECT_EQ(lvlm.decode(generated), "yes it is");
  EXPECT_EQ(lvlm.decode({0}), "");
  EXPECT_NE(sp.decode({0}), "");
  EXPECT_EQ(loaded.decode({0}), sp.decode({0}));  // "LlamaForCausalLM": no mapping
  // ICD's text view: the disturbance goes into the Q-Former's text only, before the instruction.
  const agla::Prompt disturbed = lvlm.disturbed_prompt(question, "a dog is there ");
  EXPECT_EQ(disturbed.ids, p.ids);
  EXPECT_EQ(disturbed.instruction_ids, lvlm.prompt("a dog is there " + question).instruction_ids);
  EXPECT_NE(disturbed.instruction_ids, p.instruction_ids);
}

TEST(InstructBlipLvlmTest, PaiBoostsTheQueryOutputsOfImageViewsOnly) {
  auto f = load_fixture();
  const auto ids = f.get("input_ids"), qids = f.get("qformer_input_ids"), pixels = f.get("pixel_values");
  auto in = inputs(ids, qids, pixels);
  in.views.push_back(agla::ExtraView{agla::ViewKind::NoImage, {}, {}});
  auto run = [&](std::optional<ib::PaiAttention> pai) {
    ib::InstructBlipLvlm lvlm(f.model);
    lvlm.set_pai_attention(pai);
    const at::Tensor prefill = lvlm(lvlm.begin(in), agla::AllViews{});
    const at::Tensor step = lvlm(prefill.narrow(0, 0, 1).argmax(-1).view({1, 1}), agla::AllViews{});
    return std::make_pair(prefill, step);
  };
  const auto off = run(std::nullopt);
  const auto zero = run(ib::PaiAttention{0.0, 0, 2});
  const auto on = run(ib::PaiAttention{0.5, 0, 2});
  EXPECT_TRUE(at::equal(zero.first, off.first) && at::equal(zero.second, off.second));
  EXPECT_GT(max_diff(on.first[0], off.first[0]), 1e-3);  // the image view changes
  EXPECT_GT(max_diff(on.second[0], off.second[0]), 1e-3);
  EXPECT_TRUE(at::equal(on.first[1], off.first[1]));  // the no-image view is never boosted
  EXPECT_TRUE(at::equal(on.second[1], off.second[1]));
  ib::InstructBlipLvlm lvlm(f.model);
  EXPECT_THROW(lvlm.set_pai_attention(ib::PaiAttention{-1.0, 0, 2}), agla::InvalidArgument);
  EXPECT_THROW(lvlm.set_pai_attention(ib::PaiAttention{0.5, 3, 2}), agla::InvalidArgument);
}
