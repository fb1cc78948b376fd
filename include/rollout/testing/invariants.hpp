#pragma once

/// @file
/// Invariant-checking observers: `InvariantChecker` (generic timeline rules plus
/// user rules) and `BlueGreenInvariants` (the blue-green traffic rules).

#include <rollout/core/event.hpp>
#include <rollout/core/percent.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace rollout::testing {

/// An `Observer` that checks rules after every event and records violations
/// instead of throwing, so a test can print all of them at the end.
///
/// Built-in rules, for every strategy: the first event is `run_started`; event
/// times never go backwards; nothing follows `run_finished`, which appears once;
/// every `traffic_applied` carries a split. Add strategy rules with `add()`; a
/// rule returns a description of the violation, or nothing.
class InvariantChecker {
public:
  using Rule = std::function<std::optional<std::string>(const Event&)>;

  void add(std::string name, Rule rule) { rules_.emplace_back(std::move(name), std::move(rule)); }

  void on_event(const Event& e) {
    if (events_.empty() && e.kind != EventKind::run_started) violate("timeline", e, "first event is not run_started");
    if (!events_.empty() && e.at < events_.back().at) violate("timeline", e, "time went backwards");
    if (finished_) violate("timeline", e, "event after run_finished");
    if (e.kind == EventKind::run_finished) finished_ = true;
    if (e.kind == EventKind::traffic_applied && !e.split) violate("timeline", e, "traffic_applied without a split");
    events_.push_back(e);
    for (auto& [name, rule] : rules_) {
      if (auto v = rule(e)) violate(name, e, *v);
    }
  }

  bool ok() const noexcept { return violations_.empty(); }
  const std::vector<std::string>& violations() const noexcept { return violations_; }
  const std::vector<Event>& events() const noexcept { return events_; }
  /// Every violation, one per line (empty when ok).
  std::string report() const {
    std::string out;
    for (const auto& v : violations_) out += v + "\n";
    return out;
  }

private:
  void violate(const std::string& rule, const Event& e, const std::string& what) {
    violations_.push_back(detail::format("[{}] {} at event {}", rule, what, e));
  }

  std::vector<std::pair<std::string, Rule>> rules_;
  std::vector<Event> events_;
  std::vector<std::string> violations_;
  bool finished_ = false;
};

/// The blue-green traffic invariants, checked after every event:
/// - the load balancer (as seen through `state`) always sends 100% to either the
///   active or the target environment;
/// - the switch to the target is decided (`phase_changed: switching`) only while
///   every target instance is passing (its latest `instance_ready` is newer than
///   its latest failed probe), and traffic never reaches a target one of whose
///   instances crossed its failure threshold after having been ready (failures
///   before an instance is first ready only mean it is not ready yet, as with
///   Kubernetes readiness);
/// - once a target instance that had been ready is unhealthy, the next traffic
///   change goes back to the active environment;
/// - at `run_finished`, the load balancer holds 100% on the environment the
///   outcome names (the event's subject).
///
/// `target_instances` are the ids of the target's instances; `state` returns the
/// load balancer's actual state (for example `[&] { return lb.state(); }` with
/// `ScriptedLoadBalancer`).
class BlueGreenInvariants {
public:
  BlueGreenInvariants(std::string active, std::string target, const std::vector<std::string>& target_instances,
                      std::function<TrafficSplit()> state)
      : active_(std::move(active)), target_(std::move(target)), state_(std::move(state)) {
    for (const auto& id : target_instances) passing_[id] = false;
  }

  /// Installs the rules on `checker`.
  void install(InvariantChecker& checker) {
    checker.add("blue_green.traffic", [this](const Event& e) { return check(e); });
  }

private:
  std::optional<std::string> check(const Event& e) {
    switch (e.kind) {
      case EventKind::instance_ready:
        passing_[e.subject] = true;
        ever_ready_.insert(e.subject);
        break;
      case EventKind::probe_failed: passing_[e.subject] = false; break;
      case EventKind::instance_unhealthy:
        passing_[e.subject] = false;
        if (ever_ready_.contains(e.subject)) unhealthy_ = true;
        break;
      default: break;
    }
    const TrafficSplit now = state_();
    const auto sole = now.sole_group();
    if (!sole || (*sole != active_ && *sole != target_)) {
      return detail::format("load balancer holds {}, not 100% on {} or {}", now, active_, target_);
    }
    if (e.kind == EventKind::phase_changed && e.subject == "switching") {
      for (const auto& [id, ok] : passing_) {
        if (!ok) return detail::format("switch to {} decided while instance {} was not passing", target_, id);
      }
    }
    if (e.kind == EventKind::traffic_applied && e.split && e.split->sole_group() == target_ && unhealthy_) {
      return detail::format("traffic moved to {} after one of its instances became unhealthy", target_);
    }
    if (e.kind == EventKind::run_finished && !e.subject.empty() && *sole != e.subject) {
      return detail::format("run finished claiming 100% on {} but the load balancer holds {}", e.subject, now);
    }
    return std::nullopt;
  }

  std::string active_;
  std::string target_;
  std::function<TrafficSplit()> state_;
  std::map<std::string, bool> passing_;
  std::set<std::string> ever_ready_;
  bool unhealthy_ = false;
};

/// The canary traffic invariants, checked after every event:
/// - the canary's weight on the load balancer (through `state`) never exceeds the
///   weight of the current step (the split announced by the last `step_started`,
///   or 100% once `phase_changed: promoting`);
/// - at `run_finished`, the load balancer holds 100% on the group the outcome
///   names (the event's subject).
class CanaryInvariants {
public:
  CanaryInvariants(std::string canary_group, std::function<TrafficSplit()> state)
      : canary_(std::move(canary_group)), state_(std::move(state)) {}

  void install(InvariantChecker& checker) {
    checker.add("canary.weight", [this](const Event& e) { return check(e); });
  }

  /// The highest canary weight seen on the load balancer.
  Percent max_seen() const noexcept { return max_seen_; }

private:
  std::optional<std::string> check(const Event& e) {
    if (e.kind == EventKind::step_started && e.split) allowed_ = e.split->weight_of(canary_);
    if (e.kind == EventKind::phase_changed && e.subject == "promoting") allowed_ = Percent::full();
    const TrafficSplit now = state_();
    const Percent w = now.weight_of(canary_);
    max_seen_ = std::max(max_seen_, w);
    if (w > allowed_) return detail::format("canary at {} but the current step allows {}", w, allowed_);
    if (e.kind == EventKind::run_finished && !e.subject.empty() && now.sole_group() != e.subject) {
      return detail::format("run finished claiming 100% on {} but the load balancer holds {}", e.subject, now);
    }
    return std::nullopt;
  }

  std::string canary_;
  std::function<TrafficSplit()> state_;
  Percent allowed_{};
  Percent max_seen_{};
};

/// The rolling-update capacity invariants, checked after every event:
/// - the fleet (as the orchestrator reports it, through `fleet_size`) never holds
///   more than `desired + surge` instances;
/// - the instances serving (the initial fleet, plus `instance_ready`, minus
///   `instance_retiring`/`instance_retired`/`instance_failed`) never drop below
///   `desired - unavailable`, or, if the fleet started lower, below the highest
///   level reached so far (the run never makes a short fleet worse);
/// - every instance counted as serving exists and is ready (`is_ready`).
class RollingInvariants {
public:
  RollingInvariants(std::int64_t desired, std::int64_t surge, std::int64_t unavailable,
                    const std::vector<std::string>& initial_fleet, std::function<std::size_t()> fleet_size,
                    std::function<bool(const std::string&)> is_ready)
      : ceiling_(desired + surge),
        floor_(desired - unavailable),
        serving_(initial_fleet.begin(), initial_fleet.end()),
        fleet_size_(std::move(fleet_size)),
        is_ready_(std::move(is_ready)) {
    best_ = static_cast<std::int64_t>(serving_.size());
  }

  void install(InvariantChecker& checker) {
    checker.add("rolling.capacity", [this](const Event& e) { return check(e); });
  }

  /// The lowest number of serving instances seen, for reports.
  std::int64_t min_serving() const noexcept { return min_seen_; }
  /// The largest fleet seen.
  std::size_t max_fleet() const noexcept { return max_fleet_; }

private:
  std::optional<std::string> check(const Event& e) {
    switch (e.kind) {
      case EventKind::instance_ready: serving_.insert(e.subject); break;
      case EventKind::instance_retiring:
      case EventKind::instance_retired:
      case EventKind::instance_failed: serving_.erase(e.subject); break;
      default: break;
    }
    const auto n = static_cast<std::int64_t>(serving_.size());
    const auto size = fleet_size_();
    max_fleet_ = std::max(max_fleet_, size);
    min_seen_ = std::min(min_seen_, n);
    if (static_cast<std::int64_t>(size) > ceiling_) {
      return detail::format("fleet holds {} instances, above desired + surge = {}", size, ceiling_);
    }
    const auto floor = std::min(floor_, best_);
    if (n < floor) return detail::format("{} instances serving, below {}", n, floor);
    best_ = std::max(best_, std::min(n, floor_));
    for (const auto& id : serving_) {
      if (!is_ready_(id)) return detail::format("instance {} counted as serving but not ready in the fleet", id);
    }
    return std::nullopt;
  }

  std::int64_t ceiling_;
  std::int64_t floor_;
  std::set<std::string> serving_;
  std::function<std::size_t()> fleet_size_;
  std::function<bool(const std::string&)> is_ready_;
  std::int64_t best_ = 0;
  std::int64_t min_seen_ = INT64_MAX;
  std::size_t max_fleet_ = 0;
};

}  // namespace rollout::testing
