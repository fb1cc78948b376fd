#pragma once

/// @file
/// `rollout::Event`, the `Observer` hook and `ObserverList`.

#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <concepts>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rollout {

/// What happened. Every strategy reports the same kinds, so one observer (a log,
/// a webhook, an invariant checker) understands all of them.
enum class EventKind {
  run_started,          ///< `run()` began; `detail` names the from/to revisions.
  phase_changed,        ///< The strategy entered a new phase; `subject` is the phase.
  instance_ready,       ///< An instance passed `success_threshold` consecutive probes (again).
  probe_failed,         ///< One probe of `subject` failed; `detail` says why.
  instance_unhealthy,   ///< `subject` crossed `failure_threshold` consecutive failed probes.
  check_started,        ///< A user check or an analysis began; `subject` names it.
  check_passed,         ///< ... and passed.
  check_failed,         ///< ... and failed.
  check_inconclusive,   ///< ... and was inconclusive.
  awaiting_promotion,   ///< The run waits for `control().promote()` (or the auto-promote timer).
  promote_requested,    ///< `promote()` or `promote_full()` was called.
  abort_requested,      ///< `abort()` was called, or the caller cancelled `run()`.
  paused,               ///< The run paused (by request or because analysis was inconclusive).
  resumed,              ///< The run resumed.
  traffic_applied,      ///< The load balancer confirmed `split` (read back and verified).
  lb_error,             ///< A load balancer call failed; `error` says how. It may be retried.
  step_started,         ///< A plan step began; `subject` is the step.
  step_completed,       ///< A plan step finished.
  metric_result,        ///< One metric measurement; `subject` is the metric, `detail` the value and verdict.
  instance_created,     ///< An orchestrator created `subject`.
  instance_retiring,    ///< Retirement of `subject` began: it no longer counts as available.
  instance_retired,     ///< An orchestrator retired `subject`.
  instance_failed,      ///< `subject` failed to start or crashed.
  rollback_started,     ///< The run decided to go back to the previous state; `detail` says why.
  releasable,           ///< `subject` (an environment) gets no traffic and may now be scaled down.
  run_finished,         ///< `run()` is about to return; `detail` is the outcome.
};

/// One entry of a rollout's timeline.
///
/// `at` is measured from the start of the run on the strategy's clock, so it is
/// virtual time under the simulated clock and identical on every run.
struct Event {
  Duration at{};                      ///< Time since `run()` started.
  EventKind kind = EventKind::run_started;
  std::string strategy;               ///< `blue_green`, `canary` or `rolling`.
  std::string subject;                ///< Instance id, environment, metric or phase; may be empty.
  std::string detail;                 ///< A human sentence.
  std::optional<TrafficSplit> split;  ///< For traffic events: the split concerned.
  error_code error;                   ///< For failures: the error.
};

/// The name of an event kind, e.g. `traffic_applied`.
inline const char* to_string(EventKind k) noexcept {
  switch (k) {
    case EventKind::run_started: return "run_started";
    case EventKind::phase_changed: return "phase_changed";
    case EventKind::instance_ready: return "instance_ready";
    case EventKind::probe_failed: return "probe_failed";
    case EventKind::instance_unhealthy: return "instance_unhealthy";
    case EventKind::check_started: return "check_started";
    case EventKind::check_passed: return "check_passed";
    case EventKind::check_failed: return "check_failed";
    case EventKind::check_inconclusive: return "check_inconclusive";
    case EventKind::awaiting_promotion: return "awaiting_promotion";
    case EventKind::promote_requested: return "promote_requested";
    case EventKind::abort_requested: return "abort_requested";
    case EventKind::paused: return "paused";
    case EventKind::resumed: return "resumed";
    case EventKind::traffic_applied: return "traffic_applied";
    case EventKind::lb_error: return "lb_error";
    case EventKind::step_started: return "step_started";
    case EventKind::step_completed: return "step_completed";
    case EventKind::metric_result: return "metric_result";
    case EventKind::instance_created: return "instance_created";
    case EventKind::instance_retiring: return "instance_retiring";
    case EventKind::instance_retired: return "instance_retired";
    case EventKind::instance_failed: return "instance_failed";
    case EventKind::rollback_started: return "rollback_started";
    case EventKind::releasable: return "releasable";
    case EventKind::run_finished: return "run_finished";
  }
  return "unknown";
}

/// A hook that sees every event of a run as it happens.
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `o.on_event(e)` | any | Called synchronously on the strategy's executor for each event `e` (`const Event&`). |
///
/// `on_event` runs inside the strategy, so it must be quick and must not block:
/// hand slow work (HTTP, disk) to a queue. It must not throw; an exception thrown
/// from it propagates out of `run()`. Cancellation does not apply: events are
/// delivered even while a run is being aborted.
///
/// @code
/// struct PrintObserver {
///   void on_event(const rollout::Event& e) { fmt::print("{}\n", e); }
/// };
/// @endcode
template <class O>
concept Observer = requires(O& o, const Event& e) { o.on_event(e); };

/// The observers attached to one strategy. It stores references: each observer
/// must outlive the runs it watches.
class ObserverList {
public:
  /// Attaches `o` by reference.
  template <Observer O>
  void add(O& o) {
    sinks_.emplace_back([&o](const Event& e) { o.on_event(e); });
  }
  /// Attaches a callable taking `const Event&`.
  template <class F>
    requires std::invocable<F&, const Event&> && (!Observer<F>)
  void add(F f) {
    sinks_.emplace_back(std::move(f));
  }
  /// Delivers `e` to every observer, in the order they were added.
  void on_event(const Event& e) const {
    for (const auto& s : sinks_) s(e);
  }
  bool empty() const noexcept { return sinks_.empty(); }

private:
  std::vector<std::function<void(const Event&)>> sinks_;
};

static_assert(Observer<ObserverList>);

}  // namespace rollout

/// Formats as `traffic_applied`.
template <>
struct fmt::formatter<rollout::EventKind> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::EventKind k, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(k), ctx);
  }
};

/// Formats as `+1m blue_green traffic_applied green: detail {blue: 0%, green: 100%} [error]`.
template <>
struct fmt::formatter<rollout::Event> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Event& e, FormatContext& ctx) const {
    std::string text = rollout::detail::format("+{} {} {}", rollout::format_duration(e.at), e.strategy, e.kind);
    if (!e.subject.empty()) text += rollout::detail::format(" {}", e.subject);
    if (!e.detail.empty()) text += rollout::detail::format(": {}", e.detail);
    if (e.split) text += rollout::detail::format(" {}", *e.split);
    if (e.error) text += rollout::detail::format(" [{}]", e.error.message());
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
