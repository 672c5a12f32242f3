// Image-prompt matching: GradCAM (Eq. 2) against the BLIP fixture, the mask post-processing
// against every case of tests/data/augment (README tolerances), VCD's noise view, and the
// ImagePromptMatcher template on a fixture-backed fake ITM model.
#include "agla/ipm.hpp"
#include "agla/views/noise.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "agla/io/image.hpp"
#include "agla/io/npy.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/models/blip.hpp"

namespace {

const std::string kAugmentDir = std::string(AGLA_TEST_DATA_DIR) + "/augment/";
const std::string kBlipDir = std::string(AGLA_TEST_DATA_DIR) + "/blip/";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

const std::map<std::string, at::Tensor>& blip_fixtures() {
  static const std::map<std::string, at::Tensor> tensors =
      agla::io::read_safetensors(kBlipDir + "fixtures.safetensors");
  return tensors;
}

const at::Tensor& fixture(const std::string& name) {
  const auto& all = blip_fixtures();
  const auto it = all.find(name);
  if (it == all.end()) throw std::runtime_error("fixture tensor missing: " + name);
  return it->second;
}

// Max |a - b| over entries where both are numbers; -1 when the NaN patterns differ.
double max_abs_diff_nan_aware(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble);
  const at::Tensor y = b.to(at::kDouble);
  if (!at::equal(x.isnan(), y.isnan())) return -1;
  const at::Tensor both = x.isnan().logical_not();
  if (both.sum().item<int64_t>() == 0) return 0;
  return (x.masked_select(both) - y.masked_select(both)).abs().max().item<double>();
}

}  // namespace

// ---------------------------------------------------------------- mask post-processing

TEST(AugmentTest, EveryCaseMatchesTheReference) {
  const nlohmann::json cases = read_json(kAugmentDir + "cases.json");
  ASSERT_GE(cases["cases"].size(), 12u);
  for (const auto& c : cases["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const int64_t side = c["side"];
    const at::Tensor gradcam = agla::io::read_npy(kAugmentDir + c["files"]["gradcam"].get<std::string>());
    const at::Tensor want_resized = agla::io::read_npy(kAugmentDir + c["files"]["resized"].get<std::string>());
    const at::Tensor want_blurred =
        agla::io::read_npy(kAugmentDir + c["files"]["blurred_normalized"].get<std::string>());
    const at::Tensor want_mask = agla::io::read_npy(kAugmentDir + c["files"]["mask"].get<std::string>());

    const at::Tensor resized = agla::ipm::spline_resize(agla::ipm::normalize_min_max(gradcam), side, side);
    const double resized_diff = max_abs_diff_nan_aware(resized, want_resized);
    EXPECT_GE(resized_diff, 0) << "NaN pattern differs";
    EXPECT_LE(resized_diff, 1e-6);

    const at::Tensor blurred = agla::ipm::relevance_map(gradcam, side, side);
    const double blurred_diff = max_abs_diff_nan_aware(blurred, want_blurred);
    EXPECT_GE(blurred_diff, 0) << "NaN pattern differs";
    EXPECT_LE(blurred_diff, 1e-6);
    EXPECT_EQ(blurred.isnan().all().item<bool>(), c["blurred_is_nan"].get<bool>());

    const double itc = c["itc"].get<double>();
    const agla::ipm::KeepRatio ratio = agla::ipm::reference_keep_ratio(itc);
    EXPECT_EQ(!ratio.single_precision, c["ratio_clamped"].get<bool>());
    EXPECT_EQ(static_cast<float>(ratio.keep), static_cast<float>(c["ratio"].get<double>()));

    // Threshold step alone, on the reference map: exact.
    const agla::ipm::Threshold alone = agla::ipm::threshold_map(want_blurred, ratio);
    EXPECT_EQ(alone.index, c["index"].get<int64_t>());
    if (c["threshold"].is_string()) {
      EXPECT_TRUE(std::isnan(alone.value));
    } else {
      EXPECT_EQ(alone.value, static_cast<float>(c["threshold"].get<double>()));
    }
    EXPECT_TRUE(at::equal(alone.mask.to(at::kByte), want_mask));

    // End to end from the GradCAM map: exact mask, kept pixels and fraction.
    const agla::ipm::Threshold full = agla::ipm::threshold_map(blurred, ratio);
    EXPECT_EQ(full.index, c["index"].get<int64_t>());
    EXPECT_TRUE(at::equal(full.mask.to(at::kByte), want_mask));
    EXPECT_EQ(full.kept_pixels, c["kept_pixels"].get<int64_t>());
    EXPECT_DOUBLE_EQ(full.kept_fraction, c["kept_fraction"].get<double>());
  }
}

TEST(AugmentTest, FullImageCaseGivesTheExpectedImage) {
  const nlohmann::json spec = read_json(kAugmentDir + "cases.json")["full_image"];
  const at::Tensor gradcam = agla::io::read_npy(kAugmentDir + spec["files"]["gradcam"].get<std::string>());
  const at::Tensor resized = agla::io::read_npy(kAugmentDir + spec["files"]["resized_uint8"].get<std::string>());
  const at::Tensor want = agla::io::read_npy(kAugmentDir + spec["files"]["augmented_uint8"].get<std::string>());
  const at::Tensor want_blurred =
      agla::io::read_npy(kAugmentDir + spec["files"]["blurred_normalized"].get<std::string>());

  const at::Tensor relevance = agla::ipm::relevance_map(gradcam, resized.size(0), resized.size(1));
  EXPECT_LE(max_abs_diff_nan_aware(relevance, want_blurred), 1e-6);
  const agla::ipm::Threshold cut =
      agla::ipm::threshold_map(relevance, agla::ipm::reference_keep_ratio(spec["itc"].get<double>()));
  EXPECT_EQ(cut.index, spec["index"].get<int64_t>());
  EXPECT_EQ(cut.value, static_cast<float>(spec["threshold"].get<double>()));
  EXPECT_EQ(cut.kept_pixels, spec["kept_pixels"].get<int64_t>());
  const at::Tensor augmented = agla::ipm::apply_mask(resized, cut.mask);
  EXPECT_EQ(augmented.scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(augmented, want));

  // From the PNG: Pillow-exact resize to 384, then the same mask.
  const at::Tensor raw = agla::io::read_image(kAugmentDir + spec["source_image"].get<std::string>());
  const at::Tensor from_png = agla::io::resize_bicubic(raw, 384, 384);
  EXPECT_TRUE(at::equal(from_png, resized));
  EXPECT_TRUE(at::equal(agla::ipm::apply_mask(from_png, cut.mask), want));
}

TEST(AugmentTest, GaussianKernelIsNormalisedAndSymmetric) {
  const std::vector<double> k = agla::ipm::gaussian_kernel(7.68, 31);
  ASSERT_EQ(k.size(), 63u);
  double total = 0;
  for (double w : k) total += w;
  EXPECT_NEAR(total, 1.0, 1e-15);
  for (size_t i = 0; i < k.size(); ++i) EXPECT_EQ(k[i], k[k.size() - 1 - i]);
}

TEST(AugmentTest, NonSquareOutputKeepsTheRequestedShape) {
  const at::Tensor gradcam = agla::io::read_npy(kAugmentDir + "data/gradcam_like.gradcam.npy");
  const at::Tensor map = agla::ipm::relevance_map(gradcam, 300, 451);
  EXPECT_EQ(map.sizes(), (at::IntArrayRef{300, 451}));
  EXPECT_FLOAT_EQ(map.min().item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(map.max().item<float>(), 1.0f);
  const agla::ipm::Threshold cut = agla::ipm::threshold_map(map, agla::ipm::reference_keep_ratio(0.4));
  EXPECT_EQ(cut.index, static_cast<int64_t>(300.0f * 451.0f * 0.8f));
  EXPECT_GE(cut.kept_pixels, cut.index + 1);
}

TEST(AugmentTest, BadInputThrowsAglaErrors) {
  EXPECT_THROW(agla::ipm::spline_resize(at::zeros({3}), 8, 8), agla::ShapeError);
  EXPECT_THROW(agla::ipm::spline_resize(at::zeros({4, 4}), 0, 8), agla::InvalidArgument);
  EXPECT_THROW(agla::ipm::gaussian_blur(at::zeros({4, 4}), -1.0), agla::InvalidArgument);
  EXPECT_THROW(agla::ipm::apply_mask(at::zeros({4, 4, 3}), at::ones({4, 4})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::apply_mask(at::zeros({4, 4, 3}, at::kByte), at::ones({4, 5})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::threshold_map(at::zeros({2, 2, 2}), {}), agla::ShapeError);
}

TEST(HeatmapTest, JetColoursAndOverlayAsMatplotlib) {
  const auto& jet = agla::ipm::jet_colormap();
  ASSERT_EQ(jet.size(), 256u);
  // matplotlib's _jet_data anchors: entry 128 sits at x = 128/255, on the red ramp 0.35..0.66
  // (= 125/255), the green plateau and the blue ramp 0.34..0.65.
  EXPECT_EQ(jet[0], (std::array<double, 3>{0.0, 0.0, 0.5}));
  EXPECT_NEAR(jet[128][0], 125.0 / 255.0, 1e-12);
  EXPECT_NEAR(jet[128][1], 1.0, 1e-12);
  EXPECT_NEAR(jet[128][2], 1.0 - (128.0 / 255.0 - 0.34) / 0.31, 1e-12);
  EXPECT_EQ(jet[255], (std::array<double, 3>{0.5, 0.0, 0.0}));
  const at::Tensor image = at::full({2, 2, 3}, 200, at::kByte);
  at::Tensor relevance = at::zeros({2, 2});
  relevance[0][1] = 1.0f;
  relevance[1][0] = std::nanf("");
  const at::Tensor overlay = agla::ipm::heatmap_overlay(image, relevance);
  EXPECT_TRUE(at::equal(overlay[0][0], image[0][0]));  // a = 0: the image
  EXPECT_TRUE(at::equal(overlay[1][0], image[1][0]));  // NaN counts as 0
  EXPECT_EQ(overlay[0][1][0].item<uint8_t>(), 128);    // a = 1: jet(1) = (0.5, 0, 0)
  EXPECT_EQ(overlay[0][1][1].item<uint8_t>(), 0);
  EXPECT_THROW(agla::ipm::heatmap_overlay(image, at::zeros({2, 3})), agla::ShapeError);
}

// ---------------------------------------------------------------- GradCAM

TEST(GradCamTest, MatchesTheFixturePerPair) {
  for (int i = 0; i < 2; ++i) {
    for (int p = 0; p < 4; ++p) {
      const std::string base = "gradcam.i" + std::to_string(i) + ".p" + std::to_string(p) + ".";
      SCOPED_TRACE(base);
      const at::Tensor attention = fixture(base + "attn_probs");
      const at::Tensor grads = fixture(base + "attn_grads");
      const at::Tensor mask = at::ones({1, attention.size(2)}, at::kLong);
      const agla::ipm::GradCamMaps maps = agla::ipm::gradcam(attention, grads, mask);
      EXPECT_LE((maps.per_token[0] - fixture(base + "per_token")).abs().max().item<double>(), 1e-6);
      EXPECT_LE((maps.average[0] - fixture(base + "avg")).abs().max().item<double>(), 1e-6);
      EXPECT_LE((agla::ipm::lavis_layout(maps, 0) - fixture(base + "lavis_output")).abs().max().item<double>(), 1e-6);
      EXPECT_EQ(maps.token_counts[0], attention.size(2) - 2);
    }
  }
}

TEST(GradCamTest, PaddedBatchMatchesTheFixture) {
  const agla::ipm::GradCamMaps maps = agla::ipm::gradcam(
      fixture("itm_batch.attn_probs"), fixture("itm_batch.attn_grads"), fixture("itm_batch.attention_mask"));
  EXPECT_LE((maps.average - fixture("itm_batch.gradcam_avg")).abs().max().item<double>(), 1e-6);
  for (int p = 0; p < 4; ++p)
    EXPECT_LE((maps.average[p] - fixture("gradcam.i0.p" + std::to_string(p) + ".avg")).abs().max().item<double>(),
              1e-6);
  EXPECT_EQ(maps.token_counts, (std::vector<int64_t>{6, 8, 5, 9}));
}

TEST(GradCamTest, BadInputThrowsAglaErrors) {
  const at::Tensor a = at::rand({1, 2, 5, 17});
  EXPECT_THROW(agla::ipm::gradcam(a, at::rand({1, 2, 5, 16}), at::ones({1, 5})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::gradcam(a, a, at::ones({1, 4})), agla::ShapeError);
  EXPECT_THROW(agla::ipm::gradcam(at::rand({1, 2, 5, 16}), at::rand({1, 2, 5, 16}), at::ones({1, 5})),
               agla::ShapeError);  // 15 patches: not a square grid
  EXPECT_THROW(agla::ipm::gradcam(a, a, at::ones({1, 2})), agla::ShapeError);
  at::Tensor short_mask = at::zeros({1, 5});
  short_mask.narrow(1, 0, 2).fill_(1);  // [ENC] [SEP] only: no prompt token
  EXPECT_THROW(agla::ipm::gradcam(a, a, short_mask), agla::InvalidArgument);
}

// ---------------------------------------------------------------- VCD noise

TEST(DiffusionNoiseTest, ScheduleMatchesVcd) {
  // abar_500 ~ 0.745 for the sigmoid schedule (a linear one would leave almost pure noise).
  const agla::views::DiffusionCoefficients k = agla::views::diffusion_coefficients(500);
  EXPECT_NEAR(k.signal * k.signal, 0.745, 0.005);
  EXPECT_NEAR(k.signal * k.signal + k.noise * k.noise, 1.0, 1e-6);
  const agla::views::DiffusionCoefficients first = agla::views::diffusion_coefficients(0);
  EXPECT_NEAR(first.signal * first.signal, 1.0 - (1.0 / (1.0 + std::exp(6.0)) * (0.5e-2 - 1e-5) + 1e-5), 1e-6);
  EXPECT_THROW(agla::views::diffusion_coefficients(1000), agla::InvalidArgument);
  EXPECT_THROW(agla::views::diffusion_coefficients(-1), agla::InvalidArgument);
}

TEST(DiffusionNoiseTest, SameGeneratorSeedGivesTheSameView) {
  const at::Tensor pixels = at::rand({1, 3, 8, 8}) * 2 - 1;
  const agla::views::DiffusionNoiseView view;
  const at::Tensor a = view(pixels, at::make_generator<at::CPUGeneratorImpl>(7));
  const at::Tensor b = view(pixels, at::make_generator<at::CPUGeneratorImpl>(7));
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_EQ(a.sizes(), pixels.sizes());
  // x_t - sqrt(abar) x_0 is the scaled noise; its spread is sqrt(1 - abar).
  const agla::views::DiffusionCoefficients k = agla::views::diffusion_coefficients(500);
  const at::Tensor big = at::zeros({1, 3, 128, 128});
  const at::Tensor noisy = agla::views::add_diffusion_noise(big, at::make_generator<at::CPUGeneratorImpl>(3));
  EXPECT_NEAR(noisy.std().item<double>(), k.noise, 0.02);
  EXPECT_THROW(agla::views::add_diffusion_noise(at::zeros({2}, at::kByte), at::make_generator<at::CPUGeneratorImpl>(1)),
               agla::ShapeError);
}

// ---------------------------------------------------------------- ImagePromptMatcher

namespace {

struct FakeTextBatch {
  at::Tensor input_ids, itm_input_ids, attention_mask;
};

struct FakeScore {
  at::Tensor logits, attention;
};

// An ITM model backed by the BLIP fixture (image 0, block 2): its attention is the fixture's
// `attn_probs` and its match logit is `sum(attention * attn_grads)` plus a constant, so the
// gradient the matcher takes is exactly the fixture's `attn_grads`. Prompts are right-padded with
// zero attention rows, as a real padded batch has masked rows.
class FixtureItm {
 public:
  FixtureItm() {
    const nlohmann::json spec = read_json(kBlipDir + "fixtures.json");
    for (const auto& p : spec["prompts"]) texts_.push_back(p["text"].get<std::string>());
  }

  at::Tensor encode_image(const at::Tensor& pixel_values) const {
    *last_pixels_ = pixel_values.detach().clone();
    EXPECT_FALSE(at::GradMode::is_enabled());
    return fixture("vision.last_hidden_state").narrow(0, 0, 1);
  }

  FakeTextBatch encode_text(const std::vector<std::string>& prompts) const {
    std::vector<int64_t> indices;
    int64_t longest = 0;
    for (const std::string& prompt : prompts) {
      agla::check<agla::InvalidArgument>(!prompt.empty(), "FixtureItm::encode_text: empty prompt");
      const auto it = std::find(texts_.begin(), texts_.end(), prompt);
      agla::check<agla::InvalidArgument>(it != texts_.end(), "FixtureItm::encode_text: unknown prompt '", prompt, "'");
      indices.push_back(it - texts_.begin());
      longest = std::max(longest, ids(indices.back(), "input_ids").size(0));
    }
    const int64_t count = static_cast<int64_t>(indices.size());
    FakeTextBatch batch{at::zeros({count, longest}, at::kLong), at::zeros({count, longest}, at::kLong),
                        at::zeros({count, longest}, at::kLong)};
    for (int64_t r = 0; r < count; ++r) {
      const int64_t length = ids(indices[static_cast<size_t>(r)], "input_ids").size(0);
      batch.input_ids[r].narrow(0, 0, length).copy_(ids(indices[static_cast<size_t>(r)], "input_ids"));
      batch.itm_input_ids[r].narrow(0, 0, length).copy_(ids(indices[static_cast<size_t>(r)], "itm_input_ids"));
      batch.attention_mask[r].narrow(0, 0, length).fill_(1);
    }
    return batch;
  }

  FakeScore score_itm(const at::Tensor& image_embeds, const at::Tensor& itm_input_ids, const at::Tensor& attention_mask,
                      int64_t layer) const {
    agla::check<agla::InvalidArgument>(layer == 2, "FixtureItm::score_itm: the fixture holds layer 2 only; got ",
                                       layer);
    EXPECT_EQ(image_embeds.size(0), 1);
    const int64_t count = itm_input_ids.size(0);
    const int64_t length = itm_input_ids.size(1);
    std::vector<at::Tensor> probs, grads, offsets0, offsets1;
    for (int64_t r = 0; r < count; ++r) {
      const int64_t p = prompt_of(itm_input_ids[r], attention_mask[r]);
      const std::string base = "gradcam.i0.p" + std::to_string(p) + ".";
      at::Tensor a = at::zeros({1, 4, length, 17});
      at::Tensor g = at::zeros({1, 4, length, 17});
      const at::Tensor fa = fixture(base + "attn_probs");
      a.narrow(2, 0, fa.size(2)).copy_(fa);
      g.narrow(2, 0, fa.size(2)).copy_(fixture(base + "attn_grads"));
      if (drop_cls_column_) {
        a = a.narrow(3, 0, 16).contiguous();
        g = g.narrow(3, 0, 16).contiguous();
      }
      if (zero_gradients_) g.zero_();
      probs.push_back(a);
      grads.push_back(g);
      const at::Tensor logits = fixture("itm.logits")[0][p];
      offsets0.push_back(logits[0]);
      offsets1.push_back(logits[1] - (fa * fixture(base + "attn_grads")).sum());
    }
    FakeScore score;
    score.attention = at::cat(probs).requires_grad_(true);
    const at::Tensor g = at::cat(grads);
    const at::Tensor match = (score.attention * g).sum({1, 2, 3}) + at::stack(offsets1);
    score.logits = at::stack({at::stack(offsets0), match}, 1);
    return score;
  }

  at::Tensor itc_similarity(const at::Tensor& image_embeds, const at::Tensor& input_ids,
                            const at::Tensor& attention_mask) const {
    EXPECT_FALSE(at::GradMode::is_enabled());
    EXPECT_EQ(image_embeds.size(0), 1);
    std::vector<at::Tensor> sims;
    for (int64_t r = 0; r < input_ids.size(0); ++r)
      sims.push_back(fixture("itc.sim")[0][prompt_of(input_ids[r], attention_mask[r], "input_ids")]);
    return at::stack(sims).unsqueeze(0);
  }

  int64_t num_text_layers() const { return 4; }
  int64_t num_heads() const { return 4; }
  int64_t image_size() const { return 32; }
  int64_t patch_grid() const { return 4; }
  at::Device device() const { return at::kCPU; }
  at::ScalarType dtype() const { return at::kFloat; }
  std::array<float, 3> image_mean() const { return {0.48145466f, 0.4578275f, 0.40821073f}; }
  std::array<float, 3> image_std() const { return {0.26862954f, 0.26130258f, 0.27577711f}; }

  const at::Tensor& last_pixels() const { return *last_pixels_; }
  void drop_cls_column() { drop_cls_column_ = true; }
  void zero_gradients() { zero_gradients_ = true; }

 private:
  static at::Tensor ids(int64_t p, const std::string& kind) {
    return fixture("inputs.prompt" + std::to_string(p) + "." + kind);
  }

  int64_t prompt_of(const at::Tensor& row, const at::Tensor& mask, const std::string& kind = "itm_input_ids") const {
    const int64_t length = mask.sum().item<int64_t>();
    for (int64_t p = 0; p < static_cast<int64_t>(texts_.size()); ++p)
      if (ids(p, kind).size(0) == length && at::equal(row.narrow(0, 0, length), ids(p, kind))) return p;
    throw agla::InvalidArgument("FixtureItm: ids of no fixture prompt");
  }

  std::vector<std::string> texts_;
  std::shared_ptr<at::Tensor> last_pixels_ = std::make_shared<at::Tensor>();
  bool drop_cls_column_ = false;
  bool zero_gradients_ = false;
};

at::Tensor fixture_image() { return fixture("inputs.images_uint8")[0].contiguous(); }

std::vector<std::string> fixture_prompts() {
  const nlohmann::json spec = read_json(kBlipDir + "fixtures.json");
  std::vector<std::string> texts;
  for (const auto& p : spec["prompts"]) texts.push_back(p["text"]);
  return texts;
}

}  // namespace

TEST(MatcherTest, FakeModelReproducesTheFixtureGradCam) {
  const FixtureItm model;
  const agla::ipm::ImagePromptMatcher<FixtureItm> matcher(model);
  EXPECT_EQ(matcher.block(), 2);  // num_text_layers / 2
  const std::vector<std::string> prompts = fixture_prompts();
  for (int64_t p = 0; p < 4; ++p) {
    SCOPED_TRACE(prompts[static_cast<size_t>(p)]);
    const std::string base = "gradcam.i0.p" + std::to_string(p) + ".";
    const agla::ipm::Match m = matcher.match(fixture_image(), prompts[static_cast<size_t>(p)]);
    EXPECT_LE((model.last_pixels() - fixture("inputs.pixel_values").narrow(0, 0, 1)).abs().max().item<double>(), 1e-5);
    EXPECT_LE((m.grid - fixture(base + "avg")).abs().max().item<double>(), 1e-6);
    EXPECT_LE((m.per_token - fixture(base + "per_token")).abs().max().item<double>(), 1e-6);
    EXPECT_LE((m.itm_logits - fixture("itm.logits")[0][p]).abs().max().item<double>(), 1e-5);
    EXPECT_NEAR(m.itm_probability, fixture("itm.prob_match")[0][p].item<double>(), 1e-5);
    EXPECT_DOUBLE_EQ(m.itc, fixture("itc.sim")[0][p].item<double>());
    // Negative ITC: the reference's cap keeps all but ~1e-5 of the pixels.
    EXPECT_FALSE(m.keep.single_precision);
    EXPECT_NEAR(m.mask_ratio, 1e-5, 1e-12);
    EXPECT_EQ(m.threshold_index, static_cast<int64_t>(32 * 32 * (1 - 1e-5)));
    const at::Tensor relevance = agla::ipm::relevance_map(fixture(base + "avg"), 32, 32);
    EXPECT_LE(max_abs_diff_nan_aware(m.relevance, relevance), 1e-6);
    EXPECT_EQ(m.mask.sizes(), (at::IntArrayRef{32, 32}));
    EXPECT_TRUE(at::equal(m.augmented, agla::ipm::apply_mask(fixture_image(), m.mask)));
    EXPECT_GE(m.timings.total, m.timings.encode);
  }
}

TEST(MatcherTest, BatchedPromptsEqualOneAtATime) {
  const FixtureItm model;
  agla::ipm::MatcherOptions options;
  options.keep_rule = [](double) { return agla::ipm::KeepRatio{0.6, false}; };
  const agla::ipm::ImagePromptMatcher<FixtureItm> matcher(model, options);
  const std::vector<std::string> prompts = fixture_prompts();
  const std::vector<agla::ipm::Match> batch = matcher.match(fixture_image(), prompts);
  ASSERT_EQ(batch.size(), prompts.size());
  for (size_t p = 0; p < prompts.size(); ++p) {
    SCOPED_TRACE(prompts[p]);
    const agla::ipm::Match single = matcher.match(fixture_image(), prompts[p]);
    EXPECT_EQ(batch[p].prompt, prompts[p]);
    EXPECT_TRUE(at::equal(batch[p].grid, single.grid));
    EXPECT_TRUE(at::equal(batch[p].per_token, single.per_token));
    EXPECT_LE((batch[p].itm_logits - single.itm_logits).abs().max().item<double>(), 1e-6);
    EXPECT_EQ(batch[p].itc, single.itc);
    EXPECT_TRUE(at::equal(batch[p].mask, single.mask));
    EXPECT_TRUE(at::equal(batch[p].augmented, single.augmented));
    EXPECT_EQ(batch[p].kept_fraction, single.kept_fraction);
    // The replaced rule keeps 60%: index int(1024 * 0.6), ties kept.
    EXPECT_EQ(batch[p].threshold_index, 614);
    EXPECT_GE(batch[p].kept_fraction, 615.0 / 1024);
    EXPECT_NEAR(batch[p].mask_ratio, 0.4, 1e-12);
    EXPECT_EQ(batch[p].augmented.masked_select(batch[p].mask.logical_not().unsqueeze(2)).sum().item<int64_t>(), 0);
  }
}

TEST(MatcherTest, OriginalResolutionOption) {
  const FixtureItm model;
  agla::ipm::MatcherOptions options;
  options.original_resolution = true;
  options.keep_rule = [](double) { return agla::ipm::KeepRatio{0.5, false}; };
  const agla::ipm::ImagePromptMatcher<FixtureItm> matcher(model, options);
  const at::Tensor image = agla::io::resize_bicubic(fixture_image(), 48, 40);
  const agla::ipm::Match m = matcher.match(image, fixture_prompts()[0]);
  EXPECT_EQ(m.mask.sizes(), (at::IntArrayRef{48, 40}));
  EXPECT_EQ(m.augmented.sizes(), (at::IntArrayRef{48, 40, 3}));
  EXPECT_EQ(m.threshold_index, 48 * 40 / 2);
  EXPECT_TRUE(at::equal(m.augmented, agla::ipm::apply_mask(image, m.mask)));
  EXPECT_LE(max_abs_diff_nan_aware(m.relevance, agla::ipm::relevance_map(m.grid, 48, 40)), 0);
}

TEST(MatcherTest, FlatGridKeepsEveryPixelAsUpstream) {
  FixtureItm model;
  model.zero_gradients();  // GradCAM all 0: the normalised blur is 0/0 = NaN, the threshold NaN
  agla::ipm::MatcherOptions options;
  options.keep_rule = [](double) { return agla::ipm::KeepRatio{0.5, false}; };
  const agla::ipm::ImagePromptMatcher<FixtureItm> matcher(model, options);
  const agla::ipm::Match m = matcher.match(fixture_image(), fixture_prompts()[2]);
  EXPECT_EQ(m.grid.abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(m.relevance.isnan().all().item<bool>());
  EXPECT_TRUE(std::isnan(m.threshold));
  EXPECT_TRUE(m.mask.all().item<bool>());
  EXPECT_EQ(m.kept_fraction, 1.0);
  EXPECT_TRUE(at::equal(m.augmented, fixture_image()));
}

TEST(MatcherTest, BadInputThrowsAglaErrors) {
  FixtureItm model;
  agla::ipm::MatcherOptions options;
  options.block = 4;
  EXPECT_THROW(agla::ipm::ImagePromptMatcher<FixtureItm>(model, options), agla::InvalidArgument);
  options.block = -1;
  EXPECT_THROW(agla::ipm::ImagePromptMatcher<FixtureItm>(model, options), agla::InvalidArgument);
  const agla::ipm::ImagePromptMatcher<FixtureItm> matcher(model);
  const std::string prompt = fixture_prompts()[0];
  EXPECT_THROW(matcher.match(fixture_image().to(at::kFloat), prompt), agla::ShapeError);
  EXPECT_THROW(matcher.match(at::zeros({32, 32, 4}, at::kByte), prompt), agla::ShapeError);
  EXPECT_THROW(matcher.match(at::zeros({32, 32}, at::kByte), prompt), agla::ShapeError);
  EXPECT_THROW(matcher.match(fixture_image(), ""), agla::InvalidArgument);
  EXPECT_THROW(matcher.match(fixture_image(), std::vector<std::string>{}), agla::InvalidArgument);
  FixtureItm odd;
  odd.drop_cls_column();  // 15 patch columns: not a square grid
  const agla::ipm::ImagePromptMatcher<FixtureItm> odd_matcher(odd);
  EXPECT_THROW(odd_matcher.match(fixture_image(), prompt), agla::ShapeError);
}

TEST(MatcherTest, JsonReportHasTheDocumentedKeys) {
  const FixtureItm model;
  const agla::ipm::ImagePromptMatcher<FixtureItm> matcher(model);
  const agla::ipm::Match m = matcher.match(fixture_image(), fixture_prompts()[1]);
  const nlohmann::json j = agla::ipm::match_to_json(m, matcher.image_size());
  for (const char* key :
       {"itm_logits", "itm_probability", "itc", "mask_ratio", "kept_fraction", "grid", "image_size", "timings_ms"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j.size(), 8u);
  EXPECT_EQ(j["itm_logits"].size(), 2u);
  EXPECT_EQ(j["grid"].size(), 4u);
  EXPECT_EQ(j["grid"][0].size(), 4u);
  EXPECT_EQ(j["image_size"].get<int64_t>(), 32);
  EXPECT_NEAR(j["grid"][2][3].get<double>(), m.grid[2][3].item<double>(), 1e-12);
  for (const char* key : {"encode", "itm_gradcam", "itc", "postprocess", "total"})
    EXPECT_TRUE(j["timings_ms"].contains(key)) << key;
}

// ---------------------------------------------------------------- end to end on the fixture BLIP

namespace {

const agla::blip::BlipItm& fixture_blip() {
  static const agla::blip::BlipItm model = agla::blip::BlipItm::load(kBlipDir + "itm");
  return model;
}

}  // namespace

TEST(BlipMatcherTest, GradCamGridMatchesTheFixture) {
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(fixture_blip());
  EXPECT_EQ(matcher.block(), 2);
  EXPECT_EQ(matcher.grid(), 4);
  const std::vector<std::string> prompts = fixture_prompts();
  for (int i = 0; i < 2; ++i) {
    const std::string png = kBlipDir + (i == 0 ? "images/astronaut_32.png" : "images/chelsea_32.png");
    const at::Tensor image = agla::io::read_image(png);
    ASSERT_TRUE(at::equal(image, fixture("inputs.images_uint8")[i]));
    for (int64_t p = 0; p < 4; ++p) {
      SCOPED_TRACE(png + " / " + prompts[static_cast<size_t>(p)]);
      const std::string base = "gradcam.i" + std::to_string(i) + ".p" + std::to_string(p) + ".";
      const agla::ipm::Match m = matcher.match(image, prompts[static_cast<size_t>(p)]);
      EXPECT_LE((m.grid - fixture(base + "avg")).abs().max().item<double>(), 1e-6);
      EXPECT_LE((m.per_token - fixture(base + "per_token")).abs().max().item<double>(), 1e-6);
      EXPECT_LE((m.itm_logits - fixture("itm.logits")[i][p]).abs().max().item<double>(), 1e-4);
      EXPECT_NEAR(m.itm_probability, fixture("itm.prob_match")[i][p].item<double>(), 1e-5);
      EXPECT_NEAR(m.itc, fixture("itc.sim")[i][p].item<double>(), 1e-5);
    }
  }
}

TEST(BlipMatcherTest, BatchedPromptsEqualOneAtATime) {
  agla::ipm::MatcherOptions options;
  options.keep_rule = [](double itc) { return agla::ipm::reference_keep_ratio(itc + 1.0); };  // mask a real share
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(fixture_blip(), options);
  const std::vector<std::string> prompts = fixture_prompts();
  const at::Tensor image = fixture("inputs.images_uint8")[1].contiguous();
  const std::vector<agla::ipm::Match> batch = matcher.match(image, prompts);
  for (size_t p = 0; p < prompts.size(); ++p) {
    SCOPED_TRACE(prompts[p]);
    const agla::ipm::Match single = matcher.match(image, prompts[p]);
    // Padding changes float32 rounding only (the fixture saw 2e-9 on the averaged maps).
    EXPECT_LE((batch[p].grid - single.grid).abs().max().item<double>(), 1e-8);
    EXPECT_LE((batch[p].itm_logits - single.itm_logits).abs().max().item<double>(), 1e-5);
    EXPECT_NEAR(batch[p].itc, single.itc, 1e-5);
    EXPECT_LE((batch[p].relevance - single.relevance).abs().max().item<double>(), 1e-4);
    // Mask decisions can only differ for pixels within rounding of the threshold.
    EXPECT_LE(batch[p].mask.ne(single.mask).sum().item<int64_t>(), 2);
    EXPECT_NEAR(batch[p].kept_fraction, single.kept_fraction, 2.0 / 1024);
    EXPECT_LT(single.kept_fraction, 0.9);
  }
}

TEST(BlipMatcherTest, EmptyPromptAndBadLayerThrow) {
  agla::ipm::MatcherOptions options;
  options.block = 4;
  EXPECT_THROW(agla::ipm::ImagePromptMatcher<agla::blip::BlipItm>(fixture_blip(), options), agla::InvalidArgument);
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(fixture_blip());
  EXPECT_THROW(matcher.match(fixture_image(), "  .!  "), agla::InvalidArgument);
}
