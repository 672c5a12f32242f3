// Concurrent use of one const model: ImagePromptMatcher and decode_step called from several
// threads at once -- each thread with its own generator (and, for decoding, its own KV caches),
// all sharing the fixture BLIP weights -- give exactly the results of sequential calls. Runs in
// the AddressSanitizer build and, built with -DAGLA_SANITIZE=thread, under ThreadSanitizer, which
// sees agla's own code only (Debian's libtorch and its OpenMP runtime are not instrumented).
#include <ATen/CPUGeneratorImpl.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "agla/decode.hpp"
#include "agla/io/image.hpp"
#include "agla/ipm/matcher.hpp"
#include "agla/models/blip/captioner.hpp"
#include "agla/models/blip/itm.hpp"
#include "agla/runtime.hpp"

namespace {

const std::string kBlip = std::string(AGLA_TEST_DATA_DIR) + "/blip";
constexpr int kThreads = 4;
constexpr int kRounds = 3;
constexpr int64_t kSteps = 10;

struct MatchJob {
  int image = 0;
  std::string prompt;
};

/// What one matcher call produced that callers use downstream.
struct MatchResult {
  at::Tensor logits, grid, mask, augmented;
  double itc = 0;
};

MatchResult summarize(const agla::ipm::Match& m) { return {m.itm_logits, m.grid, m.mask, m.augmented, m.itc}; }

bool same(const MatchResult& a, const MatchResult& b) {
  return at::equal(a.logits, b.logits) && at::equal(a.grid, b.grid) && at::equal(a.mask, b.mask) &&
         at::equal(a.augmented, b.augmented) && a.itc == b.itc;
}

std::vector<at::Tensor> fixture_images() {
  return {agla::io::read_image(kBlip + "/images/astronaut_32.png"),
          agla::io::read_image(kBlip + "/images/chelsea_32.png")};
}

const std::vector<MatchJob>& match_jobs() {
  static const std::vector<MatchJob> jobs = {{0, "an astronaut in a white suit"},
                                             {1, "a cat lying on a sofa"},
                                             {0, "a flag"},
                                             {1, "is there a dog in the image?"},
                                             {0, "a rocket on the launch pad"}};
  return jobs;
}

/// Normalised pixels [1, 3, 32, 32] of a uint8 [32, 32, 3] image for the captioner.
at::Tensor pixels(const at::Tensor& hwc) { return agla::io::normalize_image(hwc).unsqueeze(0); }

/// `kSteps` AGLA decoding steps with `captioner` (its own caches) and a generator seeded `seed`.
std::vector<int64_t> decode_tokens(agla::blip::BlipCaptioner& captioner, const at::Tensor& original,
                                   const at::Tensor& augmented, uint64_t seed) {
  const agla::DecodeOptions options;  // AGLA: alpha 2, beta 0.5, sampling at temperature 1
  const at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::vector<int64_t> prompt = captioner.prompt("a picture of").ids;
  at::Tensor step = captioner.begin(
      agla::LvlmInputs::images(at::tensor(prompt, at::kLong).view({1, -1}), original, {augmented}));
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < kSteps; ++i) {
    const at::Tensor next = agla::decode_step(captioner, step, options, generator);
    tokens.push_back(next.item<int64_t>());
    step = next.unsqueeze(1);
  }
  return tokens;
}

/// Runs `body(thread)` on kThreads threads started together; returns the first error message.
template <typename Body>
std::string run_threads(Body body) {
  std::atomic<int> ready{0};
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      try {
        body(t);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const std::string& e : errors) {
    if (!e.empty()) return e;
  }
  return "";
}

/// Two intra-op threads, as a service would configure: libtorch's own parallel loops then run
/// inside each of the caller's threads too.
class ConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override { agla::configure_threads(2); }
};

}  // namespace

TEST_F(ConcurrencyTest, MatcherFromSeveralThreadsEqualsSequential) {
  const agla::blip::BlipItm model = agla::blip::BlipItm::load(kBlip + "/itm");
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(model);
  const std::vector<at::Tensor> images = fixture_images();
  const std::vector<MatchJob>& jobs = match_jobs();
  std::vector<MatchResult> sequential;
  for (const MatchJob& job : jobs) sequential.push_back(summarize(matcher.match(images[job.image], job.prompt)));

  std::vector<std::vector<MatchResult>> results(kThreads);
  const std::string error = run_threads([&](int t) {
    for (int round = 0; round < kRounds; ++round) {
      // Each thread walks the jobs from a different start, so different pairs run at the same time.
      for (size_t k = 0; k < jobs.size(); ++k) {
        const MatchJob& job = jobs[(k + static_cast<size_t>(t)) % jobs.size()];
        results[static_cast<size_t>(t)].push_back(summarize(matcher.match(images[job.image], job.prompt)));
      }
    }
  });
  ASSERT_EQ(error, "");
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(results[static_cast<size_t>(t)].size(), jobs.size() * kRounds);
    for (size_t i = 0; i < results[static_cast<size_t>(t)].size(); ++i) {
      const size_t job = (i % jobs.size() + static_cast<size_t>(t)) % jobs.size();
      EXPECT_TRUE(same(results[static_cast<size_t>(t)][i], sequential[job]))
          << "thread " << t << ", call " << i << " ('" << jobs[job].prompt << "') differs from the sequential result";
    }
  }
}

TEST_F(ConcurrencyTest, DecodeStepFromSeveralThreadsEqualsSequential) {
  // One set of weights; every thread gets its own captioner (its own KV caches) over that module.
  const agla::blip::BlipCaptioner shared = agla::blip::BlipCaptioner::load(kBlip + "/caption");
  std::vector<agla::blip::BlipCaptioner> captioners;
  for (int t = 0; t < kThreads; ++t) captioners.emplace_back(shared.module(), shared.tokenizer());
  const std::vector<at::Tensor> images = fixture_images();
  const at::Tensor original = pixels(images[0]);
  const at::Tensor augmented = pixels(images[1]);  // any second view will do for the arithmetic

  agla::blip::BlipCaptioner reference(shared.module(), shared.tokenizer());
  std::vector<std::vector<int64_t>> sequential;
  for (uint64_t seed = 1; seed <= kThreads * kRounds; ++seed) {
    sequential.push_back(decode_tokens(reference, original, augmented, seed));
  }
  // Different seeds give different samples, so equality below is not trivially satisfied.
  bool seeds_differ = false;
  for (const auto& tokens : sequential) seeds_differ = seeds_differ || tokens != sequential.front();
  EXPECT_TRUE(seeds_differ);

  std::vector<std::vector<std::vector<int64_t>>> results(kThreads);
  const std::string error = run_threads([&](int t) {
    for (int round = 0; round < kRounds; ++round) {
      const uint64_t seed = static_cast<uint64_t>(round * kThreads + t + 1);
      results[static_cast<size_t>(t)].push_back(
          decode_tokens(captioners[static_cast<size_t>(t)], original, augmented, seed));
    }
  });
  ASSERT_EQ(error, "");
  for (int t = 0; t < kThreads; ++t) {
    for (int round = 0; round < kRounds; ++round) {
      EXPECT_EQ(results[static_cast<size_t>(t)][static_cast<size_t>(round)],
                sequential[static_cast<size_t>(round * kThreads + t)])
          << "thread " << t << ", round " << round;
    }
  }
}

TEST_F(ConcurrencyTest, MatchingAndDecodingTogetherEqualSequential) {
  // The service shape: some threads build augmented views while others decode with them.
  const agla::blip::BlipItm itm = agla::blip::BlipItm::load(kBlip + "/itm");
  const agla::ipm::ImagePromptMatcher<agla::blip::BlipItm> matcher(itm);
  const agla::blip::BlipCaptioner shared = agla::blip::BlipCaptioner::load(kBlip + "/caption");
  std::vector<agla::blip::BlipCaptioner> captioners;
  for (int t = 0; t < kThreads; ++t) captioners.emplace_back(shared.module(), shared.tokenizer());
  const std::vector<at::Tensor> images = fixture_images();
  const std::vector<MatchJob>& jobs = match_jobs();

  // Sequential: match, then decode with the augmented view the match produced.
  std::vector<MatchResult> matched;
  std::vector<std::vector<int64_t>> decoded;
  agla::blip::BlipCaptioner reference(shared.module(), shared.tokenizer());
  for (size_t k = 0; k < jobs.size(); ++k) {
    matched.push_back(summarize(matcher.match(images[jobs[k].image], jobs[k].prompt)));
    decoded.push_back(
        decode_tokens(reference, pixels(images[jobs[k].image]), pixels(matched.back().augmented), 100 + k));
  }

  std::vector<int> mismatches(kThreads, 0);
  const std::string error = run_threads([&](int t) {
    for (int round = 0; round < kRounds; ++round) {
      for (size_t k = 0; k < jobs.size(); ++k) {
        const size_t job = (k + static_cast<size_t>(t)) % jobs.size();
        const MatchResult m = summarize(matcher.match(images[jobs[job].image], jobs[job].prompt));
        const std::vector<int64_t> tokens = decode_tokens(
            captioners[static_cast<size_t>(t)], pixels(images[jobs[job].image]), pixels(m.augmented), 100 + job);
        if (!same(m, matched[job]) || tokens != decoded[job]) ++mismatches[static_cast<size_t>(t)];
      }
    }
  });
  ASSERT_EQ(error, "");
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[static_cast<size_t>(t)], 0) << "thread " << t;
}
