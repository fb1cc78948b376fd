#pragma once

/// @file
/// `rollout::Percent`: a share of traffic or of a fleet, stored exactly in basis points.

#include <rollout/core/error.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <compare>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace rollout {

/// A percentage between 0% and 100%, stored exactly as an integer number of basis
/// points (1 bp = 0.01%), so that 0.5% canaries and sums of weights never suffer
/// floating-point drift.
///
/// Construction validates the range. The checked constructors throw
/// `rollout::invalid_option` naming the value; `Percent::parse_basis_points` returns
/// a `result` instead. The literals `25_pct` and `0.5_pct` are checked at compile
/// time: an out-of-range or finer-than-0.01% literal does not compile.
class Percent {
public:
  /// The number of basis points in 100%.
  static constexpr std::int32_t full_scale = 10'000;

  /// 0%.
  constexpr Percent() noexcept = default;

  /// Builds from basis points (0..10000). Throws `invalid_option` naming `field`
  /// and the value when out of range.
  static constexpr Percent from_basis_points(std::int64_t bp, std::string_view field = "percent") {
    if (bp < 0 || bp > full_scale) {
      throw invalid_option(field, detail::format("{} basis points", bp), "must be within 0%..100% (0..10000 basis points)");
    }
    return Percent(static_cast<std::int32_t>(bp));
  }

  /// Builds from a whole number of percent (0..100). Throws `invalid_option` when out of range.
  static constexpr Percent from_percent(std::int64_t whole, std::string_view field = "percent") {
    if (whole < 0 || whole > 100) {
      throw invalid_option(field, detail::format("{}%", whole), "must be within 0%..100%");
    }
    return Percent(static_cast<std::int32_t>(whole * 100));
  }

  /// Non-throwing variant of `from_basis_points`.
  static result<Percent> parse_basis_points(std::int64_t bp) noexcept {
    if (bp < 0 || bp > full_scale) {
      return Error(errc::invalid_option, detail::format("{} basis points is outside 0..10000", bp));
    }
    return Percent(static_cast<std::int32_t>(bp));
  }

  /// 100%.
  static constexpr Percent full() noexcept { return Percent(full_scale); }

  /// The exact value in basis points.
  constexpr std::int32_t basis_points() const noexcept { return bp_; }
  /// The value as a fraction in [0, 1].
  constexpr double fraction() const noexcept { return bp_ / static_cast<double>(full_scale); }
  /// The value in percent, e.g. 12.5.
  constexpr double percent() const noexcept { return bp_ / 100.0; }

  constexpr bool is_zero() const noexcept { return bp_ == 0; }
  constexpr bool is_full() const noexcept { return bp_ == full_scale; }

  /// `n * this`, rounded up (Kubernetes' rule for max_surge).
  constexpr std::int64_t of_rounded_up(std::int64_t n) const noexcept {
    return (n * bp_ + full_scale - 1) / full_scale;
  }
  /// `n * this`, rounded down (Kubernetes' rule for max_unavailable).
  constexpr std::int64_t of_rounded_down(std::int64_t n) const noexcept { return (n * bp_) / full_scale; }

  /// The shortest exact text: `0.01%`, `0.5%`, `50%`, `100%`.
  std::string text() const {
    if (bp_ % 100 == 0) return detail::join_int({}, bp_ / 100, "%");
    const int frac = bp_ % 100;  // 1 to 99: a Percent is 0 to 100% (from_basis_points checks)
    std::string s = detail::join_int({}, bp_ / 100, ".");
    s += static_cast<char>('0' + frac / 10);
    if (frac % 10 != 0) s += static_cast<char>('0' + frac % 10);
    s += '%';
    return s;
  }

  /// The complement, 100% - this.
  constexpr Percent complement() const noexcept { return Percent(full_scale - bp_); }

  friend constexpr auto operator<=>(Percent, Percent) noexcept = default;

private:
  constexpr explicit Percent(std::int32_t bp) noexcept : bp_(bp) {}
  std::int32_t bp_ = 0;
};

/// Streams as `12.5%`.
template <class Ch, class Tr>
std::basic_ostream<Ch, Tr>& operator<<(std::basic_ostream<Ch, Tr>& os, Percent p) {
  return os << p.text();
}

/// Compile-time checked percentage literals: `using namespace rollout::literals;`.
namespace literals {

/// `25_pct` is 25%. Values above 100 do not compile.
consteval Percent operator""_pct(unsigned long long whole) {
  if (whole > 100) throw "percent literal above 100%";
  return Percent::from_basis_points(static_cast<std::int64_t>(whole) * 100);
}

/// `0.5_pct` is 0.5%. Values above 100, or finer than 0.01%, do not compile.
consteval Percent operator""_pct(long double value) {
  if (value < 0 || value > 100) throw "percent literal outside 0..100";
  const long double scaled = value * 100;
  const auto bp = static_cast<std::int64_t>(scaled + 0.5L);
  const long double diff = scaled - static_cast<long double>(bp);
  if (diff > 1e-6L || diff < -1e-6L) throw "percent literal finer than one basis point (0.01%)";
  return Percent::from_basis_points(bp);
}

}  // namespace literals

}  // namespace rollout

/// Formats as `12.5%` (shortest exact form: `0.01%`, `50%`, `100%`).
template <>
struct fmt::formatter<rollout::Percent> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::Percent p, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(p.text(), ctx);
  }
};
