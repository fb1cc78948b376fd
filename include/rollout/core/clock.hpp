#pragma once

/// @file
/// Time: `Duration`, `TimePoint`, the `Clock` and `Timer` concepts, the default
/// `SteadyClock`, `format_duration` for human-readable durations, and
/// `require_duration`, the bounds every duration option shares.

#include <rollout/core/error.hpp>
#include <rollout/detail/format.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rollout {

/// Every duration in rollout: nanosecond resolution, steady.
using Duration = std::chrono::steady_clock::duration;
/// Every point in time in rollout. Under the simulated clock it counts virtual
/// time from the clock's epoch; under `SteadyClock` it is `steady_clock::now()`.
using TimePoint = std::chrono::steady_clock::time_point;

/// A waitable timer as a `Clock` makes it: Asio's `basic_waitable_timer` interface,
/// reduced to what rollout uses.
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `t.expires_at(tp)` | any | Sets the expiry; cancels pending waits. |
/// | `t.expiry()` | `TimePoint` | The current expiry. |
/// | `t.cancel()` | any | Completes pending waits with `operation_aborted`. |
/// | `t.async_wait(token)` | per token | Completes at expiry; honours per-operation cancellation. |
template <class T>
concept Timer = requires(T& t, TimePoint tp) {
  t.expires_at(tp);
  { t.expiry() } -> std::convertible_to<TimePoint>;
  t.cancel();
  { t.async_wait(boost::asio::use_awaitable) } -> std::same_as<boost::asio::awaitable<void>>;
};

/// A source of time and timers. Every wait in rollout (probe periods, pauses,
/// analysis intervals, deadlines, timeouts, backoff) goes through the clock that a
/// strategy receives, so a test can swap in `rollout::testing::SimClock` and run
/// hours of rollout in milliseconds, deterministically.
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `c.now()` | `TimePoint` | The current time on this clock. |
/// | `c.make_timer(ex)` | a `Timer` | A timer bound to executor `ex` that measures time on this clock. |
///
/// Clocks are cheap handles: copies share the same time.
///
/// Minimal conforming clock (what `SteadyClock` is):
/// @code
/// struct MyClock {
///   rollout::TimePoint now() const { return std::chrono::steady_clock::now(); }
///   boost::asio::steady_timer make_timer(const boost::asio::any_io_executor& ex) const { return boost::asio::steady_timer(ex); }
/// };
/// @endcode
template <class C>
concept Clock = std::copy_constructible<C> && requires(const C& c, const boost::asio::any_io_executor& ex) {
  { c.now() } -> std::same_as<TimePoint>;
  { c.make_timer(ex) } -> Timer;
};

/// The default clock: real time through `std::chrono::steady_clock` and
/// `asio::steady_timer`.
struct SteadyClock {
  TimePoint now() const noexcept { return std::chrono::steady_clock::now(); }
  boost::asio::steady_timer make_timer(const boost::asio::any_io_executor& ex) const { return boost::asio::steady_timer(ex); }
};

/// Renders a duration for humans: `0s`, `250ms`, `1.5s`, `1m30s`, `10m`, `2h30m`, `-3s`.
/// Used by every formatter and error message in rollout, so that an invalid
/// option reads `probe.period = 0s` rather than `0ns`.
inline std::string format_duration(Duration d) {
  using namespace std::chrono;
  if (d == Duration::max()) return "forever";
  if (d < Duration::zero()) {
    if (d == Duration::min()) return "-forever";
    return detail::format("-{}", format_duration(-d));  // not "-" + s: g++ 12 -O3 warns falsely (PR 105651)
  }
  const auto ns = duration_cast<nanoseconds>(d).count();
  auto trimmed = [](double v) {
    std::string s = detail::format("{:.3f}", v);
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s;
  };
  constexpr std::int64_t s_ns = 1'000'000'000;
  constexpr std::int64_t min_ns = 60 * s_ns;
  if (ns == 0) return "0s";
  if (ns >= min_ns) {  // 1m30s, 5m0.01s, 2h30m, 2h0m40.007s
    const auto minutes_total = ns / min_ns;
    const auto rest = ns % min_ns;
    const auto h = minutes_total / 60, m = minutes_total % 60;
    std::string out = h > 0 ? detail::join_int({}, h, "h") : std::string();
    if (m > 0 || (h > 0 && rest > 0)) out += detail::join_int({}, m, "m");
    if (rest > 0) out += trimmed(static_cast<double>(rest) / 1e9) + "s";
    return out;
  }
  if (ns >= s_ns) return trimmed(static_cast<double>(ns) / 1e9) + "s";
  if (ns >= 1'000'000) return trimmed(static_cast<double>(ns) / 1e6) + "ms";
  if (ns >= 1'000) return trimmed(static_cast<double>(ns) / 1e3) + "us";
  return detail::join_int({}, ns, "ns");
}

/// The longest duration any option accepts: 366 days. No rollout waits that
/// long on purpose, and durations near `Duration::max()` would overflow the
/// deadline arithmetic (`now + d`), so a larger value is a mistake to report.
inline constexpr Duration max_option_duration = std::chrono::hours(24 * 366);

/// Which durations an option accepts besides the upper bound.
enum class DurationRule {
  positive,      ///< Greater than 0.
  non_negative,  ///< 0 or more.
};

namespace detail {

/// `now + d`, saturating at `TimePoint::max()` instead of overflowing.
inline TimePoint add_saturating(TimePoint now, Duration d) noexcept {
  if (d >= TimePoint::max() - now) return TimePoint::max();
  return now + d;
}

/// Why `d` breaks `rule` or the upper bound, or `std::nullopt` if it is
/// accepted: the one place the bounds of a duration option are decided.
inline std::optional<std::string> duration_problem(Duration d, DurationRule rule) {
  if (rule == DurationRule::positive && d <= Duration::zero()) return "must be greater than 0";
  if (rule == DurationRule::non_negative && d < Duration::zero()) return "must not be negative";
  if (d > max_option_duration) return detail::format("must be at most {}", format_duration(max_option_duration));
  return std::nullopt;
}
}  // namespace detail

/// Throws `invalid_option` naming `field` and `d` unless `d` follows `rule` and
/// is at most `max_option_duration`. Every option validator uses it, so every
/// duration option has the same bounds and the same messages.
inline void require_duration(std::string_view field, Duration d, DurationRule rule) {
  if (auto why = detail::duration_problem(d, rule)) throw invalid_option(field, format_duration(d), *why);
}

/// `require_duration` for the field `prefix.name`; the name is only built when
/// `d` is rejected (validators run for every strategy constructed).
inline void require_duration(std::string_view prefix, std::string_view name, Duration d, DurationRule rule) {
  if (auto why = detail::duration_problem(d, rule)) {
    throw invalid_option(detail::format("{}.{}", prefix, name), format_duration(d), *why);
  }
}

}  // namespace rollout
