#pragma once

/// @file
/// Invariant-checking observers: `InvariantChecker` (generic timeline rules plus
/// user rules) and `BlueGreenInvariants` (the blue-green traffic rules).

#include <rollout/core/event.hpp>
#include <rollout/core/traffic_split.hpp>

#include <fmt/format.h>

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
    violations_.push_back(fmt::format("[{}] {} at event {}", rule, what, e));
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
///   instances has crossed its failure threshold;
/// - once a target instance is unhealthy, the next traffic change goes back to
///   the active environment;
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
      case EventKind::instance_ready: passing_[e.subject] = true; break;
      case EventKind::probe_failed: passing_[e.subject] = false; break;
      case EventKind::instance_unhealthy:
        passing_[e.subject] = false;
        unhealthy_ = true;
        break;
      default: break;
    }
    const TrafficSplit now = state_();
    const auto sole = now.sole_group();
    if (!sole || (*sole != active_ && *sole != target_)) {
      return fmt::format("load balancer holds {}, not 100% on {} or {}", now, active_, target_);
    }
    if (e.kind == EventKind::phase_changed && e.subject == "switching") {
      for (const auto& [id, ok] : passing_) {
        if (!ok) return fmt::format("switch to {} decided while instance {} was not passing", target_, id);
      }
    }
    if (e.kind == EventKind::traffic_applied && e.split && e.split->sole_group() == target_ && unhealthy_) {
      return fmt::format("traffic moved to {} after one of its instances became unhealthy", target_);
    }
    if (e.kind == EventKind::run_finished && !e.subject.empty() && *sole != e.subject) {
      return fmt::format("run finished claiming 100% on {} but the load balancer holds {}", e.subject, now);
    }
    return std::nullopt;
  }

  std::string active_;
  std::string target_;
  std::function<TrafficSplit()> state_;
  std::map<std::string, bool> passing_;
  bool unhealthy_ = false;
};

}  // namespace rollout::testing
