#pragma once

/// @file
/// `rollout::testing::ScriptedMetrics`: a `MetricsSource` whose answers are
/// scripted per metric and scope role.

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/testing/fault.hpp>
#include <rollout/testing/sim_clock.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <utility>

namespace rollout::testing {

/// A metrics source that answers from scripts keyed by metric name and scope
/// role: `f(n, scope, now) -> result<MetricValue>`, where `n` counts queries of
/// that key from 0. Unscripted queries have no data. Each query takes `latency`.
template <Clock C = SimClock>
class ScriptedMetrics {
public:
  using Script = std::function<result<MetricValue>(std::size_t n, const Scope& scope, TimePoint now)>;

  explicit ScriptedMetrics(C clock, Duration latency = std::chrono::milliseconds(10))
      : clock_(std::move(clock)), latency_(latency) {}

  boost::asio::awaitable<result<MetricValue>> query(const MetricQuery& q, const Scope& scope) {
    const auto key = std::make_pair(q.name, scope.role);
    const auto n = counts_[key]++;
    ++total_;
    Fault f = Fault::ok();
    if (plan_) f = plan_->on_call("metrics.query", detail::format("{} {}", q.name, scope));
    if (f.kind == Fault::none) {
      co_await detail::sleep_for(clock_, latency_);  // the common case: no fault, no names formatted
    } else if (auto err = co_await enact(clock_, f, latency_, detail::format("metrics.query({}, {})", q.name, scope))) {
      co_return *err;
    }
    if (auto it = scripts_.find(key); it != scripts_.end()) co_return it->second(n, scope, clock_.now());
    co_return MetricValue{NoData{detail::format("no script for {} {}", q.name, scope.role)}};
  }

  void script(const std::string& metric, ScopeRole role, Script s) { scripts_[{metric, role}] = std::move(s); }
  /// `metric` always measures `value` for `role`.
  void constant(const std::string& metric, ScopeRole role, MetricValue value) {
    script(metric, role, [value = std::move(value)](std::size_t, const Scope&, TimePoint) { return result<MetricValue>(value); });
  }
  void set_plan(FaultPlan* plan) noexcept { plan_ = plan; }
  std::size_t total_queries() const noexcept { return total_; }

private:
  C clock_;
  Duration latency_;
  std::map<std::pair<std::string, ScopeRole>, Script> scripts_;
  std::map<std::pair<std::string, ScopeRole>, std::size_t> counts_;
  FaultPlan* plan_ = nullptr;
  std::size_t total_ = 0;
};

static_assert(MetricsSource<ScriptedMetrics<>>);

}  // namespace rollout::testing
