#pragma once

/// @file
/// Kubernetes probe semantics as one reusable piece: `ProbeSpec` (initial delay,
/// period, timeout, success and failure thresholds), `ProbeTracker` (the
/// threshold state machine) and `probe_once` (one bounded probe).

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/scoped_call.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <fmt/format.h>

#include <exception>
#include <optional>
#include <string_view>

namespace rollout {

/// When and how often to probe, and how many results flip the state. The fields
/// and defaults are Kubernetes': `initialDelaySeconds` 0, `periodSeconds` 10,
/// `timeoutSeconds` 1, `successThreshold` 1, `failureThreshold` 3.
struct ProbeSpec {
  Duration initial_delay{0};                      ///< Wait before the first probe (>= 0).
  Duration period{std::chrono::seconds(10)};      ///< Time between probe starts (> 0).
  Duration timeout{std::chrono::seconds(1)};      ///< A probe still running after this counts as failed (> 0).
  int success_threshold = 1;                      ///< Consecutive successes to become ready (>= 1).
  int failure_threshold = 3;                      ///< Consecutive failures to become unhealthy (>= 1).

  /// Throws `invalid_option` naming `prefix.field` and the value for any field out of range.
  void validate(std::string_view prefix) const {
    require_duration(prefix, "initial_delay", initial_delay, DurationRule::non_negative);
    require_duration(prefix, "period", period, DurationRule::positive);
    require_duration(prefix, "timeout", timeout, DurationRule::positive);
    if (success_threshold < 1) {
      throw invalid_option(detail::format("{}.success_threshold", prefix), detail::format("{}", success_threshold), "must be at least 1");
    }
    if (failure_threshold < 1) {
      throw invalid_option(detail::format("{}.failure_threshold", prefix), detail::format("{}", failure_threshold), "must be at least 1");
    }
  }
};

/// The threshold state machine of one probed instance, as Kubernetes runs it for
/// readiness: an instance starts `unknown`, becomes `ready` after
/// `success_threshold` consecutive successes, and becomes `unhealthy` after
/// `failure_threshold` consecutive failures. Either state is left only by the
/// opposite threshold.
///
/// Beyond Kubernetes, `passing()` is stricter than `ready`: it also requires that
/// the latest `success_threshold` probes passed. Strategies only move traffic onto
/// instances that are passing, so a single failed probe defers a switch even
/// though it does not yet make the instance unhealthy.
class ProbeTracker {
public:
  enum class State { unknown, ready, unhealthy };

  /// What one result changed.
  enum class Change {
    none,
    became_passing,    ///< Now passing (first readiness, or recovered after a failed probe).
    became_unhealthy,  ///< Crossed the failure threshold.
  };

  explicit ProbeTracker(const ProbeSpec& spec) noexcept
      : success_threshold_(spec.success_threshold), failure_threshold_(spec.failure_threshold) {}

  /// Records one probe result.
  Change record(bool healthy) noexcept {
    ++probes_;
    if (healthy) {
      consecutive_failures_ = 0;
      ++consecutive_successes_;
      if (consecutive_successes_ == success_threshold_) {
        state_ = State::ready;
        return Change::became_passing;
      }
      return Change::none;
    }
    consecutive_successes_ = 0;
    ++consecutive_failures_;
    if (consecutive_failures_ == failure_threshold_ && state_ != State::unhealthy) {
      const bool was_ready = state_ == State::ready;
      state_ = State::unhealthy;
      ever_unhealthy_after_ready_ = ever_unhealthy_after_ready_ || was_ready;
      return Change::became_unhealthy;
    }
    return Change::none;
  }

  State state() const noexcept { return state_; }
  /// Ready, and the latest `success_threshold` probes all passed.
  bool passing() const noexcept { return state_ == State::ready && consecutive_successes_ >= success_threshold_; }
  /// Was ready at some point, then crossed the failure threshold.
  bool failed_after_ready() const noexcept { return ever_unhealthy_after_ready_; }
  int consecutive_successes() const noexcept { return consecutive_successes_; }
  int consecutive_failures() const noexcept { return consecutive_failures_; }
  long probes() const noexcept { return probes_; }

private:
  int success_threshold_;
  int failure_threshold_;
  State state_ = State::unknown;
  int consecutive_successes_ = 0;
  int consecutive_failures_ = 0;
  long probes_ = 0;
  bool ever_unhealthy_after_ready_ = false;
};

/// One probe of `instance`, bounded by `timeout` on `clock`. A probe that times
/// out, or that throws (which a conforming probe never does), is reported as
/// unhealthy with a detail that says so. Cancellation of the caller propagates.
template <Clock C, HealthProbe P>
boost::asio::awaitable<HealthResult> probe_once(const C& clock, P& probe, const Instance& instance, Duration timeout) {
  const auto started = clock.now();
  try {
    // `with_timeout`'s body, inline: one coroutine frame fewer on every probe.
    auto ex = co_await boost::asio::this_coro::executor;
    auto timer = clock.make_timer(ex);
    timer.expires_at(detail::add_saturating(started, timeout));
    std::optional<HealthResult> r;
    auto [order, e, ec] = co_await detail::race_with_timer(ex, timer, r, probe.check(instance));
    if (!detail::timer_race_won(order, e, ec)) {
      co_return HealthResult::down(detail::format("probe.check timed out after {}", format_duration(timeout)), clock.now() - started);
    }
    co_return std::move(*r);
  } catch (const boost::system::system_error& e) {
    if (e.code() == boost::asio::error::operation_aborted) throw;
    co_return HealthResult::down(detail::format("probe.check threw: {}", e.what()), clock.now() - started);
  } catch (const std::exception& e) {
    co_return HealthResult::down(detail::format("probe.check threw: {}", e.what()), clock.now() - started);
  }
}

namespace detail {

/// `probe_once` for a probe made from a `Task` (a worker of `scoped_for_each`):
/// the same results and details, but the timeout cancels the task's own thread
/// through `scope` instead of racing a child coroutine spawned per probe (see
/// `scoped_attempts`). A healthy result that arrives is used even if the
/// timeout fired at the same moment; an unhealthy one after it is a timeout. If
/// the task was stopped, a healthy result that arrived is returned, and
/// otherwise the cancellation propagates (`operation_aborted`, or the probe's
/// own exception). Not a coroutine itself; co_await it at once.
template <Clock C, HealthProbe P>
boost::asio::awaitable<HealthResult> probe_once(TaskScope scope, const C& clock, P& probe, const Instance& instance,
                                                Duration timeout) {
  return scoped_attempts<HealthResult>(
      std::move(scope), clock, timeout, [&probe, &instance] { return probe.check(instance); },
      [](const HealthResult& h) { return h.healthy; },
      [clock, timeout, started = clock.now()](std::optional<HealthResult>& r, bool expired, const std::exception_ptr& thrown,
                                              int) -> std::optional<Duration> {
        if (r && !expired) return std::nullopt;  // an unhealthy answer in time
        if (expired) {
          r = HealthResult::down(detail::format("probe.check timed out after {}", format_duration(timeout)), clock.now() - started);
          return std::nullopt;
        }
        try {
          std::rethrow_exception(thrown);
        } catch (const std::exception& e) {
          r = HealthResult::down(detail::format("probe.check threw: {}", e.what()), clock.now() - started);
        }
        return std::nullopt;
      });
}

}  // namespace detail

}  // namespace rollout

/// Formats as `unknown`, `ready` or `unhealthy`.
template <>
struct fmt::formatter<rollout::ProbeTracker::State> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::ProbeTracker::State s, FormatContext& ctx) const {
    using S = rollout::ProbeTracker::State;
    return fmt::formatter<std::string_view>::format(s == S::ready ? "ready" : s == S::unhealthy ? "unhealthy" : "unknown", ctx);
  }
};

/// Formats as `period 10s, timeout 1s, initial delay 0s, thresholds 1/3`.
template <>
struct fmt::formatter<rollout::ProbeSpec> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::ProbeSpec& p, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("period {}, timeout {}, initial delay {}, thresholds {}/{}", rollout::format_duration(p.period),
                                rollout::format_duration(p.timeout), rollout::format_duration(p.initial_delay), p.success_threshold,
                                p.failure_threshold),
        ctx);
  }
};
