#pragma once

/// @file
/// `rollout::testing::ScriptedLoadBalancer`: an in-memory `LoadBalancer` with
/// latency, scripted faults and a record of every state it held.

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/testing/fault.hpp>
#include <rollout/testing/sim_clock.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <functional>
#include <map>
#include <utility>
#include <vector>

namespace rollout::testing {

/// A load balancer that lives in memory. `apply(s)` takes `latency` on the clock,
/// then sets the state to `s` and succeeds, unless a fault is scripted for that
/// call. Faulty calls leave the state unchanged, and a cancelled call changes
/// nothing, so the state is always the last split that was confirmed.
///
/// Faults come from `fail_call(n, f)` (this fake's n-th call, 1-based) or from a
/// shared `FaultPlan` (global call index across fakes). `on_change` is called
/// synchronously on every state change, for invariant checks.
template <Clock C = SimClock>
class ScriptedLoadBalancer {
public:
  ScriptedLoadBalancer(C clock, TrafficSplit initial, Duration latency = std::chrono::milliseconds(5))
      : clock_(std::move(clock)), state_(std::move(initial)), latency_(latency) {
    history_.push_back(state_);
  }

  boost::asio::awaitable<result<void>> apply(const TrafficSplit& split) {
    const auto n = ++calls_;
    Fault f = Fault::ok();
    if (auto it = faults_.find(n); it != faults_.end()) f = it->second;
    if (plan_) {
      auto pf = plan_->on_call("lb.apply", detail::format("{}", split));
      if (pf.kind != Fault::none) f = pf;
    }
    if (f.kind == Fault::none) {
      co_await detail::sleep_for(clock_, latency_);  // the common case: no fault, no names formatted
    } else if (auto err = co_await enact(clock_, f, latency_, detail::format("lb.apply#{}", n))) {
      co_return *err;
    }
    if (!(split == state_)) {
      state_ = split;
      history_.push_back(state_);
      if (on_change) on_change(state_);
    }
    co_return result<void>{};
  }

  /// What the load balancer routes by now.
  const TrafficSplit& state() const noexcept { return state_; }
  /// Every distinct state it held, in order, starting with the initial one.
  const std::vector<TrafficSplit>& history() const noexcept { return history_; }
  /// Calls made so far.
  std::size_t calls() const noexcept { return calls_; }

  void set_latency(Duration d) noexcept { latency_ = d; }
  Duration latency() const noexcept { return latency_; }
  /// Scripts this fake's `n`-th call (1-based).
  void fail_call(std::size_t n, Fault f) { faults_[n] = std::move(f); }
  /// Shares a global call log and fault plan with other fakes.
  void set_plan(FaultPlan* plan) noexcept { plan_ = plan; }

  /// Called after each state change.
  std::function<void(const TrafficSplit&)> on_change;

private:
  C clock_;
  TrafficSplit state_;
  Duration latency_;
  std::size_t calls_ = 0;
  std::map<std::size_t, Fault> faults_;
  FaultPlan* plan_ = nullptr;
  std::vector<TrafficSplit> history_;
};

static_assert(LoadBalancer<ScriptedLoadBalancer<>>);

}  // namespace rollout::testing
