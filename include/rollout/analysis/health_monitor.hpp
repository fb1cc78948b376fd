#pragma once

/// @file
/// `HealthMonitor`: probes a set of instances on a `ProbeSpec` schedule, with a
/// bound on concurrent probes, and keeps each instance's `ProbeTracker`.

#include <rollout/analysis/probe_schedule.hpp>
#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/event.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/parallel.hpp>
#include <rollout/detail/race.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace rollout {

/// Probes every instance in rounds: round `k` starts at
/// `start + initial_delay + k * period` (or at once, if the previous round ran
/// late). Within a round, at most `concurrency` probes are in flight. After each
/// result it updates that instance's tracker, reports the change through `emit`,
/// and notifies `wake`.
///
/// `run()` probes until cancelled; cancellation cancels the probes in flight.
/// Probe failures are results, not errors: `run()` only ends by cancellation.
template <HealthProbe P, Clock C>
class HealthMonitor {
public:
  /// One probed instance.
  struct Entry {
    Instance instance;
    ProbeTracker tracker;
    HealthResult last;
  };
  /// Receives `instance_ready`, `probe_failed` and `instance_unhealthy` events.
  using Emit = std::function<void(EventKind, const std::string& subject, std::string detail)>;

  HealthMonitor(P& probe, C clock, const std::vector<Instance>& instances, ProbeSpec spec, std::size_t concurrency,
                detail::Notifier* wake, Emit emit)
      : probe_(probe), clock_(std::move(clock)), spec_(spec), concurrency_(concurrency), wake_(wake), emit_(std::move(emit)) {
    entries_.reserve(instances.size());
    for (const auto& i : instances) entries_.push_back(Entry{i, ProbeTracker(spec_), {}});
  }

  /// Probes in rounds until cancelled.
  boost::asio::awaitable<void> run() {
    auto next = detail::add_saturating(clock_.now(), spec_.initial_delay);
    for (;;) {
      if (clock_.now() < next) co_await detail::sleep_until(clock_, next);
      co_await detail::scoped_for_each(entries_.begin(), entries_.end(), concurrency_,
                                       [this](Entry& e, const detail::TaskScope& scope) { return probe_entry(e, scope); });
      ++rounds_;
      next = std::max(detail::add_saturating(next, spec_.period), clock_.now());
    }
  }

  /// Every instance is passing (ready, and its latest probes passed).
  bool all_passing() const noexcept {
    return std::all_of(entries_.begin(), entries_.end(), [](const Entry& e) { return e.tracker.passing(); });
  }
  /// The first instance that was ready and then crossed the failure threshold, if any.
  const Entry* first_failed_after_ready() const noexcept {
    for (const auto& e : entries_) {
      if (e.tracker.failed_after_ready()) return &e;
    }
    return nullptr;
  }
  /// `g-2 (unhealthy (HTTP 503, 2ms)), g-3 (never probed)` for the instances not passing.
  std::string describe_not_passing() const {
    std::string out;
    for (const auto& e : entries_) {
      if (e.tracker.passing()) continue;
      if (!out.empty()) out += ", ";
      if (e.tracker.probes() == 0) {
        out += detail::format("{} (never probed)", e.instance.id);
      } else {
        out += detail::format("{} ({} after {} probes: {})", e.instance.id, e.tracker.state(), e.tracker.probes(), e.last.detail);
      }
    }
    return out;
  }
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  long rounds() const noexcept { return rounds_; }

private:
  // Each probe runs in a worker task of the round, and its timeout cancels that
  // task's thread (no child coroutine per probe).
  boost::asio::awaitable<void> probe_entry(Entry& e, detail::TaskScope scope) {
    e.last = co_await detail::probe_once(std::move(scope), clock_, probe_, e.instance, spec_.timeout);
    const auto change = e.tracker.record(e.last.healthy);
    if (!e.last.healthy) emit_(EventKind::probe_failed, e.instance.id, e.last.detail);
    if (change == ProbeTracker::Change::became_passing) {
      emit_(EventKind::instance_ready, e.instance.id,
            detail::format("{} consecutive successful probes", e.tracker.consecutive_successes()));
    } else if (change == ProbeTracker::Change::became_unhealthy) {
      emit_(EventKind::instance_unhealthy, e.instance.id,
            detail::format("{} consecutive failed probes, last: {}", e.tracker.consecutive_failures(), e.last.detail));
    }
    if (wake_) wake_->notify_all();
  }

  P& probe_;
  C clock_;
  ProbeSpec spec_;
  std::size_t concurrency_;
  detail::Notifier* wake_;
  Emit emit_;
  std::vector<Entry> entries_;
  long rounds_ = 0;
};

}  // namespace rollout
