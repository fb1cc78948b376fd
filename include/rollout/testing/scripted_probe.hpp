#pragma once

/// @file
/// `rollout::testing::ScriptedProbe`: a `HealthProbe` whose answers are scripted
/// per instance.

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/types.hpp>
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
#include <vector>

namespace rollout::testing {

/// A health probe whose answer for each instance comes from a script:
/// `f(n, now) -> HealthResult`, where `n` counts this instance's probes from 0.
/// Unscripted instances are healthy. Each probe takes `latency` on the clock.
///
/// Faults (`error` makes the probe report unhealthy, `exception` throws, `hang`
/// never answers, `late` answers after the delay) come from `fail_probe` or from
/// a shared `FaultPlan`.
template <Clock C = SimClock>
class ScriptedProbe {
public:
  using Script = std::function<HealthResult(std::size_t n, TimePoint now)>;

  explicit ScriptedProbe(C clock, Duration latency = std::chrono::milliseconds(2)) : clock_(std::move(clock)), latency_(latency) {}

  boost::asio::awaitable<HealthResult> check(const Instance& i) {
    const auto n = counts_[i.id]++;
    ++total_;
    Fault f = Fault::ok();
    if (auto it = faults_.find({i.id, n}); it != faults_.end()) f = it->second;
    if (plan_) {
      auto pf = plan_->on_call("probe.check", i.id);
      if (pf.kind != Fault::none) f = pf;
    }
    const auto started = clock_.now();
    if (f.kind == Fault::none) {
      co_await detail::sleep_for(clock_, latency_);  // the common case: no fault, no names formatted
    } else if (auto err = co_await enact(clock_, f, latency_, detail::format("probe.check({})", i.id))) {
      co_return HealthResult::down(err->message, clock_.now() - started);
    }
    HealthResult r = HealthResult::up("ok");
    if (auto it = scripts_.find(i.id); it != scripts_.end()) r = it->second(n, clock_.now());
    r.latency = clock_.now() - started;
    co_return r;
  }

  /// Scripts instance `id`.
  void script(const std::string& id, Script s) { scripts_[id] = std::move(s); }
  /// `id` answers `pattern[n]` for its n-th probe, and the last entry forever after.
  void sequence(const std::string& id, std::vector<bool> pattern) {
    script(id, [pattern = std::move(pattern)](std::size_t n, TimePoint) {
      const bool ok = pattern.empty() || pattern[std::min(n, pattern.size() - 1)];
      return ok ? HealthResult::up("ok") : HealthResult::down("scripted failure (HTTP 503)");
    });
  }
  /// `id` is always unhealthy.
  void always_down(const std::string& id, std::string detail = "scripted failure (HTTP 503)") {
    script(id, [detail = std::move(detail)](std::size_t, TimePoint) { return HealthResult::down(detail); });
  }
  /// `id` is healthy until `t` on the clock, unhealthy from then on.
  void down_from(const std::string& id, TimePoint t) {
    script(id, [t](std::size_t, TimePoint now) {
      return now < t ? HealthResult::up("ok") : HealthResult::down("scripted failure after deadline (HTTP 503)");
    });
  }
  /// Scripts a fault for `id`'s n-th probe (0-based, like the script's `n`).
  void fail_probe(const std::string& id, std::size_t n, Fault f) { faults_[{id, n}] = std::move(f); }
  void set_plan(FaultPlan* plan) noexcept { plan_ = plan; }
  void set_latency(Duration d) noexcept { latency_ = d; }

  /// Probes made of `id` so far.
  std::size_t probes(const std::string& id) const {
    auto it = counts_.find(id);
    return it == counts_.end() ? 0 : it->second;
  }
  std::size_t total_probes() const noexcept { return total_; }

private:
  C clock_;
  Duration latency_;
  std::map<std::string, Script> scripts_;
  std::map<std::string, std::size_t> counts_;
  std::map<std::pair<std::string, std::size_t>, Fault> faults_;
  FaultPlan* plan_ = nullptr;
  std::size_t total_ = 0;
};

static_assert(HealthProbe<ScriptedProbe<>>);

}  // namespace rollout::testing
