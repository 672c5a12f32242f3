#pragma once
/// \file
/// Platform-independent random numbers for ShapesWorld. `std::mt19937_64` is fully specified by
/// the standard, but `std::uniform_*_distribution` and `std::normal_distribution` are not, so the
/// mapping from raw engine output to integers and probabilities is written out here: the same
/// seed gives the same scene bytes with every standard library and on every CPU.

#include <cstdint>
#include <random>

#include "agla/error.hpp"

namespace agla::shapesworld {

/// SplitMix64 finaliser: a bijective 64-bit mix used to derive independent seeds.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Seed of scene `index` of the stream `base`: scenes are independent of each other, so any
/// scene can be regenerated (or generated in parallel) from `(base, index)` alone.
inline std::uint64_t scene_seed(std::uint64_t base, std::uint64_t index) {
  return splitmix64(splitmix64(base) ^ splitmix64(index + 0x632BE59BD9B4E019ull));
}

/// A seeded random source with explicitly specified mappings (no implementation-defined
/// distributions, no floating-point transcendental functions).
class Rng {
 public:
  /// Seeds the underlying `std::mt19937_64` with `seed`.
  explicit Rng(std::uint64_t seed) : engine_(seed) {}

  /// The next raw 64-bit engine output.
  std::uint64_t next() { return engine_(); }

  /// Uniform integer in `[0, n)`, unbiased (rejection of the incomplete top block); `n >= 1`.
  std::uint64_t below(std::uint64_t n) {
    check<InvalidArgument>(n >= 1, "agla::shapesworld::Rng::below: n must be >= 1; got 0");
    const std::uint64_t limit = UINT64_MAX - (UINT64_MAX % n + 1) % n;
    std::uint64_t x = next();
    while (x > limit) x = next();
    return x % n;
  }

  /// Uniform integer in `[lo, hi]` (inclusive); `lo <= hi`.
  int between(int lo, int hi) {
    check<InvalidArgument>(lo <= hi, "agla::shapesworld::Rng::between: need lo <= hi; got [", lo, ", ", hi, "]");
    return lo + static_cast<int>(below(static_cast<std::uint64_t>(static_cast<std::int64_t>(hi) - lo + 1)));
  }

  /// Uniform double in `[0, 1)` with 53 random bits (exact, so comparisons are reproducible).
  double unit() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

  /// True with probability `p` (`p <= 0` never, `p >= 1` always).
  bool chance(double p) { return unit() < p; }

 private:
  std::mt19937_64 engine_;
};

}  // namespace agla::shapesworld
