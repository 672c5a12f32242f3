// Paying for each image once: the LVLMs' image caches (LLaVA's prompt-prefix KV cache, the vision
// encodings of InstructBLIP and BLIP) and the matcher's encoded image give what the uncached runs
// give -- greedy tokens bit for bit, logits within float rounding -- on the tiny LLaVA and
// InstructBLIP fixtures and the shipped ShapesWorld models, and serve repeated images only.

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <string>
#include <vector>

#include "agla/decode.hpp"
#include "agla/io/image.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/ipm/matcher.hpp"
#include "agla/models/blip.hpp"
#include "agla/models/instructblip.hpp"
#include "agla/models/llava.hpp"
#include "agla/views/noise.hpp"

namespace {

namespace llava = agla::llava;
namespace ib = agla::instructblip;

const std::string kData = AGLA_TEST_DATA_DIR;
const std::string kModels = std::string(AGLA_SOURCE_DIR) + "/tools/data/models";
const std::string kSample = std::string(AGLA_SOURCE_DIR) + "/tools/data/sample.png";

// Logits of the cached path differ from the uncached one by float rounding only: the same keys and
// values at the same positions, but the prefix comes from a one-row forward and the rest attends
// over another slot layout (other GEMM shapes and summation orders). Measured: below 1e-5; the
// bound is the LM tolerance of the parity fixtures (tests/data/llava/README.md).
constexpr double kLogitTolerance = 5e-5;

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Steps `cached` and `plain` through `steps` batched steps of `in` on the same tokens (argmax of
// the plain run's view 0): logits within kLogitTolerance and the same argmax at every step.
template <typename Lvlm>
void expect_same_logits(Lvlm& cached, Lvlm& plain, const agla::LvlmInputs& in, int steps, const std::string& what) {
  at::Tensor step = plain.begin(in);
  ASSERT_TRUE(at::equal(cached.begin(in), step)) << what;
  const int64_t b = in.prompt.batch();
  double worst = 0;
  for (int k = 0; k < steps; ++k) {
    const at::Tensor a = cached(step, agla::AllViews{}), e = plain(step, agla::AllViews{});
    ASSERT_EQ(a.sizes(), e.sizes()) << what;
    worst = std::max(worst, max_diff(a, e));
    EXPECT_TRUE(at::allclose(a, e, 0.0, kLogitTolerance)) << what << " step " << k << ": max |diff| " << max_diff(a, e);
    EXPECT_TRUE(at::equal(a.argmax(-1), e.argmax(-1))) << what << " step " << k;
    step = e.narrow(0, 0, b).argmax(-1).view({b, 1});
  }
  std::printf("  %-56s max |diff| %.3g\n", what.c_str(), worst);
}

// Greedy tokens of `options` through agla::generate, cached and plain: bit for bit.
template <typename Lvlm>
void expect_same_tokens(Lvlm& cached, Lvlm& plain, const agla::LvlmInputs& in, const agla::DecodeOptions& options,
                        const std::string& what) {
  agla::GenerateOptions limits;
  limits.max_new_tokens = 6;
  const auto a = agla::generate(cached, cached.begin(in), options, limits);
  const auto e = agla::generate(plain, plain.begin(in), options, limits);
  EXPECT_TRUE(at::equal(a.tokens, e.tokens)) << what << ": " << a.tokens << " vs " << e.tokens;
}

agla::DecodeOptions greedy(agla::FusionMethod method) {
  agla::DecodeOptions o;
  o.method = method;
  o.greedy = true;
  return o;
}

// The three decoding set-ups of a POPE run: regular, VCD (contrast with a reusable noised view) and
// AGLA (assembly with a per-question view, never cached).
struct Method {
  std::string name;
  agla::DecodeOptions options;
  bool noise_view, agla_view;
};
const std::vector<Method>& methods() {
  static const std::vector<Method> all = {{"regular", greedy(agla::FusionMethod::Plain), false, false},
                                          {"vcd", greedy(agla::FusionMethod::Contrast), true, false},
                                          {"agla", greedy(agla::FusionMethod::Assembly), false, true}};
  return all;
}

agla::ExtraView image_view(const at::Tensor& pixels, bool reusable) {
  agla::ExtraView view;
  view.kind = agla::ViewKind::Image;
  view.pixels = pixels;
  view.reusable = reusable;
  return view;
}

// VCD's noised view, drawn once per image (the same seed for every question of it).
at::Tensor noised(const at::Tensor& pixels) {
  return agla::views::add_diffusion_noise(pixels, at::make_generator<at::CPUGeneratorImpl>(11), 500);
}

// --- LLaVA ---------------------------------------------------------------------------------------

std::string llava_dir(const std::string& name) { return kData + "/llava/" + name; }

// Questions about one image: the fixture prompt, and prompts that share its prefix through the
// image token but end differently (another question, a longer one).
std::vector<at::Tensor> llava_questions(const at::Tensor& ids, int64_t image_token) {
  const int64_t at_image = (ids[0] == image_token).nonzero().item<int64_t>();
  const auto prefix = ids.narrow(1, 0, at_image + 1), rest = ids.narrow(1, at_image + 1, ids.size(1) - at_image - 1);
  return {ids, at::cat({prefix, rest.flip(1)}, 1),
          at::cat({prefix, at::tensor({20, 21, 22}, at::kLong).view({1, 3}), rest}, 1)};
}

agla::LvlmInputs llava_inputs(const at::Tensor& ids, const at::Tensor& pixels, const at::Tensor& other,
                              const Method& method) {
  agla::LvlmInputs in = agla::LvlmInputs::images(ids, pixels, {}, 8);
  if (method.noise_view) in.views.push_back(image_view(noised(pixels), true));
  if (method.agla_view) in.views.push_back(image_view(other, false));
  return in;
}

}  // namespace

TEST(LlavaCacheTest, PrefixCacheMatchesUncachedRuns) {
  for (const std::string name : {"tiny_t", "tiny_t_gqa"}) {
    const auto model = llava::LlavaLvlm::load(llava_dir(name)).model();
    const auto ref = agla::io::SafetensorsFile::open(llava_dir(name) + "/reference.safetensors");
    const at::Tensor pixels = ref.tensor("batch2_pixel_values");
    const at::Tensor image = pixels.narrow(0, 0, 1), masked = pixels.narrow(0, 1, 1);
    llava::LlavaLvlm cached(model), plain(model);
    EXPECT_TRUE(agla::enable_image_cache(cached, 4));
    const auto questions = llava_questions(ref.tensor("input_ids"), model->config().image_token_index);
    for (const Method& method : methods()) {
      for (size_t q = 0; q < questions.size(); ++q) {
        const auto in = llava_inputs(questions[q], image, masked, method);
        const std::string what = name + " " + method.name + " question " + std::to_string(q);
        expect_same_logits(cached, plain, in, 5, what);
        expect_same_tokens(cached, plain, in, method.options, what);
      }
    }
    // One prefix per image: the original (a miss, then hits) and VCD's noised view (a miss, then hits).
    const auto stats = cached.image_cache_stats();
    EXPECT_EQ(stats.entries, 2) << name;
    EXPECT_EQ(stats.misses, 2) << name;
    EXPECT_GT(stats.hits, 10) << name;
  }
}

TEST(LlavaCacheTest, PaddedStreamsAndPaiMatchUncachedRuns) {
  const auto model = llava::LlavaLvlm::load(llava_dir("tiny_t_gqa")).model();
  const auto ref = agla::io::SafetensorsFile::open(llava_dir("tiny_t_gqa") + "/reference.safetensors");
  const at::Tensor pixels = ref.tensor("batch2_pixel_values");
  const auto questions = llava_questions(ref.tensor("input_ids"), model->config().image_token_index);
  // Two streams on two images, prompts of different lengths (row 0 left-padded), an uncached view.
  const auto batch = agla::batch_prompts(
      {agla::Prompt{std::vector<int64_t>(questions[1].data_ptr<int64_t>(),
                                         questions[1].data_ptr<int64_t>() + questions[1].numel()),
                    {}},
       agla::Prompt{std::vector<int64_t>(questions[2].data_ptr<int64_t>(),
                                         questions[2].data_ptr<int64_t>() + questions[2].numel()),
                    {}}},
      0);
  ASSERT_TRUE(batch.mask.defined());
  agla::LvlmInputs in;
  in.prompt = batch;
  in.pixels = pixels;
  in.views = {image_view(pixels.flip(0), false), image_view(noised(pixels), true)};
  in.max_new_tokens = 8;
  for (const bool pai : {false, true}) {
    llava::LlavaLvlm cached(model), plain(model);
    if (pai) {
      cached.set_pai_attention(llava::PaiAttention{0.5, 0, 2});
      plain.set_pai_attention(llava::PaiAttention{0.5, 0, 2});
    }
    cached.set_image_cache(8);
    for (int run = 0; run < 2; ++run)  // the second run is served from the cache
      expect_same_logits(cached, plain, in, 4, std::string(pai ? "PAI, " : "") + "padded streams, run " +
                                                   std::to_string(run));
    EXPECT_EQ(cached.image_cache_stats().misses, 4);  // 2 images x (original, noised)
    EXPECT_EQ(cached.image_cache_stats().hits, 4);
  }
}

TEST(LlavaCacheTest, CacheKeepsOnlyReusableImagesWithinItsSize) {
  const auto model = llava::LlavaLvlm::load(llava_dir("tiny_t")).model();
  const auto ref = agla::io::SafetensorsFile::open(llava_dir("tiny_t") + "/reference.safetensors");
  const at::Tensor pixels = ref.tensor("batch2_pixel_values"), ids = ref.tensor("input_ids");
  llava::LlavaLvlm lvlm(model);
  const auto run = [&](const agla::LvlmInputs& in) { (void)lvlm(lvlm.begin(in), agla::AllViews{}); };
  // Off by default: nothing is kept.
  run(agla::LvlmInputs::images(ids, pixels.narrow(0, 0, 1)));
  EXPECT_EQ(lvlm.image_cache_stats().entries, 0);
  EXPECT_EQ(lvlm.image_cache_stats().misses, 0);
  lvlm.set_image_cache(1);
  // AGLA's per-question view is not reusable: only the original's prefix is kept.
  run(agla::LvlmInputs::images(ids, pixels.narrow(0, 0, 1), {pixels.narrow(0, 1, 1)}));
  EXPECT_EQ(lvlm.image_cache_stats().entries, 1);
  EXPECT_EQ(lvlm.image_cache_stats().misses, 1);
  run(agla::LvlmInputs::images(ids, pixels.narrow(0, 0, 1)));
  EXPECT_EQ(lvlm.image_cache_stats().hits, 1);
  // Another image evicts the first (size 1); the same pixels with another prefix miss too.
  run(agla::LvlmInputs::images(ids, pixels.narrow(0, 1, 1)));
  run(agla::LvlmInputs::images(ids, pixels.narrow(0, 0, 1)));
  at::Tensor other_prefix = ids.clone();
  other_prefix[0][1] = (other_prefix[0][1].item<int64_t>() + 1) % 90 + 3;
  run(agla::LvlmInputs::images(other_prefix, pixels.narrow(0, 0, 1)));
  EXPECT_EQ(lvlm.image_cache_stats().misses, 4);
  EXPECT_EQ(lvlm.image_cache_stats().entries, 1);
  lvlm.clear_image_cache();
  EXPECT_EQ(lvlm.image_cache_stats().entries, 0);
  EXPECT_THROW(lvlm.set_image_cache(-1), agla::InvalidArgument);
  EXPECT_THROW(agla::enable_image_cache(lvlm, -1), agla::InvalidArgument);
  lvlm.set_image_cache(0);
  run(agla::LvlmInputs::images(ids, pixels.narrow(0, 0, 1)));
  EXPECT_EQ(lvlm.image_cache_stats().entries, 0);
}

namespace {

// A forward functor without the image cache: enable_image_cache leaves it alone.
struct PlainForward {
  at::Tensor operator()(const at::Tensor& tokens, agla::View) const { return at::zeros({tokens.size(0), 4}); }
};

}  // namespace

TEST(LlavaCacheTest, TheCapabilityIsOptional) {
  static_assert(agla::has_image_cache_v<llava::LlavaLvlm>);
  static_assert(agla::has_image_cache_v<ib::InstructBlipLvlm>);
  static_assert(agla::has_image_cache_v<agla::blip::BlipCaptioner>);
  static_assert(!agla::has_image_cache_v<PlainForward>);
  PlainForward forward;
  EXPECT_FALSE(agla::enable_image_cache(forward, 2));
  // ExtraView stays an aggregate: the old three-member initialisation still compiles (not reusable).
  const agla::ExtraView view{agla::ViewKind::Image, at::zeros({1}), {}};
  EXPECT_FALSE(view.reusable);
}

TEST(ViewDecoderTest, PrefixRowsMatchWholeRows) {
  // Two rows (one with a prefix of 5 positions, one without) against the same rows prefilled whole.
  llava::LlavaModel model = llava::LlavaLvlm::load(llava_dir("tiny_t")).model();
  auto lm = model->language_model;
  const at::Tensor a = model->embed(at::tensor({1, 5, 9, 13, 17, 21, 25, 29}, at::kLong).view({1, 8})).squeeze(0);
  const at::Tensor b = model->embed(at::tensor({1, 7, 11, 15, 19, 23}, at::kLong).view({1, 6})).squeeze(0);
  const at::Tensor prompt = at::zeros({1, 3}, at::kLong);
  agla::llama::ViewDecoder whole(lm, prompt, 2, 9, 4), split(lm, prompt, 2, 9, 4);
  const at::Tensor e = whole.prefill(0, 2, std::vector<at::Tensor>{a, b});
  const auto prefix = std::make_shared<const agla::llama::PrefixKv>(agla::llama::PrefixKv::encode(lm, a.narrow(0, 0, 5)));
  EXPECT_EQ(prefix->length(), 5);
  const at::Tensor c = split.prefill(0, 2, std::vector<agla::llama::PrefillRow>{{a.narrow(0, 5, 3), prefix, {}}, {b, nullptr, {}}});
  EXPECT_TRUE(at::allclose(c, e, 0.0, kLogitTolerance)) << max_diff(c, e);
  const at::Tensor next = model->embed(at::tensor({3, 4}, at::kLong).view({2, 1}));
  EXPECT_TRUE(at::allclose(split.step(0, 2, next), whole.step(0, 2, next), 0.0, kLogitTolerance));
  EXPECT_EQ(split.cached_length(1), 10);
  // A row that does not fit the merged length is refused.
  agla::llama::ViewDecoder small(lm, prompt, 1, 6, 4);
  EXPECT_THROW(small.prefill(0, 1, std::vector<agla::llama::PrefillRow>{{a.narrow(0, 5, 3), prefix, {}}}),
               agla::InvalidArgument);
}

// --- InstructBLIP -----------------------------------------------------------------------------

TEST(InstructBlipCacheTest, VisionEncodingIsReusedAcrossQuestions) {
  const std::string dir = kData + "/instructblip/tiny_t";
  const auto model = ib::InstructBlipLvlm::load(dir).model();
  const auto ref = agla::io::SafetensorsFile::open(dir + "/reference.safetensors");
  const at::Tensor ids = ref.tensor("input_ids"), qids = ref.tensor("qformer_input_ids");
  const at::Tensor image = ref.tensor("pixel_values"), masked = ref.tensor("pixel_values_halfzero");
  // Questions: the fixture's, one with its middle reversed (both readers), one with two more ids.
  const int64_t l = ids.size(1), lq = qids.size(1);
  const std::vector<std::pair<at::Tensor, at::Tensor>> questions = {
      {ids, qids},
      {at::cat({ids.narrow(1, 0, 1), ids.narrow(1, 1, l - 1).flip(1)}, 1),
       at::cat({qids.narrow(1, 0, 1), qids.narrow(1, 1, lq - 2).flip(1), qids.narrow(1, lq - 1, 1)}, 1)},
      {at::cat({ids, at::tensor({20, 21}, at::kLong).view({1, 2})}, 1),
       at::cat({qids.narrow(1, 0, lq - 1), qids.narrow(1, 1, 2), qids.narrow(1, lq - 1, 1)}, 1)}};
  ib::InstructBlipLvlm cached(model), plain(model);
  EXPECT_TRUE(agla::enable_image_cache(cached, 2));
  for (const Method& method : methods()) {
    for (size_t q = 0; q < questions.size(); ++q) {
      agla::LvlmInputs in = agla::LvlmInputs::images(questions[q].first, image, {}, 8);
      in.prompt.instruction_ids = questions[q].second;
      if (method.noise_view) in.views.push_back(image_view(noised(image), true));
      if (method.agla_view) in.views.push_back(image_view(masked, false));
      const std::string what = "instructblip " + method.name + " question " + std::to_string(q);
      expect_same_logits(cached, plain, in, 5, what);
      expect_same_tokens(cached, plain, in, method.options, what);
    }
  }
  const auto stats = cached.image_cache_stats();
  EXPECT_EQ(stats.entries, 2);  // the image and its noised view
  EXPECT_EQ(stats.misses, 2);
  EXPECT_GT(stats.hits, 10);
}

// --- BLIP (the shipped ShapesWorld models) ----------------------------------------------------

TEST(BlipCacheTest, ShippedCaptionerReusesImageTokens) {
  auto plain = agla::blip::BlipCaptioner::load(kModels + "/shapesworld-lvlm");
  auto cached = plain;
  cached.set_image_cache(2);
  const at::Tensor image = agla::io::read_image(kSample);
  const at::Tensor pixels = plain.preprocess(image).unsqueeze(0);
  const at::Tensor masked = plain.preprocess(image.flip(1)).unsqueeze(0);
  const std::vector<std::string> questions = {"is there a circle in the image?", "is there a red square in the image?",
                                              "is there a triangle in the image?"};
  for (const Method& method : methods()) {
    for (size_t q = 0; q < questions.size(); ++q) {
      const auto ids = plain.prompt(questions[q] + " Please answer this question with one word.").ids;
      agla::LvlmInputs in = agla::LvlmInputs::images(at::tensor(ids, at::kLong).view({1, -1}), pixels, {}, 8);
      if (method.noise_view) in.views.push_back(image_view(noised(pixels), true));
      if (method.agla_view) in.views.push_back(image_view(masked, false));
      const std::string what = "shapesworld-lvlm " + method.name + " question " + std::to_string(q);
      expect_same_logits(cached, plain, in, 3, what);
      expect_same_tokens(cached, plain, in, method.options, what);
    }
  }
  EXPECT_EQ(cached.image_cache_stats().entries, 2);
  EXPECT_EQ(cached.image_cache_stats().misses, 2);
  EXPECT_EQ(plain.image_cache_stats().misses, 0);
}

TEST(MatcherCacheTest, EncodedImageGivesTheSameMatches) {
  const auto itm = agla::blip::BlipItm::load(kModels + "/shapesworld-itm");
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(itm);
  const at::Tensor image = agla::io::read_image(kSample);
  const agla::ipm::EncodedImage encoded = matcher.encode(image);
  EXPECT_EQ(encoded.resized.sizes(), (std::vector<int64_t>{matcher.image_size(), matcher.image_size(), 3}));
  EXPECT_GT(encoded.encode_ms, 0.0);
  for (const std::string prompt : {"a circle", "a red square", "is there a triangle in the image?"}) {
    const agla::ipm::Match e = matcher.match(image, prompt);
    const agla::ipm::Match a = matcher.match(encoded, prompt);
    EXPECT_TRUE(at::equal(a.itm_logits, e.itm_logits)) << prompt;
    EXPECT_EQ(a.itc, e.itc) << prompt;
    EXPECT_TRUE(at::equal(a.grid, e.grid)) << prompt;
    EXPECT_TRUE(at::equal(a.per_token, e.per_token)) << prompt;
    EXPECT_TRUE(at::equal(a.mask, e.mask)) << prompt;
    EXPECT_TRUE(at::equal(a.augmented, e.augmented)) << prompt;
    EXPECT_EQ(a.kept_fraction, e.kept_fraction) << prompt;
  }
  // The batched form over an encoded image agrees with the batched form over the image.
  const std::vector<std::string> prompts = {"a circle", "a red square"};
  const auto batch = matcher.match(encoded, prompts), direct = matcher.match(image, prompts);
  for (size_t p = 0; p < prompts.size(); ++p) EXPECT_TRUE(at::equal(batch[p].mask, direct[p].mask));
  EXPECT_THROW(matcher.match(agla::ipm::EncodedImage{}, "a circle"), agla::InvalidArgument);
}
