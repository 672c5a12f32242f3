// BLIP parity against tests/data/blip (tiny random models in the Hugging Face layout; semantics and
// tolerances in tests/data/blip/README.md): vision tower, ITM logits, cross-attention probabilities and
// their gradients, GradCAM maps built from them, ITC similarity, caption logits and greedy tokens with and
// without the KV cache, the batched two-view form, configuration parsing and strict weight loading.
#include "agla/decode.hpp"
#include "agla/io/checkpoint.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/models/blip.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/expect.hpp"

namespace {

namespace fs = std::filesystem;

const std::string kBlip = std::string(AGLA_TEST_DATA_DIR) + "/blip";

const agla::io::StateDict& fixtures() {
  static const agla::io::StateDict dict = agla::io::read_safetensors(kBlip + "/fixtures.safetensors");
  return dict;
}

const at::Tensor& fx(const std::string& name) {
  const auto it = fixtures().find(name);
  if (it == fixtures().end()) throw std::runtime_error("fixture tensor missing: " + name);
  return it->second;
}

const agla::blip::BlipItm& itm_model() {
  static const agla::blip::BlipItm model = agla::blip::BlipItm::load(kBlip + "/itm");
  return model;
}

agla::blip::BlipCaptioner& caption_model() {
  static agla::blip::BlipCaptioner model = agla::blip::BlipCaptioner::load(kBlip + "/caption");
  return model;
}

// The captioner's prompt for `text`, repeated for `batch` streams: `[batch, T]` int64.
at::Tensor prompt_ids(const agla::blip::BlipCaptioner& model, const std::string& text, int64_t batch = 1) {
  const std::vector<int64_t> ids = model.prompt(text).ids;
  return at::tensor(ids, at::kLong).view({1, -1}).repeat({batch, 1});
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Expects |a - b| <= atol + rtol * |b| elementwise and reports the largest difference.
void expect_close(const at::Tensor& actual, const at::Tensor& expected, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const at::Tensor a = actual.detach().to(at::kCPU, at::kDouble);
  const at::Tensor e = expected.to(at::kDouble);
  const bool ok = ((a - e).abs() <= atol + rtol * e.abs()).all().item<bool>();
  EXPECT_TRUE(ok) << what << ": max abs diff " << max_abs_diff(a, e);
}

const int64_t kLengths[4] = {8, 10, 7, 11};

at::Tensor pixels(int64_t i) { return fx("inputs.pixel_values").narrow(0, i, 1); }

at::Tensor ids_row(const std::string& name) { return fx(name).view({1, -1}); }

// LAVIS compute_gradcam for one row: A, G [H, L, N]; mask [L] -> (per_token [L, g, g], avg [g, g]).
std::pair<at::Tensor, at::Tensor> gradcam(const at::Tensor& a, const at::Tensor& g, const at::Tensor& mask,
                                          int64_t grid) {
  const int64_t l = a.size(1);
  const at::Tensor m = mask.to(at::kFloat).view({1, l, 1});
  const at::Tensor cam = (a.narrow(2, 1, grid * grid) * m) * (g.narrow(2, 1, grid * grid).clamp_min(0) * m);
  const at::Tensor per_token = cam.mean(0).view({l, grid, grid});
  const int64_t t = mask.sum().item<int64_t>() - 2;
  return {per_token, per_token.narrow(0, 1, t).sum(0) / static_cast<double>(t)};
}

void copy_file(const std::string& from, const std::string& to) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

std::string load_error(const std::string& dir) {
  return agla::test::error_message([&] { agla::blip::BlipItm::load(dir); });
}

// Makes `dir` a model folder with the config of the fixture model `model` ("itm" or "caption");
// returns that model's weights, for the test to edit and write there.
agla::io::StateDict scratch_model(const std::string& dir, const std::string& model) {
  fs::create_directories(dir);
  copy_file(kBlip + "/" + model + "/config.json", dir + "/config.json");
  return agla::io::read_safetensors(kBlip + "/" + model + "/model.safetensors");
}

}  // namespace

TEST(BlipVisionTest, MatchesEmbeddingsHiddenStatesAndOutput) {
  const auto& model = itm_model();
  std::vector<at::Tensor> hidden;
  torch::NoGradGuard no_grad;
  const at::Tensor out = model.module()->vision_model->forward(fx("inputs.pixel_values"), &hidden);
  ASSERT_EQ(hidden.size(), 3u);
  expect_close(hidden[0], fx("vision.embeddings"), 1e-4, 1e-4, "embeddings");
  expect_close(at::stack(hidden), fx("vision.hidden_states"), 1e-4, 1e-4, "hidden states");
  expect_close(out, fx("vision.last_hidden_state"), 1e-4, 1e-4, "last_hidden_state");
  expect_close(model.encode_image(fx("inputs.pixel_values")), fx("vision.last_hidden_state"), 1e-4, 1e-4,
               "encode_image");
  EXPECT_FALSE(model.encode_image(fx("inputs.pixel_values")).requires_grad());
}

TEST(BlipItmTest, ExposesTheMatcherContract) {
  const auto& model = itm_model();
  EXPECT_EQ(model.num_text_layers(), 4);
  EXPECT_EQ(model.num_heads(), 4);
  EXPECT_EQ(model.image_size(), 32);
  EXPECT_EQ(model.patch_grid(), 4);
  EXPECT_EQ(model.device(), at::Device(at::kCPU));
  EXPECT_EQ(model.dtype(), at::kFloat);
  EXPECT_FLOAT_EQ(model.image_mean()[0], 0.48145466f);
  EXPECT_FLOAT_EQ(model.image_std()[2], 0.27577711f);
  for (const auto& p : model.module()->parameters()) EXPECT_FALSE(p.requires_grad());
}

TEST(BlipItmTest, MatchesLogitsAttentionGradientsAndGradcamPerPair) {
  const auto& model = itm_model();
  for (int64_t i = 0; i < 2; ++i) {
    const at::Tensor image = model.encode_image(pixels(i));
    for (int64_t p = 0; p < 4; ++p) {
      const std::string pair = "i" + std::to_string(i) + ".p" + std::to_string(p);
      const at::Tensor ids = ids_row("inputs.prompt" + std::to_string(p) + ".itm_input_ids");
      const at::Tensor mask = at::ones_like(ids);
      const agla::blip::ItmScore score = model.score_itm(image, ids, mask, 2);
      expect_close(score.logits, fx("itm.logits")[i][p].view({1, 2}), 1e-4, 1e-4, pair + " logits");
      expect_close(at::softmax(score.logits, -1).select(1, 1), fx("itm.prob_match")[i][p].view({1}), 1e-5, 0,
                   pair + " prob_match");
      expect_close(score.attention, fx("gradcam." + pair + ".attn_probs"), 2e-5, 0, pair + " attention");
      const at::Tensor grad = torch::autograd::grad({score.logits.select(1, 1).sum()}, {score.attention})[0];
      expect_close(grad, fx("gradcam." + pair + ".attn_grads"), 2e-5, 0, pair + " gradients");
      const auto [per_token, avg] = gradcam(score.attention[0].detach(), grad[0], mask[0], 4);
      expect_close(per_token, fx("gradcam." + pair + ".per_token"), 1e-6, 0, pair + " gradcam per token");
      expect_close(avg, fx("gradcam." + pair + ".avg"), 1e-6, 0, pair + " gradcam avg");
      expect_close(model.itm_logits(image, ids, mask), score.logits.detach(), 1e-6, 0, pair + " itm_logits");
      // The encoder output itself (position 0 feeds the ITM head).
      agla::blip::TextRun run;
      run.encoder_hidden_states = image;
      torch::NoGradGuard no_grad;
      expect_close(model.module()->text_encoder->forward(ids, run), fx("itm." + pair + ".text_last_hidden_state"), 1e-4,
                   1e-4, pair + " text hidden state");
    }
  }
}

TEST(BlipItmTest, CrossAttentionGradientsLeaveParametersUntouched) {
  const auto& model = itm_model();
  const at::Tensor image = model.encode_image(pixels(0));
  const at::Tensor ids = ids_row("inputs.prompt1.itm_input_ids");
  agla::blip::ItmScore score;
  {
    torch::NoGradGuard caller_has_no_grad;  // score_itm must still build the graph it promises
    score = model.score_itm(image, ids, at::ones_like(ids), 3);
  }
  EXPECT_TRUE(score.logits.requires_grad());
  EXPECT_TRUE(score.attention.requires_grad());
  EXPECT_TRUE(score.attention.is_leaf());
  EXPECT_EQ(score.attention.sizes(), (at::IntArrayRef{1, 4, 10, 17}));
  const at::Tensor grad = torch::autograd::grad({score.logits.select(1, 1).sum()}, {score.attention})[0];
  EXPECT_GT(grad.abs().max().item<float>(), 0.0f);
  for (const auto& p : model.module()->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(BlipItmTest, PaddedBatchMatchesSinglePairs) {
  const auto& model = itm_model();
  const at::Tensor image = model.encode_image(pixels(0));
  const at::Tensor ids = fx("itm_batch.input_ids"), mask = fx("itm_batch.attention_mask");
  const auto score = model.score_itm(image, ids, mask, 2);  // [1, N, D] broadcast over the 4 prompts
  expect_close(score.logits, fx("itm_batch.logits"), 1e-4, 1e-4, "batch logits");
  expect_close(score.logits, fx("itm.logits")[0], 1e-4, 1e-4, "batch vs single logits");
  expect_close(score.attention, fx("itm_batch.attn_probs"), 2e-5, 0, "batch attention");
  const at::Tensor grad = torch::autograd::grad({score.logits.select(1, 1).sum()}, {score.attention})[0];
  expect_close(grad, fx("itm_batch.attn_grads"), 2e-5, 0, "batch gradients");
  for (int64_t p = 0; p < 4; ++p) {
    const auto maps = gradcam(score.attention[p].detach(), grad[p], mask[p], 4);
    expect_close(maps.second, fx("itm_batch.gradcam_avg")[p], 1e-6, 0, "batch gradcam avg " + std::to_string(p));
    expect_close(maps.second, fx("gradcam.i0.p" + std::to_string(p) + ".avg"), 1e-6, 0, "padded vs unpadded avg");
  }
  // One image per prompt gives the same numbers as one image broadcast.
  const auto expanded = model.score_itm(image.expand({4, -1, -1}).contiguous(), ids, mask, 2);
  expect_close(expanded.logits, score.logits.detach(), 1e-5, 0, "per-prompt images vs broadcast");
}

TEST(BlipItmTest, MatchesItcSimilarityAndTextOnlyEncoder) {
  const auto& model = itm_model();
  const at::Tensor images = model.encode_image(fx("inputs.pixel_values"));
  const at::Tensor ids = fx("itc.input_ids"), mask = fx("itc.attention_mask");
  expect_close(model.encode_text_only(ids, mask), fx("itc.text_last_hidden_state"), 1e-4, 1e-4, "text-only encoder");
  const at::Tensor sim = model.itc_similarity(images, ids, mask);
  expect_close(sim, fx("itc.sim"), 1e-5, 0, "itc similarity");
  // Padded == unpadded: prompt 2 alone.
  const at::Tensor single = ids_row("inputs.prompt2.input_ids");
  expect_close(model.itc_similarity(images, single, at::ones_like(single)), fx("itc.sim").narrow(1, 2, 1), 1e-5, 0,
               "itc unpadded");
}

TEST(BlipItmTest, EncodeTextReproducesFixtureIds) {
  const auto& model = itm_model();
  const std::vector<std::string> prompts = {"a woman in a space suit", "is there a cat in the image?",
                                            "The rocket is orange.", "a photo of a dog sitting on the couch"};
  const agla::blip::TextBatch batch = model.encode_text(prompts);
  EXPECT_TRUE(at::equal(batch.attention_mask, fx("itc.attention_mask")));
  EXPECT_TRUE(at::equal(batch.input_ids, fx("itc.input_ids")));
  EXPECT_TRUE(at::equal(batch.itm_input_ids, fx("itm_batch.input_ids")));
  EXPECT_THROW(model.encode_text({"a cat", " ..!! "}), agla::InvalidArgument);
  EXPECT_THROW(model.encode_text({}), agla::InvalidArgument);
}

TEST(BlipItmTest, RefusesBadArguments) {
  const auto& model = itm_model();
  const at::Tensor image = model.encode_image(pixels(0));
  const at::Tensor ids = ids_row("inputs.prompt0.itm_input_ids");
  const at::Tensor mask = at::ones_like(ids);
  EXPECT_THROW(model.score_itm(image, ids, mask, 4), agla::InvalidArgument);
  EXPECT_THROW(model.score_itm(image, ids, mask, -1), agla::InvalidArgument);
  EXPECT_THROW(model.score_itm(image.narrow(2, 0, 16), ids, mask, 0), agla::ShapeError);
  EXPECT_THROW(model.score_itm(image.expand({3, -1, -1}), ids, mask, 0), agla::ShapeError);
  EXPECT_THROW(model.score_itm(image, ids.to(at::kInt), mask, 0), agla::ShapeError);
  EXPECT_THROW(model.score_itm(image, ids, mask.narrow(1, 0, 3), 0), agla::ShapeError);
  EXPECT_THROW(model.encode_image(at::zeros({1, 3, 16, 16})), agla::ShapeError);
  EXPECT_THROW(model.itm_logits(image, ids + 200, mask), agla::InvalidArgument);
  EXPECT_THROW(model.itm_logits(image, at::zeros({1, 65}, at::kLong), at::ones({1, 65}, at::kLong)),
               agla::InvalidArgument);  // longer than max_position_embeddings (64)
  EXPECT_THROW(agla::blip::BlipItm::load(kBlip + "/itm", {at::kCPU, at::kHalf}), agla::InvalidArgument);
  if (!at::hasCUDA()) EXPECT_THROW(agla::blip::BlipItm::load(kBlip + "/itm", {at::kCUDA}), agla::InvalidArgument);
}

TEST(BlipItmTest, DoublePrecisionAgreesWithTheFloatReference) {
  const auto model = agla::blip::BlipItm::load(kBlip + "/itm", {at::kCPU, at::kDouble});
  const at::Tensor image = model.encode_image(pixels(1));
  const at::Tensor ids = fx("itm_batch.input_ids"), mask = fx("itm_batch.attention_mask");
  EXPECT_EQ(image.scalar_type(), at::kDouble);
  expect_close(model.itm_logits(image, ids, mask), fx("itm.logits")[1], 1e-5, 0, "float64 itm logits");
}

TEST(BlipCaptionTest, MatchesVisionAndPromptLogits) {
  auto& model = caption_model();
  const at::Tensor images = model.encode_image(fx("inputs.pixel_values"));
  expect_close(images, fx("caption.vision_last_hidden_state"), 1e-4, 1e-4, "caption vision");
  for (int64_t i = 0; i < 2; ++i) {
    const std::string name = "caption.i" + std::to_string(i) + ".prompt.";
    expect_close(model.logits_full(images.narrow(0, i, 1), fx(name + "input_ids")), fx(name + "logits"), 3e-4, 1e-4,
                 name + "logits");
  }
  EXPECT_TRUE(at::equal(prompt_ids(model, "A picture of"), fx("caption.i0.prompt.input_ids")));
  EXPECT_EQ(model.tokens().stop_ids.front(), 3);
  EXPECT_EQ(model.config().text.bos_token_id, 126);
}

TEST(BlipCaptionTest, GreedyTokensWithAndWithoutCache) {
  auto& model = caption_model();
  for (int64_t i = 0; i < 2; ++i) {
    for (const std::string variant : {"prompt", "noprompt"}) {
      const std::string name = "caption.i" + std::to_string(i) + "." + variant + ".";
      const at::Tensor start =
          variant == "prompt" ? fx("caption.i0.prompt.input_ids") : at::full({1, 1}, 126, at::kLong);
      const at::Tensor expected_ids = fx(name + "greedy_ids");
      const at::Tensor expected_logits = fx(name + "step_logits");
      const at::Tensor image = model.encode_image(pixels(i));
      // Without cache: the whole sequence each step.
      at::Tensor seq = start;
      for (int64_t s = 0; s < 8; ++s) {
        const at::Tensor last = model.logits_full(image, seq).select(1, seq.size(1) - 1);
        expect_close(last, expected_logits[s].view({1, -1}), 3e-4, 1e-4, name + "uncached step " + std::to_string(s));
        seq = at::cat({seq, last.argmax(-1).view({1, 1})}, 1);
      }
      EXPECT_TRUE(at::equal(seq.narrow(1, start.size(1), 8)[0], expected_ids)) << name << " uncached ids";
      // With cache: the prompt once, then one token per step.
      at::Tensor step = model.begin(agla::LvlmInputs::images(start, pixels(i)));
      std::vector<int64_t> tokens;
      for (int64_t s = 0; s < 8; ++s) {
        const at::Tensor logits = model(step, agla::View::Original);
        ASSERT_EQ(logits.sizes(), (at::IntArrayRef{1, 128}));
        expect_close(logits, expected_logits[s].view({1, -1}), 3e-4, 1e-4, name + "cached step " + std::to_string(s));
        step = logits.argmax(-1).view({1, 1});
        tokens.push_back(step.item<int64_t>());
      }
      EXPECT_EQ(model.cache_length(agla::View::Original), start.size(1) + 7);
      EXPECT_TRUE(at::equal(at::tensor(tokens, at::kLong), expected_ids)) << name << " cached ids";
    }
  }
}

TEST(BlipCaptionTest, BatchedViewsMatchSingleStreamsAndMixWithPlainCalls) {
  auto& model = caption_model();
  const at::Tensor original = fx("inputs.pixel_values");         // streams: image 0, image 1
  const at::Tensor augmented = original.flip({0}).contiguous();  // the other image per stream
  const at::Tensor prompt = prompt_ids(model, "a picture of", 2);
  const at::Tensor ids0 = fx("caption.i0.prompt.greedy_ids"), ids1 = fx("caption.i1.prompt.greedy_ids");
  const at::Tensor images = model.encode_image(original), images_aug = model.encode_image(augmented);
  at::Tensor step = model.begin(agla::LvlmInputs::images(prompt, original, {augmented})), seq = prompt;
  for (int64_t s = 0; s < 6; ++s) {
    at::Tensor orig, aug;
    if (s % 3 == 2) {  // the plain form between batched steps keeps the caches consistent
      orig = model(step, agla::View::Original);
      aug = model(step, agla::View::Augmented);
    } else {
      const at::Tensor both = model(step, agla::BothViews{});
      ASSERT_EQ(both.sizes(), (at::IntArrayRef{4, 128}));
      orig = both.narrow(0, 0, 2);
      aug = both.narrow(0, 2, 2);
    }
    expect_close(orig[0], fx("caption.i0.prompt.step_logits")[s], 3e-4, 1e-4, "stream 0 step " + std::to_string(s));
    expect_close(orig[1], fx("caption.i1.prompt.step_logits")[s], 3e-4, 1e-4, "stream 1 step " + std::to_string(s));
    // The augmented rows equal the uncached forward of the same tokens on the augmented images.
    const at::Tensor aug_ref = model.logits_full(images_aug, seq).select(1, seq.size(1) - 1);
    expect_close(aug, aug_ref, 1e-4, 1e-4, "augmented step " + std::to_string(s));
    // Streams follow the fixture's greedy ids (what each stream's original view picks).
    step = at::stack({ids0[s], ids1[s]}).view({2, 1});
    seq = at::cat({seq, step}, 1);
  }
  // A view advanced alone cannot join a batched call.
  model.begin(agla::LvlmInputs::images(prompt, original, {augmented}));
  model(prompt, agla::View::Original);
  EXPECT_THROW(model(step, agla::BothViews{}), agla::InvalidArgument);
  model.begin(agla::LvlmInputs::images(prompt, original));
  EXPECT_THROW(model(prompt, agla::View::Augmented), agla::InvalidArgument);
  EXPECT_THROW(model(prompt.narrow(0, 0, 1), agla::View::Original), agla::ShapeError);
}

TEST(BlipCaptionTest, DrivesAglaGenerateThroughBothForms) {
  auto& model = caption_model();
  const at::Tensor expected = at::stack({fx("caption.i0.prompt.greedy_ids"), fx("caption.i1.prompt.greedy_ids")});
  agla::GenerateOptions limits;
  limits.max_new_tokens = 8;
  limits.eos_token_ids = {model.tokens().stop_ids.front()};
  limits.pad_token_id = model.tokens().pad_id;
  // Regular greedy decoding: only the original view (plain form).
  agla::DecodeOptions plain;
  plain.method = agla::FusionMethod::Plain;
  plain.greedy = true;
  const at::Tensor prompt = prompt_ids(model, "a picture of", 2);
  const at::Tensor images = fx("inputs.pixel_values");
  const auto regular = agla::generate(model, model.begin(agla::LvlmInputs::images(prompt, images)), plain, limits);
  EXPECT_TRUE(at::equal(regular.tokens, expected)) << regular.tokens;
  // AGLA greedy with the augmented view equal to the original (batched form every step): the fused
  // scores are 3 * l under the cutoff, so the argmax is the plain one.
  agla::DecodeOptions assembly;
  assembly.greedy = true;
  const auto fused =
      agla::generate(model, model.begin(agla::LvlmInputs::images(prompt, images, {images})), assembly, limits);
  EXPECT_TRUE(at::equal(fused.tokens, expected)) << fused.tokens;
  EXPECT_EQ(model.cache_length(agla::View::Augmented), 4 + 7);
  // The released code's schedule: the augmented view on the first token only, then plain calls.
  assembly.local_view_tokens = 1;
  const auto released =
      agla::generate(model, model.begin(agla::LvlmInputs::images(prompt, images, {images})), assembly, limits);
  EXPECT_TRUE(at::equal(released.tokens, expected)) << released.tokens;
  EXPECT_EQ(model.cache_length(agla::View::Original), 4 + 7);
  EXPECT_EQ(model.cache_length(agla::View::Augmented), 4);
}

TEST(BlipConfigTest, AppliesHuggingFaceDefaultsAndValidates) {
  const auto c = agla::blip::BlipConfig::from_json(nlohmann::json::parse(R"({"vision_config": {"hidden_size": 1024,
      "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}})"),
                                                   "test");
  EXPECT_EQ(c.text.vocab_size, 30524);
  EXPECT_EQ(c.text.hidden_size, 768);
  EXPECT_EQ(c.text.num_attention_heads, 8);
  EXPECT_EQ(c.text.encoder_hidden_size, 1024);  // BlipConfig overwrites it with the vision width
  EXPECT_EQ(c.text.sep_token_id, 102);
  EXPECT_EQ(c.text.bos_token_id, 30522);
  EXPECT_EQ(c.vision.image_size, 384);
  EXPECT_EQ(c.vision.patch_size, 16);
  EXPECT_DOUBLE_EQ(c.vision.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.image_text_hidden_size, 256);
  const auto fixture = agla::blip::BlipConfig::from_file(kBlip + "/itm/config.json");
  EXPECT_EQ(fixture.text.vocab_size, 128);
  EXPECT_EQ(fixture.text.bos_token_id, 126);
  EXPECT_EQ(fixture.image_text_hidden_size, 16);
  auto error = [](const std::string& json) {
    try {
      agla::blip::BlipConfig::from_json(nlohmann::json::parse(json), "cfg.json");
    } catch (const agla::FormatError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error(R"({"text_config": {"hidden_size": 30, "num_attention_heads": 4}})").find("divisible"),
            std::string::npos);
  EXPECT_NE(error(R"({"vision_config": {"patch_size": 0}})").find("vision_config.patch_size"), std::string::npos);
  EXPECT_NE(error(R"({"text_config": {"hidden_size": "big"}})").find("hidden_size must be an integer"),
            std::string::npos);
  EXPECT_NE(error(R"({"text_config": {"hidden_act": "relu"}})").find("gelu"), std::string::npos);
  EXPECT_NE(error(R"({"text_config": 3})").find("text_config"), std::string::npos);
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');  // must not recurse
  EXPECT_NE(error(R"({"text_config": {"hidden_size": )" + deep + "}}").find("an array of 1 elements"),
            std::string::npos);
  EXPECT_THROW(agla::blip::BlipConfig::from_file(kBlip + "/missing/config.json"), agla::FormatError);
}

TEST(BlipLoadTest, ListsMissingUnexpectedAndMisshapedNames) {
  const std::string dir = ::testing::TempDir() + "/agla_blip_bad_itm";
  agla::io::StateDict dict = scratch_model(dir, "itm");
  dict.erase("itm_head.bias");
  dict.erase("text_encoder.encoder.layer.3.crossattention.self.key.weight");
  dict["text_encoder.pooler.dense.weight"] = at::zeros({32, 32});
  dict["vision_proj.weight"] = at::zeros({17, 32});
  agla::io::write_safetensors(dir + "/model.safetensors", dict);
  const std::string message = load_error(dir);
  ASSERT_FALSE(message.empty());
  agla::test::expect_contains(
      message, {"missing (2)", "itm_head.bias", "text_encoder.encoder.layer.3.crossattention.self.key.weight",
                "unexpected (1)", "text_encoder.pooler.dense.weight", "shape or dtype mismatch (1)", "vision_proj.weight"});
  fs::remove(dir + "/model.safetensors");
  EXPECT_NE(load_error(dir).find("holds no"), std::string::npos);
  fs::remove_all(dir);
}

TEST(BlipLoadTest, AcceptsShardsLegacyBuffersAndTiedLmHead) {
  const std::string dir = ::testing::TempDir() + "/agla_blip_variant_caption";
  agla::io::StateDict dict = scratch_model(dir, "caption");
  // Older files: no separate LM-head matrix, a persisted position_ids buffer, the aliased decoder bias.
  dict.erase("text_decoder.cls.predictions.decoder.weight");
  dict["text_decoder.bert.embeddings.position_ids"] = at::arange(64, at::kLong).view({1, 64});
  dict["text_decoder.cls.predictions.decoder.bias"] = dict.at("text_decoder.cls.predictions.bias");
  agla::io::StateDict vision, text;
  for (const auto& [name, tensor] : dict) (name.rfind("vision_model.", 0) == 0 ? vision : text)[name] = tensor;
  agla::io::write_safetensors(dir + "/model-00001-of-00002.safetensors", vision);
  agla::io::write_safetensors(dir + "/model-00002-of-00002.safetensors", text);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& entry : vision) index["weight_map"][entry.first] = "model-00001-of-00002.safetensors";
  for (const auto& entry : text) index["weight_map"][entry.first] = "model-00002-of-00002.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  // Without its vocab.txt the directory falls back to bert-base-uncased, which does not fit 128 ids.
  EXPECT_THROW(agla::blip::BlipCaptioner::load(dir), agla::FormatError);
  copy_file(kBlip + "/caption/vocab.txt", dir + "/vocab.txt");
  const auto model = agla::blip::BlipCaptioner::load(dir);
  const at::Tensor image = model.encode_image(pixels(0));
  expect_close(model.logits_full(image, fx("caption.i0.prompt.input_ids")), fx("caption.i0.prompt.logits"), 3e-4, 1e-4,
               "sharded, tied caption model");
  // A shard that lacks a listed tensor is refused by name.
  index["weight_map"]["vision_model.extra"] = "model-00001-of-00002.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  try {
    agla::io::load_checkpoint(dir);
    ADD_FAILURE() << "no FormatError";
  } catch (const agla::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("vision_model.extra"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(BlipItmTest, RunsInBFloat16) {
  const auto model = agla::blip::BlipItm::load(kBlip + "/itm", {at::kCPU, at::kBFloat16});
  const at::Tensor image = model.encode_image(pixels(0));
  EXPECT_EQ(image.scalar_type(), at::kBFloat16);
  const at::Tensor ids = fx("itm_batch.input_ids"), mask = fx("itm_batch.attention_mask");
  const auto score = model.score_itm(image, ids, mask, 2);
  EXPECT_EQ(score.attention.scalar_type(), at::kBFloat16);
  const at::Tensor grad = torch::autograd::grad({score.logits.select(1, 1).sum()}, {score.attention})[0];
  EXPECT_EQ(grad.sizes(), score.attention.sizes());
  // bfloat16 keeps 8 significant bits: agreement to a few percent of the logits' scale.
  const double scale = fx("itm_batch.logits").abs().max().item<double>();
  EXPECT_LT(max_abs_diff(score.logits, fx("itm_batch.logits")), 0.05 * scale + 0.05);
}

TEST(BlipCudaTest, HalfPrecisionOnCudaAgreesWithTheFloatReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    const auto model = agla::blip::BlipItm::load(kBlip + "/itm", {at::kCUDA, dtype});
    const at::Tensor image = model.encode_image(pixels(0));
    EXPECT_TRUE(image.is_cuda());
    const at::Tensor ids = fx("itm_batch.input_ids"), mask = fx("itm_batch.attention_mask");
    const auto score = model.score_itm(image, ids, mask, 2);
    const at::Tensor grad = torch::autograd::grad({score.logits.select(1, 1).sum()}, {score.attention})[0];
    EXPECT_TRUE(grad.is_cuda());
    const double scale = fx("itm_batch.logits").abs().max().item<double>();
    EXPECT_LT(max_abs_diff(score.logits.cpu(), fx("itm_batch.logits")), 0.05 * scale + 0.05) << dtype;
    auto captioner = agla::blip::BlipCaptioner::load(kBlip + "/caption", {at::kCUDA, dtype});
    const at::Tensor prompt =
        captioner.begin(agla::LvlmInputs::images(fx("caption.i0.prompt.input_ids"), pixels(0), {pixels(1)}));
    const at::Tensor both = captioner(prompt, agla::BothViews{});
    EXPECT_EQ(both.scalar_type(), at::kFloat);
    const double lscale = fx("caption.i0.prompt.step_logits").abs().max().item<double>();
    EXPECT_LT(max_abs_diff(both[0].cpu(), fx("caption.i0.prompt.step_logits")[0]), 0.05 * lscale + 0.05) << dtype;
  }
}
