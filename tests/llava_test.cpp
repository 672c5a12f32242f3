// Parity of the LLaVA-1.5 implementation with Hugging Face transformers v4.37.2 on the fixtures in
// tests/data/llava (tolerances from its README), plus loader, prompt and padding behaviour.

#include "agla/models/llava.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agla/decode.hpp"
#include "agla/io/safetensors.hpp"
#include "support/generation.hpp"

namespace {

namespace llava = agla::llava;

const std::vector<std::string> kConfigs = {"tiny_t", "tiny_t_gqa"};

std::string fixture_dir(const std::string& name) { return std::string(AGLA_TEST_DATA_DIR) + "/llava/" + name; }

struct Fixture {
  llava::LlavaModel model{nullptr};
  agla::io::SafetensorsFile ref;
  at::Tensor get(const std::string& name) const { return ref.tensor(name); }
};

Fixture load_fixture(const std::string& name, at::ScalarType dtype = at::kFloat) {
  agla::io::LoadOptions options;
  options.dtype = dtype;
  return Fixture{llava::LlavaLvlm::load(fixture_dir(name), options).model(),
                 agla::io::SafetensorsFile::open(fixture_dir(name) + "/reference.safetensors")};
}

// Max |a - b| for the failure message.
double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// README tolerances: 1e-5 on vision tensors and projector output, 5e-5 (+ rel 1e-5) on LM tensors.
void expect_close(const at::Tensor& actual, const at::Tensor& expected, double atol, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const auto a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  EXPECT_TRUE(at::allclose(a, e, 1e-5, atol)) << what << ": max |diff| = " << max_diff(a, e);
}

at::Tensor image_ids(const Fixture& f) { return f.get("input_ids"); }

// A generation of `ids` on `pixels`, with AGLA's augmented view when given, and a padding mask.
agla::LvlmInputs inputs(const at::Tensor& ids, const at::Tensor& pixels, const at::Tensor& augmented = {},
                        const at::Tensor& mask = {}, int64_t max_new_tokens = 64) {
  std::vector<at::Tensor> views;
  if (augmented.defined()) views.push_back(augmented);
  agla::LvlmInputs in = agla::LvlmInputs::images(ids, pixels, views, max_new_tokens);
  in.prompt.mask = mask;
  return in;
}

}  // namespace

TEST(LlavaConfigTest, SparseConfigGetsUpstreamDefaults) {
  for (const auto& name : kConfigs) {
    const auto full = llava::read_config(fixture_dir(name) + "/config.json");
    const auto sparse = llava::read_config(fixture_dir(name) + "/config.sparse.json");
    EXPECT_EQ(sparse.text.rms_norm_eps, 1e-6);
    EXPECT_EQ(sparse.text.rope_theta, 10000.0);
    EXPECT_EQ(sparse.vision.hidden_act, "quick_gelu");
    EXPECT_EQ(sparse.vision.layer_norm_eps, 1e-5);
    EXPECT_EQ(full.text.num_key_value_heads, sparse.text.num_key_value_heads);
    EXPECT_EQ(full.text.vocab_size, 96);
    EXPECT_EQ(full.image_token_index, 95);
    EXPECT_EQ(full.vision_feature_layer, -2);
    EXPECT_EQ(full.vision_layers_used(), 1);
    EXPECT_EQ(full.image_tokens(), 4);
    EXPECT_EQ(full.text.head_dim(), 12);
  }
  EXPECT_EQ(llava::read_config(fixture_dir("tiny_t_gqa") + "/config.json").text.num_key_value_heads, 2);
}

TEST(LlavaConfigTest, RejectsUnsupportedOrBrokenConfigs) {
  auto json = nlohmann::json::parse(std::ifstream(fixture_dir("tiny_t") + "/config.sparse.json"));
  auto bad = json;
  bad["text_config"]["num_key_value_heads"] = 3;
  EXPECT_THROW(llava::parse_config(bad), agla::FormatError);
  bad = json;
  bad["vision_feature_select_strategy"] = "cls";
  EXPECT_THROW(llava::parse_config(bad), agla::FormatError);
  bad = json;
  bad["text_config"]["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_THROW(llava::parse_config(bad), agla::FormatError);
  bad = json;
  bad["text_config"]["hidden_size"] = "48";
  EXPECT_THROW(llava::parse_config(bad), agla::FormatError);
  EXPECT_THROW(llava::read_config(fixture_dir("tiny_t") + "/missing.json"), agla::FormatError);
  EXPECT_TRUE(llava::is_llava_checkpoint(fixture_dir("tiny_t")));
  EXPECT_TRUE(llava::is_llava_checkpoint(fixture_dir("tiny_t_gqa") + "/"));
  EXPECT_FALSE(llava::is_llava_checkpoint(fixture_dir("")));
  EXPECT_FALSE(llava::is_llava_checkpoint(std::string(AGLA_TEST_DATA_DIR) + "/blip/itm"));
}

TEST(LlavaParityTest, VisionHiddenStatesAndFeatures) {
  for (const auto& name : kConfigs) {
    auto f = load_fixture(name);
    const auto pixels = f.get("pixel_values");
    const auto states = f.model->vision_tower->vision_model->hidden_states(pixels, 2);
    const auto expected = f.get("vision_hidden_states");
    ASSERT_EQ(states.size(), 3u);
    for (size_t i = 0; i < states.size(); ++i) {
      expect_close(states[i], expected[i], 1e-5, name + " vision_hidden_states[" + std::to_string(i) + "]");
    }
    expect_close(f.model->selected_vision_features(pixels), f.get("vision_selected_features"), 1e-5,
                 name + " vision_selected_features");
    expect_close(f.model->image_features(pixels), f.get("image_features"), 1e-5, name + " image_features");
  }
}

TEST(LlavaParityTest, MergedEmbeddingsAndPositions) {
  for (const auto& name : kConfigs) {
    auto f = load_fixture(name);
    const auto merged = f.model->merge(image_ids(f), f.model->image_features(f.get("pixel_values")));
    expect_close(merged.inputs_embeds, f.get("merged_inputs_embeds"), 1e-5, name + " merged_inputs_embeds");
    EXPECT_TRUE(at::equal(merged.position_ids, f.get("merged_position_ids"))) << name;
    EXPECT_TRUE(at::equal(merged.attention_mask, f.get("merged_attention_mask"))) << name;
    EXPECT_FALSE(merged.padded);
  }
}

TEST(LlavaParityTest, LanguageModelHiddenStatesLogitsAndCache) {
  for (const auto& name : kConfigs) {
    auto f = load_fixture(name);
    const auto merged = f.model->merge(image_ids(f), f.model->image_features(f.get("pixel_values")));
    const auto& text = f.model->config().text;
    agla::llama::KvCache cache(text.num_hidden_layers, 1, text.num_key_value_heads, text.head_dim(), 15,
                         at::TensorOptions().dtype(at::kFloat));
    agla::llama::KvSlot slot{&cache, 0, 0};
    std::vector<at::Tensor> hidden;
    const auto normed =
        f.model->language_model->model->forward(merged.inputs_embeds, merged.position_ids, {}, &slot, &hidden);
    const auto expected_hidden = f.get("lm_hidden_states");
    ASSERT_EQ(hidden.size(), 3u);
    for (size_t i = 0; i < hidden.size(); ++i) {
      expect_close(hidden[i], expected_hidden[i], 5e-5, name + " lm_hidden_states[" + std::to_string(i) + "]");
    }
    expect_close(f.model->language_model->logits(normed), f.get("logits"), 5e-5, name + " logits (LM)");
    const auto keys = f.get("prefill_past_keys"), values = f.get("prefill_past_values");
    for (int64_t layer = 0; layer < text.num_hidden_layers; ++layer) {
      expect_close(cache.keys(layer), keys[layer], 5e-5, name + " prefill_past_keys");
      expect_close(cache.values(layer), values[layer], 5e-5, name + " prefill_past_values");
    }
    expect_close(f.model->forward(image_ids(f), f.get("pixel_values")), f.get("logits"), 5e-5, name + " logits");
  }
}

TEST(LlavaParityTest, GreedyWithKvCacheThroughLvlm) {
  for (const auto& name : kConfigs) {
    auto f = load_fixture(name);
    llava::LlavaLvlm lvlm(f.model);
    lvlm.begin(inputs(image_ids(f), f.get("pixel_values"), {}, {}, 2));  // small reserve: exercises cache growth
    const auto expected_tokens = f.get("greedy_tokens");
    const auto expected_logits = f.get("greedy_step_logits");
    at::Tensor step = image_ids(f);
    for (int64_t k = 0; k < 8; ++k) {
      const auto logits = lvlm(step, agla::View::Original);
      ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, 96}));
      expect_close(logits[0], expected_logits[k], 5e-5, name + " greedy_step_logits[" + std::to_string(k) + "]");
      const auto token = logits.argmax(-1);
      ASSERT_EQ(token.item<int64_t>(), expected_tokens[k].item<int64_t>()) << name << " step " << k;
      step = token.view({1, 1});
      EXPECT_EQ(lvlm.cached_length(agla::View::Original), 15 + k);
    }
  }
}

TEST(LlavaParityTest, GreedyWithoutCache) {
  for (const auto& name : kConfigs) {
    auto f = load_fixture(name);
    const auto expected_tokens = f.get("greedy_tokens_nocache");
    const auto expected_logits = f.get("greedy_step_logits_nocache");
    auto ids = image_ids(f);
    for (int64_t k = 0; k < 8; ++k) {
      const auto logits = f.model->forward(ids, f.get("pixel_values"));
      ASSERT_EQ(logits.size(1), 15 + k);
      const auto last = logits[0][-1];
      expect_close(last, expected_logits[k], 5e-5, name + " greedy_step_logits_nocache[" + std::to_string(k) + "]");
      const auto token = last.argmax();
      ASSERT_EQ(token.item<int64_t>(), expected_tokens[k].item<int64_t>()) << name << " step " << k;
      ids = at::cat({ids, token.view({1, 1})}, 1);
    }
  }
}

TEST(LlavaParityTest, TwoViewBatch) {
  for (const auto& name : kConfigs) {
    auto f = load_fixture(name);
    const auto pixels = f.get("batch2_pixel_values");
    expect_close(f.model->forward(f.get("batch2_input_ids"), pixels), f.get("batch2_logits"), 5e-5,
                 name + " batch2_logits");
    expect_close(f.model->forward(image_ids(f), pixels.narrow(0, 1, 1)), f.get("halfzero_logits_single"), 5e-5,
                 name + " halfzero_logits_single");

    // The functor's batched form ([2B, V], one forward) against its plain form (one forward per view).
    llava::LlavaLvlm batched(f.model), plain(f.model);
    const auto original = pixels.narrow(0, 0, 1), augmented = pixels.narrow(0, 1, 1);
    batched.begin(inputs(image_ids(f), original, augmented));
    plain.begin(inputs(image_ids(f), original, augmented));
    at::Tensor step = image_ids(f);
    for (int64_t k = 0; k < 6; ++k) {
      const auto both = batched(step, agla::BothViews{});
      ASSERT_EQ(both.sizes(), (std::vector<int64_t>{2, 96}));
      const auto a = plain(step, agla::View::Original), b = plain(step, agla::View::Augmented);
      expect_close(both[0], a[0], 5e-5, name + " batched original view, step " + std::to_string(k));
      expect_close(both[1], b[0], 5e-5, name + " batched augmented view, step " + std::to_string(k));
      if (k == 0) {
        expect_close(both, f.get("batch2_logits").select(1, 14), 5e-5, name + " batched prefill vs batch2_logits");
      }
      // AGLA-style fusion picks the next token for both views (Eq. 3 with alpha = 1).
      step = (both[0] + both[1]).argmax().view({1, 1});
    }
    EXPECT_EQ(batched.cached_length(agla::View::Augmented), 15 + 5);
  }
}

TEST(LlavaParityTest, Float64MatchesFloat64Reference) {
  auto f = load_fixture("tiny_t", at::kDouble);
  expect_close(f.model->image_features(f.get("pixel_values")), f.get("image_features_f64"), 1e-5, "image_features_f64");
  expect_close(f.model->forward(image_ids(f), f.get("pixel_values")), f.get("logits_f64"), 5e-5, "logits_f64");
  expect_close(f.model->forward(f.get("batch2_input_ids"), f.get("batch2_pixel_values")), f.get("batch2_logits_f64"),
               5e-5, "batch2_logits_f64");
}

TEST(LlavaLvlmTest, LeftPaddedStreamMatchesUnpaddedRun) {
  auto f = load_fixture("tiny_t_gqa");
  const auto ids = image_ids(f);
  const auto pixels = f.get("batch2_pixel_values");
  // Row 0: the prompt left-padded by 3 pad tokens; row 1: a longer prompt (3 extra question tokens).
  const auto pad = at::zeros({1, 3}, at::kLong);
  const auto extra = at::tensor({20, 21, 22}, at::kLong).view({1, 3});
  const auto row0 = at::cat({pad, ids}, 1);
  const auto row1 = at::cat({ids.narrow(1, 0, 9), extra, ids.narrow(1, 9, 3)}, 1);
  const auto batch = at::cat({row0, row1});
  auto mask = at::ones({2, 15}, at::kLong);
  mask[0].narrow(0, 0, 3).fill_(0);

  llava::LlavaLvlm padded(f.model), single0(f.model), single1(f.model);
  padded.begin(inputs(batch, pixels, pixels.flip(0), mask));
  single0.begin(inputs(ids, pixels.narrow(0, 0, 1), pixels.narrow(0, 1, 1)));
  single1.begin(inputs(row1, pixels.narrow(0, 1, 1), pixels.narrow(0, 0, 1)));
  at::Tensor step = batch, step0 = ids, step1 = row1;
  for (int64_t k = 0; k < 4; ++k) {
    const auto both = padded(step, agla::BothViews{});
    const auto a0 = single0(step0, agla::View::Original), b0 = single0(step0, agla::View::Augmented);
    const auto a1 = single1(step1, agla::View::Original), b1 = single1(step1, agla::View::Augmented);
    expect_close(both[0], a0[0], 5e-5, "padded row 0, original view, step " + std::to_string(k));
    expect_close(both[1], a1[0], 5e-5, "row 1, original view, step " + std::to_string(k));
    expect_close(both[2], b0[0], 5e-5, "padded row 0, augmented view, step " + std::to_string(k));
    expect_close(both[3], b1[0], 5e-5, "row 1, augmented view, step " + std::to_string(k));
    const auto next = both.narrow(0, 0, 2).argmax(-1).view({2, 1});
    step = next;
    step0 = next.narrow(0, 0, 1);
    step1 = next.narrow(0, 1, 1);
  }
}

TEST(LlavaLvlmTest, RejectsMisuse) {
  auto f = load_fixture("tiny_t");
  llava::LlavaLvlm lvlm(f.model);
  const auto ids = image_ids(f);
  const auto pixels = f.get("pixel_values");
  EXPECT_THROW(lvlm(ids, agla::View::Original), agla::InvalidArgument);             // no begin()
  EXPECT_THROW(lvlm.begin(inputs(ids.narrow(1, 4, 8), pixels)), agla::InvalidArgument);     // no image token
  EXPECT_THROW(lvlm.begin(inputs(at::cat({ids, ids}, 1), pixels)), agla::InvalidArgument);  // two image tokens
  EXPECT_THROW(lvlm.begin(inputs(ids, pixels.squeeze(0))), agla::ShapeError);
  lvlm.begin(inputs(ids, pixels));
  EXPECT_THROW(lvlm(ids, agla::View::Augmented), agla::InvalidArgument);  // no augmented view
  EXPECT_THROW(lvlm(ids.flip(1), agla::View::Original), agla::InvalidArgument);  // not the prompt
  lvlm(ids, agla::View::Original);
  EXPECT_THROW(lvlm(at::full({1, 1}, 96, at::kLong), agla::View::Original), agla::InvalidArgument);  // id >= vocab
  EXPECT_THROW(lvlm(at::full({2, 1}, 5, at::kLong), agla::View::Original), agla::ShapeError);
  EXPECT_THROW(lvlm.begin(inputs(ids, at::zeros({1, 3, 27, 27}))), agla::ShapeError);  // not the tower's input size
  EXPECT_THROW(lvlm(at::full({1, 1}, 5, at::kLong), agla::View::Original), agla::InvalidArgument);  // state dropped
  EXPECT_THROW(f.model->forward(ids, at::zeros({1, 3, 27, 27})), agla::ShapeError);
}

TEST(LlavaLoaderTest, BindsWeightsWithoutCopying) {
  const auto dict = agla::io::read_safetensors(fixture_dir("tiny_t") + "/model.safetensors");
  auto model = llava::LlavaModel(llava::read_config(fixture_dir("tiny_t") + "/config.json"));
  llava::load_weights(model, dict, "tiny_t");
  const auto params = model->named_parameters(true);
  EXPECT_EQ(params.size(), dict.size());
  for (const auto& item : params) {
    EXPECT_EQ(item.value().data_ptr(), dict.at(item.key()).data_ptr()) << item.key();
  }
}

TEST(LlavaLoaderTest, ReportsMissingUnexpectedAndMisshapedNames) {
  const auto config = llava::read_config(fixture_dir("tiny_t") + "/config.json");
  const auto dict = agla::io::read_safetensors(fixture_dir("tiny_t") + "/model.safetensors");
  auto expect_error = [&](const agla::io::StateDict& broken, const std::vector<std::string>& words) {
    auto model = llava::LlavaModel(config);
    try {
      llava::load_weights(model, broken, "broken");
      ADD_FAILURE() << "no error";
    } catch (const agla::FormatError& e) {
      for (const auto& word : words) EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  auto missing = dict;
  missing.erase("language_model.model.layers.1.mlp.up_proj.weight");
  expect_error(missing, {"missing (1)", "language_model.model.layers.1.mlp.up_proj.weight"});
  auto unexpected = dict;
  unexpected["vision_tower.vision_model.encoder.layers.2.mlp.fc1.bias"] = at::zeros({64});
  expect_error(unexpected, {"unexpected (1)", "encoder.layers.2.mlp.fc1.bias"});
  auto misshaped = dict;
  misshaped["multi_modal_projector.linear_1.weight"] = at::zeros({48, 31});
  expect_error(misshaped, {"mismatch (1)", "multi_modal_projector.linear_1.weight"});
  // Buffers that older transformers releases saved are recomputed here, so they are ignored.
  auto legacy = dict;
  legacy["vision_tower.vision_model.embeddings.position_ids"] = at::arange(5).view({1, 5});
  legacy["language_model.model.layers.0.self_attn.rotary_emb.inv_freq"] = at::zeros({6});
  auto model = llava::LlavaModel(config);
  EXPECT_NO_THROW(llava::load_weights(model, legacy, "legacy buffers"));
  // A GQA checkpoint does not fit the MHA config: k/v projections have half the rows.
  const auto gqa = agla::io::read_safetensors(fixture_dir("tiny_t_gqa") + "/model.safetensors");
  expect_error(gqa, {"k_proj.weight", "v_proj.weight"});
}

TEST(LlavaPromptTest, TemplateAndImageTokenLayout) {
  EXPECT_EQ(llava::build_prompt("Is there a dog?", llava::llava_hf_template()),
            "USER: <image>\nIs there a dog? ASSISTANT:");
  EXPECT_EQ(llava::build_prompt("Is there a dog?", llava::llava_v1_template(), true),
            "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the human's questions. USER: <image>\nIs there a dog? Please answer "
            "this question with one word. ASSISTANT:");
  // A toy encoder (one id per character, as a piece-by-piece tokenizer would see them).
  std::vector<std::string> pieces;
  auto encode = [&](const std::string& piece) {
    pieces.push_back(piece);
    return std::vector<int64_t>(piece.begin(), piece.end());
  };
  const auto ids = llava::prompt_ids("AB<image>\nC", encode, 1, 95);
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 'A', 'B', 95, '\n', 'C'}));
  EXPECT_EQ(pieces, (std::vector<std::string>{"AB", "\nC"}));
  EXPECT_EQ(llava::prompt_ids("<image>", encode, 1, 95), (std::vector<int64_t>{1, 95}));
  EXPECT_EQ(llava::prompt_ids("x", encode, -1, 95), (std::vector<int64_t>{'x'}));
}

TEST(LlavaPreprocessTest, MatchesFixturePixelValuesAndHandlesAspect) {
  const auto ref = agla::io::SafetensorsFile::open(fixture_dir("tiny_t") + "/reference.safetensors");
  const auto image = ref.tensor("image_uint8");
  EXPECT_TRUE(at::equal(llava::preprocess_image(image, 28), ref.tensor("pixel_values")[0]));
  EXPECT_TRUE(
      at::equal(llava::preprocess_image(ref.tensor("image_halfzero_uint8"), 28), ref.tensor("batch2_pixel_values")[1]));
  // 28 x 40: the shortest side is already 28, so the centre crop keeps columns 6..33.
  const auto wide = at::cat({image, image.narrow(1, 0, 12)}, 1).contiguous();
  const auto cropped = llava::preprocess_image(wide, 28);
  EXPECT_TRUE(at::equal(cropped, llava::preprocess_image(wide.narrow(1, 6, 28).contiguous(), 28)));
  // Pad-to-square: 6 rows of mean colour on top, so the top output row is exactly that colour.
  const auto padded = llava::preprocess_image(wide, 28, llava::AspectMode::PadToSquare);
  ASSERT_EQ(padded.sizes(), (std::vector<int64_t>{3, 28, 28}));
  const auto fill = llava::clip_mean_fill();
  EXPECT_EQ(fill, (std::array<uint8_t, 3>{122, 116, 104}));
  for (int64_t c = 0; c < 3; ++c) {
    const double expected = (fill[c] / 255.0 - agla::io::kClipMean[c]) / agla::io::kClipStd[c];
    EXPECT_NEAR(padded[c][0][0].item<float>(), expected, 1e-5) << "channel " << c;
  }
}

TEST(LlavaLvlmTest, DrivesAglaGenerate) {
  for (const auto& name : kConfigs) {
    auto f = load_fixture(name);
    const auto ids = image_ids(f);
    const auto original = f.get("batch2_pixel_values").narrow(0, 0, 1);
    const auto augmented = f.get("batch2_pixel_values").narrow(0, 1, 1);
    const agla::GenerateOptions limits = agla::test::max_new_tokens(8);

    // Regular greedy decoding reproduces the fixture's greedy tokens.
    llava::LlavaLvlm lvlm(f.model);
    lvlm.begin(inputs(ids, original, augmented));
    const auto plain = agla::generate(lvlm, ids, agla::test::greedy_regular(), limits);
    EXPECT_TRUE(at::equal(plain.tokens[0], f.get("greedy_tokens"))) << name << ": " << plain.tokens;
    EXPECT_EQ(lvlm.cached_length(agla::View::Augmented), 0);  // regular decoding never runs the augmented view

    // AGLA (Eq. 3 with the plausibility cutoff of Eqs. 4-5), greedy, against a cache-free recomputation.
    const agla::DecodeOptions agla_options = agla::test::greedy_agla();
    lvlm.begin(inputs(ids, original, augmented));
    const auto fused = agla::generate(lvlm, ids, agla_options, limits);
    agla::test::expect_cache_free_agla(
        fused.tokens, 8, ids, agla_options,
        [&](const at::Tensor& seq, bool aug) { return f.model->forward(seq, aug ? augmented : original)[0][-1]; }, name);
    EXPECT_EQ(lvlm.cached_length(agla::View::Augmented), 15 + 7);
  }
}

TEST(LlavaLoaderTest, LoadsShardedCheckpointsAndSparseConfigs) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("agla_llava_sharded_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(fixture_dir("tiny_t_gqa") + "/config.sparse.json", dir / "config.json",
                fs::copy_options::overwrite_existing);
  const auto dict = agla::io::read_safetensors(fixture_dir("tiny_t_gqa") + "/model.safetensors");
  agla::io::StateDict vision_part, text_part;
  nlohmann::json index;
  for (const auto& item : dict) {
    const bool text = item.first.rfind("language_model.", 0) == 0;
    (text ? text_part : vision_part)[item.first] = item.second;
    index["weight_map"][item.first] = text ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  agla::io::write_safetensors((dir / "model-00001-of-00002.safetensors").string(), vision_part);
  agla::io::write_safetensors((dir / "model-00002-of-00002.safetensors").string(), text_part);
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  auto model = llava::LlavaLvlm::load(dir.string()).model();
  const auto ref = agla::io::SafetensorsFile::open(fixture_dir("tiny_t_gqa") + "/reference.safetensors");
  expect_close(model->forward(ref.tensor("input_ids"), ref.tensor("pixel_values")), ref.tensor("logits"), 5e-5,
               "sharded tiny_t_gqa logits");
  fs::remove_all(dir);
  EXPECT_THROW(llava::LlavaLvlm::load(dir.string()).model(), agla::FormatError);
}

TEST(LlavaLoaderTest, TiedEmbeddingsUseTheTokenTable) {
  auto json = nlohmann::json::parse(std::ifstream(fixture_dir("tiny_t") + "/config.sparse.json"));
  json["text_config"]["tie_word_embeddings"] = true;
  auto dict = agla::io::read_safetensors(fixture_dir("tiny_t") + "/model.safetensors");
  auto model = llava::LlavaModel(llava::parse_config(json));
  llava::load_weights(model, dict, "tied (lm_head stored)");  // a stored copy is accepted and ignored
  dict.erase("language_model.lm_head.weight");
  model = llava::LlavaModel(llava::parse_config(json));
  llava::load_weights(model, dict, "tied");
  EXPECT_TRUE(model->language_model->lm_head.is_empty());
  const auto hidden = at::randn({2, 48});
  const auto expected = at::matmul(hidden, dict.at("language_model.model.embed_tokens.weight").t());
  EXPECT_TRUE(at::allclose(model->language_model->logits(hidden), expected, 1e-5, 1e-5));
}

TEST(LlavaParityTest, ReducedPrecisionStaysCloseToFloat32) {
  // bfloat16 keeps 8 significant bits: logits of size ~5 move by up to ~0.1 over the tiny model (float16: ~1e-2).
  std::vector<std::pair<at::Device, at::ScalarType>> runs = {{at::kCPU, at::kBFloat16}};
  if (at::hasCUDA()) {
    runs.push_back({at::Device(at::kCUDA, 0), at::kHalf});
    runs.push_back({at::Device(at::kCUDA, 0), at::kBFloat16});
  }
  for (const auto& name : kConfigs) {
    const auto ref = agla::io::SafetensorsFile::open(fixture_dir(name) + "/reference.safetensors");
    for (const auto& [device, dtype] : runs) {
      agla::io::LoadOptions options;
      options.device = device;
      options.dtype = dtype;
      auto model = llava::LlavaLvlm::load(fixture_dir(name), options).model();
      const double tol = dtype == at::kHalf ? 5e-2 : 2.5e-1;
      const auto logits = model->forward(ref.tensor("batch2_input_ids"), ref.tensor("batch2_pixel_values"));
      EXPECT_EQ(logits.scalar_type(), at::kFloat);
      EXPECT_EQ(logits.device(), device);
      const auto diff = max_diff(logits.cpu(), ref.tensor("batch2_logits"));
      EXPECT_LT(diff, tol) << name << " " << device << " " << dtype;
      // The cached functor agrees with the full forward in the same precision.
      llava::LlavaLvlm lvlm(model);
      const auto pixels = ref.tensor("batch2_pixel_values");
      lvlm.begin(inputs(ref.tensor("input_ids"), pixels.narrow(0, 0, 1), pixels.narrow(0, 1, 1)));
      const auto both = lvlm(ref.tensor("input_ids").to(device), agla::BothViews{});
      EXPECT_LT(max_diff(both.cpu(), logits.select(1, 14).cpu()), tol / 4) << name << " " << device << " " << dtype;
      std::printf("%s %s %s: max |logits - float32 reference| = %.3g\n", name.c_str(), device.str().c_str(),
                  c10::toString(dtype), diff);
    }
  }
}

TEST(LlavaTokenizerTest, MatchesLibSentencePieceIdsAndText) {
  const std::string dir = fixture_dir("tokenizer");
  const agla::text::SentencePieceTokenizer tokenizer(dir + "/tiny_llama_bpe.model");
  EXPECT_EQ(tokenizer.size(), 400);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_EQ(tokenizer.piece(1), "<s>");
  const auto cases = nlohmann::json::parse(std::ifstream(dir + "/cases.json"));
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    const auto ids = tokenizer.encode(text);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int64_t>>()) << "[" << text << "]";
    EXPECT_EQ(tokenizer.decode(ids), c["decoded"].get<std::string>()) << "[" << text << "]";
  }
  EXPECT_EQ(tokenizer.decode({1, 32000, 2}), "");  // special and out-of-vocabulary ids are skipped
}

TEST(LlavaTokenizerTest, EncodesPromptPiecesAroundTheImageToken) {
  const agla::text::SentencePieceTokenizer tokenizer(fixture_dir("tokenizer") + "/tiny_llama_bpe.model");
  const std::string question = "Is there a dog in the image?";
  const auto ids = llava::encode_prompt(tokenizer, llava::build_prompt(question, llava::llava_v1_template(), true), 32000);
  // [BOS] encode(system + " USER: ") [image] encode("\n" + question + suffix + " ASSISTANT:"), each piece
  // encoded alone (LLaVA's tokenizer_image_token).
  std::vector<int64_t> expected{1};
  const auto head = tokenizer.encode(llava::llava_v1_template().system + " USER: ");
  const auto tail = tokenizer.encode("\n" + question + llava::kPopeSuffix + " ASSISTANT:");
  expected.insert(expected.end(), head.begin(), head.end());
  expected.push_back(32000);
  expected.insert(expected.end(), tail.begin(), tail.end());
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(tokenizer.piece(head.back()), "\xe2\x96\x81");  // the space before <image> is its own piece
}

TEST(LlavaTokenizerTest, RejectsUnreadableModels) {
  EXPECT_THROW(agla::text::SentencePieceTokenizer(fixture_dir("tokenizer") + "/missing.model"), agla::FormatError);
  EXPECT_THROW(agla::text::SentencePieceTokenizer(fixture_dir("tokenizer") + "/cases.json"), agla::FormatError);
  EXPECT_THROW(agla::text::SentencePieceTokenizer(fixture_dir("tiny_t") + "/model.safetensors"), agla::FormatError);
}
