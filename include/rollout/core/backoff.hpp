#pragma once

/// @file
/// `rollout::Backoff`: how a strategy retries a transient policy error.

#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace rollout {

/// The random source of retry jitter, one per strategy: Knuth's MMIX 64-bit linear
/// congruential generator, `x' = 6364136223846793005 x + 1442695040888963407 mod 2^64`,
/// so the same seed gives the same jitter on every platform. Its state is 8 bytes;
/// a `std::mt19937_64` has 2.5 KB, which was three quarters of a `Canary` object.
/// Jitter takes its top 53 bits, the well-mixed ones. Not for anything secret.
///
/// It produces exactly the numbers of `std::linear_congruential_engine<std::uint64_t,
/// 6364136223846793005, 1442695040888963407, 0>` (tests/test_core.cpp compares
/// them); it is written out here because that engine's header, `<random>`, was
/// 6 MB of g++'s front-end memory in every translation unit that includes
/// `<rollout/rollout.hpp>` (benchmarks/README.md, compile_bench), for three lines
/// of arithmetic. It satisfies `std::uniform_random_bit_generator`.
class JitterEngine {
public:
  using result_type = std::uint64_t;
  static constexpr result_type multiplier = 6364136223846793005ULL;
  static constexpr result_type increment = 1442695040888963407ULL;
  static constexpr result_type default_seed = 1;

  constexpr JitterEngine() noexcept = default;
  /// Starts from `seed` (any value; the increment is odd, so every seed gives the full period).
  constexpr explicit JitterEngine(result_type seed) noexcept : x_(seed) {}

  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }
  /// The next number (arithmetic modulo 2^64: unsigned overflow is the point).
  constexpr result_type operator()() noexcept {
    x_ = multiplier * x_ + increment;
    return x_;
  }

private:
  result_type x_ = default_seed;
};

/// Capped exponential backoff with jitter, used for every retried policy call
/// (load balancer applies, orchestrator calls). Only errors for which
/// `is_transient()` holds are retried; the rest fail at once.
///
/// The wait before retry `k` (k = 1, 2, ...) is
/// `min(max_delay, initial * multiplier^(k-1))`, reduced by a random fraction of
/// up to `jitter` ("equal jitter", so retries from many rollouts spread out but
/// never wait longer than the cap). The randomness comes from a `JitterEngine`
/// seeded with `seed`, so a run is reproducible.
struct Backoff {
  int max_attempts = 5;                                  ///< Attempts in total, including the first (>= 1).
  Duration initial{std::chrono::milliseconds(200)};      ///< Wait before the first retry (> 0).
  Duration max_delay{std::chrono::seconds(5)};           ///< Cap on any single wait (>= initial).
  double multiplier = 2.0;                               ///< Growth per retry (>= 1).
  double jitter = 0.2;                                   ///< Fraction in [0, 1] that may be taken off each wait.
  std::uint64_t seed = 0x5eed;                           ///< Seed of the jitter source.

  /// Throws `invalid_option` naming `prefix.field` and the value for any field out of range.
  void validate(std::string_view prefix) const {
    if (max_attempts < 1) {
      throw invalid_option(detail::format("{}.max_attempts", prefix), detail::format("{}", max_attempts), "must be at least 1");
    }
    require_duration(prefix, "initial", initial, DurationRule::positive);
    if (max_delay < initial) {
      throw invalid_option(detail::format("{}.max_delay", prefix), format_duration(max_delay),
                           detail::format("must be at least initial ({})", format_duration(initial)));
    }
    require_duration(prefix, "max_delay", max_delay, DurationRule::positive);
    if (!(multiplier >= 1.0) || multiplier > 1e6) {
      throw invalid_option(detail::format("{}.multiplier", prefix), detail::format("{}", multiplier), "must be within 1..1e6");
    }
    if (!(jitter >= 0.0 && jitter <= 1.0)) {
      throw invalid_option(detail::format("{}.jitter", prefix), detail::format("{}", jitter), "must be within 0..1");
    }
  }

  /// The wait before retry `k` (1-based), drawing jitter from `rng`: any
  /// generator of 64 random bits, such as `JitterEngine` or `std::mt19937_64`.
  template <class G>
    requires requires(G& g) {
      { g() } -> std::same_as<std::uint64_t>;
    } && (G::min() == 0 && G::max() == std::numeric_limits<std::uint64_t>::max())
  Duration delay(int k, G& rng) const {
    double d = static_cast<double>(initial.count());
    const double cap = static_cast<double>(max_delay.count());
    for (int i = 1; i < k && d < cap; ++i) d *= multiplier;
    d = std::min(d, cap);
    // 53 random bits scaled to [0, 1): the same on every standard library, unlike
    // std::uniform_real_distribution, so jitter is reproducible across platforms.
    const double unit = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    d *= 1.0 - jitter * unit;
    return Duration(static_cast<Duration::rep>(d));
  }
};

}  // namespace rollout

/// Formats as `5 attempts, 200ms x2 up to 5s, jitter 0.2`.
template <>
struct fmt::formatter<rollout::Backoff> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Backoff& b, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("{} attempts, {} x{} up to {}, jitter {}", b.max_attempts, rollout::format_duration(b.initial),
                                b.multiplier, rollout::format_duration(b.max_delay), b.jitter),
        ctx);
  }
};
