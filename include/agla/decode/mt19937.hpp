#pragma once
/// \file
/// MT19937, the generator behind `std::mt19937` and PyTorch's CPU generator, with a fast `discard`
/// and state access so that PyTorch's draws can be reproduced and skipped over. Free of libtorch.

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "agla/error.hpp"

namespace agla::raw {

/// The 32-bit Mersenne Twister MT19937, output-identical to `std::mt19937(seed)` and to PyTorch's
/// CPU generator engine (`at::mt19937`, seeded by `init_genrand`), with a `discard` that skips
/// outputs without tempering them.
class Mt19937 {
 public:
  /// Seeds like `std::mt19937(seed)` / `at::CPUGeneratorImpl(seed)` (the low 32 bits count).
  explicit Mt19937(std::uint64_t seed = 5489u) { reseed(seed); }

  /// Restarts the sequence from `seed`.
  void reseed(std::uint64_t seed) {
    state_[0] = static_cast<std::uint32_t>(seed);
    for (std::uint32_t i = 1; i < kN; ++i)
      state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + i;
    index_ = kN;
  }

  /// The next 32-bit output.
  std::uint32_t operator()() {
    if (index_ == kN) twist();
    std::uint32_t y = state_[index_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
  }

  /// Skips `count` outputs.
  void discard(std::uint64_t count) {
    while (count > 0) {
      if (index_ == kN) twist();
      const std::uint64_t take = std::min<std::uint64_t>(count, kN - index_);
      index_ += static_cast<std::uint32_t>(take);
      count -= take;
    }
  }

  /// The 624 state words.
  const std::uint32_t* words() const { return state_; }
  /// Position of the next output in the state, 1..624 (624: the state is twisted first).
  std::uint32_t position() const { return index_; }

  /// Restores a state saved by `words()` / `position()`; throws on a position outside 1..624.
  void set_state(const std::uint32_t* words, std::uint32_t position) {
    check<InvalidArgument>(position >= 1 && position <= kN,
                           "agla::raw::Mt19937::set_state: position must be in [1, 624]; got ", position);
    std::copy(words, words + kN, state_);
    index_ = position;
  }

  /// Smallest and largest output, for use as a UniformRandomBitGenerator.
  static constexpr std::uint32_t min() { return 0; }
  static constexpr std::uint32_t max() { return 0xffffffffu; }

 private:
  static constexpr std::uint32_t kN = 624;
  static constexpr std::uint32_t kM = 397;

  void twist() {
    auto mix = [](std::uint32_t upper, std::uint32_t lower, std::uint32_t shifted) {
      const std::uint32_t y = (upper & 0x80000000u) | (lower & 0x7fffffffu);
      return shifted ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    };
    std::uint32_t i = 0;
    for (; i < kN - kM; ++i) state_[i] = mix(state_[i], state_[i + 1], state_[i + kM]);
    for (; i < kN - 1; ++i) state_[i] = mix(state_[i], state_[i + 1], state_[i + kM - kN]);
    state_[kN - 1] = mix(state_[kN - 1], state_[0], state_[kM - 1]);
    index_ = 0;
  }

  std::uint32_t state_[kN];
  std::uint32_t index_ = kN;
};

/// One Exp(1) variate as PyTorch's CPU `exponential_` draws it for a float tensor without MKL
/// (ATen `exponential_distribution<double>` over `uniform_real_distribution<double>`): two outputs
/// `hi`, `lo`; `u = ((hi << 32 | lo) & (2^53 - 1)) * 2^-53`; `float(-log(1 - u))`.
inline float torch_exponential(Mt19937& engine) {
  const std::uint64_t hi = engine();
  const std::uint64_t lo = engine();
  const double u = static_cast<double>(((hi << 32) | lo) & ((std::uint64_t{1} << 53) - 1)) *
                   std::ldexp(1.0, -53);
  return static_cast<float>(-std::log(1.0 - u));
}

}  // namespace agla::raw
