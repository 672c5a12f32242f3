// agla::generate and the forward functor contract with a real (tiny, randomly initialised) libtorch
// transformer decoder that keeps one KV cache per view, in the plain and the batched form.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "agla/agla.hpp"
#include "support/generation.hpp"

namespace {

// Attention-key/value cache of one forward stream set: per layer `[B, H, S, D/H]`.
struct KvCache {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
  std::int64_t length = 0;
};

struct TinyBlockImpl : torch::nn::Module {
  TinyBlockImpl(std::int64_t dim, std::int64_t heads)
      : heads(heads),
        norm1(register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        qkv(register_module("qkv", torch::nn::Linear(dim, 3 * dim))),
        out(register_module("out", torch::nn::Linear(dim, dim))),
        norm2(register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        up(register_module("up", torch::nn::Linear(dim, 4 * dim))),
        down(register_module("down", torch::nn::Linear(4 * dim, dim))) {}

  // x: [B, T, D] new positions starting at `offset`; appends their keys/values to the cache.
  at::Tensor forward(const at::Tensor& x, at::Tensor& keys, at::Tensor& values, std::int64_t offset) {
    const std::int64_t batch = x.size(0);
    const std::int64_t steps = x.size(1);
    const std::int64_t dim = x.size(2);
    const std::int64_t head_dim = dim / heads;
    auto split = [&](const at::Tensor& t) { return t.view({batch, steps, heads, head_dim}).transpose(1, 2); };
    const auto parts = qkv(norm1(x)).chunk(3, -1);
    const at::Tensor q = split(parts[0]);
    keys = keys.defined() ? at::cat({keys, split(parts[1])}, 2) : split(parts[1]);
    values = values.defined() ? at::cat({values, split(parts[2])}, 2) : split(parts[2]);
    const std::int64_t total = keys.size(2);
    at::Tensor scores = at::matmul(q, keys.transpose(2, 3)) / std::sqrt(static_cast<double>(head_dim));
    const at::Tensor query_pos = at::arange(offset, offset + steps).unsqueeze(1);
    const at::Tensor key_pos = at::arange(total).unsqueeze(0);
    scores = scores.masked_fill(key_pos > query_pos, -std::numeric_limits<float>::infinity());
    const at::Tensor attended = at::matmul(scores.softmax(-1), values).transpose(1, 2).reshape({batch, steps, dim});
    const at::Tensor h = x + out(attended);
    return h + down(torch::gelu(up(norm2(h))));
  }

  std::int64_t heads;
  torch::nn::LayerNorm norm1;
  torch::nn::Linear qkv;
  torch::nn::Linear out;
  torch::nn::LayerNorm norm2;
  torch::nn::Linear up;
  torch::nn::Linear down;
};
TORCH_MODULE(TinyBlock);

// A decoder-only LVLM in miniature: image features `[B, P, D]` are a prefix of the sequence.
struct TinyLvlmImpl : torch::nn::Module {
  TinyLvlmImpl(std::int64_t vocab, std::int64_t dim, std::int64_t layers, std::int64_t heads)
      : embed(register_module("embed", torch::nn::Embedding(vocab, dim))),
        position(register_module("position", torch::nn::Embedding(256, dim))),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        head(register_module("head", torch::nn::Linear(dim, vocab))) {
    for (std::int64_t i = 0; i < layers; ++i)
      blocks.push_back(register_module("block" + std::to_string(i), TinyBlock(dim, heads)));
  }

  // tokens [B, T] int64, image [B, P, D] on the first call of a cache (else undefined) -> [B, V].
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& image, KvCache& cache) {
    at::Tensor x = embed(tokens);
    if (image.defined()) x = at::cat({image, x}, 1);
    const std::int64_t offset = cache.length;
    x = x + position(at::arange(offset, offset + x.size(1))).unsqueeze(0);
    cache.keys.resize(blocks.size());
    cache.values.resize(blocks.size());
    for (size_t i = 0; i < blocks.size(); ++i) x = blocks[i]->forward(x, cache.keys[i], cache.values[i], offset);
    cache.length += x.size(1);
    return head(norm(x.select(1, x.size(1) - 1)));
  }

  torch::nn::Embedding embed;
  torch::nn::Embedding position;
  torch::nn::LayerNorm norm;
  torch::nn::Linear head;
  std::vector<TinyBlock> blocks;
};
TORCH_MODULE(TinyLvlm);

constexpr std::int64_t kVocab = 64;
constexpr std::int64_t kDim = 32;
constexpr std::int64_t kBatch = 3;
constexpr std::int64_t kPatches = 4;

struct TinyWorld {
  TinyLvlm model{nullptr};
  at::Tensor image;      // [B, P, D]
  at::Tensor image_aug;  // [B, P, D]: the "local" view keeps half of the patches
  at::Tensor prompt;     // [B, 5] int64
};

TinyWorld make_world() {
  torch::manual_seed(2025);
  TinyWorld setup;
  setup.model = TinyLvlm(kVocab, kDim, 2, 2);
  setup.model->eval();
  setup.image = torch::randn({kBatch, kPatches, kDim});
  setup.image_aug = setup.image.clone();
  setup.image_aug.slice(1, 0, kPatches / 2).zero_();
  setup.prompt = torch::randint(1, kVocab, {kBatch, 5}, torch::kLong);
  return setup;
}

// The plain functor form: one call per view, one KV cache per view.
struct PlainForward {
  TinyWorld* setup;
  KvCache caches[2];
  int calls[2] = {0, 0};
  at::Tensor operator()(const at::Tensor& tokens, agla::View view) {
    const int index = view == agla::View::Original ? 0 : 1;
    ++calls[index];
    KvCache& cache = caches[index];
    const at::Tensor& image = index == 0 ? setup->image : setup->image_aug;
    return setup->model->forward(tokens, cache.length == 0 ? image : at::Tensor(), cache);
  }
};

// The batched functor form: both views as one batch of 2B streams with one cache.
struct BatchedForward {
  TinyWorld* setup;
  KvCache cache;
  int calls = 0;
  at::Tensor operator()(const at::Tensor& tokens, agla::BothViews) {
    ++calls;
    const at::Tensor images = at::cat({setup->image, setup->image_aug});
    return setup->model->forward(at::cat({tokens, tokens}), cache.length == 0 ? images : at::Tensor(), cache);
  }
};

// Both forms in one functor: the library must prefer the batched one.
struct BothForms : PlainForward, BatchedForward {
  using PlainForward::operator();
  using BatchedForward::operator();
};

static_assert(agla::is_plain_forward_v<PlainForward> && !agla::is_batched_forward_v<PlainForward>);
static_assert(agla::is_batched_forward_v<BatchedForward> && !agla::is_plain_forward_v<BatchedForward>);
static_assert(agla::is_plain_forward_v<BothForms> && agla::is_batched_forward_v<BothForms>);
static_assert(!agla::is_plain_forward_v<int> && !agla::is_batched_forward_v<TinyWorld>);

// Each test gets a fresh tiny world and runs with gradients off.
class GenerateModelTest : public ::testing::Test {
 protected:
  // agla::generate on the world's prompt, with a CPU generator seeded with `seed`.
  template <typename Forward>
  agla::GenerateResult generate_seeded(Forward& forward, const agla::DecodeOptions& options,
                                       const agla::GenerateOptions& limits, std::uint64_t seed) {
    return agla::generate(forward, setup.prompt, options, limits, at::make_generator<at::CPUGeneratorImpl>(seed));
  }

  torch::NoGradGuard no_grad;
  TinyWorld setup = make_world();
};
using DecodeSessionTest = GenerateModelTest;

TEST_F(GenerateModelTest, PlainAndBatchedFormsGiveIdenticalTokens) {
  const agla::GenerateOptions limits = agla::test::max_new_tokens(12);
  at::Tensor sampled_agla;
  for (bool greedy : {false, true}) {
    agla::DecodeOptions options;
    options.alpha = 1.0;
    options.beta = 0.1;
    options.greedy = greedy;
    PlainForward plain{&setup};
    BatchedForward batched{&setup};
    const agla::GenerateResult a = generate_seeded(plain, options, limits, 42);
    const agla::GenerateResult b = generate_seeded(batched, options, limits, 42);
    ASSERT_EQ(a.tokens.sizes(), at::IntArrayRef({kBatch, 12}));
    EXPECT_TRUE(at::equal(a.tokens, b.tokens)) << a.tokens << "\n" << b.tokens;
    EXPECT_EQ(plain.calls[0], 12);
    EXPECT_EQ(plain.calls[1], 12);
    EXPECT_EQ(batched.calls, 12);
    EXPECT_EQ(a.lengths, std::vector<std::int64_t>(kBatch, 12));
    EXPECT_TRUE(at::all(a.tokens >= 0).item<bool>() && at::all(a.tokens < kVocab).item<bool>());
    EXPECT_GT(std::get<0>(at::_unique(a.tokens)).numel(), 3);  // a real model, not a constant
    if (!greedy) sampled_agla = a.tokens;
  }
  // Sampling from the fused distribution is not the same as decoding the original view alone.
  agla::DecodeOptions plain_options;
  plain_options.method = agla::FusionMethod::Plain;
  PlainForward plain{&setup};
  const agla::GenerateResult regular = generate_seeded(plain, plain_options, limits, 42);
  EXPECT_EQ(plain.calls[1], 0);
  EXPECT_EQ(plain.calls[0], 12);
  EXPECT_EQ(regular.tokens.sizes(), at::IntArrayRef({kBatch, 12}));
  EXPECT_FALSE(at::equal(regular.tokens, sampled_agla));
}

TEST_F(GenerateModelTest, PrefersTheBatchedForm) {
  BothForms both;
  both.PlainForward::setup = &setup;
  both.BatchedForward::setup = &setup;
  const agla::GenerateOptions limits = agla::test::max_new_tokens(4);
  generate_seeded(both, agla::DecodeOptions{}, limits, 1);
  EXPECT_EQ(both.BatchedForward::calls, 4);
  EXPECT_EQ(both.PlainForward::calls[0] + both.PlainForward::calls[1], 0);
  // With the local view off the plain form saves the augmented half of the batch.
  BothForms released;
  released.PlainForward::setup = &setup;
  released.BatchedForward::setup = &setup;
  generate_seeded(released, agla::DecodeOptions::llava_reference(), limits, 1);
  EXPECT_EQ(released.BatchedForward::calls, 1);
  EXPECT_EQ(released.PlainForward::calls[0], 3);
  EXPECT_EQ(released.PlainForward::calls[1], 0);
}

// The released reference's defect, simulated: from the second token on, the augmented branch
// runs on the original branch's cache and token, so its logits are the original view's.
struct DefectiveForward {
  PlainForward inner;
  at::Tensor last_original;
  int steps = 0;
  at::Tensor operator()(const at::Tensor& tokens, agla::View view) {
    if (view == agla::View::Original) {
      ++steps;
      last_original = inner(tokens, view);
      return last_original;
    }
    return steps == 1 ? inner(tokens, view) : last_original;
  }
};

TEST_F(GenerateModelTest, ReleasedBehaviourUsesTheLocalViewForTheFirstTokenOnly) {
  const agla::GenerateOptions limits = agla::test::max_new_tokens(10);
  const agla::DecodeOptions released = agla::DecodeOptions::llava_reference();
  PlainForward ours{&setup};
  DefectiveForward reference{PlainForward{&setup}};
  const agla::GenerateResult a = generate_seeded(ours, released, limits, 9);
  const agla::GenerateResult b = generate_seeded(reference, released.with_local_view_everywhere(), limits, 9);
  EXPECT_TRUE(at::equal(a.tokens, b.tokens));
  EXPECT_EQ(ours.calls[1], 1);  // no augmented forward after the first token
  EXPECT_EQ(ours.calls[0], 10);
  // The paper's method keeps the local view for every token.
  PlainForward paper{&setup};
  generate_seeded(paper, released.with_local_view_everywhere(), limits, 9);
  EXPECT_EQ(paper.calls[1], 10);
}

// K = 2 extra views (AGLA's local view, then VCD's distorted view) through both functor forms: the
// plain form is called once per view and step, the batched form once per step with [3B, V].
struct ThreeViewsPlain {
  TinyWorld* setup;
  at::Tensor noise;  // [B, P, D]
  KvCache caches[3];
  int calls[3] = {0, 0, 0};
  at::Tensor operator()(const at::Tensor& tokens, agla::View view) {
    const int index = view.index;
    ++calls[index];
    const at::Tensor& image = index == 0 ? setup->image : index == 1 ? setup->image_aug : noise;
    return setup->model->forward(tokens, caches[index].length == 0 ? image : at::Tensor(), caches[index]);
  }
};
struct ThreeViewsBatched {
  TinyWorld* setup;
  at::Tensor noise;
  KvCache cache;
  int calls = 0;
  at::Tensor operator()(const at::Tensor& tokens, agla::AllViews) {
    ++calls;
    const at::Tensor images = at::cat({setup->image, setup->image_aug, noise});
    return setup->model->forward(tokens.repeat({3, 1}), cache.length == 0 ? images : at::Tensor(), cache);
  }
};

TEST_F(GenerateModelTest, ThreeViewsThroughPlainAndBatchedForms) {
  const at::Tensor noise = 3.0 * torch::randn(setup.image.sizes());
  agla::DecodeOptions options = agla::DecodeOptions::agla();
  options.further_views = {{agla::FusionMethod::Contrast, 1.0}};
  options.beta = 0.1;
  const agla::GenerateOptions limits = agla::test::max_new_tokens(10);
  ThreeViewsPlain plain{&setup, noise};
  ThreeViewsBatched batched{&setup, noise};
  const agla::GenerateResult a = generate_seeded(plain, options, limits, 7);
  const agla::GenerateResult b = generate_seeded(batched, options, limits, 7);
  EXPECT_TRUE(at::equal(a.tokens, b.tokens)) << a.tokens << "\n" << b.tokens;
  EXPECT_EQ(plain.calls[0], 10);
  EXPECT_EQ(plain.calls[1], 10);
  EXPECT_EQ(plain.calls[2], 10);
  EXPECT_EQ(batched.calls, 10);
  // The third view matters: AGLA alone decodes something else.
  ThreeViewsPlain two{&setup, noise};
  agla::DecodeOptions agla_only = options;
  agla_only.further_views.clear();
  const agla::GenerateResult c = generate_seeded(two, agla_only, limits, 7);
  EXPECT_EQ(two.calls[2], 0);
  EXPECT_FALSE(at::equal(a.tokens, c.tokens));
  // A batched functor that returns too few rows for three views is refused.
  struct TwoRowsOnly {
    at::Tensor operator()(const at::Tensor& tokens, agla::AllViews) { return at::zeros({2 * tokens.size(0), 8}); }
  } short_functor;
  EXPECT_THROW(generate_seeded(short_functor, options, limits, 7), agla::ShapeError);
}

// The per-token loop a user writes with agla::DecodeSession must decode exactly what generate does,
// schedule included: with the released preset the augmented view runs for the first token only.
TEST_F(DecodeSessionTest, PerTokenLoopWithReferencePresetMatchesGenerate) {
  const agla::GenerateOptions limits = agla::test::max_new_tokens(8);
  const agla::DecodeOptions preset = agla::DecodeOptions::llava_reference();
  PlainForward by_generate{&setup};
  const agla::GenerateResult expected = generate_seeded(by_generate, preset, limits, 5);

  PlainForward by_loop{&setup};
  agla::DecodeSession session(preset);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Tensor tokens = setup.prompt;
  std::vector<at::Tensor> columns;
  for (int step = 0; step < 8; ++step) {
    EXPECT_EQ(session.runs_local_view(), step == 0);
    tokens = session.step(by_loop, tokens, generator).unsqueeze(1);
    columns.push_back(tokens);
  }
  EXPECT_EQ(session.steps(), 8);
  EXPECT_TRUE(at::equal(at::cat(columns, 1), expected.tokens));
  EXPECT_EQ(by_loop.calls[1], 1);
  EXPECT_EQ(by_generate.calls[1], 1);
  session.reset();
  EXPECT_EQ(session.steps(), 0);
  EXPECT_TRUE(session.runs_local_view());
}

// A step without a session cannot know which token it produces: a preset whose schedule depends
// on it is refused, and honoured once the index is given.
TEST_F(DecodeSessionTest, DecodeStepNeedsTheStepIndexForAScheduledPreset) {
  const agla::DecodeOptions preset = agla::DecodeOptions::llava_reference();
  PlainForward forward{&setup};
  auto generator = at::make_generator<at::CPUGeneratorImpl>(5);
  try {
    agla::decode_step(forward, setup.prompt, preset, generator);
    FAIL() << "expected agla::InvalidArgument";
  } catch (const agla::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("StepControl::step"), std::string::npos) << e.what();
  }
  EXPECT_EQ(forward.calls[0] + forward.calls[1], 0);  // refused before any forward
  agla::StepControl control;
  control.step = 0;
  const at::Tensor first = agla::decode_step(forward, setup.prompt, preset, generator, control);
  control.step = 1;
  agla::decode_step(forward, first.unsqueeze(1), preset, generator, control);
  EXPECT_EQ(forward.calls[0], 2);
  EXPECT_EQ(forward.calls[1], 1);
  // Schedules that do not depend on the step need no index.
  PlainForward every{&setup};
  agla::decode_step(every, setup.prompt, preset.with_local_view_everywhere(), generator);
  EXPECT_EQ(every.calls[1], 1);
}

// A scripted functor: at step i stream b's logits peak at script[b][i]; records what it was fed.
struct ScriptedForward {
  std::vector<std::vector<std::int64_t>> script;
  std::vector<at::Tensor> fed;
  at::Tensor operator()(const at::Tensor& tokens, agla::View view) {
    const std::int64_t step = static_cast<std::int64_t>(fed.size()) - (view == agla::View::Original ? 0 : 1);
    if (view == agla::View::Original) fed.push_back(tokens.clone());
    at::Tensor logits = at::zeros({static_cast<std::int64_t>(script.size()), 16});
    for (size_t b = 0; b < script.size(); ++b) {
      const auto& row = script[b];
      logits[b][row[std::min<size_t>(step, row.size() - 1)]] = 10.0f;
    }
    return logits;
  }
};

TEST(GenerateTest, EndsStreamsAtEosAndStopSequencesWithPadding) {
  ScriptedForward forward{{{5, 2, 6, 6, 6}, {7, 8, 9, 4, 4}, {3, 3, 3, 3, 3}}};
  agla::DecodeOptions options;
  options.greedy = true;
  agla::GenerateOptions limits = agla::test::max_new_tokens(5);
  limits.eos_token_ids = {2};
  limits.pad_token_id = 15;
  limits.stop_sequences = {{8, 9}, {1, 1}};
  std::vector<std::vector<std::int64_t>> streamed;
  const agla::GenerateResult result = agla::generate(
      forward, at::full({3, 2}, 1, at::kLong), options, limits, {},
      [&](std::int64_t step, const std::vector<std::int64_t>& tokens) {
        EXPECT_EQ(step, static_cast<std::int64_t>(streamed.size()));
        streamed.push_back(tokens);
      });
  const at::Tensor want = at::tensor({5L, 2L, 15L, 15L, 15L, 7L, 8L, 9L, 15L, 15L, 3L, 3L, 3L, 3L, 3L}).view({3, 5});
  EXPECT_TRUE(at::equal(result.tokens, want)) << result.tokens;
  EXPECT_EQ(result.lengths, (std::vector<std::int64_t>{2, 3, 5}));
  EXPECT_EQ(result.finished, (std::vector<bool>{true, true, false}));
  ASSERT_EQ(streamed.size(), 5u);
  EXPECT_EQ(streamed[2], (std::vector<std::int64_t>{15, 9, 3}));
  // Finished streams are fed the pad id; the prompt came first.
  ASSERT_EQ(forward.fed.size(), 5u);
  EXPECT_EQ(forward.fed[0].sizes(), at::IntArrayRef({3, 2}));
  EXPECT_EQ(forward.fed[2][0][0].item<std::int64_t>(), 2);
  EXPECT_EQ(forward.fed[3][0][0].item<std::int64_t>(), 15);
  EXPECT_EQ(forward.fed[4][1][0].item<std::int64_t>(), 15);
  EXPECT_EQ(forward.fed[4][2][0].item<std::int64_t>(), 3);

  // The loop stops once every stream has ended.
  ScriptedForward short_script{{{2}, {2}}};
  const agla::GenerateResult early = agla::generate(short_script, at::ones({2, 1}, at::kLong), options, limits);
  EXPECT_EQ(early.tokens.size(1), 1);
  EXPECT_EQ(early.lengths, (std::vector<std::int64_t>{1, 1}));
}

TEST(GenerateTest, RejectsBadFunctorOutputAndArguments) {
  agla::DecodeOptions options;
  options.greedy = true;
  auto wrong_rows = [](const at::Tensor& tokens, agla::BothViews) { return at::zeros({tokens.size(0), 8}); };
  try {
    agla::decode_step(wrong_rows, at::ones({2, 1}, at::kLong), options);
    ADD_FAILURE() << "no exception";
  } catch (const agla::ShapeError& error) {
    EXPECT_NE(std::string(error.what()).find("[4, V]"), std::string::npos) << error.what();
  }
  auto fine = [](const at::Tensor& tokens, agla::View) { return at::zeros({tokens.size(0), 8}); };
  EXPECT_THROW(agla::decode_step(fine, at::ones({2, 1}, at::kInt), options), agla::ShapeError);
  EXPECT_THROW(agla::decode_step(fine, at::ones({0, 1}, at::kLong), options), agla::ShapeError);
  agla::GenerateOptions limits;
  limits.stop_sequences = {{}};
  EXPECT_THROW(agla::generate(fine, at::ones({2, 1}, at::kLong), options, limits), agla::InvalidArgument);
  EXPECT_EQ(agla::decode_step(fine, at::ones({2, 1}, at::kLong), options).sizes(), at::IntArrayRef({2}));
}

}  // namespace
