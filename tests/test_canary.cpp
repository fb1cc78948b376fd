// Canary<LB, Metrics>: plans, inline and background analysis, the judge,
// rollback, live control and an abort at every suspension point (the fault matrix
// is in test_fault_matrix.cpp), under the simulated clock with the scripted
// policies. testing::CanaryInvariants checks after every event that the
// canary never exceeds the current step's weight and that traffic ends on one side.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support/error_rate.hpp"

#include <rollout/strategy/canary.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <functional>
#include <map>
#include <random>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using testing::Fault;
using testing::SimClock;
using Can = Canary<testing::ScriptedLoadBalancer<>, testing::ScriptedMetrics<>, SimClock>;

namespace {

TrafficSplit all_stable() { return TrafficSplit::of({{"stable", Percent::full()}, {"canary", Percent{}}}); }

using test_support::error_rate;

struct Scenario {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedLoadBalancer<> lb{clock, all_stable()};
  testing::ScriptedMetrics<> metrics{clock};
  CanaryOptions opts;
  testing::InvariantChecker invariants;
  std::unique_ptr<testing::CanaryInvariants> weight_rule;
  std::vector<std::pair<Duration, std::function<void(Can&)>>> actions;

  Scenario() { good(); }
  void at(Duration when, std::function<void(Can&)> f) { actions.emplace_back(when, std::move(f)); }
  /// The canary's error rate: `bad_from` onward it is 10%, before that 0.1%.
  void good() { metrics.constant("error-rate", ScopeRole::canary, MetricValue{0.001}); }
  void bad_from(Duration t) {
    metrics.script("error-rate", ScopeRole::canary, [t](std::size_t, const Scope&, TimePoint now) {
      return result<MetricValue>(MetricValue{now - TimePoint{} >= t ? 0.10 : 0.001});
    });
  }

  Outcome run(CanaryPlan plan) {
    Can c(lb, metrics, Revision{"v1"}, Revision{"v2"}, std::move(plan), opts, clock);
    weight_rule = std::make_unique<testing::CanaryInvariants>(opts.canary_group, [this] { return lb.state(); });
    weight_rule->install(invariants);
    c.observers().add(invariants);
    for (auto& [when, f] : actions) {
      asio::co_spawn(io, [](SimClock k, Duration w, std::function<void(Can&)> f, Can& c) -> asio::awaitable<void> {
        co_await detail::sleep_for(k, w);
        f(c);
      }(clock, when, f, c), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    }
    auto out = testing::run_sim(io, clock, c.run());
    CHECK_MESSAGE(invariants.ok(), invariants.report());
    CHECK(detail::live_tasks() == 0);
    CHECK(clock.pending_timers() == 0);
    if (!out.active.empty()) CHECK(lb.state().sole_group() == out.active);
    return out;
  }
};

// Timeline events are values, rebuilt on each read: the helpers return copies.
std::optional<Event> find(const Outcome& o, EventKind k, const std::string& subject = {}) {
  for (const auto& e : o.timeline) {
    if (e.kind == k && (subject.empty() || e.subject == subject)) return e;
  }
  return std::nullopt;
}
std::optional<Event> find_last(const Outcome& o, EventKind k) {
  std::optional<Event> last;
  for (const auto& e : o.timeline) {
    if (e.kind == k) last = e;
  }
  return last;
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
std::vector<std::string> weights(const testing::ScriptedLoadBalancer<>& lb) {
  std::vector<std::string> out;
  for (const auto& s : lb.history()) out.push_back(s.weight_of("canary").text());
  return out;
}

}  // namespace

TEST_CASE("happy path through explicit steps: weights, pauses, an analysis, a manual gate, promotion") {
  Scenario s;
  s.at(30min, [](Can& c) { c.control().promote(); });
  auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::pause(5min), steps::analyze({"smoke", {error_rate()}}),
                                   steps::set_weight(50_pct), steps::pause()}));
  CHECK(out.status == Status::promoted);
  CHECK(out.active == "canary");
  CHECK(weights(s.lb) == std::vector<std::string>{"0%", "10%", "50%", "100%"});
  // The timeline was reserved for exactly the events of a run nobody had to step
  // into but the planned promote(): no reallocation, no unused slack.
  CHECK(out.timeline.size() == 28);
  CHECK(out.timeline.capacity() == out.timeline.size());
  std::vector<std::string> lines;
  for (const auto& e : out.timeline) {
    if (e.kind == EventKind::step_started || e.kind == EventKind::check_passed || e.kind == EventKind::traffic_applied ||
        e.kind == EventKind::paused || e.kind == EventKind::promote_requested) {
      lines.push_back(fmt::format("{} {} {}", format_duration(e.at), e.kind, e.subject));
    }
  }
  // The initial {stable 100%} apply, 10%, a 5 min pause, three measurements a minute
  // apart (10 ms each), 50%, then held until the promote at 30 min.
  CHECK(lines == std::vector<std::string>{
                     "5ms traffic_applied stable",    "5ms step_started steps[0]",     "10ms traffic_applied ",
                     "10ms step_started steps[1]",    "5m0.01s step_started steps[2]", "7m0.02s check_passed smoke",
                     "7m0.02s step_started steps[3]", "7m0.025s traffic_applied ",     "7m0.025s step_started steps[4]",
                     "7m0.025s paused v2",            "30m promote_requested v2",      "30m0.005s traffic_applied canary",
                 });
}

TEST_CASE("happy path through generated steps (Flagger)") {
  auto plan = CanaryPlan::linear(20_pct, 60_pct, 2min, AnalysisSpec{"each", {error_rate(std::nullopt, std::nullopt)}});
  CHECK(fmt::format("{}", plan) ==
        "[set_weight 20%, pause 2m, analyze each, set_weight 40%, pause 2m, analyze each, set_weight 60%, pause 2m, analyze each]");
  Scenario s;
  auto out = s.run(plan);
  CHECK(out.status == Status::promoted);
  CHECK(weights(s.lb) == std::vector<std::string>{"0%", "20%", "40%", "60%", "100%"});
  CHECK(out.elapsed == 6min + 5ms * 5 + 10ms * 3);  // 3 pauses, 5 LB calls, 3 queries
  CHECK(out.timeline.capacity() == out.timeline.size());

  auto stepped = CanaryPlan::weights({1_pct, 2_pct, 10_pct, 50_pct}, 1min);
  CHECK(stepped.steps().size() == 8);
  Scenario t;
  CHECK(t.run(stepped).status == Status::promoted);
  CHECK(weights(t.lb) == std::vector<std::string>{"0%", "1%", "2%", "10%", "50%", "100%"});
}

TEST_CASE("a 0.5% canary is a real 0.5%") {
  Scenario s;
  Percent seen{};
  s.at(30s, [&](Can&) { seen = s.lb.state().weight_of("canary"); });
  CHECK(s.run(CanaryPlan::of({steps::set_weight(0.5_pct), steps::pause(1min)})).status == Status::promoted);
  CHECK(seen == 0.5_pct);
  CHECK(s.weight_rule->max_seen() == 100_pct);
}

TEST_CASE("background analysis fails in the middle of a pause, and the rollback time is exact") {
  Scenario s;
  s.bad_from(3min);
  s.opts.background = BackgroundAnalysis{{"background", {error_rate(1min, std::nullopt, 2)}}, 1};
  auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1h), steps::set_weight(50_pct)}));
  CHECK(out.status == Status::rolled_back);
  CHECK(out.code == make_error_code(errc::analysis_failed));
  // Measurements start with the pause at 10 ms and repeat every minute; the canary
  // turns bad at 3 min, so the failed measurements are at 3, 4 and 5 min (+10 ms).
  // The third exceeds failure_limit 2: the decision is at 5 min + 20 ms (query
  // latency), in the middle of the hour-long pause.
  const auto decided = find(out, EventKind::rollback_started);
  REQUIRE(decided);
  CHECK(decided->at == 5min + 20ms);
  const auto restored = find_last(out, EventKind::traffic_applied);
  CHECK(restored->split == all_stable());
  CHECK(restored->at - decided->at == s.lb.latency());  // one LB round trip after the decision
  CHECK(out.reason ==
        "background analysis failed: metric error-rate failed (failure if > 0.05; 3 failed measurements, failure_limit 2): "
        "0.001, 0.001, 0.001, 0.1, 0.1, 0.1; traffic back to 100% stable");
  const Duration turned_bad = 3min;
  MESSAGE(fmt::format("detection latency: canary bad from {}, rollback decided at {} ({} later), back on stable at {}; "
                      "interval x failure_limit = {}",
                      format_duration(turned_bad), format_duration(decided->at), format_duration(decided->at - turned_bad),
                      format_duration(restored->at), format_duration(2 * 1min)));
  // Bound: the next measurement after turning bad (<= 1 interval) plus failure_limit more intervals, plus query latency.
  CHECK(decided->at - turned_bad <= 1min + 2 * 1min + 10ms);
}

TEST_CASE("no data is inconclusive, which pauses the canary until promoted") {
  Scenario s;
  s.metrics.script("error-rate", ScopeRole::canary,
                   [](std::size_t, const Scope&, TimePoint) { return result<MetricValue>(MetricValue{NoData{"empty result"}}); });
  s.at(2h, [](Can& c) { c.control().promote(); });
  auto out = s.run(CanaryPlan::of({steps::set_weight(5_pct), steps::analyze({"smoke", {error_rate(std::nullopt, std::nullopt)}}),
                                   steps::set_weight(20_pct)}));
  CHECK(out.status == Status::promoted);
  const auto inc = find(out, EventKind::check_inconclusive, "smoke");
  REQUIRE(inc);
  CHECK(contains(inc->detail, "no data (empty result)"));
  const auto held = find(out, EventKind::paused);
  REQUIRE(held);
  CHECK(contains(held->detail, "analysis smoke inconclusive"));
  CHECK(find(out, EventKind::step_started, "steps[2]")->at >= 2h);  // nothing moved until the promote
}

TEST_CASE("the consecutive error limit (default 4) rolls back as an analysis error") {
  Scenario s;
  s.metrics.script("error-rate", ScopeRole::canary, [](std::size_t, const Scope&, TimePoint) -> result<MetricValue> {
    return Error(errc::query_failed, "bad_data: 1:14: parse error: unexpected character");
  });
  auto out = s.run(CanaryPlan::of({steps::set_weight(5_pct), steps::analyze({"smoke", {error_rate(1min, 10)}})}));
  CHECK(out.status == Status::rolled_back);
  CHECK(out.code == make_error_code(errc::analysis_error));
  CHECK(contains(out.reason, "5 consecutive errors, consecutive_error_limit 4"));
  CHECK(contains(out.reason, "parse error: unexpected character"));
  // The analysis starts at 10 ms (after two applies); errors at 0..4 min after that, 10 ms each.
  CHECK(find(out, EventKind::rollback_started)->at == 4min + 20ms);
}

TEST_CASE("the Mann-Whitney judge rolls back a canary that is slower than its baseline") {
  Scenario s;
  auto samples = [](double mean, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(mean, mean * 0.05);
    Samples out;
    for (int i = 0; i < 60; ++i) out.push_back(d(rng));
    return out;
  };
  s.metrics.constant("p99", ScopeRole::canary, samples(260, 1));
  s.metrics.constant("p99", ScopeRole::baseline, samples(200, 2));
  s.opts.baseline_group = "baseline";
  MetricCheck judge;
  judge.name = "judge";
  judge.judge = JudgeSpec{{JudgeMetric{"p99", {"p99", "histogram_quantile(0.99, ...)", 5min, {}}, Direction::increase, 0.2}}};
  auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::analyze({"kayenta", {judge}})}));
  CHECK(out.status == Status::rolled_back);
  CHECK(contains(out.reason, "score 0 (fail): p99 high"));
  // The baseline got the same weight as the canary.
  CHECK(s.lb.history()[2] == TrafficSplit::of({{"stable", 80_pct}, {"canary", 10_pct}, {"baseline", 10_pct}}));
}

TEST_CASE("promote_full skips the rest, and an abort during the full promotion still wins (Argo #4461)") {
  SUBCASE("promote_full skips pauses and analysis") {
    Scenario s;
    s.at(10min, [](Can& c) { c.control().promote_full(); });
    auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1h), steps::analyze({"long", {error_rate(1h, 5)}}),
                                     steps::set_weight(50_pct), steps::pause()}));
    CHECK(out.status == Status::promoted);
    CHECK(out.reason == "v2 promoted to 100% (full promotion requested)");
    CHECK(out.elapsed < 11min);
  }
  SUBCASE("abort while the promotion is being applied") {
    Scenario s;
    s.opts.lb_timeout = 10min;
    s.lb.fail_call(3, Fault::slow(1min));  // the promotion's apply takes a minute
    s.at(10min, [](Can& c) { c.control().promote_full(); });
    s.at(10min + 30s, [](Can& c) { c.control().abort("pager went off"); });
    auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1h)}));
    CHECK(out.status == Status::aborted);
    CHECK(contains(out.reason, "pager went off"));
    CHECK(s.lb.state() == all_stable());
    CHECK(weights(s.lb) == std::vector<std::string>{"0%", "10%", "100%", "0%"});
    CHECK(find_last(out, EventKind::traffic_applied)->at == 11min + 5ms);  // restored right after the promotion landed
  }
}

TEST_CASE("abort, pause/resume, promote and caller cancellation") {
  SUBCASE("abort during an analysis") {
    Scenario s;
    s.at(90s, [](Can& c) { c.control().abort(); });
    auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::analyze({"long", {error_rate(1min, 30)}})}));
    CHECK(out.status == Status::aborted);
    CHECK(find(out, EventKind::rollback_started)->at == 90s);
  }
  SUBCASE("pause freezes a timed pause; resume continues it") {
    Scenario s;
    s.at(1min, [](Can& c) { c.control().pause(); });
    s.at(31min, [](Can& c) { c.control().resume(); });
    auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::pause(5min)}));
    CHECK(out.status == Status::promoted);
    // The pause starts at 10 ms; 4m0.01s remain when paused at 1 min, counted again from 31 min.
    CHECK(find(out, EventKind::traffic_applied, "canary")->at == 35min + 15ms);
  }
  SUBCASE("promote ends a timed pause early") {
    Scenario s;
    s.at(2min, [](Can& c) { c.control().promote(); });
    auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1h)}));
    CHECK(out.elapsed == 2min + 5ms);
  }
  SUBCASE("cancelling the caller aborts; the rollback completes") {
    Scenario s;
    Can c(s.lb, s.metrics, Revision{"v1"}, Revision{"v2"}, CanaryPlan::of({steps::set_weight(25_pct), steps::pause(1h)}), s.opts,
          s.clock);
    asio::cancellation_signal sig;
    std::optional<Outcome> out;
    asio::co_spawn(s.io, c.run(), asio::bind_cancellation_slot(sig.slot(), [&](std::exception_ptr e, Outcome o) {
                     if (e) std::rethrow_exception(e);
                     out = std::move(o);
                   }));
    s.clock.run_for(s.io, 10min);
    sig.emit(asio::cancellation_type::terminal);
    s.clock.run(s.io);
    REQUIRE(out);
    CHECK(out->status == Status::aborted);
    CHECK(contains(out->reason, "run() was cancelled by its caller"));
    CHECK(s.lb.state() == all_stable());
  }
}

TEST_CASE("load balancer failures: a failed step rolls back, and a failed restore is Failed with both errors") {
  SUBCASE("set_weight rejected") {
    Scenario s;
    s.lb.fail_call(3, Fault::fail(Error(errc::unknown_server, "No such server.")));
    auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1min), steps::set_weight(50_pct)}));
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::unknown_server));
    CHECK(contains(out.reason, "set_weight 50% failed: lb.apply({canary: 50%, stable: 50%}): No such server."));
    CHECK(out.active == "stable");
  }
  SUBCASE("restore fails too") {
    Scenario s;
    s.bad_from(0s);
    s.opts.lb_retry.max_attempts = 2;
    s.lb.fail_call(3, Fault::fail(Error(errc::lb_unavailable, "connection refused")));
    s.lb.fail_call(4, Fault::fail(Error(errc::lb_unavailable, "connection refused")));
    auto out = s.run(CanaryPlan::of({steps::set_weight(10_pct), steps::analyze({"smoke", {error_rate(std::nullopt, std::nullopt)}})}));
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::rollback_failed));
    CHECK(contains(out.reason, "analysis smoke failed"));
    CHECK(contains(out.reason, "restoring 100% stable failed too: lb.apply({canary: 0%, stable: 100%}): connection refused"));
    CHECK(out.active.empty());
  }
}

TEST_CASE("invalid plans and options name the step and the field") {
  auto reject = [](auto make) {
    try {
      make();
    } catch (const invalid_option& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(reject([] { CanaryPlan::of({}); }) == "invalid option steps = []: a plan needs at least one step");
  CHECK(reject([] { CanaryPlan::of({steps::set_weight(20_pct), steps::set_weight(10_pct)}); }) ==
        "invalid option steps[1].weight = 10%: must not be lower than the previous weight (20%); set allow_decrease to permit it");
  CHECK(reject([] { CanaryPlan::of({steps::set_weight(20_pct), steps::set_weight(10_pct)}, true); }) == "accepted");
  CHECK(reject([] { CanaryPlan::of({steps::set_weight(5_pct), steps::pause(0s)}); }) ==
        "invalid option steps[1].duration = 0s: must be greater than 0");
  CHECK(reject([] { CanaryPlan::of({steps::pause(-1min)}); }) == "invalid option steps[0].duration = -1m: must be greater than 0");
  CHECK(reject([] {
          auto m = error_rate();
          m.interval = -1s;
          CanaryPlan::of({steps::set_weight(5_pct), steps::analyze({"a", {m}})});
        }) == "invalid option steps[1].analysis.metrics[0].interval = -1s: must be greater than 0");
  CHECK(reject([] { CanaryPlan::of({steps::analyze({"a", {}})}); }) ==
        "invalid option steps[0].analysis.metrics = []: an analysis needs at least one metric");
  CHECK(reject([] { CanaryPlan::linear(0_pct, 50_pct, 1min); }) == "invalid option step_weight = 0%: must be greater than 0%");
  CHECK(reject([] { CanaryPlan::linear(20_pct, 10_pct, 1min); }) == "invalid option max_weight = 10%: must be at least step_weight (20%)");
  CHECK(reject([] { CanaryPlan::weights({5_pct}, 0s); }) == "invalid option interval = 0s: must be greater than 0");
  CHECK(reject([] {
          Scenario s;
          s.opts.baseline_group = "baseline";
          Can c(s.lb, s.metrics, Revision{"v1"}, Revision{"v2"}, CanaryPlan::of({steps::set_weight(60_pct)}), s.opts, s.clock);
        }) == "invalid option steps[0].weight = 60%: must be at most 50% when a baseline gets the same weight");
  CHECK(reject([] {
          Scenario s;
          s.opts.background = BackgroundAnalysis{{"bg", {error_rate()}}, 5};
          Can c(s.lb, s.metrics, Revision{"v1"}, Revision{"v2"}, CanaryPlan::of({steps::set_weight(10_pct)}), s.opts, s.clock);
        }) == "invalid option background.start_step = 5: must be a step index below 1");
  CHECK(reject([] {
          Scenario s;
          s.opts.canary_group = "stable";
          Can c(s.lb, s.metrics, Revision{"v1"}, Revision{"v2"}, CanaryPlan::of({steps::set_weight(10_pct)}), s.opts, s.clock);
        }) == "invalid option canary_group = \"stable\": must differ from stable_group");
  CHECK(reject([] {
          Scenario s;
          Can c(s.lb, s.metrics, Revision{"v1"}, Revision{"v1"}, CanaryPlan::of({steps::set_weight(10_pct)}), s.opts, s.clock);
        }) == "invalid option canary = \"v1\": must differ from the stable revision");
}

TEST_CASE("state and steps print with fmt") {
  CanaryState st;
  st.phase = CanaryPhase::progressing;
  st.step = 3;
  st.step_weight = 10_pct;
  st.applied = TrafficSplit::of({{"stable", 90_pct}, {"canary", 10_pct}});
  CHECK(fmt::format("{}", st) == "progressing at steps[3], step weight 10%, applied {canary: 10%, stable: 90%}");
  CHECK(fmt::format("{}", steps::pause()) == "pause until promoted");
  CHECK(fmt::format("{}", steps::pause(90s)) == "pause 1m30s");
  CHECK(fmt::format("{}", steps::set_weight(12.5_pct)) == "set_weight 12.5%");
  AnalysisSpec slo;
  slo.name = "slo";
  CHECK(fmt::format("{}", steps::analyze(slo)) == "analyze slo");
}

TEST_CASE("copies of a plan share its steps, and a moved-from plan keeps them") {
  const auto plan = CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1min), steps::set_weight(50_pct)});
  auto copy = plan;
  CHECK(&copy.steps() == &plan.steps());  // one list, not two
  auto moved = std::move(copy);
  CHECK(&moved.steps() == &plan.steps());
  CHECK(copy.steps().size() == 3);  // NOLINT(bugprone-use-after-move): the point of the check
  CHECK(fmt::format("{}", copy) == "[set_weight 10%, pause 1m, set_weight 50%]");
  copy = CanaryPlan::of({steps::pause()});
  CHECK(plan.steps().size() == 3);  // assigning a copy leaves the others as they were
  CHECK(copy.steps().size() == 1);
}

TEST_CASE("an abort at every suspension point takes effect at once and ends on stable, with nothing leaked") {
  struct Fixture {
    asio::io_context io;
    SimClock clock;
    testing::ScriptedLoadBalancer<> lb{clock, all_stable()};
    testing::ScriptedMetrics<> metrics{clock};
    testing::InvariantChecker invariants;
    std::unique_ptr<testing::CanaryInvariants> rule;
    std::unique_ptr<Can> canary;
    Fixture() {
      metrics.constant("error-rate", ScopeRole::canary, MetricValue{0.001});
      CanaryOptions o;
      o.background = BackgroundAnalysis{AnalysisSpec{"slo", {error_rate(30s, std::nullopt, 1)}}, 0};
      auto plan = CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1min), steps::analyze(AnalysisSpec{"gate", {error_rate(20s, 2)}}),
                                  steps::set_weight(50_pct), steps::pause(1min)});
      canary = std::make_unique<Can>(lb, metrics, Revision{"v1"}, Revision{"v2"}, std::move(plan), o, clock);
      rule = std::make_unique<testing::CanaryInvariants>("canary", [this] { return lb.state(); });
      rule->install(invariants);
      canary->observers().add(invariants);
    }
    Can& strategy() { return *canary; }
  };
  const auto rep = testing::abort_sweep([] { return std::make_unique<Fixture>(); }, [](Fixture& f, const Outcome& out, std::size_t k) {
    CAPTURE(k);
    CHECK_MESSAGE(f.invariants.ok(), f.invariants.report());
    CHECK(detail::live_tasks() == 0);
    CHECK(f.clock.pending_timers() == 0);
    // Aborted, even during the full promotion (Argo #4461); Promoted only if 100% canary
    // had already been verified when the abort came (the run had nothing left to do).
    bool promoted_before_abort = false;
    for (const auto& e : out.timeline) {
      if (e.kind == EventKind::abort_requested) break;
      if (e.kind == EventKind::traffic_applied && e.split && e.split->weight_of("canary").is_full()) promoted_before_abort = true;
    }
    if (promoted_before_abort) {
      CHECK(out.status == Status::promoted);
      CHECK(f.lb.state().sole_group() == "canary");
    } else {
      CHECK(out.status == Status::aborted);
      CHECK(f.lb.state().sole_group() == "stable");
    }
  });
  MESSAGE(fmt::format("canary abort sweep: {} abort points, {} Aborted, {} after the promotion was verified; abort to effect at most {} "
                      "(point {}), to the end at most {}",
                      rep.completions, rep.aborted, rep.other, format_duration(rep.worst_to_effect), rep.worst_point,
                      format_duration(rep.worst_to_end)));
  CHECK(rep.completions > 50);
  // Only the last completions: after the final traffic_applied (each such point is
  // checked above). 3 since a switch's attempt cancels its deadline timer, which
  // completes once more; 2 before.
  CHECK(rep.other <= 3);
  // No pause (1 min), measurement interval (20-30 s) or query (10 ms) is waited for; at most a
  // weight change already in flight (5 ms) and the switch back (5 ms).
  CHECK(rep.worst_to_effect <= 10ms);
  CHECK(rep.worst_to_end <= 10ms);
}
