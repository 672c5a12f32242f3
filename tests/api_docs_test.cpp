// The code snippets of README.md and docs/api.md, compiled and run. Each snippet lies between
// `// [docs:NAME]` and `// [docs:end]`; tests/check_doc_snippets.py (ctest: DocSnippetsTest) checks
// that every ```cpp block of those documents equals one of these regions, so the documented code
// is the code that is built and asserted here.
#include <agla/decode.hpp>
#include <agla/io/image.hpp>
#include <agla/ipm.hpp>
#include <agla/models/blip.hpp>
#include <agla/views.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <cstdint>
#include <string>
#include <vector>

namespace {

const std::string kModels = std::string(AGLA_SOURCE_DIR) + "/tools/data/models";
const std::string kSample = std::string(AGLA_SOURCE_DIR) + "/tools/data/sample.png";

// [docs:readme]
// A toy LVLM with the forward-functor contract. It keeps one "KV cache" per view (here only the
// number of positions fed); a real model runs its network where this computes the logits.
struct ToyLvlm {
  std::int64_t vocab = 32;
  std::array<std::int64_t, 2> fed{};  // positions fed to view 0 (original) and view 1 (augmented)

  // step_tokens [B, T] int64 (the prompt at the first step, then the last chosen token) -> [B, V]
  at::Tensor operator()(const at::Tensor& step_tokens, agla::View view) {
    fed[view.index] += step_tokens.size(1);
    const at::Tensor last = step_tokens.select(1, -1).to(at::kFloat).unsqueeze(1);  // [B, 1]
    const at::Tensor ids = at::arange(vocab, at::kFloat).unsqueeze(0);             // [1, V]
    const double shift = view.is_original() ? 0.0 : 0.5;  // the augmented image moves the logits
    return 3.0 * at::cos(ids * (0.3 + shift) + last + static_cast<double>(fed[view.index]));
  }
};

// AGLA with the settings of the released LLaVA-1.5 runs. One session per generation counts the
// steps, so the preset's local-view schedule (the augmented view on the first token only) holds.
at::Tensor decode_loop(ToyLvlm& lvlm, const at::Tensor& prompt, std::int64_t max_new_tokens) {
  agla::DecodeSession session(agla::DecodeOptions::llava_reference());
  auto generator = at::make_generator<at::CPUGeneratorImpl>(/*seed=*/1);
  std::vector<at::Tensor> generated;
  at::Tensor step_tokens = prompt;  // [B, T] int64
  for (std::int64_t i = 0; i < max_new_tokens; ++i) {
    const at::Tensor next = session.step(lvlm, step_tokens, generator);  // [B] int64
    generated.push_back(next);
    step_tokens = next.unsqueeze(1);  // [B, 1]: what the functor is fed next
  }
  return at::stack(generated, 1);  // [B, max_new_tokens]
}
// [docs:end]

// [docs:batched]
// The batched form: every view in one forward, [(1 + K) B, V], view-major (rows [0, B) are the
// original view). decode_step prefers it whenever every view runs, so it must have a body.
struct ToyBatchedLvlm {
  ToyLvlm views;  // serves both forms from the same per-view state

  at::Tensor operator()(const at::Tensor& step_tokens, agla::View view) { return views(step_tokens, view); }
  at::Tensor operator()(const at::Tensor& step_tokens, agla::AllViews) {
    return at::cat({views(step_tokens, agla::View::Original), views(step_tokens, agla::View::Augmented)});
  }
};
// [docs:end]

at::Tensor toy_prompt() { return at::tensor({3, 1, 4, 1, 5, 9, 2, 6}, at::kLong).view({2, 4}); }

TEST(ApiDocsTest, ReadmeLoopGivesTheTokensOfGenerate) {
  ToyLvlm by_loop;
  const at::Tensor looped = decode_loop(by_loop, toy_prompt(), 12);
  ToyLvlm by_generate;
  agla::GenerateOptions limits;
  limits.max_new_tokens = 12;
  const agla::GenerateResult result = agla::generate(by_generate, toy_prompt(), agla::DecodeOptions::llava_reference(),
                                                     limits, at::make_generator<at::CPUGeneratorImpl>(1));
  EXPECT_TRUE(at::equal(looped, result.tokens)) << looped << result.tokens;
  // The released schedule: the augmented view saw the prompt only, the original every token.
  EXPECT_EQ(by_loop.fed[1], 4);
  EXPECT_EQ(by_loop.fed[0], 4 + 11);
  EXPECT_EQ(by_loop.fed, by_generate.fed);
  // The paper's method differs: the augmented view shapes every token.
  ToyLvlm every;
  agla::generate(every, toy_prompt(), agla::DecodeOptions::agla(), limits, at::make_generator<at::CPUGeneratorImpl>(1));
  EXPECT_EQ(every.fed[1], 4 + 11);
}

TEST(ApiDocsTest, BatchedFormGivesThePlainFormsTokens) {
  ToyLvlm plain;
  ToyBatchedLvlm batched;
  agla::GenerateOptions limits;
  limits.max_new_tokens = 6;
  const auto a = agla::generate(plain, toy_prompt(), agla::DecodeOptions::agla(), limits,
                                at::make_generator<at::CPUGeneratorImpl>(3));
  const auto b = agla::generate(batched, toy_prompt(), agla::DecodeOptions::agla(), limits,
                                at::make_generator<at::CPUGeneratorImpl>(3));
  EXPECT_TRUE(at::equal(a.tokens, b.tokens));
  static_assert(agla::is_batched_forward_v<ToyBatchedLvlm> && !agla::is_batched_forward_v<ToyLvlm>);
}

TEST(ApiDocsTest, DecodeStepTakesTheStepIndex) {
  ToyLvlm lvlm;
  const at::Tensor prompt = toy_prompt();
  auto generator = at::make_generator<at::CPUGeneratorImpl>(1);
  // Without the index a scheduled preset is refused, before any forward.
  EXPECT_THROW(agla::decode_step(lvlm, prompt, agla::DecodeOptions::llava_reference(), generator),
               agla::InvalidArgument);
  EXPECT_EQ(lvlm.fed[0], 0);
  // [docs:decode-step]
  const agla::DecodeOptions options = agla::DecodeOptions::llava_reference();
  agla::StepControl control;
  at::Tensor log_probs;       // filled with the [B, V] log-softmax of the final scores
  control.log_probs = &log_probs;
  at::Tensor step_tokens = prompt;
  for (std::int64_t step = 0; step < 4; ++step) {
    control.step = step;      // the index of the token this call generates
    step_tokens = agla::decode_step(lvlm, step_tokens, options, generator, control).unsqueeze(1);
  }
  // [docs:end]
  EXPECT_EQ(lvlm.fed[1], 4);
  EXPECT_EQ(lvlm.fed[0], 4 + 3);
  ASSERT_TRUE(log_probs.defined());
  EXPECT_EQ(log_probs.sizes(), (at::IntArrayRef{2, 32}));
  // The chosen token of the last step has a finite log-probability.
  for (std::int64_t b = 0; b < 2; ++b)
    EXPECT_TRUE(std::isfinite(log_probs[b][step_tokens[b][0].item<std::int64_t>()].item<float>()));
}

TEST(ApiDocsTest, GenerateWithCallbackAndLimits) {
  ToyLvlm lvlm;
  const at::Tensor prompt = toy_prompt();
  // [docs:generate]
  agla::GenerateOptions limits;
  limits.max_new_tokens = 16;
  limits.eos_token_ids = {20};         // any of them ends a stream; it is kept in the output
  limits.pad_token_id = 0;             // what a finished stream emits and is fed
  limits.stop_sequences = {{11, 11}};  // a stream also ends when its tokens end with one of these
  std::vector<std::int64_t> steps;
  std::vector<std::vector<std::int64_t>> streamed;
  auto on_token = [&](std::int64_t step, const std::vector<std::int64_t>& tokens) {
    steps.push_back(step);       // 0, 1, 2, ...
    streamed.push_back(tokens);  // one token per stream (the pad id once a stream has ended)
  };
  const agla::GenerateResult result =
      agla::generate(lvlm, prompt, agla::DecodeOptions::agla(), limits,
                     at::make_generator<at::CPUGeneratorImpl>(/*seed=*/2), on_token);
  // result.tokens [B, N] int64 (CPU), result.lengths[b] tokens up to and including the EOS,
  // result.finished[b] whether stream b ended by EOS or a stop sequence.
  // [docs:end]
  const std::int64_t n = result.tokens.size(1);
  ASSERT_EQ(static_cast<std::int64_t>(streamed.size()), n);
  // With this seed stream 0 ends at its EOS (step 3) and stream 1 at the stop sequence (step 7),
  // so the loop stops after 8 steps with stream 0 padded.
  EXPECT_EQ(n, 8) << result.tokens;
  EXPECT_EQ(result.lengths, (std::vector<std::int64_t>{4, 8}));
  EXPECT_EQ(result.finished, (std::vector<bool>{true, true}));
  for (std::int64_t b = 0; b < 2; ++b) {
    const std::int64_t length = result.lengths[static_cast<size_t>(b)];
    ASSERT_LE(length, n);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t token = result.tokens[b][i].item<std::int64_t>();
      EXPECT_EQ(streamed[static_cast<size_t>(i)][static_cast<size_t>(b)], token);
      if (i >= length) {
        EXPECT_EQ(token, 0) << "padding after the end";
      }
    }
    if (result.finished[static_cast<size_t>(b)]) {
      const std::int64_t last = result.tokens[b][length - 1].item<std::int64_t>();
      const bool stop = length >= 2 && result.tokens[b][length - 2].item<std::int64_t>() == 11 && last == 11;
      EXPECT_TRUE(last == 20 || stop);
    } else {
      EXPECT_EQ(length, 16);
    }
  }
}

TEST(ApiDocsTest, SessionOverOwnPolicies) {
  ToyLvlm lvlm;
  const at::Tensor prompt = toy_prompt();
  // [docs:policies]
  // VCD's contrast after AGLA's assembly would nest the same way: ContrastFusion{b}(AssemblyFusion{a}(l, l2), l3).
  agla::DecodePolicies policies{agla::AssemblyFusion{2.0}, agla::BetaCutoff{0.5},
                                agla::chain(agla::TemperatureWarper{0.7}, agla::TopKWarper{5}),
                                agla::GreedySampler{}};
  policies.local_view_tokens = agla::DecodeOptions::kEveryToken;  // the paper's method
  agla::DecodeSession session(policies);
  at::Tensor step_tokens = prompt;
  for (int i = 0; i < 4; ++i) step_tokens = session.step(lvlm, step_tokens).unsqueeze(1);  // greedy: no generator
  // [docs:end]
  EXPECT_EQ(session.steps(), 4);
  EXPECT_EQ(lvlm.fed[1], 4 + 3);
  // Greedy over l + 2 l_aug under the cutoff, by hand for the first step.
  ToyLvlm reference;
  const at::Tensor l = reference(prompt, agla::View::Original);
  const at::Tensor l_aug = reference(prompt, agla::View::Augmented);
  const at::Tensor fused = (l + 2.0 * l_aug).masked_fill(l < l.amax(-1, true) + std::log(0.5f), -std::numeric_limits<float>::infinity());
  ToyLvlm again;
  agla::DecodeSession first(policies);
  EXPECT_TRUE(at::equal(first.step(again, prompt), fused.argmax(-1)));
}

TEST(ApiDocsTest, RawDecoderMatchesTheTorchPath) {
  // Logits of two views for a batch of 2 over 32 tokens, as an engine would hand them out.
  ToyLvlm lvlm;
  const at::Tensor l = lvlm(toy_prompt(), agla::View::Original).contiguous();
  const at::Tensor l_aug = lvlm(toy_prompt(), agla::View::Augmented).contiguous();
  const float* logits = l.data_ptr<float>();
  const float* logits_aug = l_aug.data_ptr<float>();
  // [docs:raw]
  agla::raw::Decoder decoder(agla::DecodeOptions::agla());
  decoder.reserve(/*batch=*/2, /*vocab=*/32);  // later steps of this size allocate nothing
  agla::raw::TorchSampler sampler(/*seed=*/1);  // the draws of torch.multinomial for seed 1
  std::int64_t tokens[2];
  // Under a schedule (llava_reference()) runs_local_view() turns false after the first token: the
  // augmented forward is then skipped and its logits may be null.
  decoder.step(logits, decoder.runs_local_view() ? logits_aug : nullptr, /*batch=*/2, /*vocab=*/32, sampler, tokens);
  const agla::raw::RowStats& stats = decoder.stats(0);  // stats.n_plausible tokens passed the cutoff
  // Any callable int64(const KeptRow&) samples: here the most probable kept token.
  auto most_probable = [](const agla::raw::KeptRow& row) {
    std::int64_t best = 0;
    for (std::int64_t i = 1; i < row.size; ++i)
      if (row.probs[i] > row.probs[best]) best = i;
    return static_cast<std::int64_t>(row.tokens[best]);
  };
  std::int64_t greedy[2];
  decoder.step(logits, logits_aug, 2, 32, most_probable, greedy);
  // [docs:end]
  EXPECT_EQ(decoder.steps(), 2);
  const at::Tensor expected =
      agla::decode_logits(l, l_aug, agla::DecodeOptions::agla(), at::make_generator<at::CPUGeneratorImpl>(1));
  EXPECT_EQ(tokens[0], expected[0].item<std::int64_t>());
  EXPECT_EQ(tokens[1], expected[1].item<std::int64_t>());
  const std::int64_t plausible = (l[0] >= l[0].max() + std::log(0.5f)).sum().item<std::int64_t>();
  EXPECT_EQ(stats.n_plausible, plausible);
  agla::DecodeOptions greedy_options;
  greedy_options.greedy = true;
  const at::Tensor argmax = agla::decode_logits(l, l_aug, greedy_options);
  EXPECT_EQ(greedy[0], argmax[0].item<std::int64_t>());
  EXPECT_EQ(greedy[1], argmax[1].item<std::int64_t>());
}

TEST(ApiDocsTest, PipelineOnTheShippedModels) {
  at::NoGradGuard no_grad;
  const std::string models = kModels;
  const std::string image_path = kSample;
  // [docs:load]
  const agla::io::LoadOptions load{at::kCPU, at::kFloat, /*zero_copy=*/true};
  const auto itm = agla::blip::BlipItm::load(models + "/shapesworld-itm", load);
  auto lvlm = agla::blip::BlipCaptioner::load(models + "/shapesworld-lvlm", load);
  static_assert(agla::check_lvlm<agla::blip::BlipCaptioner>());  // names a missing member
  // [docs:end]
  // [docs:pipeline]
  const at::Tensor image = agla::io::read_image(image_path);  // [H, W, 3] uint8
  // Image-prompt matching: GradCAM relevance, ITC similarity, the mask, AGLA's augmented view.
  const agla::ipm::ImagePromptMatcher matcher(itm);
  const agla::ipm::Match match = matcher.match(image, "the image");
  // match.itc, match.mask_ratio, match.kept_fraction; match.augmented [S, S, 3] uint8

  // The generation's inputs: the prompt batch, the original pixels and the augmented view.
  const agla::PromptBatch prompt = agla::batch_prompts({lvlm.prompt("")}, lvlm.tokens().pad_id);
  agla::LvlmInputs inputs;
  inputs.prompt = prompt;
  inputs.pixels = lvlm.preprocess(image).unsqueeze(0);  // [1, 3, S, S]
  inputs.views.push_back({agla::ViewKind::Image, lvlm.preprocess(match.augmented).unsqueeze(0), {}});
  inputs.max_new_tokens = 30;

  agla::GenerateOptions limits;
  limits.max_new_tokens = std::min<std::int64_t>(30, lvlm.room(prompt));
  limits.eos_token_ids = lvlm.tokens().stop_ids;
  limits.pad_token_id = lvlm.tokens().pad_id;
  const at::Tensor first = lvlm.begin(inputs);  // the first step's tokens
  const agla::GenerateResult result = agla::generate(lvlm, first, agla::DecodeOptions::agla(), limits,
                                                     at::make_generator<at::CPUGeneratorImpl>(1));
  const std::vector<std::int64_t> ids(result.tokens.data_ptr<std::int64_t>(),
                                      result.tokens.data_ptr<std::int64_t>() + result.lengths[0]);
  const std::string caption = lvlm.decode(ids);
  // [docs:end]
  EXPECT_GT(match.itc, 0.0);
  EXPECT_GT(match.kept_fraction, 0.0);
  EXPECT_LT(match.kept_fraction, 1.0);
  EXPECT_EQ(match.augmented.sizes(), (at::IntArrayRef{matcher.image_size(), matcher.image_size(), 3}));
  EXPECT_TRUE(result.finished[0]);
  // The shipped models caption the sample ("a red star, a yellow diamond and a purple circle").
  EXPECT_NE(caption.find("star"), std::string::npos) << caption;
  EXPECT_NE(caption.find("diamond"), std::string::npos) << caption;
}

TEST(ApiDocsTest, ViewsForTheOtherMethods) {
  at::NoGradGuard no_grad;
  auto lvlm = agla::blip::BlipCaptioner::load(kModels + "/shapesworld-lvlm");
  const at::Tensor image = agla::io::read_image(kSample);
  // [docs:views]
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(/*seed=*/1);
  const at::Tensor pixels = lvlm.preprocess(image).unsqueeze(0);  // [1, 3, S, S]
  // VCD: the image noised by forward diffusion to step 500 of 1000.
  const at::Tensor noised = agla::views::DiffusionNoiseView{}(pixels, generator);
  // RITUAL: one random transformation of the RGB image, drawn from its pool of six.
  const agla::views::Transform transform = agla::views::draw_transform(agla::views::ritual_pool(), generator);
  const at::Tensor transformed = agla::views::apply_transform(transform, image, generator);
  // ICD: the same image under a disturbed instruction (a text view).
  const agla::Prompt disturbed = lvlm.disturbed_prompt("", agla::views::default_icd_disturbance());

  agla::LvlmInputs inputs;
  inputs.prompt = agla::batch_prompts({lvlm.prompt("")}, lvlm.tokens().pad_id);
  inputs.pixels = pixels;
  inputs.views.push_back({agla::ViewKind::Image, noised, {}});
  inputs.views.push_back({agla::ViewKind::Image, lvlm.preprocess(transformed).unsqueeze(0), {}});
  inputs.views.push_back({agla::ViewKind::Text, {}, agla::batch_prompts({disturbed}, lvlm.tokens().pad_id)});
  // VACoDe-style selection: the view whose first-step distribution is farthest from the original's.
  const at::Tensor first = lvlm.begin(inputs);
  const at::Tensor all = lvlm(first, agla::AllViews{});  // [(1 + 3) B, V], view-major
  const at::Tensor farthest = agla::views::farthest_view(all.chunk(4));  // [B] int64 in 1..3
  // [docs:end]
  EXPECT_EQ(noised.sizes(), pixels.sizes());
  EXPECT_FALSE(at::equal(noised, pixels));
  EXPECT_EQ(transformed.dim(), 3);
  EXPECT_GT(disturbed.ids.size(), lvlm.prompt("").ids.size());
  EXPECT_EQ(all.size(0), 4);
  const std::int64_t k = farthest[0].item<std::int64_t>();
  EXPECT_GE(k, 1);
  EXPECT_LE(k, 3);
}

}  // namespace
