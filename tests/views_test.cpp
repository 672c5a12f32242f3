// The views layer (agla/views): RITUAL's transformations, VACoDe-style selection, ICD's
// disturbances; and the view kinds of the shipped LVLMs (text, no-image, PAI's attention boost)
// against independent computations through their modules.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "agla/agla.hpp"

namespace {

const std::string kData = AGLA_TEST_DATA_DIR;

at::Tensor test_image(int64_t h = 24, int64_t w = 32) {
  return at::randint(0, 256, {h, w, 3}, at::make_generator<at::CPUGeneratorImpl>(5), at::kByte);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST(NamesTest, OneTableGivesTheNameOfAValueAndTheValueOfAName) {
  enum class Colour { Red, Green, Blue };
  static constexpr agla::NamedValue<Colour> kNames[] = {{Colour::Red, "red"}, {Colour::Green, "green"}};
  EXPECT_STREQ(agla::name_of(Colour::Green, kNames), "green");
  EXPECT_STREQ(agla::name_of(Colour::Blue, kNames), "?");  // a value the table lacks
  EXPECT_EQ(agla::value_of("red", kNames), Colour::Red);
  EXPECT_FALSE(agla::value_of("blue", kNames).has_value());
  EXPECT_EQ(agla::joined_names(kNames), "red|green");
  // The library's tables name every value apart.
  std::set<std::string> names;
  for (agla::views::Transform t : agla::views::ritual_pool()) names.insert(agla::views::transform_name(t));
  EXPECT_EQ(names, (std::set<std::string>{"horizontal flip", "vertical flip", "rotation", "color jitter",
                                          "gaussian blur", "crop"}));
  EXPECT_STREQ(agla::view_kind_name(agla::ViewKind::NoImage), "no-image");
}

TEST(TransformTest, FlipsAndRotationsMoveEveryPixelWhereExpected) {
  const at::Tensor image = test_image();
  EXPECT_TRUE(at::equal(agla::views::horizontal_flip(image)[3][0], image[3][31]));
  EXPECT_TRUE(at::equal(agla::views::vertical_flip(image)[0][5], image[23][5]));
  // Half a turn is both flips; a full turn is the identity (nearest neighbour, exact pixel centres).
  EXPECT_TRUE(at::equal(agla::views::rotate(image, 180.0), image.flip({0, 1})));
  EXPECT_TRUE(at::equal(agla::views::rotate(image, 360.0), image));
  // A quarter turn counter-clockwise of a square image: the top-right pixel goes to the top-left.
  const at::Tensor square = test_image(16, 16);
  const at::Tensor turned = agla::views::rotate(square, 90.0);
  EXPECT_TRUE(at::equal(turned[0][0], square[0][15]));
  EXPECT_TRUE(at::equal(turned[15][0], square[0][0]));
  // 45 degrees leaves the corners black.
  const at::Tensor diagonal = agla::views::rotate(square, 45.0);
  EXPECT_EQ(diagonal[0][0].sum().item<int64_t>(), 0);
}

TEST(TransformTest, ColorJitterBlurAndCropFollowTheirDefinitions) {
  const at::Tensor image = test_image();
  // Factors 1 and hue 0 leave the image as it is; brightness 0 is black; saturation 0 is grey.
  EXPECT_LE(max_diff(agla::views::color_jitter(image, 1, 1, 1, 0), image), 1.0);
  EXPECT_EQ(agla::views::color_jitter(image, 0, 1, 1, 0).sum().item<int64_t>(), 0);
  const at::Tensor grey = agla::views::color_jitter(image, 1, 1, 0, 0).to(at::kInt);
  EXPECT_TRUE(at::equal(grey.select(2, 0), grey.select(2, 1)));
  // A full hue turn is the identity up to the HSV round trip.
  EXPECT_LE(max_diff(agla::views::color_jitter(image, 1, 1, 1, 0.5), agla::views::color_jitter(image, 1, 1, 1, -0.5)),
            1.0);
  // Blurring a constant image changes nothing; blurring noise lowers its spread.
  const at::Tensor flat = at::full({20, 20, 3}, 77, at::kByte);
  EXPECT_TRUE(at::equal(agla::views::gaussian_blur(flat, 13, 1.75), flat));
  EXPECT_LT(agla::views::gaussian_blur(image, 13, 2.0).to(at::kFloat).std().item<double>(),
            image.to(at::kFloat).std().item<double>() / 2);
  // The whole of a square image resized to its own size is the image.
  const at::Tensor square = test_image(24, 24);
  EXPECT_LE(max_diff(agla::views::resized_crop(square, 0, 0, 24, 24, 24), square), 1.0);
  EXPECT_EQ(agla::views::resized_crop(image, 2, 3, 10, 12, 336).sizes(), at::IntArrayRef({336, 336, 3}));
  EXPECT_THROW(agla::views::resized_crop(image, 20, 0, 10, 10, 8), agla::InvalidArgument);
  EXPECT_THROW(agla::views::gaussian_blur(image, 12, 1.0), agla::InvalidArgument);
  EXPECT_THROW(agla::views::rotate(image.to(at::kFloat), 3.0), agla::ShapeError);
}

TEST(TransformTest, RitualDrawsUniformlyAndReproducibly) {
  const auto& pool = agla::views::ritual_pool();
  ASSERT_EQ(pool.size(), 6u);
  std::vector<int> counts(6, 0);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(11);
  for (int i = 0; i < 6000; ++i) ++counts[static_cast<size_t>(agla::views::draw_transform(pool, generator))];
  for (int count : counts) EXPECT_NEAR(count, 1000, 150);
  // The same seed gives the same transformed image, for every transformation.
  const at::Tensor image = test_image(40, 52);
  for (agla::views::Transform transform : pool) {
    at::Generator a = at::make_generator<at::CPUGeneratorImpl>(3), b = at::make_generator<at::CPUGeneratorImpl>(3);
    const at::Tensor x = agla::views::apply_transform(transform, image, a);
    const at::Tensor y = agla::views::apply_transform(transform, image, b);
    EXPECT_TRUE(at::equal(x, y)) << agla::views::transform_name(transform);
    EXPECT_EQ(x.scalar_type(), at::kByte);
    if (transform == agla::views::Transform::ResizedCrop) {
      EXPECT_EQ(x.sizes(), at::IntArrayRef({336, 336, 3}));
    } else {
      EXPECT_EQ(x.sizes(), image.sizes()) << agla::views::transform_name(transform);
      EXPECT_FALSE(at::equal(x, image)) << agla::views::transform_name(transform);
    }
  }
  EXPECT_EQ(std::string(agla::views::transform_name(agla::views::Transform::ResizedCrop)), "crop");
  EXPECT_THROW(agla::views::draw_transform({}, generator), agla::InvalidArgument);
}

TEST(ViewSelectionTest, PicksTheViewFarthestFromTheOriginal) {
  // softmax([0, 0]) = [.5, .5]; candidate 1 equal, candidate 2 far, candidate 3 half-way.
  const at::Tensor original = at::zeros({2, 2});
  const at::Tensor same = at::zeros({2, 2});
  const at::Tensor far = at::tensor({10.0f, 0.0f, 0.0f, 10.0f}).view({2, 2});
  const at::Tensor middle = at::tensor({1.0f, 0.0f, 0.0f, 20.0f}).view({2, 2});
  const at::Tensor distances = agla::views::softmax_distances({original, same, far, middle});
  EXPECT_NEAR(distances[0][0].item<double>(), 0.0, 1e-7);
  EXPECT_NEAR(distances[0][1].item<double>(), std::sqrt(2.0) * (1.0 / (1.0 + std::exp(-10.0)) - 0.5), 1e-6);
  const at::Tensor chosen = agla::views::farthest_view({original, same, far, middle});
  EXPECT_EQ(chosen[0].item<int64_t>(), 2);  // stream 0: the far view
  EXPECT_EQ(chosen[1].item<int64_t>(), 3);  // stream 1: the middle view has the larger margin (20)
  EXPECT_THROW(agla::views::softmax_distances({original}), agla::InvalidArgument);
  EXPECT_THROW(agla::views::softmax_distances({original, at::zeros({2, 3})}), agla::ShapeError);
}

TEST(ViewSelectionTest, IcdDisturbancesAreTheReferenceScripts) {
  EXPECT_EQ(agla::views::icd_disturbances().size(), 5u);
  EXPECT_EQ(agla::views::default_icd_disturbance(),
            "You are a confused objects detector to provide a fuzzy overview or impression of the image.");
}

// ---------------------------------------------------------------------------------------------
// View kinds of the shipped LVLMs.

TEST(LvlmViewsTest, LlavaTextAndNoImageViewsMatchTheModuleForward) {
  namespace llava = agla::llava;
  const llava::LlavaLvlm loaded = llava::LlavaLvlm::load(kData + "/llava/tiny_t");
  llava::LlavaModel model = loaded.model();
  const auto ref = agla::io::SafetensorsFile::open(kData + "/llava/tiny_t/reference.safetensors");
  const at::Tensor ids = ref.tensor("input_ids");  // [1, 12], one image token
  const at::Tensor pixels = ref.tensor("pixel_values");
  const int64_t image_token = model->config().image_token_index;
  // A text view: another prompt (three extra tokens before the image) on the same image.
  const at::Tensor other = at::cat({ids.narrow(1, 0, 1), at::tensor({20, 21, 22}, at::kLong).view({1, 3}),
                                    ids.narrow(1, 1, ids.size(1) - 1)},
                                   1);
  agla::LvlmInputs inputs = agla::LvlmInputs::images(ids, pixels);
  agla::ExtraView text;
  text.kind = agla::ViewKind::Text;
  text.prompt.ids = other;
  inputs.views = {text, agla::ExtraView{agla::ViewKind::NoImage, {}, {}}};
  llava::LlavaLvlm lvlm(model);
  const at::Tensor first = lvlm.begin(inputs);
  const at::Tensor all = lvlm(first, agla::AllViews{});
  ASSERT_EQ(all.size(0), 3);
  at::NoGradGuard no_grad;
  const at::Tensor original = model->forward(ids, pixels).select(1, -1);
  const at::Tensor disturbed = model->forward(other, pixels).select(1, -1);
  const at::Tensor text_only_ids = ids.masked_select(ids != image_token).view({1, -1});
  const int64_t l = text_only_ids.size(1);
  const at::Tensor no_image =
      model->language_model(model->embed(text_only_ids), at::arange(l, at::kLong).view({1, l})).select(1, -1);
  EXPECT_LT(max_diff(all[0], original[0]), 5e-5);
  EXPECT_LT(max_diff(all[1], disturbed[0]), 5e-5);
  EXPECT_LT(max_diff(all[2], no_image[0]), 5e-5);
  // The plain form gives the same rows, view by view, and the next steps stay in step.
  llava::LlavaLvlm plain(model);
  plain.begin(inputs);
  for (int32_t v = 0; v < 3; ++v) EXPECT_LT(max_diff(plain(first, agla::View{v})[0], all[v]), 5e-5) << "view " << v;
  const at::Tensor next = all.narrow(0, 0, 1).argmax(-1).view({1, 1});
  const at::Tensor step = lvlm(next, agla::AllViews{});
  const at::Tensor no_image_next = model->language_model(model->embed(at::cat({text_only_ids, next}, 1)),
                                                         at::arange(l + 1, at::kLong).view({1, l + 1}))
                                       .select(1, -1);
  EXPECT_LT(max_diff(step[2], no_image_next[0]), 5e-5);
}

TEST(LvlmViewsTest, PaiBoostsTheImageKeysOfTheLastQueryRowOnly) {
  namespace llava = agla::llava;
  llava::LlavaModel model = llava::LlavaLvlm::load(kData + "/llava/tiny_t").model();
  const auto ref = agla::io::SafetensorsFile::open(kData + "/llava/tiny_t/reference.safetensors");
  const at::Tensor ids = ref.tensor("input_ids");
  const at::Tensor pixels = ref.tensor("pixel_values");
  agla::LvlmInputs inputs = agla::LvlmInputs::images(ids, pixels);
  inputs.views = {agla::ExtraView{agla::ViewKind::NoImage, {}, {}}};
  auto run = [&](std::optional<llava::PaiAttention> pai) {
    llava::LlavaLvlm lvlm(model);
    lvlm.set_pai_attention(pai);
    const at::Tensor first = lvlm.begin(inputs);
    const at::Tensor prefill = lvlm(first, agla::AllViews{});
    const at::Tensor step = lvlm(prefill.narrow(0, 0, 1).argmax(-1).view({1, 1}), agla::AllViews{});
    return std::make_pair(prefill, step);
  };
  const auto off = run(std::nullopt);
  const auto zero = run(llava::PaiAttention{0.0, 0, 2});
  const auto on = run(llava::PaiAttention{0.5, 0, 2});
  const auto empty_range = run(llava::PaiAttention{0.5, 1, 1});
  EXPECT_TRUE(at::equal(zero.first, off.first) && at::equal(zero.second, off.second));
  EXPECT_TRUE(at::equal(empty_range.first, off.first));
  EXPECT_GT(max_diff(on.first[0], off.first[0]), 1e-3);   // the image view changes
  EXPECT_GT(max_diff(on.second[0], off.second[0]), 1e-3);
  EXPECT_TRUE(at::equal(on.first[1], off.first[1]));      // the no-image view is never boosted
  EXPECT_TRUE(at::equal(on.second[1], off.second[1]));
  // One attention layer by hand: scores s = q k^T / sqrt(d) (+ causal mask); the last row's image
  // columns become s + alpha |s| before the softmax.
  agla::llama::LlamaConfig c;
  c.hidden_size = 8;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.intermediate_size = 16;
  c.num_hidden_layers = 1;
  c.vocab_size = 10;
  torch::manual_seed(3);
  agla::llama::LlamaAttention attention(c);
  agla::models::init_parameters(*attention);
  const at::Tensor x = at::randn({1, 5, 8});
  const auto [cos, sin] = agla::llama::rotary_cos_sin(at::arange(5).view({1, 5}), 4, 10000.0, at::kFloat);
  const at::Tensor mask = agla::llama::attention_mask(5, 0, {}, at::kFloat, at::kCPU);
  agla::llama::AttentionBoost boost{0.3, 0, 1, at::tensor({0, 1, 1, 0, 0}, at::kInt).to(at::kBool).view({1, 5})};
  const at::Tensor boosted = attention(x, cos, sin, mask, nullptr, 0, &boost);
  auto q = attention->q_proj(x).view({1, 5, 2, 4}).transpose(1, 2);
  auto k = attention->k_proj(x).view({1, 5, 2, 4}).transpose(1, 2);
  const auto v = attention->v_proj(x).view({1, 5, 2, 4}).transpose(1, 2);
  q = q * cos + agla::llama::rotate_half(q) * sin;
  k = k * cos + agla::llama::rotate_half(k) * sin;
  at::Tensor scores = at::matmul(q, k.transpose(2, 3)) / 2.0 + mask;
  for (int64_t col : {1, 2}) {
    at::Tensor cell = scores.select(2, 4).select(2, col);
    cell.add_(cell.abs() * 0.3);
  }
  const at::Tensor expected =
      attention->o_proj(at::matmul(scores.softmax(-1), v).transpose(1, 2).reshape({1, 5, 8}));
  EXPECT_LT(max_diff(boosted, expected), 1e-6);
}

TEST(LvlmViewsTest, BlipTextAndNoImageViewsMatchTheDecoder) {
  auto captioner = agla::blip::BlipCaptioner::load(kData + "/blip/caption");
  const at::Tensor pixels = at::randn({1, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(2));
  const std::vector<int64_t> prompt_ids = captioner.prompt("a picture of").ids;
  const std::vector<int64_t> disturbed_ids = captioner.disturbed_prompt("a picture of", "a blurry").ids;
  EXPECT_GT(disturbed_ids.size(), prompt_ids.size());
  const at::Tensor prompt = at::tensor(prompt_ids, at::kLong).view({1, -1});
  const at::Tensor disturbed = at::tensor(disturbed_ids, at::kLong).view({1, -1});
  agla::LvlmInputs inputs = agla::LvlmInputs::images(prompt, pixels);
  agla::ExtraView text;
  text.kind = agla::ViewKind::Text;
  text.prompt.ids = disturbed;
  inputs.views = {text, agla::ExtraView{agla::ViewKind::NoImage, {}, {}}};
  const at::Tensor first = captioner.begin(inputs);
  const at::Tensor all = captioner(first, agla::AllViews{});
  ASSERT_EQ(all.size(0), 3);
  at::NoGradGuard no_grad;
  const at::Tensor image = captioner.encode_image(pixels);
  EXPECT_LT(max_diff(all[0], captioner.logits_full(image, prompt).select(1, -1)[0]), 1e-4);
  EXPECT_LT(max_diff(all[1], captioner.logits_full(image, disturbed).select(1, -1)[0]), 1e-4);
  const at::Tensor prior = captioner.module()->text_decoder->forward(prompt, at::Tensor()).select(1, -1);
  EXPECT_LT(max_diff(all[2], prior[0]), 1e-4);
  // The image matters: the no-image view differs from the original.
  EXPECT_GT(max_diff(all[2], all[0]), 1e-3);
}
