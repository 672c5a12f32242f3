// The decoding step against the reference fixtures (tests/data/decode, README there), on the
// libtorch path and on the raw-float path, plus its properties and its error reporting.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <new>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agla/agla.hpp"

// Counts heap allocations, to check that the raw path allocates nothing after its warm-up step.
namespace {
std::atomic<long> heap_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* memory = std::malloc(size == 0 ? 1 : size)) return memory;
  throw std::bad_alloc();
}
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, std::size_t) noexcept { std::free(memory); }

namespace {

using nlohmann::json;

constexpr float kInf = std::numeric_limits<float>::infinity();
const std::string kDecodeDir = std::string(AGLA_TEST_DATA_DIR) + "/decode/";

const json& fixture_cases() {
  static const json cases = [] {
    std::ifstream in(kDecodeDir + "cases.json");
    return json::parse(in).at("cases");
  }();
  return cases;
}

at::Tensor load_logits(const json& test_case, const char* key) {
  return agla::io::read_npy(kDecodeDir + test_case.at(key).get<std::string>());
}

// The options a case describes; null generation arguments are the Hugging Face "not passed".
agla::DecodeOptions case_options(const json& test_case, agla::FusionMethod method) {
  agla::DecodeOptions options;
  options.method = method;
  options.alpha = test_case.at("alpha").get<double>();
  options.beta = test_case.at("beta").get<double>();
  const json& temperature = test_case.at("temperature");
  const json& top_k = test_case.at("top_k");
  const json& top_p = test_case.at("top_p");
  options.temperature = temperature.is_null() ? 1.0 : temperature.get<double>();
  options.top_k = top_k.is_null() ? 0 : top_k.get<std::int64_t>();
  options.top_p = top_p.is_null() ? 1.0 : top_p.get<double>();
  return options;
}

float as_float(const json& value) { return static_cast<float>(value.get<double>()); }

std::int64_t finite_count(const at::Tensor& row) { return at::isfinite(row).sum().item<std::int64_t>(); }

// Kept set exact and log-probs within the fixture tolerance, for one row of [V] log-probs.
void expect_kept(const json& kept_row, const float* log_probs, std::int64_t vocab) {
  std::map<std::int64_t, float> want;
  for (const json& entry : kept_row) want[entry.at(0).get<std::int64_t>()] = as_float(entry.at(1));
  std::set<std::int64_t> got;
  for (std::int64_t v = 0; v < vocab; ++v)
    if (log_probs[v] != -kInf) got.insert(v);
  std::set<std::int64_t> want_ids;
  for (const auto& entry : want) want_ids.insert(entry.first);
  EXPECT_EQ(got, want_ids);
  for (const auto& [token, value] : want) {
    const float tolerance = 1e-5f * std::max(1.0f, std::fabs(value));
    EXPECT_NEAR(log_probs[token], value, tolerance) << "token " << token;
  }
}

struct FusionCase {
  const char* key;
  agla::FusionMethod method;
};
constexpr FusionCase kFusions[] = {{"agla", agla::FusionMethod::Assembly},
                                   {"vcd", agla::FusionMethod::Contrast}};

// One fixture case under one fusion: its logits [B, V] as read, what it expects, and its options.
struct FixtureRun {
  const json& test_case;
  const json& want;
  const at::Tensor& logits;
  const at::Tensor& logits_aug;
  std::int64_t batch;
  std::int64_t vocab;
  agla::DecodeOptions options;
};

// Calls `check` on every case and fusion the fixtures give expectations for; returns how many.
template <typename Check>
int for_each_fixture_run(Check&& check) {
  int checked = 0;
  for (const json& test_case : fixture_cases()) {
    const at::Tensor logits = load_logits(test_case, "logits_file");
    const at::Tensor logits_aug = load_logits(test_case, "logits_aug_file");
    for (const FusionCase& fusion : kFusions) {
      const json& want = test_case.at(fusion.key);
      if (want.is_null()) continue;
      SCOPED_TRACE(test_case.at("name").get<std::string>() + " / " + fusion.key);
      check(FixtureRun{test_case, want, logits, logits_aug, logits.size(0), logits.size(1),
                       case_options(test_case, fusion.method)});
      ++checked;
    }
  }
  return checked;
}

// One warper stage of the torch path: applies `warper` to `scores` [B, V] when `active` and expects the
// fixture's per-row count of finite scores under `key`, which is null when the warper is inactive.
template <typename Warper>
void expect_warper_stage(bool active, const Warper& warper, at::Tensor& scores, const json& want, const char* key) {
  if (!active) {
    EXPECT_TRUE(want.at(key).is_null()) << key;
    return;
  }
  scores = warper(scores);
  for (std::int64_t b = 0; b < scores.size(0); ++b)
    EXPECT_EQ(finite_count(scores[b]), want.at(key).at(b).get<std::int64_t>()) << key << ", row " << b;
}

TEST(DecodeFixtureTest, TorchPathMatchesReference) {
  // agla's CPU sampler draws the exponential variates itself, the way a libtorch without MKL does,
  // so the seeded draws are compared on every build (torch.multinomial itself differs with MKL).
  const int checked = for_each_fixture_run([](FixtureRun run) {
    auto& [test_case, want, logits, logits_aug, batch, vocab, options] = run;
    // Stage by stage, with the public policies.
    const agla::BetaCutoff cutoff{options.beta};
    const at::Tensor cut = cutoff.cutoff(logits);
    at::Tensor scores = cutoff(logits, agla::MethodFusion{options.method, options.alpha}(logits, logits_aug));
    for (std::int64_t b = 0; b < batch; ++b) {
      EXPECT_EQ(cut[b][0].item<float>(), as_float(want.at("cutoff").at(b))) << "row " << b;
      EXPECT_EQ(finite_count(scores[b]), want.at("n_plausible").at(b).get<std::int64_t>());
    }
    if (options.temperature_active()) scores = agla::TemperatureWarper{options.temperature}(scores);
    expect_warper_stage(options.top_k_active(), agla::TopKWarper{options.top_k, options.min_tokens_to_keep}, scores,
                        want, "n_after_top_k");
    expect_warper_stage(options.top_p_active(), agla::TopPWarper{options.top_p, options.min_tokens_to_keep}, scores,
                        want, "n_after_top_p");

    // The whole step: log-probs, greedy, seeded draws.
    at::Tensor log_probs;
    agla::StepControl control;
    control.log_probs = &log_probs;
    options.greedy = true;
    const at::Tensor greedy = agla::decode_logits(logits, logits_aug, options, {}, control);
    ASSERT_EQ(greedy.sizes(), at::IntArrayRef({batch}));
    ASSERT_EQ(greedy.scalar_type(), at::kLong);
    EXPECT_TRUE(at::equal(log_probs, scores.log_softmax(-1)));
    for (std::int64_t b = 0; b < batch; ++b) {
      EXPECT_EQ(finite_count(log_probs[b]), want.at("n_kept").at(b).get<std::int64_t>());
      expect_kept(want.at("kept").at(b), log_probs[b].contiguous().data_ptr<float>(), vocab);
      EXPECT_EQ(greedy[b].item<std::int64_t>(), want.at("greedy").at(b).get<std::int64_t>());
    }
    {
      options.greedy = false;
      at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(test_case.at("seed").get<std::uint64_t>());
      for (const json& draw : want.at("draws")) {
        const at::Tensor tokens = agla::decode_logits(logits, logits_aug, options, generator);
        for (std::int64_t b = 0; b < batch; ++b)
          EXPECT_EQ(tokens[b].item<std::int64_t>(), draw.at(b).get<std::int64_t>()) << "row " << b;
      }
    }
  });
  EXPECT_EQ(checked, 83);
}

TEST(DecodeFixtureTest, RawPathMatchesReference) {
  const int checked = for_each_fixture_run([](const FixtureRun& run) {
    const auto& [test_case, want, as_read, as_read_aug, batch, vocab, options] = run;
    const at::Tensor logits = as_read.contiguous();
    const at::Tensor logits_aug = as_read_aug.contiguous();
    agla::raw::Decoder<> decoder(options);
    std::vector<std::int64_t> tokens(static_cast<size_t>(batch));
    std::vector<float> log_probs(static_cast<size_t>(batch * vocab));
    agla::raw::GreedySampler greedy;
    decoder.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), batch, vocab, greedy,
                 tokens.data(), log_probs.data());
    for (std::int64_t b = 0; b < batch; ++b) {
      const agla::raw::RowStats& stats = decoder.stats(b);
      EXPECT_EQ(stats.cutoff, as_float(want.at("cutoff").at(b)));
      EXPECT_EQ(stats.n_plausible, want.at("n_plausible").at(b).get<std::int64_t>());
      const json& top_k = want.at("n_after_top_k");
      const json& top_p = want.at("n_after_top_p");
      EXPECT_EQ(stats.n_after_top_k, top_k.is_null() ? -1 : top_k.at(b).get<std::int64_t>());
      EXPECT_EQ(stats.n_after_top_p, top_p.is_null() ? -1 : top_p.at(b).get<std::int64_t>());
      EXPECT_EQ(stats.n_kept, want.at("n_kept").at(b).get<std::int64_t>());
      expect_kept(want.at("kept").at(b), log_probs.data() + b * vocab, vocab);
      EXPECT_EQ(tokens[b], want.at("greedy").at(b).get<std::int64_t>());
    }
    agla::raw::TorchSampler sampler(test_case.at("seed").get<std::uint64_t>());
    for (const json& draw : want.at("draws")) {
      decoder.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), batch, vocab, sampler,
                   tokens.data());
      for (std::int64_t b = 0; b < batch; ++b)
        EXPECT_EQ(tokens[b], draw.at(b).get<std::int64_t>()) << "row " << b;
    }
  });
  EXPECT_EQ(checked, 83);
}

TEST(DecodeOptionsTest, PresetsReproduceReferenceRuns) {
  const agla::DecodeOptions llava = agla::DecodeOptions::llava_reference();
  EXPECT_EQ(llava.alpha, 2.0);
  EXPECT_EQ(llava.beta, 0.5);
  EXPECT_FALSE(llava.temperature_active() || llava.top_k_active() || llava.top_p_active());
  EXPECT_TRUE(llava.uses_local_view(0));
  EXPECT_FALSE(llava.uses_local_view(1));
  const agla::DecodeOptions blip = agla::DecodeOptions::instructblip_reference();
  EXPECT_EQ(blip.top_k, 50);
  EXPECT_TRUE(blip.with_local_view_everywhere().uses_local_view(1000));
  EXPECT_TRUE(agla::DecodeOptions{}.uses_local_view(1000));

  // The fixtures' two preset cases decode identically through the presets.
  for (const json& test_case : fixture_cases()) {
    const std::string name = test_case.at("name").get<std::string>();
    if (name != "v32000_llava_agla_default" && name != "v32000_instructblip_agla_default") continue;
    agla::DecodeOptions options = name == "v32000_llava_agla_default" ? llava : blip;
    options.greedy = true;
    const agla::DecodeOptions from_case = [&] {
      agla::DecodeOptions o = case_options(test_case, agla::FusionMethod::Assembly);
      o.greedy = true;
      return o;
    }();
    const at::Tensor logits = load_logits(test_case, "logits_file");
    const at::Tensor logits_aug = load_logits(test_case, "logits_aug_file");
    at::Tensor preset_lp;
    at::Tensor case_lp;
    agla::StepControl control;
    control.log_probs = &preset_lp;
    agla::decode_logits(logits, logits_aug, options, {}, control);
    control.log_probs = &case_lp;
    agla::decode_logits(logits, logits_aug, from_case, {}, control);
    EXPECT_TRUE(at::equal(preset_lp, case_lp)) << name;
  }
}

TEST(DecodeOptionsTest, RejectsOutOfRangeOptions) {
  auto expect_invalid = [](auto mutate, const char* field) {
    agla::DecodeOptions options;
    mutate(options);
    try {
      options.validate();
      ADD_FAILURE() << field << " accepted";
    } catch (const agla::InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
    }
  };
  expect_invalid([](auto& o) { o.alpha = -0.1; }, "alpha");
  expect_invalid([](auto& o) { o.alpha = std::nan(""); }, "alpha");
  expect_invalid([](auto& o) { o.beta = 0.0; }, "beta");
  expect_invalid([](auto& o) { o.beta = 1.5; }, "beta");
  expect_invalid([](auto& o) { o.temperature = 0.0; }, "temperature");
  expect_invalid([](auto& o) { o.top_k = -1; }, "top_k");
  expect_invalid([](auto& o) { o.top_p = 0.0; }, "top_p");
  expect_invalid([](auto& o) { o.top_p = 1.01; }, "top_p");
  expect_invalid([](auto& o) { o.min_tokens_to_keep = 0; }, "min_tokens_to_keep");
  expect_invalid([](auto& o) { o.local_view_tokens = -1; }, "local_view_tokens");
  agla::DecodeOptions bad;
  bad.beta = 2.0;
  const at::Tensor logits = at::zeros({1, 4});
  EXPECT_THROW(agla::decode_logits(logits, logits, bad), agla::InvalidArgument);
  EXPECT_THROW(agla::raw::Decoder<>{bad}, agla::InvalidArgument);
}

// Random logits with a realistic spread, on the CPU.
struct TwoViews {
  at::Tensor logits;
  at::Tensor logits_aug;
};
TwoViews random_logits(std::int64_t batch, std::int64_t vocab, std::uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor logits = at::randn({batch, vocab}, generator) * 3.0;
  return {logits, at::randn({batch, vocab}, generator) * 3.0};
}

TEST(DecodePropertyTest, AlphaZeroAndTinyBetaIsPlainSampling) {
  const auto [logits, logits_aug] = random_logits(3, 500, 7);
  agla::DecodeOptions agla_options;
  agla_options.alpha = 0.0;
  agla_options.beta = 1e-30;  // log(beta) = -69: nothing is cut
  agla::DecodeOptions plain;
  plain.method = agla::FusionMethod::Plain;
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(11);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(11);
  agla::raw::Decoder<> raw_agla(agla_options);
  agla::raw::Decoder<> raw_plain(plain);
  agla::raw::TorchSampler s1(11);
  agla::raw::TorchSampler s2(11);
  std::vector<std::int64_t> t1(3);
  std::vector<std::int64_t> t2(3);
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(at::equal(agla::decode_logits(logits, logits_aug, agla_options, g1),
                          agla::decode_logits(logits, logits_aug, plain, g2)));
    raw_agla.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), 3, 500, s1, t1.data());
    raw_plain.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), 3, 500, s2, t2.data());
    EXPECT_EQ(t1, t2);
  }
  // Plain sampling is torch.multinomial(softmax(l)) itself, and leaves the generator where
  // torch.multinomial leaves it (the next draw from it agrees too).
  if (at::hasMKL()) {
    std::cout << "libtorch is built with MKL: torch.multinomial draws exponentials with MKL and "
                 "differs from the reference algorithm; comparison with it skipped\n";
    return;
  }
  at::Generator g3 = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Generator g4 = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::equal(agla::decode_logits(logits, logits_aug, plain, g3),
                          at::multinomial(logits.softmax(-1), 1, false, g4).squeeze(1)));
    EXPECT_TRUE(at::equal(at::rand({7}, g3), at::rand({7}, g4)));
  }
}

TEST(DecodePropertyTest, BetaOneKeepsOnlyTheMaximumAndTies) {
  at::Tensor logits = at::randn({2, 50}, at::make_generator<at::CPUGeneratorImpl>(3));
  logits[0][4] = 9.0f;
  logits[0][17] = 9.0f;
  logits[1][30] = 8.5f;
  const at::Tensor logits_aug = at::randn({2, 50}, at::make_generator<at::CPUGeneratorImpl>(4)) * 10.0;
  agla::DecodeOptions options;
  options.beta = 1.0;
  at::Tensor log_probs;
  agla::StepControl control;
  control.log_probs = &log_probs;
  agla::decode_logits(logits, logits_aug, options, at::make_generator<at::CPUGeneratorImpl>(1), control);
  EXPECT_TRUE(at::equal(at::isfinite(log_probs[0]).nonzero().flatten(), at::tensor({4L, 17L})));
  EXPECT_TRUE(at::equal(at::isfinite(log_probs[1]).nonzero().flatten(), at::tensor({30L})));
  agla::raw::Decoder<> raw(options);
  agla::raw::GreedySampler greedy;
  std::vector<std::int64_t> tokens(2);
  const at::Tensor aug = logits_aug.contiguous();
  raw.step(logits.data_ptr<float>(), aug.data_ptr<float>(), 2, 50, greedy, tokens.data());
  EXPECT_EQ(raw.stats(0).n_kept, 2);
  EXPECT_EQ(raw.stats(1).n_kept, 1);
  EXPECT_EQ(tokens[1], 30);
}

TEST(DecodePropertyTest, StreamsInABatchAreIndependent) {
  const auto [logits, logits_aug] = random_logits(3, 300, 21);
  agla::DecodeOptions options;
  options.top_k = 20;
  options.temperature = 0.8;
  at::Tensor changed = logits.clone();
  changed[0] = at::randn({300}, at::make_generator<at::CPUGeneratorImpl>(99)) * 5.0;
  at::Tensor lp_a;
  at::Tensor lp_b;
  agla::StepControl control;
  for (int i = 0; i < 10; ++i) {
    at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(100 + i);
    at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(100 + i);
    control.log_probs = &lp_a;
    const at::Tensor a = agla::decode_logits(logits, logits_aug, options, g1, control);
    control.log_probs = &lp_b;
    const at::Tensor b = agla::decode_logits(changed, logits_aug, options, g2, control);
    EXPECT_TRUE(at::equal(a.slice(0, 1), b.slice(0, 1)));
    EXPECT_TRUE(at::equal(lp_a.slice(0, 1), lp_b.slice(0, 1)));
    agla::raw::Decoder<> raw(options);
    agla::raw::TorchSampler s1(100 + i);
    agla::raw::TorchSampler s2(100 + i);
    std::vector<std::int64_t> t1(3);
    std::vector<std::int64_t> t2(3);
    raw.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), 3, 300, s1, t1.data());
    raw.step(changed.data_ptr<float>(), logits_aug.data_ptr<float>(), 3, 300, s2, t2.data());
    EXPECT_EQ(t1[1], t2[1]);
    EXPECT_EQ(t1[2], t2[2]);
  }
  // A stream decoded alone gets the same distribution as inside the batch.
  at::Tensor alone;
  control.log_probs = &alone;
  agla::decode_logits(logits.slice(0, 2, 3), logits_aug.slice(0, 2, 3), options,
                      at::make_generator<at::CPUGeneratorImpl>(1), control);
  EXPECT_TRUE(at::equal(alone[0], lp_a[2]));
}

TEST(DecodePropertyTest, SameSeedSameTokens) {
  const TwoViews views = random_logits(4, 1000, 5);
  const at::Tensor& logits = views.logits;
  const at::Tensor& logits_aug = views.logits_aug;
  agla::DecodeOptions options;
  options.beta = 0.05;
  auto run = [&](std::uint64_t seed) {
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    std::vector<at::Tensor> tokens;
    for (int i = 0; i < 8; ++i) tokens.push_back(agla::decode_logits(logits, logits_aug, options, generator));
    return at::stack(tokens);
  };
  EXPECT_TRUE(at::equal(run(3), run(3)));
  EXPECT_FALSE(at::equal(run(3), run(4)));
  auto run_raw = [&](std::uint64_t seed) {
    agla::raw::Decoder<> decoder(options);
    agla::raw::FastSampler<> sampler(seed);
    std::vector<std::int64_t> tokens(4 * 8);
    for (int i = 0; i < 8; ++i)
      decoder.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), 4, 1000, sampler, tokens.data() + 4 * i);
    return tokens;
  };
  EXPECT_EQ(run_raw(3), run_raw(3));
  EXPECT_NE(run_raw(3), run_raw(4));
}

TEST(DecodePropertyTest, FastSamplerFollowsTheDistribution) {
  // Four hand-checkable tokens: after the cutoff (beta 0.01) all stay; probs = softmax(l + l_aug).
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  const std::vector<float> zeros(4, 0.0f);
  agla::DecodeOptions options;
  options.alpha = 1.0;
  options.beta = 0.01;
  agla::raw::Decoder<> decoder(options);
  agla::raw::FastSampler<> sampler(2024);
  std::vector<int> counts(4, 0);
  std::int64_t token = 0;
  constexpr int kDraws = 40000;
  for (int i = 0; i < kDraws; ++i) {
    decoder.step(logits.data(), zeros.data(), 1, 4, sampler, &token);
    ++counts[static_cast<size_t>(token)];
  }
  for (int v = 0; v < 4; ++v)
    EXPECT_NEAR(counts[v] / double(kDraws), (v + 1) / 10.0, 0.01) << "token " << v;
}

TEST(DecodePropertyTest, RawAndTorchPathsAgreeOnRandomLogits) {
  const auto [logits, logits_aug] = random_logits(3, 5000, 77);
  for (double top_p : {1.0, 0.9}) {
    agla::DecodeOptions options;
    options.top_p = top_p;
    options.temperature = 0.7;
    options.top_k = 100;
    options.beta = 0.02;
    at::Tensor torch_lp;
    agla::StepControl control;
    control.log_probs = &torch_lp;
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(8);
    const at::Tensor torch_tokens = agla::decode_logits(logits, logits_aug, options, generator, control);
    agla::raw::Decoder<> decoder(options);
    agla::raw::TorchSampler sampler(8);
    std::vector<std::int64_t> tokens(3);
    std::vector<float> raw_lp(3 * 5000);
    decoder.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), 3, 5000, sampler, tokens.data(),
                 raw_lp.data());
    const at::Tensor raw_lp_tensor = at::from_blob(raw_lp.data(), {3, 5000});
    EXPECT_TRUE(at::equal(at::isfinite(raw_lp_tensor), at::isfinite(torch_lp)));
    const at::Tensor finite = at::isfinite(torch_lp);
    EXPECT_TRUE(raw_lp_tensor.masked_select(finite).allclose(torch_lp.masked_select(finite), 1e-5, 1e-5));
    for (std::int64_t b = 0; b < 3; ++b) EXPECT_EQ(tokens[b], torch_tokens[b].item<std::int64_t>());
  }
}

TEST(PlausibilityTest, LogBetaIsTakenInFloat32LikeTorch) {
  // README step 1: log(float32(0.9)), not the float32 rounding of the double log.
  const at::Tensor zeros = at::zeros({1, 4});
  EXPECT_EQ(agla::BetaCutoff{0.9}.cutoff(zeros).item<float>(), -0.10536054521799088f);
  EXPECT_EQ(agla::BetaCutoff{0.9}.log_beta(), at::log(at::tensor(0.9f)).item<float>());
  agla::DecodeOptions options;
  options.beta = 0.9;
  agla::raw::Decoder<> decoder(options);
  agla::raw::GreedySampler greedy;
  std::int64_t token = -1;
  decoder.step(zeros.data_ptr<float>(), zeros.data_ptr<float>(), 1, 4, greedy, &token);
  EXPECT_EQ(decoder.stats(0).cutoff, -0.10536054521799088f);
  EXPECT_EQ(token, 0);  // four exact ties: the lowest id
  // Strictly-less: a logit equal to the cutoff stays.
  const at::Tensor edge = torch::tensor({{0.0f, -0.10536054521799088f, -0.2f}});
  EXPECT_EQ(finite_count(agla::BetaCutoff{0.9}(edge, edge)[0]), 2);
}

TEST(DecodePolicyTest, TopKAndTopPFollowHuggingFaceRules) {
  const at::Tensor scores = torch::tensor({{1.0f, 3.0f, 3.0f, 2.0f, -kInf}});
  // Ties with the k-th value all survive.
  EXPECT_TRUE(at::equal(at::isfinite(agla::TopKWarper{2}(scores)), torch::tensor({{false, true, true, false, false}})));
  // top_k above the vocabulary keeps everything finite.
  EXPECT_TRUE(at::equal(agla::TopKWarper{10}(scores), scores));
  // min_tokens_to_keep raises k.
  EXPECT_EQ(finite_count(agla::TopKWarper{1, 4}(scores)[0]), 4);
  // Nucleus: probs of {3, 3} are ~0.42 each; top_p 0.5 keeps the largest two.
  EXPECT_EQ(finite_count(agla::TopPWarper{0.5}(scores)[0]), 2);
  EXPECT_EQ(finite_count(agla::TopPWarper{0.01}(scores)[0]), 1);
  EXPECT_EQ(finite_count(agla::TopPWarper{0.01, 3}(scores)[0]), 3);
  // The HF activation rule: temperature 1, top_k 0, top_p 1 apply nothing (not even top-p with
  // p = 1, which would drop tokens whose probability underflows to 0).
  const at::Tensor underflow = torch::tensor({{0.0f, -200.0f, -300.0f}});
  EXPECT_TRUE(at::equal(agla::HfWarpers{1.0, 0, 1.0}(underflow), underflow));
  EXPECT_EQ(finite_count(agla::TopPWarper{1.0}(underflow)[0]), 1);
  // Chains apply left to right.
  const at::Tensor chained = agla::chain(agla::TemperatureWarper{0.5}, agla::TopKWarper{1})(scores);
  EXPECT_EQ(chained[0][1].item<float>(), 6.0f);
  EXPECT_EQ(finite_count(chained[0]), 2);
}

TEST(DecodePolicyTest, VcdChainsAfterAglaWithAThirdView) {
  // Three views: AGLA's assembly of original and augmented, then VCD's contrast with a distorted
  // view, under the cutoff of the original view -- a user fusion built from the library's policies.
  const auto [logits, logits_aug] = random_logits(2, 200, 31);
  const at::Tensor logits_noise = at::randn({2, 200}, at::make_generator<at::CPUGeneratorImpl>(32));
  auto three_views = [&](const at::Tensor& l, const at::Tensor& l_aug) {
    return agla::ContrastFusion{0.5}(agla::AssemblyFusion{2.0}(l, l_aug), logits_noise);
  };
  const agla::DecodePolicies policies{three_views, agla::BetaCutoff{0.1}, agla::NoWarper{}, agla::GreedySampler{}};
  at::Tensor log_probs;
  agla::StepControl control;
  control.log_probs = &log_probs;
  const at::Tensor tokens = agla::decode_logits(logits, logits_aug, policies, {}, control);
  const at::Tensor fused = (logits + 2.0f * logits_aug) * 1.5f - 0.5f * logits_noise;
  const at::Tensor want = fused.masked_fill(logits < logits.amax(-1, true) + std::log(0.1f), -kInf);
  EXPECT_TRUE(at::equal(tokens, want.argmax(-1)));
  EXPECT_TRUE(at::equal(at::isfinite(log_probs), at::isfinite(want)));
  // The same composition works elementwise on the raw path.
  auto three_views_raw = [&](float l, float l_aug) { return agla::ContrastFusion{0.5}(agla::AssemblyFusion{2.0}(l, l_aug), 0.0f); };
  agla::DecodeOptions options;
  options.beta = 0.1;
  agla::raw::Decoder<decltype(three_views_raw)> raw(options, three_views_raw);
  agla::raw::GreedySampler greedy;
  std::vector<std::int64_t> raw_tokens(2);
  raw.step(logits.data_ptr<float>(), logits_aug.data_ptr<float>(), 2, 200, greedy, raw_tokens.data());
  const at::Tensor want_raw = ((logits + 2.0f * logits_aug) * 1.5f)
                                  .masked_fill(logits < logits.amax(-1, true) + std::log(0.1f), -kInf)
                                  .argmax(-1);
  EXPECT_EQ(raw_tokens[0], want_raw[0].item<std::int64_t>());
  EXPECT_EQ(raw_tokens[1], want_raw[1].item<std::int64_t>());
}

// ---------------------------------------------------------------------------------------------
// The family of decoders (docs/decoding.md): each preset on four-token cases worked out by hand,
// on the libtorch path and the raw path, including where the cutoff and the fusion disagree.

// One step of `options` on the given views (original first), greedy, on both paths: the token of
// each path and the torch path's final log-probabilities.
struct MethodStep {
  std::int64_t torch_token = -1, raw_token = -1;
  std::vector<float> log_probs;
};

MethodStep run_method(agla::DecodeOptions options, const std::vector<std::vector<float>>& views,
                      std::int64_t step = 0) {
  options.greedy = true;
  std::vector<at::Tensor> tensors;
  for (const auto& view : views) tensors.push_back(at::tensor(view, at::kFloat).view({1, -1}));
  agla::StepControl control;
  control.step = step;
  at::Tensor log_probs;
  control.log_probs = &log_probs;
  MethodStep out;
  out.torch_token = agla::decode_views(tensors, agla::policies_from(options), {}, control).item<std::int64_t>();
  out.log_probs.assign(log_probs.data_ptr<float>(), log_probs.data_ptr<float>() + log_probs.numel());
  agla::raw::Decoder<> raw(options);
  for (std::int64_t i = 0; i < step; ++i) {  // advance the decoder's own step count to `step`
    std::vector<const float*> extras;
    for (std::size_t k = 1; k < views.size(); ++k) extras.push_back(views[k].data());
    agla::raw::GreedySampler greedy;
    std::int64_t ignored = 0;
    raw.step(views[0].data(), extras.data(), static_cast<std::int64_t>(extras.size()), 1,
             static_cast<std::int64_t>(views[0].size()), greedy, &ignored);
  }
  std::vector<const float*> extras;
  for (std::size_t k = 1; k < views.size(); ++k) extras.push_back(views[k].data());
  agla::raw::GreedySampler greedy;
  std::vector<float> raw_log_probs(views[0].size());
  raw.step(views[0].data(), extras.data(), static_cast<std::int64_t>(extras.size()), 1,
           static_cast<std::int64_t>(views[0].size()), greedy, &out.raw_token, raw_log_probs.data());
  for (std::size_t v = 0; v < raw_log_probs.size(); ++v) {
    if (std::isinf(out.log_probs[v])) {
      EXPECT_TRUE(std::isinf(raw_log_probs[v])) << "token " << v;
    } else {
      EXPECT_NEAR(raw_log_probs[v], out.log_probs[v], 1e-5f) << "token " << v;
    }
  }
  EXPECT_EQ(out.raw_token, out.torch_token);
  return out;
}

// Log-softmax of `scores` with -inf where `keep` is false (the expected final log-probabilities).
std::vector<float> expected_log_probs(const std::vector<double>& scores, const std::vector<bool>& keep) {
  double top = -1e300, sum = 0;
  for (std::size_t v = 0; v < scores.size(); ++v)
    if (keep[v]) top = std::max(top, scores[v]);
  for (std::size_t v = 0; v < scores.size(); ++v)
    if (keep[v]) sum += std::exp(scores[v] - top);
  std::vector<float> out(scores.size(), -kInf);
  for (std::size_t v = 0; v < scores.size(); ++v)
    if (keep[v]) out[v] = static_cast<float>(scores[v] - top - std::log(sum));
  return out;
}

void expect_log_probs(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t v = 0; v < got.size(); ++v) {
    if (std::isinf(want[v])) {
      EXPECT_TRUE(std::isinf(got[v]) && got[v] < 0) << "token " << v << " should be removed; got " << got[v];
    } else {
      EXPECT_NEAR(got[v], want[v], 2e-5f) << "token " << v;
    }
  }
}

TEST(DecoderFamilyTest, AglaAssemblesAndTheCutoffOverrulesTheLocalView) {
  // l = [2, 1, 0, -5], l_aug = [0, 5, 0, 0]: fused l + 2 l_aug = [2, 11, 0, -5]. Beta 0.5 keeps only
  // tokens with l >= 2 + log 0.5 = 1.307: token 0 alone, although the local view prefers token 1.
  const std::vector<std::vector<float>> views = {{2, 1, 0, -5}, {0, 5, 0, 0}};
  const MethodStep agla = run_method(agla::DecodeOptions::agla(), views);
  EXPECT_EQ(agla.torch_token, 0);
  expect_log_probs(agla.log_probs, expected_log_probs({2, 11, 0, -5}, {true, false, false, false}));
  // RITUAL's weight 3 and beta 0.1 (cutoff 2 - 2.303 = -0.303): tokens 0, 1 and 2 survive, fused
  // [2, 16, 0, ...]: the transformed view wins.
  const MethodStep ritual = run_method(agla::DecodeOptions::ritual(), views);
  EXPECT_EQ(ritual.torch_token, 1);
  expect_log_probs(ritual.log_probs, expected_log_probs({2, 16, 0, -5}, {true, true, true, false}));
}

TEST(DecoderFamilyTest, ContrastMethodsSubtractTheDistortedView) {
  // VCD / ICD / VACoDe: (1 + 1) l - l' with beta 0.1. l = [3, 2.9, 0, -1], l' = [3, 0, 0, 0]:
  // fused [3, 5.8, 0, -2]; cutoff 3 - 2.303 = 0.697 keeps tokens 0 and 1.
  const std::vector<std::vector<float>> views = {{3, 2.9f, 0, -1}, {3, 0, 0, 0}};
  for (const agla::DecodeOptions& options :
       {agla::DecodeOptions::vcd(), agla::DecodeOptions::icd(), agla::DecodeOptions::vacode()}) {
    const MethodStep step = run_method(options, views);
    EXPECT_EQ(step.torch_token, 1);
    expect_log_probs(step.log_probs, expected_log_probs({3, 5.8, 0, -2}, {true, true, false, false}));
  }
  // The plain original would pick token 0: the contrast is what moved the choice.
  EXPECT_EQ(run_method(agla::DecodeOptions::regular(), views).torch_token, 0);
}

TEST(DecoderFamilyTest, M3idWeightGrowsWithTheGeneratedTokenIndex) {
  // M3ID: l + (l - l_u) (1 - g) / g, g = exp(-0.02 t). l = [1, 1.05, -3, -3], l_u = [0, 2, 0, 0].
  const std::vector<std::vector<float>> views = {{1, 1.05f, -3, -3}, {0, 2, 0, 0}};
  auto fused_at = [&](double t) {
    const double w = std::exp(0.02 * t) - 1;  // (1 - g) / g
    std::vector<double> out;
    for (std::size_t v = 0; v < 4; ++v) out.push_back(views[0][v] + (views[0][v] - views[1][v]) * w);
    return out;
  };
  // Beta 0.1: cutoff 1.05 - 2.303 keeps tokens 0 and 1. t = 1 (paper counting) at step 0: weight
  // 0.0202 -> [1.0202, 1.0308]: token 1 still wins.
  const MethodStep first = run_method(agla::DecodeOptions::m3id(), views, 0);
  EXPECT_EQ(first.torch_token, 1);
  expect_log_probs(first.log_probs, expected_log_probs(fused_at(1), {true, true, false, false}));
  // At step 49 (t = 50, weight e - 1 = 1.718) the no-image view's preference for token 1 is
  // penalised: [2.718, 0.2124] -> token 0.
  const MethodStep later = run_method(agla::DecodeOptions::m3id(), views, 49);
  EXPECT_EQ(later.torch_token, 0);
  expect_log_probs(later.log_probs, expected_log_probs(fused_at(50), {true, true, false, false}));
  // The RITUAL harness counts t from 0: the first token is the original's alone.
  agla::DecodeOptions zero_based = agla::DecodeOptions::m3id();
  zero_based.m3id_first_t = 0;
  expect_log_probs(run_method(zero_based, views, 0).log_probs, expected_log_probs(fused_at(0), {true, true, false, false}));
  // Log-probability space gives the same distribution (one constant per row cancels).
  agla::DecodeOptions in_log_probs = agla::DecodeOptions::m3id();
  in_log_probs.space = agla::FusionSpace::LogProbs;
  expect_log_probs(run_method(in_log_probs, views, 49).log_probs, later.log_probs);
}

TEST(DecoderFamilyTest, PaiContrastsLogProbabilitiesWithTheNoImageView) {
  // gamma (log p - log p_u) + log p_u with gamma 1.1, beta 0.1 on log p, greedy.
  const std::vector<std::vector<float>> views = {{2, 1.9f, 0, -4}, {1, 3, 0, 0}};
  auto log_softmax = [](const std::vector<float>& x) {
    double top = *std::max_element(x.begin(), x.end()), sum = 0;
    for (float v : x) sum += std::exp(v - top);
    std::vector<double> out;
    for (float v : x) out.push_back(v - top - std::log(sum));
    return out;
  };
  const std::vector<double> lp = log_softmax(views[0]), lu = log_softmax(views[1]);
  std::vector<double> fused;
  for (std::size_t v = 0; v < 4; ++v) fused.push_back(1.1 * (lp[v] - lu[v]) + lu[v]);
  // Cutoff log 0.1 + max log p (2.303 below the top) keeps tokens 0, 1 and 2; token 1 is what the
  // no-image view likes, so the contrast picks token 0.
  const MethodStep pai = run_method(agla::DecodeOptions::pai(), views);
  EXPECT_EQ(pai.torch_token, 0);
  expect_log_probs(pai.log_probs, expected_log_probs(fused, {true, true, true, false}));
}

TEST(DecoderFamilyTest, AglaThenVcdChainsThreeViews) {
  // (1 + 1)(l + 2 l_aug) - l_noise with beta 0.5, as one DecodeOptions.
  agla::DecodeOptions options = agla::DecodeOptions::agla();
  options.further_views = {{agla::FusionMethod::Contrast, 1.0}};
  EXPECT_EQ(options.extra_views(), 2);
  const std::vector<std::vector<float>> views = {{2, 1.8f, 0, -1}, {0, 0.5f, 0, 0}, {0, 3, 0, 0}};
  // Cutoff 2 + log 0.5 = 1.307 keeps tokens 0 and 1; fused [4, 2*(1.8+1) - 3 = 2.6, ...].
  const MethodStep step = run_method(options, views);
  EXPECT_EQ(step.torch_token, 0);
  expect_log_probs(step.log_probs, expected_log_probs({4, 2.6, 0, -2}, {true, true, false, false}));
  // Without the third view's contrast token 1 would win: 1.8 + 2 * 0.5 = 2.8 > 2.
  EXPECT_EQ(run_method(agla::DecodeOptions::agla(), {views[0], views[1]}).torch_token, 1);
}

TEST(DecoderFamilyTest, RefusesCombinationsThatMeanNothing) {
  agla::DecodeOptions plain = agla::DecodeOptions::regular();
  plain.further_views = {{agla::FusionMethod::Contrast, 1.0}};
  EXPECT_THROW(plain.validate(), agla::InvalidArgument);
  agla::DecodeOptions unfused = agla::DecodeOptions::agla();
  unfused.further_views = {{agla::FusionMethod::Plain, 1.0}};
  EXPECT_THROW(unfused.validate(), agla::InvalidArgument);
  agla::DecodeOptions heavy = agla::DecodeOptions::vcd();
  heavy.alpha = 1e38;
  try {
    heavy.validate();
    FAIL() << "no error";
  } catch (const agla::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("alpha must be in [0, 10000]"), std::string::npos) << e.what();
  }
  // M3ID's weight needs the step index: a bare decode_views call without it is refused.
  const std::vector<at::Tensor> views = {at::randn({1, 8}), at::randn({1, 8})};
  EXPECT_THROW(agla::decode_views(views, agla::policies_from(agla::DecodeOptions::m3id())), agla::InvalidArgument);
  // Three views for a two-view method, or one extra view for a three-view method.
  agla::DecodeOptions chain = agla::DecodeOptions::agla();
  chain.further_views = {{agla::FusionMethod::Contrast, 1.0}};
  EXPECT_THROW(agla::decode_views(views, agla::policies_from(chain)), agla::ShapeError);
  EXPECT_THROW(agla::decode_views({views[0], views[1], views[1]}, agla::policies_from(agla::DecodeOptions::agla())),
               agla::ShapeError);
}

TEST(DecoderFamilyTest, ExistingTwoViewResultsAreUnchanged) {
  // AGLA and VCD through decode_views equal the two-view policies composed by hand, bit for bit.
  const at::Tensor l = at::randn({3, 500}, at::make_generator<at::CPUGeneratorImpl>(41));
  const at::Tensor l_aug = at::randn({3, 500}, at::make_generator<at::CPUGeneratorImpl>(42));
  for (const agla::DecodeOptions& options : {agla::DecodeOptions::agla(), agla::DecodeOptions::vcd()}) {
    at::Tensor by_options, by_hand;
    agla::StepControl a, b;
    a.log_probs = &by_options;
    b.log_probs = &by_hand;
    agla::decode_logits(l, l_aug, options, at::make_generator<at::CPUGeneratorImpl>(3), a);
    const agla::MethodFusion fusion{options.method, options.alpha};
    const agla::DecodePolicies policies{fusion, agla::BetaCutoff{options.beta}, agla::HfWarpers::from(options),
                                        agla::MultinomialSampler{}};
    agla::decode_logits(l, l_aug, policies, at::make_generator<at::CPUGeneratorImpl>(3), b);
    EXPECT_TRUE(at::equal(by_options, by_hand));
  }
}

template <typename Error, typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const Error& error) {
    for (const std::string& fragment : fragments)
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos)
          << "'" << fragment << "' not in: " << error.what();
  }
}

TEST(DecodeErrorTest, RejectsBadLogits) {
  const agla::DecodeOptions options;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
  const at::Tensor good = at::randn({2, 10});
  expect_error<agla::ShapeError>([&] { agla::decode_logits(good, at::randn({2, 11}), options, generator); },
                                 {"agla::decode_step", "same [B, V]", "[2, 11]"});
  expect_error<agla::ShapeError>([&] { agla::decode_logits(at::randn({0, 10}), at::randn({0, 10}), options, generator); },
                                 {"non-empty"});
  expect_error<agla::ShapeError>([&] { agla::decode_logits(good.to(at::kHalf), good, options, generator); },
                                 {"[B, V] float", "Half"});
  expect_error<agla::ShapeError>([&] { agla::decode_logits(at::randn({1, 3, 10}), at::randn({1, 3, 10}), options, generator); },
                                 {"[1, 3, 10]"});
  at::Tensor nan_logits = good.clone();
  nan_logits[1][7] = std::nanf("");
  expect_error<agla::NumericError>([&] { agla::decode_logits(nan_logits, good, options, generator); },
                                   {"original logits", "stream 1", "token 7", "nan"});
  at::Tensor inf_aug = good.clone();
  inf_aug[0][3] = kInf;
  expect_error<agla::NumericError>([&] { agla::decode_logits(good, inf_aug, options, generator); },
                                   {"augmented logits", "stream 0", "token 3", "inf"});
  at::Tensor all_neg_inf = good.clone();
  all_neg_inf[1].fill_(-kInf);
  expect_error<agla::NumericError>([&] { agla::decode_logits(all_neg_inf, good, options, generator); },
                                   {"stream 1", "all -inf"});
  // VCD is undefined where the distorted view is -inf on a plausible token: +inf after fusion.
  agla::DecodeOptions vcd;
  vcd.method = agla::FusionMethod::Contrast;
  at::Tensor neg_aug = good.clone();
  neg_aug[0][good[0].argmax().item<std::int64_t>()] = -kInf;
  expect_error<agla::NumericError>([&] { agla::decode_logits(good, neg_aug, vcd, generator); },
                                   {"final scores", "stream 0"});
  expect_error<agla::InvalidArgument>([&] { agla::decode_logits(good, good, options); }, {"generator"});
  expect_error<agla::InvalidArgument>([&] { agla::MultinomialSampler{}(good.to(at::kMeta), generator); },
                                      {"generator must be on the scores' device"});
  agla::DecodeOptions never = options;
  never.finite_check = agla::FiniteCheck::Never;
  EXPECT_NO_THROW(agla::decode_logits(good, good, never, generator));
}

TEST(DecodeErrorTest, RawPathRejectsBadLogits) {
  const agla::DecodeOptions options;
  agla::raw::Decoder<> decoder(options);
  agla::raw::GreedySampler greedy;
  std::vector<float> logits(2 * 100, 0.5f);
  std::vector<float> logits_aug(2 * 100, 0.0f);
  std::vector<std::int64_t> tokens(2);
  logits[100 + 42] = std::nanf("");
  expect_error<agla::NumericError>([&] { decoder.step(logits.data(), logits_aug.data(), 2, 100, greedy, tokens.data()); },
                                   {"original logits", "stream 1", "token 42"});
  logits[100 + 42] = 0.5f;
  logits_aug[7] = kInf;
  expect_error<agla::NumericError>([&] { decoder.step(logits.data(), logits_aug.data(), 2, 100, greedy, tokens.data()); },
                                   {"augmented logits", "stream 0", "token 7"});
  expect_error<agla::ShapeError>([&] { decoder.step(logits.data(), logits_aug.data(), 0, 100, greedy, tokens.data()); },
                                 {"batch >= 1"});
  agla::DecodeOptions vcd;
  vcd.method = agla::FusionMethod::Contrast;
  agla::raw::Decoder<> contrast(vcd);
  logits_aug[7] = -kInf;
  expect_error<agla::NumericError>([&] { contrast.step(logits.data(), logits_aug.data(), 2, 100, greedy, tokens.data()); },
                                   {"fusion gave inf", "stream 0", "token 7"});
}

TEST(RawHeaderTest, StepsAllocateNothingAfterWarmUp) {
  const TwoViews views = random_logits(4, 32000, 12);
  agla::DecodeOptions options;
  options.top_k = 40;
  options.top_p = 0.9;
  options.temperature = 0.8;
  options.beta = 0.05;
  agla::raw::Decoder<> decoder(options);
  agla::raw::FastSampler<> fast(1);
  agla::raw::TorchSampler compatible(1);
  agla::raw::GreedySampler greedy;
  std::vector<std::int64_t> tokens(4);
  std::vector<float> log_probs(4 * 32000);
  const float* logits = views.logits.data_ptr<float>();
  const float* logits_aug = views.logits_aug.data_ptr<float>();
  decoder.step(logits, logits_aug, 4, 32000, fast, tokens.data(), log_probs.data());
  const long before = heap_allocations.load();
  for (int i = 0; i < 5; ++i) {
    decoder.step(logits, logits_aug, 4, 32000, fast, tokens.data(), log_probs.data());
    decoder.step(logits, logits_aug, 4, 32000, compatible, tokens.data());
    decoder.step(logits, logits_aug, 4, 32000, greedy, tokens.data());
  }
  EXPECT_EQ(heap_allocations.load(), before);
  EXPECT_GT(decoder.stats(0).n_kept, 0);
}

// The raw decoder counts its steps like agla::DecodeSession: under the released preset the
// augmented logits are required on the first step and ignored (the original stands in) afterwards.
TEST(RawHeaderTest, DecoderAppliesTheLocalViewSchedule) {
  const TwoViews views = random_logits(2, 300, 31);
  const float* logits = views.logits.data_ptr<float>();
  const float* logits_aug = views.logits_aug.data_ptr<float>();
  agla::raw::Decoder<> released(agla::DecodeOptions::llava_reference());
  agla::raw::Decoder<> sharpened(agla::DecodeOptions::llava_reference());
  agla::raw::GreedySampler greedy;
  std::vector<std::int64_t> a(2), b(2);
  std::vector<float> lp_a(600), lp_b(600);
  EXPECT_TRUE(released.runs_local_view());
  EXPECT_THROW(released.step(logits, nullptr, 2, 300, greedy, a.data()), agla::InvalidArgument);
  EXPECT_EQ(released.steps(), 0);
  released.step(logits, logits_aug, 2, 300, greedy, a.data());
  sharpened.step(logits, logits_aug, 2, 300, greedy, b.data());
  EXPECT_FALSE(released.runs_local_view());
  EXPECT_EQ(released.steps(), 1);
  // Step 1: the augmented logits are not read; the step equals fusing the original with itself.
  released.step(logits, logits_aug, 2, 300, greedy, a.data(), lp_a.data());
  sharpened.step(logits, nullptr, 2, 300, greedy, b.data(), lp_b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(lp_a, lp_b);
  agla::raw::Decoder<> every(agla::DecodeOptions::llava_reference().with_local_view_everywhere());
  every.step(logits, logits_aug, 2, 300, greedy, b.data());
  every.step(logits, logits_aug, 2, 300, greedy, b.data(), lp_b.data());
  EXPECT_NE(lp_a, lp_b);  // the paper's method keeps using the augmented view
  released.reset();
  EXPECT_TRUE(released.runs_local_view());
}

TEST(RawHeaderTest, MersenneTwisterMatchesStandardAndTorch) {
  agla::raw::Mt19937 ours(1094);
  std::mt19937 standard(1094);
  for (int i = 0; i < 3000; ++i) ASSERT_EQ(ours(), standard());
  ours.discard(100003);
  standard.discard(100003);
  EXPECT_EQ(ours(), standard());
  // PyTorch's CPU generator: random64 = (first << 32) | second.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(77);
  agla::raw::Mt19937 mirror(77);
  auto* impl = generator.get<at::CPUGeneratorImpl>();
  for (int i = 0; i < 10; ++i) {
    const std::uint64_t hi = mirror();
    const std::uint64_t lo = mirror();
    EXPECT_EQ(impl->random64(), (hi << 32) | lo);
  }
}

TEST(RawHeaderTest, CompilesWithoutLibtorch) {
  // agla/decode/raw.hpp must build with only Eigen and the standard library on the include path,
  // and must not pull in any libtorch header from the system include directories either.
  std::string eigen;
  for (const char* dir : {"/usr/include/eigen3", "/usr/local/include/eigen3"})
    if (std::ifstream(std::string(dir) + "/Eigen/Core").good()) eigen = dir;
  if (eigen.empty() || std::system("c++ --version > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "no c++ compiler or Eigen headers found to compile raw.hpp standalone";
  const std::string source = ::testing::TempDir() + "agla_raw_only.cpp";
  {
    std::ofstream out(source);
    out << "#include \"agla/decode/raw.hpp\"\n"
           "#if defined(C10_API) || defined(TORCH_API) || defined(AT_ERROR) || defined(C10_MACROS_MACROS_H_)\n"
           "#error \"agla/decode/raw.hpp includes libtorch\"\n"
           "#endif\n"
           "int main() {\n"
           "  agla::raw::Decoder<> decoder(agla::DecodeOptions{});\n"
           "  agla::raw::TorchSampler sampler(1);\n"
           "  const float logits[4] = {0, 2, 1.5f, -1};\n"
           "  const float aug[4] = {0, 0.5f, 3, 9};\n"
           "  std::int64_t token = -1;\n"
           "  decoder.step(logits, aug, 1, 4, sampler, &token);\n"
           "  return token == 2 ? 0 : 1;\n"
           "}\n";
  }
  const std::string binary = ::testing::TempDir() + "agla_raw_only";
  const std::string command = "c++ -std=c++17 -O1 -I" + std::string(AGLA_SOURCE_DIR) + "/include -I" + eigen +
                              " " + source + " -o " + binary + " && " + binary;
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

}  // namespace
