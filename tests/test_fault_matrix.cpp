// The fault matrix (testing::fault_matrix) over all three strategies, under the
// simulated clock: every policy call of a clean run fails, in turn, in every mode
// (error, exception, hang, late, and for the load balancer a read-back that
// disagrees). After every event the strategy's traffic or capacity invariants
// hold; at the end nothing is left running and the outcome names the failed call.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support/error_rate.hpp"

#include <rollout/strategy/blue_green.hpp>
#include <rollout/strategy/canary.hpp>
#include <rollout/strategy/rolling.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using testing::SimClock;
using Bg = BlueGreen<testing::ScriptedLoadBalancer<>, testing::ScriptedProbe<>, SimClock>;
using Can = Canary<testing::ScriptedLoadBalancer<>, testing::ScriptedMetrics<>, SimClock>;
using Roll = Rolling<testing::FakeOrchestrator<>, SimClock>;

namespace {

// Prints the matrix, its problems (at most 20), and fails on any.
void report(const std::string& name, const testing::FaultMatrixReport& rep) {
  const std::string text = rep.summary(name) + "\n" + rep.table();
  MESSAGE(text);
  std::string first;
  for (std::size_t i = 0; i < rep.problems.size() && i < 20; ++i) first += rep.problems[i] + "\n";
  CHECK_MESSAGE(rep.ok(), first);
}

// Blue-green: blue (1 instance, v1) active, green (3 instances, v2) target, with
// a verification window and a scale-down delay, so probes run before and after
// the switch. `strict` turns off load balancer retries and makes one failed
// probe unhealthy, so faults end runs instead of being absorbed.
struct BgFixture {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedLoadBalancer<> lb{clock, TrafficSplit::of({{"blue", Percent::full()}, {"green", Percent{}}})};
  testing::ScriptedProbe<> probe{clock};
  testing::InvariantChecker invariants;
  std::unique_ptr<testing::BlueGreenInvariants> rules;
  std::unique_ptr<Bg> bg;

  BgFixture(testing::FaultPlan& plan, bool strict) {
    Environment blue{"blue", {"v1"}, {{"b-0", {"v1"}, {"10.0.0.1", 8000}}}};
    Environment green{"green", {"v2"}, {}};
    for (int i = 0; i < 3; ++i) green.instances.push_back({fmt::format("g-{}", i), {"v2"}, {"10.0.0.2", static_cast<std::uint16_t>(8000 + i)}});
    BlueGreenOptions o;
    o.probe.period = 5s;
    o.verify_for = 12s;
    o.scale_down_delay = 1s;
    if (strict) {
      o.probe.failure_threshold = 1;
      o.lb_retry.max_attempts = 1;
    }
    lb.set_plan(&plan);
    probe.set_plan(&plan);
    bg = std::make_unique<Bg>(lb, probe, blue, green, o, clock);
    rules = std::make_unique<testing::BlueGreenInvariants>("blue", "green", std::vector<std::string>{"g-0", "g-1", "g-2"},
                                                          [this] { return lb.state(); });
    rules->install(invariants);
    bg->observers().add(invariants);
    if (std::getenv("ROLLOUT_TRACE")) bg->observers().add([](const Event& e) { fmt::print(stderr, "{}\n", e); });
  }
  Bg& strategy() { return *bg; }
};

// Canary: two weights, an inline analysis, a pause, and background analysis, so
// load balancer calls and metric queries interleave. `strict` turns off load
// balancer retries and fails a metric on its first query error.
struct CanaryFixture {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedLoadBalancer<> lb{clock, TrafficSplit::of({{"stable", Percent::full()}, {"canary", Percent{}}})};
  testing::ScriptedMetrics<> metrics{clock};
  testing::InvariantChecker invariants;
  std::unique_ptr<testing::CanaryInvariants> rules;
  std::unique_ptr<Can> canary;

  static MetricCheck error_rate(Duration interval, std::optional<int> count, int failure_limit, bool strict) {
    auto m = test_support::error_rate(interval, count, failure_limit);
    if (strict) m.consecutive_error_limit = 0;  // the first query error fails the metric
    return m;
  }

  CanaryFixture(testing::FaultPlan& plan, bool strict) {
    metrics.constant("error-rate", ScopeRole::canary, MetricValue{0.001});
    lb.set_plan(&plan);
    metrics.set_plan(&plan);
    CanaryOptions o;
    if (strict) o.lb_retry.max_attempts = 1;
    o.background = BackgroundAnalysis{AnalysisSpec{"bg", {error_rate(1min, std::nullopt, 1, strict)}}, 2};
    auto steps = CanaryPlan::of({steps::set_weight(10_pct), steps::analyze(AnalysisSpec{"smoke", {error_rate(1min, 2, 0, strict)}}),
                                 steps::set_weight(30_pct), steps::pause(2min)});
    canary = std::make_unique<Can>(lb, metrics, Revision{"v1"}, Revision{"v2"}, std::move(steps), o, clock);
    rules = std::make_unique<testing::CanaryInvariants>("canary", [this] { return lb.state(); });
    rules->install(invariants);
    canary->observers().add(invariants);
  }
  Can& strategy() { return *canary; }
};

// Rolling: 3 instances of v1 to v2, surge 1, unavailable 0. `strict` turns off
// retries and tolerates one failed instance, so every fault ends the update and
// its rollback is exercised too.
struct RollingFixture {
  asio::io_context io;
  SimClock clock;
  testing::FakeOrchestrator<> orch{clock};
  RollingOptions opts;
  testing::InvariantChecker invariants;
  std::unique_ptr<testing::RollingInvariants> capacity;
  std::unique_ptr<Roll> roll;

  RollingFixture(testing::FaultPlan& plan, bool strict) {
    for (int i = 0; i < 3; ++i) orch.adopt({fmt::format("v1-old-{}", i), {"v1"}, {"10.0.0.1", static_cast<std::uint16_t>(9000 + i)}});
    orch.on_create = [](const Revision&, std::size_t) { return testing::StartScript{5s, false, false}; };
    orch.set_plan(&plan);
    opts.desired = 3;
    opts.max_surge = 1;
    opts.max_unavailable = 0;
    opts.min_ready = 1s;
    opts.call_timeout = 30s;
    opts.ready_deadline = 2min;
    if (strict) {
      opts.retry.max_attempts = 1;
      opts.max_failed_instances = 1;
    }
    roll = std::make_unique<Roll>(orch, Revision{"v1"}, Revision{"v2"}, opts, clock);
    std::vector<std::string> initial;
    for (const auto& i : orch.instances()) initial.push_back(i.id);
    capacity = std::make_unique<testing::RollingInvariants>(
        opts.desired, roll->budgets().surge, roll->budgets().unavailable, initial, [this] { return orch.size(); },
        [this](const std::string& id) { return orch.is_ready(id); });
    capacity->install(invariants);
    roll->observers().add(invariants);
  }
  Roll& strategy() { return *roll; }
};

std::string rolling_check(RollingFixture& f, const Outcome& out) {
  if (!f.invariants.ok()) return f.invariants.report();
  if (!out.fleet) return "no fleet report";
  // No leaked instance: the report is the real fleet, and nothing in it is still starting.
  if (out.fleet->fleet.size() != f.orch.size()) {
    return fmt::format("the report lists {} instances, the orchestrator has {}", out.fleet->fleet.size(), f.orch.size());
  }
  for (const auto& i : f.orch.instances()) {
    if (!f.orch.is_ready(i.id)) return fmt::format("{} was left starting", i.id);
  }
  if (out.status == Status::promoted && f.orch.count(Revision{"v2"}) != 3) {
    return fmt::format("Promoted with {} instances of v2", f.orch.count(Revision{"v2"}));
  }
  if (out.status == Status::rolled_back && (f.orch.count(Revision{"v1"}) != 3 || f.orch.size() != 3)) {
    return fmt::format("RolledBack with {} of v1 in a fleet of {}", f.orch.count(Revision{"v1"}), f.orch.size());
  }
  return {};
}

}  // namespace

TEST_CASE("blue-green: every call fails in every mode, traffic stays on one healthy side") {
  for (const bool strict : {false, true}) {
  const auto rep = testing::fault_matrix(
      [strict](testing::FaultPlan& p) { return std::make_unique<BgFixture>(p, strict); },
      [](BgFixture& f, const Outcome& out, const testing::FaultCase& c) -> std::string {
        if (!f.invariants.ok()) return f.invariants.report();
        const auto sole = f.lb.state().sole_group();
        if (!sole || *sole != out.active) return fmt::format("ended {} on {} but the load balancer holds {}", out.status, out.active, f.lb.state());
        if (out.status == Status::promoted && out.active != "green") return "Promoted but not on green";
        // A permanent load balancer error during the switch: blue is restored.
        if (c.call.policy == "lb.apply" && c.fault.kind == testing::Fault::error && (out.status != Status::failed || out.active != "blue")) {
          return fmt::format("an lb.apply error ended {} on {}, expected Failed on blue", out.status, out.active);
        }
        return {};
      },
      testing::fault_modes(30s));
  report(strict ? "blue-green (no LB retries, failure threshold 1)" : "blue-green (defaults)", rep);
  CHECK(rep.calls.size() >= 8);
  CHECK(rep.count(Status::failed) + rep.count(Status::rolled_back) > (strict ? 10u : 0u));
  }
}

TEST_CASE("canary: every call fails in every mode, the canary never exceeds its step and ends on one side") {
  for (const bool strict : {false, true}) {
  const auto rep = testing::fault_matrix(
      [strict](testing::FaultPlan& p) { return std::make_unique<CanaryFixture>(p, strict); },
      [](CanaryFixture& f, const Outcome& out, const testing::FaultCase&) -> std::string {
        if (!f.invariants.ok()) return f.invariants.report();
        const auto want = out.status == Status::promoted ? "canary" : "stable";
        if (f.lb.state().sole_group() != want) return fmt::format("ended {} but the load balancer holds {}", out.status, f.lb.state());
        return {};
      },
      testing::fault_modes(10min));
  report(strict ? "canary (no LB retries, consecutive error limit 0)" : "canary (defaults)", rep);
  CHECK(rep.calls.size() >= 8);
  CHECK(rep.count(Status::failed) + rep.count(Status::rolled_back) > (strict ? 10u : 0u));
  }
}

TEST_CASE("rolling with retries: every orchestrator call fails in every mode, capacity holds, nothing leaks") {
  const auto rep = testing::fault_matrix([](testing::FaultPlan& p) { return std::make_unique<RollingFixture>(p, false); },
                                         [](RollingFixture& f, const Outcome& out, const testing::FaultCase&) { return rolling_check(f, out); },
                                         testing::fault_modes(10min));
  report("rolling (retries on)", rep);
  CHECK(rep.calls.size() >= 10);
}

TEST_CASE("rolling without retries: every fault fails the update, which rolls back under the same budgets") {
  const auto rep = testing::fault_matrix([](testing::FaultPlan& p) { return std::make_unique<RollingFixture>(p, true); },
                                         [](RollingFixture& f, const Outcome& out, const testing::FaultCase&) { return rolling_check(f, out); },
                                         testing::fault_modes(10min));
  report("rolling (no retries, 1 failure allowed)", rep);
  CHECK(rep.calls.size() >= 10);
  CHECK(rep.count(Status::rolled_back) > 0);
}
