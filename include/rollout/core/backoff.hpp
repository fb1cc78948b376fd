#pragma once

/// @file
/// `rollout::Backoff`: how a strategy retries a transient policy error.

#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <string_view>

namespace rollout {

/// The random source of retry jitter, one per strategy: Knuth's MMIX 64-bit linear
/// congruential generator, as the standard library defines it, so the same seed
/// gives the same jitter on every platform. Its state is 8 bytes; a
/// `std::mt19937_64` has 2.5 KB, which was three quarters of a `Canary` object.
/// Jitter takes its top 53 bits, the well-mixed ones. Not for anything secret.
using JitterEngine = std::linear_congruential_engine<std::uint64_t, 6364136223846793005ULL, 1442695040888963407ULL, 0>;

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
      throw invalid_option(fmt::format("{}.max_attempts", prefix), fmt::format("{}", max_attempts), "must be at least 1");
    }
    require_duration(prefix, "initial", initial, DurationRule::positive);
    if (max_delay < initial) {
      throw invalid_option(fmt::format("{}.max_delay", prefix), format_duration(max_delay),
                           fmt::format("must be at least initial ({})", format_duration(initial)));
    }
    require_duration(prefix, "max_delay", max_delay, DurationRule::positive);
    if (!(multiplier >= 1.0) || multiplier > 1e6) {
      throw invalid_option(fmt::format("{}.multiplier", prefix), fmt::format("{}", multiplier), "must be within 1..1e6");
    }
    if (!(jitter >= 0.0 && jitter <= 1.0)) {
      throw invalid_option(fmt::format("{}.jitter", prefix), fmt::format("{}", jitter), "must be within 0..1");
    }
  }

  /// The wait before retry `k` (1-based), drawing jitter from `rng`: any
  /// generator of 64 random bits, such as `JitterEngine` or `std::mt19937_64`.
  template <std::uniform_random_bit_generator G>
    requires(G::min() == 0 && G::max() == std::numeric_limits<std::uint64_t>::max())
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
        fmt::format("{} attempts, {} x{} up to {}, jitter {}", b.max_attempts, rollout::format_duration(b.initial),
                    b.multiplier, rollout::format_duration(b.max_delay), b.jitter),
        ctx);
  }
};
