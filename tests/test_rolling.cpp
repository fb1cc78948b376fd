// Rolling<Orchestrator>: Kubernetes budgets, pipelining, failures, deadlines,
// rollback, partition, resume, control, and 1,000 randomised scenarios, under the
// simulated clock with the fake orchestrator. Capacity invariants are checked
// after every event by testing::RollingInvariants.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/strategy/rolling.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using testing::SimClock;
using testing::StartScript;
// Every update runs twice: with an orchestrator that waits for each start-up with
// its own wait_ready call, and with one that reports readiness through a ReadinessWatch.
using PerInstance = testing::FakeOrchestrator<>;
using Watching = testing::WatchingFakeOrchestrator<>;
TYPE_TO_STRING(PerInstance);
TYPE_TO_STRING(Watching);
// (Inside these templated cases percentages are Percent::from_percent(n), not
// n_pct: clang 14 leaves a consteval literal in a template uncalled at compile
// time and the link fails.)
#define ROLLING_CASE(name) TEST_CASE_TEMPLATE(name, Orch, PerInstance, Watching)
// In each case: `Scenario` and `Roll` for the orchestrator under test.
#define ROLLING_TYPES              \
  using Scenario = ScenarioT<Orch>; \
  using Roll [[maybe_unused]] = typename Scenario::Roll

namespace {

template <class Orch>
struct ScenarioT {
  using Roll = Rolling<Orch, SimClock>;
  asio::io_context io;
  SimClock clock;
  Orch orch{clock};
  RollingOptions opts;
  Revision from{"v1"};
  Revision to{"v2"};
  testing::InvariantChecker invariants;
  std::unique_ptr<testing::RollingInvariants> capacity;
  std::vector<std::pair<Duration, std::function<void(Roll&)>>> actions;

  explicit ScenarioT(std::int64_t desired, int existing = -1) {
    opts.desired = desired;
    for (int i = 0; i < (existing < 0 ? desired : existing); ++i) {
      orch.adopt({fmt::format("v1-old-{:02}", i), {"v1"}, {"10.0.0.1", static_cast<std::uint16_t>(9000 + i)}});
    }
  }

  /// Every new instance starts in `latency` (or as `script` says).
  void start_latency(Duration latency) {
    orch.on_create = [latency](const Revision&, std::size_t) { return StartScript{latency, false, false}; };
  }
  void at(Duration when, std::function<void(Roll&)> f) { actions.emplace_back(when, std::move(f)); }

  Outcome run() {
    Roll roll(orch, from, to, opts, clock);
    std::vector<std::string> initial;
    for (const auto& i : orch.instances()) initial.push_back(i.id);
    capacity = std::make_unique<testing::RollingInvariants>(
        opts.desired, roll.budgets().surge, roll.budgets().unavailable, initial, [this] { return orch.size(); },
        [this](const std::string& id) { return orch.is_ready(id); });
    capacity->install(invariants);
    roll.observers().add(invariants);
    if (std::getenv("ROLLOUT_TRACE")) roll.observers().add([](const Event& e) { fmt::print(stderr, "{}\n", e); });
    for (auto& [when, f] : actions) {
      asio::co_spawn(io, [](SimClock c, Duration w, std::function<void(Roll&)> f, Roll& r) -> asio::awaitable<void> {
        co_await detail::sleep_for(c, w);
        f(r);
      }(clock, when, f, roll), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    }
    auto out = testing::run_sim(io, clock, roll.run());
    CHECK_MESSAGE(invariants.ok(), invariants.report());
    CHECK(detail::live_tasks() == 0);
    CHECK(clock.pending_timers() == 0);
    REQUIRE(out.fleet);
    // Nothing leaks: the reported fleet is the real one, and nothing in it is still starting.
    CHECK(out.fleet->fleet == orch.instances());
    for (const auto& i : orch.instances()) CHECK_MESSAGE(orch.is_ready(i.id), i.id);
    // The state shown after the run has the outcome's counts; the fleet is in the outcome only.
    CHECK(roll.state().report.fleet.empty());
    CHECK(roll.state().report.created == out.fleet->created);
    CHECK(roll.state().report.retired == out.fleet->retired);
    CHECK(roll.state().report.failed == out.fleet->failed);
    return out;
  }

  std::size_t count(const char* rev) const { return orch.count(Revision{rev}); }
};

// Timeline events are values, rebuilt on each read: the helpers return copies.
std::optional<Event> find(const Outcome& o, EventKind k, const std::string& subject = {}) {
  for (const auto& e : o.timeline) {
    if (e.kind == k && (subject.empty() || e.subject == subject)) return e;
  }
  return std::nullopt;
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("Kubernetes rounding: surge up, unavailable down, both 0 makes unavailable 1") {
  CHECK(resolve_budgets(10, 25_pct, 25_pct) == ResolvedBudgets{3, 2});
  CHECK(resolve_budgets(1, 25_pct, 25_pct) == ResolvedBudgets{1, 0});
  CHECK(resolve_budgets(4, 0, 25_pct) == ResolvedBudgets{0, 1});
  CHECK(resolve_budgets(3, 0, 10_pct) == ResolvedBudgets{0, 1});  // 10% of 3 rounds down to 0: bumped to 1
  CHECK(resolve_budgets(3, 0_pct, 10_pct) == ResolvedBudgets{0, 1});
  CHECK(resolve_budgets(10, 30_pct, 30_pct) == ResolvedBudgets{3, 3});
  CHECK(resolve_budgets(7, 50_pct, 50_pct) == ResolvedBudgets{4, 3});
  CHECK(resolve_budgets(5, 1, 0) == ResolvedBudgets{1, 0});
  CHECK(resolve_budgets(100, 0, 1_pct) == ResolvedBudgets{0, 1});
  CHECK(resolve_budgets(100, 100_pct, 0) == ResolvedBudgets{100, 0});
  CHECK(resolve_budgets(2, 10, 10) == ResolvedBudgets{10, 10});  // absolute values are taken as given
}

ROLLING_CASE("desired 10, surge 25% / unavailable 0: never below 10 serving, never above 13") {
  ROLLING_TYPES;
  Scenario s(10);
  s.opts.max_surge = Percent::from_percent(25);
  s.opts.max_unavailable = 0;
  s.start_latency(10s);
  // The state counts as the update goes, not only at its end.
  std::optional<FleetReport> at_15s;
  s.at(15s, [&](Roll& r) { at_15s = r.state().report; });
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(s.count("v2") == 10);
  CHECK(s.count("v1") == 0);
  CHECK(s.capacity->min_serving() == 10);
  CHECK(s.capacity->max_fleet() == 13);
  REQUIRE(at_15s);
  CHECK(at_15s->created == 6);  // the first lane's three, then three more once three old ones were retired
  CHECK(at_15s->retired == 3);
  CHECK(at_15s->failed == 0);
  CHECK(at_15s->fleet.empty());
  CHECK(out.fleet->created == 10);
  CHECK(out.fleet->retired == 10);
  CHECK(out.fleet->failed == 0);
  CHECK(out.timeline.size() == 44);  // 10 replacements of 4 events, and the run's own 4
  CHECK(out.timeline.capacity() == out.timeline.size());  // reserved for exactly these: no doubling
  // Three lanes of 10 s start-ups (plus 50 ms create and 50 ms retire): four rounds.
  CHECK(out.elapsed < 45s);
}

ROLLING_CASE("desired 10, surge 0 / unavailable 25%: never below 8 serving, never above 10") {
  ROLLING_TYPES;
  Scenario s(10);
  s.opts.max_surge = 0;
  s.opts.max_unavailable = Percent::from_percent(25);
  s.start_latency(10s);
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(s.count("v2") == 10);
  CHECK(s.capacity->min_serving() == 8);
  CHECK(s.capacity->max_fleet() == 10);
}

ROLLING_CASE("desired 1 with the defaults: surge 1, unavailable 0") {
  ROLLING_TYPES;
  Scenario s(1);
  s.start_latency(3s);
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(s.capacity->min_serving() == 1);
  CHECK(s.capacity->max_fleet() == 2);
  std::vector<std::string> kinds;
  for (const auto& e : out.timeline) {
    if (e.kind == EventKind::instance_created || e.kind == EventKind::instance_ready || e.kind == EventKind::instance_retiring ||
        e.kind == EventKind::instance_retired) {
      kinds.push_back(fmt::format("{} {} {}", format_duration(e.at), e.kind, e.subject));
    }
  }
  CHECK(kinds == std::vector<std::string>{"50ms instance_created v2-0000", "3.05s instance_ready v2-0000",
                                          "3.05s instance_retiring v1-old-00", "3.1s instance_retired v1-old-00"});
}

ROLLING_CASE("heterogeneous start latencies: pipelining beats lockstep batches and meets the list-scheduling bound") {
  ROLLING_TYPES;
  const std::vector<Duration> latency{60s, 5s, 5s, 5s, 60s, 5s, 5s, 5s, 60s, 5s, 5s, 5s};
  Scenario s(static_cast<std::int64_t>(latency.size()));
  s.opts.max_surge = 3;
  s.opts.max_unavailable = 0;
  s.orch.on_create = [&](const Revision&, std::size_t n) { return StartScript{latency[n % latency.size()], false, false}; };
  auto out = s.run();
  REQUIRE(out.status == Status::promoted);
  // One replacement = create (50 ms) + start-up + retire (50 ms), on one of 3 lanes.
  const Duration overhead = 100ms;
  Duration sum{}, longest{}, lockstep{};
  for (const auto& l : latency) {
    sum += l + overhead;
    longest = std::max(longest, l + overhead);
  }
  for (std::size_t b = 0; b < latency.size(); b += 3) {  // the seed's lockstep batches: each waits for its slowest
    lockstep += *std::max_element(latency.begin() + static_cast<std::ptrdiff_t>(b),
                                  latency.begin() + static_cast<std::ptrdiff_t>(std::min(b + 3, latency.size()))) +
                overhead;
  }
  const Duration lower_bound = std::max(longest, sum / 3);
  MESSAGE(fmt::format("makespan {} (lower bound {}, Graham bound {}, lockstep batches {})", format_duration(out.elapsed),
                      format_duration(lower_bound), format_duration(sum / 3 + longest), format_duration(lockstep)));
  CHECK(out.elapsed >= lower_bound);
  CHECK(out.elapsed <= sum / 3 + longest);  // greedy list scheduling never does worse (Graham, 1966)
  CHECK(out.elapsed < lockstep);
  CHECK(out.elapsed <= lower_bound + lower_bound / 5);  // and lands within 20% of the lower bound
}

ROLLING_CASE("a never-ready instance is retired, counted and replaced") {
  ROLLING_TYPES;
  Scenario s(4);
  s.opts.ready_deadline = 1min;
  s.orch.on_create = [](const Revision&, std::size_t n) { return StartScript{5s, n == 1, false}; };
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(out.fleet->failed == 1);
  CHECK(out.fleet->created == 5);
  const auto failed = find(out, EventKind::instance_failed, "v2-0001");
  REQUIRE(failed);
  if constexpr (WatchesReadiness<Orch>) {
    CHECK(failed->detail == "v2-0001 was not ready within 1m (readiness watch)");
  } else {
    CHECK(failed->detail == "orchestrator.wait_ready(v2-0001) timed out after 1m");
  }
  CHECK(find(out, EventKind::instance_retired, "v2-0001"));
  CHECK(s.count("v2") == 4);
}

ROLLING_CASE("crashes beyond max_failed_instances fail the update, which rolls back") {
  ROLLING_TYPES;
  Scenario s(4);
  s.opts.max_failed_instances = 2;
  s.orch.on_create = [](const Revision& r, std::size_t) { return StartScript{2s, false, r.id == "v2"}; };
  auto out = s.run();
  CHECK(out.status == Status::rolled_back);
  CHECK(out.code == make_error_code(errc::too_many_failures));
  CHECK(contains(out.reason, "2 instances of v2 failed (max_failed_instances 2)"));
  CHECK(contains(out.reason, "exited with code 1 while starting"));
  CHECK(contains(out.reason, "rolled back to v1"));
  CHECK(s.count("v1") == 4);
  CHECK(s.count("v2") == 0);
  CHECK(out.active == "v1");
}

ROLLING_CASE("the progress deadline turns a stuck update into a rollback") {
  ROLLING_TYPES;
  Scenario s(3);
  s.opts.progress_deadline = 2min;
  s.opts.ready_deadline = 1h;
  s.opts.max_failed_instances = 100;
  s.orch.on_create = [](const Revision& r, std::size_t) { return StartScript{1s, r.id == "v2", false}; };
  auto out = s.run();
  CHECK(out.status == Status::rolled_back);
  CHECK(out.code == make_error_code(errc::progress_deadline));
  CHECK(contains(out.reason, "no instance became available or was retired for 2m"));
  const auto rb = find(out, EventKind::rollback_started);
  REQUIRE(rb);
  CHECK(rb->at == 2min);
  CHECK(s.count("v1") == 3);
  CHECK(s.count("v2") == 0);
}

ROLLING_CASE("on_failure = pause holds the fleet until resume, then continues") {
  ROLLING_TYPES;
  Scenario s(3);
  s.opts.on_failure = OnFailure::pause;
  s.opts.max_failed_instances = 1;
  bool fixed = false;
  s.orch.on_create = [&](const Revision& r, std::size_t) { return StartScript{2s, false, r.id == "v2" && !fixed}; };
  s.at(10min, [&](Roll& r) {
    CHECK(r.state().phase == RollingPhase::paused);
    CHECK(r.state().report.failed >= 1);  // the crash that paused it is counted already
    fixed = true;  // the operator fixed the image
    r.control().resume();
  });
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(s.count("v2") == 3);
  const auto paused = find(out, EventKind::paused);
  REQUIRE(paused);
  CHECK(contains(paused->detail, "update failed, holding"));
  CHECK(find(out, EventKind::resumed)->at == 10min);
}

ROLLING_CASE("partition leaves k old instances, and a later run continues without extras") {
  ROLLING_TYPES;
  Scenario s(6);
  s.opts.partition = 2;
  s.start_latency(4s);
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(out.reason == "4 of 6 instances on v2, 2 left on v1 (partition)");
  CHECK(s.count("v2") == 4);
  CHECK(s.count("v1") == 2);
  // The lowest ids stay, like StatefulSet ordinals below the partition.
  auto fleet = s.orch.instances();
  CHECK(std::count_if(fleet.begin(), fleet.end(), [](const Instance& i) { return i.id == "v1-old-00" || i.id == "v1-old-01"; }) == 2);

  // Continue: a new run over the same fleet, partition 0.
  s.opts.partition = 0;
  s.invariants = testing::InvariantChecker{};
  auto next = s.run();
  CHECK(next.status == Status::promoted);
  CHECK(next.fleet->created == 2);  // only the two still on v1 were replaced
  CHECK(s.count("v2") == 6);
  CHECK(s.orch.created() == 6);
}

ROLLING_CASE("resume from a half-done fleet counts both revisions and creates no extras") {
  ROLLING_TYPES;
  Scenario s(5, 3);
  s.orch.adopt({"v2-prev-0", {"v2"}, {"10.0.0.2", 9100}});
  s.orch.adopt({"v2-prev-1", {"v2"}, {"10.0.0.2", 9101}});
  s.start_latency(3s);
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(out.fleet->created == 3);
  CHECK(s.count("v2") == 5);
  CHECK(s.count("v1") == 0);
  CHECK(find(out, EventKind::instance_ready, "v2-prev-0"));  // adopted, after wait_ready confirmed it
}

ROLLING_CASE("abort mid-way rolls back under the same budgets, and the rollback is not cancelled") {
  ROLLING_TYPES;
  Scenario s(8);
  s.start_latency(20s);
  s.at(30s, [](Roll& r) { r.control().abort("canary dashboards red"); });
  s.at(31s, [](Roll& r) { r.control().abort("second abort during the rollback is ignored"); });
  auto out = s.run();
  CHECK(out.status == Status::aborted);
  CHECK(out.reason == "aborted: canary dashboards red; rolled back to v1");
  CHECK(s.count("v1") == 8);
  CHECK(s.count("v2") == 0);
  CHECK(out.fleet->fleet.size() == 8);
  CHECK(find(out, EventKind::rollback_started)->at == 30s);
}

ROLLING_CASE("cancelling the caller rolls back, then returns") {
  ROLLING_TYPES;
  Scenario s(4);
  s.start_latency(20s);
  Roll roll(s.orch, s.from, s.to, s.opts, s.clock);
  asio::cancellation_signal sig;
  std::optional<Outcome> out;
  asio::co_spawn(s.io, roll.run(), asio::bind_cancellation_slot(sig.slot(), [&](std::exception_ptr e, Outcome o) {
                   if (e) std::rethrow_exception(e);
                   out = std::move(o);
                 }));
  s.clock.run_for(s.io, 25s);
  sig.emit(asio::cancellation_type::terminal);
  s.clock.run(s.io);
  REQUIRE(out);
  CHECK(out->status == Status::aborted);
  CHECK(contains(out->reason, "run() was cancelled by its caller"));
  CHECK(s.count("v1") == 4);
  CHECK(s.count("v2") == 0);
}

ROLLING_CASE("pause holds new work and the progress clock, and resume continues") {
  ROLLING_TYPES;
  Scenario s(4);
  s.opts.progress_deadline = 1min;
  s.start_latency(10s);
  s.at(5s, [](Roll& r) { r.control().pause(); });
  s.at(30min, [](Roll& r) { r.control().resume(); });
  auto out = s.run();
  CHECK(out.status == Status::promoted);  // half an hour of pause did not trip the 1 min progress deadline
  CHECK(out.elapsed > 30min);
}

TEST_CASE("invalid options are rejected with the field and the value") {
  using Scenario = ScenarioT<PerInstance>;
  using Roll = Scenario::Roll;
  auto reject = [](auto mutate) {
    Scenario s(4);
    mutate(s);
    try {
      Roll r(s.orch, s.from, s.to, s.opts, s.clock);
    } catch (const invalid_option& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(reject([](Scenario& s) { s.opts.desired = 0; }) == "invalid option desired = 0: must be within 1..1000000");
  CHECK(reject([](Scenario& s) { s.opts.max_surge = -1; }) == "invalid option max_surge = -1: must be within 0..1000000");
  CHECK(reject([](Scenario& s) { s.opts.max_unavailable = -2; }) == "invalid option max_unavailable = -2: must be within 0..1000000");
  CHECK(reject([](Scenario& s) {
          s.opts.max_surge = 0;
          s.opts.max_unavailable = 0;
        }) == "invalid option max_surge = 0 (max_unavailable 0): max_surge and max_unavailable are both 0: the update could never make progress");
  CHECK(contains(reject([](Scenario& s) {
                   s.opts.max_surge = 0_pct;
                   s.opts.max_unavailable = 0;
                 }),
                 "are both 0"));
  CHECK(reject([](Scenario& s) { s.opts.partition = 5; }) == "invalid option partition = 5: must be within 0..desired (4)");
  CHECK(reject([](Scenario& s) { s.opts.partition = -1; }) == "invalid option partition = -1: must be within 0..desired (4)");
  CHECK(reject([](Scenario& s) { s.opts.min_ready = -1s; }) == "invalid option min_ready = -1s: must not be negative");
  CHECK(reject([](Scenario& s) { s.opts.progress_deadline = 0s; }) == "invalid option progress_deadline = 0s: must be greater than 0");
  CHECK(reject([](Scenario& s) { s.opts.ready_deadline = -1min; }) == "invalid option ready_deadline = -1m: must be greater than 0");
  CHECK(reject([](Scenario& s) { s.opts.max_failed_instances = 0; }) == "invalid option max_failed_instances = 0: must be at least 1");
  CHECK(reject([](Scenario& s) { s.to = Revision{"v1"}; }) == "invalid option to = \"v1\": must differ from the old revision");
  CHECK(reject([](Scenario& s) { s.opts.retry.jitter = 2; }) == "invalid option retry.jitter = 2: must be within 0..1");
  CHECK(reject([](Scenario& s) { s.opts.burst = 0; }) == "invalid option burst = 0: must be within 1..1000000");
  CHECK(reject([](Scenario&) {}) == "accepted");
}

ROLLING_CASE("orchestrator faults: transient errors are retried, permanent ones counted") {
  ROLLING_TYPES;
  Scenario s(3);
  testing::FaultPlan plan;
  s.orch.set_plan(&plan);
  plan.inject_where([](const testing::FaultPlan::Call& c) -> std::optional<testing::Fault> {
    if (c.policy == "orchestrator.create" && c.index % 4 == 0) return testing::Fault::fail(Error(errc::timeout, "API server slow"));
    if (c.policy == "orchestrator.retire" && c.index % 5 == 0) return testing::Fault::hang_forever();
    return std::nullopt;
  });
  s.opts.call_timeout = 30s;
  s.start_latency(2s);
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(out.fleet->failed == 0);  // every transient fault was absorbed by a retry
  CHECK(s.count("v2") == 3);
  CHECK_FALSE(plan.injected().empty());
}

ROLLING_CASE("burst bounds the creates and the retirements in flight; the budgets still pace the rest") {
  ROLLING_TYPES;
  Scenario s(30);
  s.opts.max_surge = Percent::from_percent(100);
  s.opts.max_unavailable = Percent::from_percent(50);
  s.opts.burst = 4;
  s.start_latency(5s);
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(s.count("v2") == 30);
  CHECK(s.orch.peak_creating() == 4);  // 30 at once without the bound (below)
  CHECK(s.orch.peak_retiring() == 4);  // 15 at once without it
  Scenario wide(30);
  wide.opts.max_surge = Percent::from_percent(100);
  wide.opts.max_unavailable = Percent::from_percent(50);
  wide.start_latency(5s);
  CHECK(wide.run().status == Status::promoted);
  CHECK(wide.orch.peak_creating() == 30);  // the default burst, 500, leaves the surge budget as the bound
  CHECK(wide.orch.peak_retiring() == 15);
}

TEST_CASE("the fake's readiness watch keeps the ReadinessWatch contract") {
  asio::io_context io;
  SimClock clock;
  Watching orch(clock);
  orch.adopt({"v1-ready", {"v1"}, {"10.0.0.1", 9000}});
  // v2-0000 ready at 10 s, v2-0001 crashes at 20 s, v2-0002 ready at 30 s.
  orch.on_create = [](const Revision&, std::size_t n) { return StartScript{std::chrono::seconds(10 * (n + 1)), false, n == 1}; };
  std::vector<Instance> made;
  for (int k = 0; k < 3; ++k) made.push_back(testing::run_sim(io, clock, orch.create(Revision{"v2"})).value());
  auto w = orch.watch_readiness();
  static_assert(ReadinessWatch<decltype(w)>);
  w.add(orch.instances().front());                           // already ready: reported at once
  w.add(Instance{"ghost", {"v2"}, {"10.0.0.9", 9000}});      // unknown: reported as failed, not dropped
  for (const auto& i : made) w.add(i);
  w.remove(made[2].id);  // never reported
  CHECK(w.watching() == 4);
  const auto t0 = clock.now();
  auto first = testing::run_sim(io, clock, w.next());
  REQUIRE(first.has_value());
  REQUIRE(first->size() == 2);
  CHECK(clock.now() == t0);
  for (const auto& r : *first) {
    if (r.id == "v1-ready") CHECK(r.ready.has_value());
    else CHECK((r.id == "ghost" && !r.ready && r.ready.error().message == "ghost is not in the fleet"));
  }
  // A cancelled next() loses nothing: v2-0000 is reported by the next one.
  {
    asio::cancellation_signal sig;
    bool cancelled_done = false;
    asio::co_spawn(io, w.next(), asio::bind_cancellation_slot(sig.slot(), [&](std::exception_ptr e, result<std::vector<ReadinessReport>> r) {
                     cancelled_done = e || !r;
                   }));
    clock.run_for(io, 5s);
    sig.emit(asio::cancellation_type::terminal);
    clock.run_for(io, 0s);
    CHECK(cancelled_done);
  }
  CHECK_FALSE(orch.is_ready(made[0].id));
  auto second = testing::run_sim(io, clock, w.next());
  REQUIRE(second.has_value());
  REQUIRE(second->size() == 1);
  CHECK((*second)[0].id == made[0].id);
  CHECK((*second)[0].ready.has_value());
  CHECK(orch.is_ready(made[0].id));
  auto third = testing::run_sim(io, clock, w.next());
  REQUIRE(third.has_value());
  REQUIRE(third->size() == 1);
  CHECK((*third)[0].id == made[1].id);
  REQUIRE_FALSE((*third)[0].ready);
  CHECK((*third)[0].ready.error().code == make_error_code(errc::instance_failed));
  CHECK(w.watching() == 0);
  CHECK(clock.pending_timers() == 0);
}

TEST_CASE("a broken readiness watch is retried, and start-ups that miss their deadline quote its error") {
  SUBCASE("two failed next() calls: the update still converges, with no failure") {
    ScenarioT<Watching> s(3);
    testing::FaultPlan plan;
    s.orch.set_plan(&plan);
    int broken = 0;
    plan.inject_where([&](const testing::FaultPlan::Call& c) -> std::optional<testing::Fault> {
      if (c.policy == "orchestrator.watch_readiness" && ++broken <= 2) return testing::Fault::fail(Error(errc::timeout, "watch stream reset"));
      return std::nullopt;
    });
    s.start_latency(2s);
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(out.fleet->failed == 0);
    CHECK(broken > 2);
  }
  SUBCASE("once the watch recovers, a start-up that misses its deadline quotes no old error") {
    ScenarioT<Watching> s(3);
    testing::FaultPlan plan;
    s.orch.set_plan(&plan);
    int broken = 0;
    plan.inject_where([&](const testing::FaultPlan::Call& c) -> std::optional<testing::Fault> {
      if (c.policy == "orchestrator.watch_readiness" && ++broken <= 2) return testing::Fault::fail(Error(errc::timeout, "watch stream reset"));
      return std::nullopt;
    });
    s.opts.ready_deadline = 1min;
    s.orch.on_create = [](const Revision&, std::size_t n) { return StartScript{2s, n == 1, false}; };
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(out.fleet->failed == 1);
    const auto failed = find(out, EventKind::instance_failed, "v2-0001");
    REQUIRE(failed);
    CHECK(failed->detail == "v2-0001 was not ready within 1m (readiness watch)");
  }
  SUBCASE("every next() fails: each start-up misses its deadline, and the update rolls back") {
    ScenarioT<Watching> s(3);
    testing::FaultPlan plan;
    s.orch.set_plan(&plan);
    plan.inject_where([](const testing::FaultPlan::Call& c) -> std::optional<testing::Fault> {
      if (c.policy == "orchestrator.watch_readiness") return testing::Fault::fail(Error(errc::lb_unavailable, "watch stream reset"));
      return std::nullopt;
    });
    s.opts.ready_deadline = 1min;
    s.start_latency(2s);
    auto out = s.run();
    CHECK(out.status == Status::rolled_back);
    CHECK(out.code == make_error_code(errc::too_many_failures));
    CHECK(contains(out.reason, "was not ready within 1m (readiness watch); the watch's last error: watch stream reset"));
    CHECK(s.count("v1") == 3);
    CHECK(s.count("v2") == 0);
  }
}

ROLLING_CASE("randomised: 1,000 seeded scenarios keep every invariant after every event") {
  ROLLING_TYPES;
  std::size_t promoted = 0, rolled_back = 0, aborted = 0, failed = 0;
  const std::uint64_t only = std::getenv("ROLLOUT_SEED") ? std::strtoull(std::getenv("ROLLOUT_SEED"), nullptr, 10) : 0;
  for (std::uint64_t seed = only ? only : 1; seed <= (only ? only : 1000); ++seed) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    auto pick = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
    const auto desired = pick(1, 12);
    Scenario s(desired, static_cast<int>(pick(std::max<std::int64_t>(0, desired - 2), desired)));
    auto budget = [&]() -> Budget {
      if (pick(0, 1) == 0) return Budget(pick(0, 3));
      return Budget(Percent::from_percent(pick(0, 4) * 25));
    };
    do {
      s.opts.max_surge = budget();
      s.opts.max_unavailable = budget();
    } while (s.opts.max_surge.is_zero() && s.opts.max_unavailable.is_zero());
    s.opts.min_ready = pick(0, 1) ? 5s : 0s;
    s.opts.ready_deadline = std::chrono::seconds(pick(30, 120));
    s.opts.progress_deadline = std::chrono::seconds(pick(60, 600));
    s.opts.max_failed_instances = pick(1, 6);
    if (pick(0, 4) == 0) s.opts.partition = pick(0, desired);
    if (pick(0, 9) == 0) s.opts.on_failure = OnFailure::pause;
    const auto fail_pct = pick(0, 25);
    auto script_rng = std::make_shared<std::mt19937_64>(seed * 7919);
    s.orch.on_create = [script_rng, fail_pct](const Revision& rev, std::size_t) {
      auto roll = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(*script_rng); };
      StartScript st{std::chrono::seconds(roll(1, 90)), false, false};
      const auto r = roll(0, 99) * (rev.id == "v1" ? 4 : 1);  // the old revision fails a quarter as often
      if (r < fail_pct / 2) st.never_ready = true;
      else if (r < fail_pct) st.crashes = true;
      return st;
    };
    if (pick(0, 9) == 0) {
      const auto when = std::chrono::seconds(pick(1, 300));
      s.at(when, [](Roll& r) { r.control().abort("random abort"); });
    }
    if (s.opts.on_failure == OnFailure::pause) {
      s.at(2h, [](Roll& r) { r.control().abort("operator gave up"); });  // a paused update must end somehow
    }
    const auto initial_old = static_cast<std::int64_t>(s.count("v1"));
    const auto out = s.run();
    if (!s.invariants.ok()) break;  // the seed is printed by CAPTURE
    switch (out.status) {
      case Status::promoted:
        ++promoted;
        CHECK(static_cast<std::int64_t>(s.count("v2")) == desired - std::min(s.opts.partition, initial_old));
        CHECK(static_cast<std::int64_t>(s.orch.size()) == desired);
        break;
      case Status::rolled_back:
      case Status::aborted:
        ++(out.status == Status::aborted ? aborted : rolled_back);
        CHECK(s.count("v2") == 0);
        CHECK(static_cast<std::int64_t>(s.count("v1")) == desired);
        break;
      case Status::failed:
        ++failed;
        CHECK(out.code == make_error_code(errc::rollback_failed));
        break;
    }
  }
  MESSAGE(fmt::format("1000 scenarios: {} promoted, {} rolled back, {} aborted, {} failed (rollback also failed)", promoted,
                      rolled_back, aborted, failed));
}

TEST_CASE("state, budgets and phases print with fmt") {
  RollingState st;
  st.phase = RollingPhase::rolling_forward;
  st.total = 11;
  st.available = 9;
  st.updated = 4;
  CHECK(fmt::format("{}", st) == "rolling_forward: total 11, available 9, updated 4");
  CHECK(fmt::format("{}", Budget(25_pct)) == "25%");
  CHECK(fmt::format("{}", Budget(3)) == "3");
}

ROLLING_CASE("an abort at every suspension point stops at once and rolls back to v1, with nothing leaked") {
  ROLLING_TYPES;
  struct Fixture {
    asio::io_context io;
    SimClock clock;
    Orch orch{clock};
    testing::InvariantChecker invariants;
    std::unique_ptr<testing::RollingInvariants> capacity;
    std::unique_ptr<Roll> roll;
    Fixture() {
      for (int i = 0; i < 4; ++i) orch.adopt({fmt::format("v1-old-{}", i), {"v1"}, {"10.0.0.1", static_cast<std::uint16_t>(9000 + i)}});
      orch.set_create_latency(50ms);
      orch.set_retire_latency(50ms);
      orch.on_create = [](const Revision&, std::size_t n) { return StartScript{std::chrono::seconds(5 + static_cast<int>(n % 3) * 5), false, false}; };
      RollingOptions o;
      o.desired = 4;
      o.max_surge = 1;
      o.max_unavailable = 0;
      o.min_ready = 2s;
      roll = std::make_unique<Roll>(orch, Revision{"v1"}, Revision{"v2"}, o, clock);
      std::vector<std::string> initial;
      for (const auto& i : orch.instances()) initial.push_back(i.id);
      capacity = std::make_unique<testing::RollingInvariants>(
          o.desired, roll->budgets().surge, roll->budgets().unavailable, initial, [this] { return orch.size(); },
          [this](const std::string& id) { return orch.is_ready(id); });
      capacity->install(invariants);
      roll->observers().add(invariants);
    }
    Roll& strategy() { return *roll; }
  };
  const auto rep = testing::abort_sweep([] { return std::make_unique<Fixture>(); }, [](Fixture& f, const Outcome& out, std::size_t k) {
    CAPTURE(k);
    CHECK_MESSAGE(f.invariants.ok(), f.invariants.report());
    CHECK(detail::live_tasks() == 0);
    CHECK(f.clock.pending_timers() == 0);
    // Aborted and rolled back to v1. Promoted only if the update had converged when
    // the abort was handled: the last old instance's retirement had at least begun
    // before the abort (it finishes either way), and nothing was left to start.
    int old_retiring_before_abort = 0;
    for (const auto& e : out.timeline) {
      if (e.kind == EventKind::abort_requested) break;
      if (e.kind == EventKind::instance_retiring && e.subject.rfind("v1-old-", 0) == 0) ++old_retiring_before_abort;
    }
    REQUIRE(out.fleet);
    CHECK(out.fleet->fleet.size() == 4);  // four instances, all of one revision
    if (out.status == Status::promoted) {
      CHECK(old_retiring_before_abort == 4);
      for (const auto& i : out.fleet->fleet) CHECK(i.revision.id == "v2");
    } else {
      CHECK(out.status == Status::aborted);
      for (const auto& i : out.fleet->fleet) CHECK(i.revision.id == "v1");
    }
  });
  MESSAGE(fmt::format("rolling abort sweep: {} abort points, {} Aborted and rolled back, {} after the update converged; "
                      "abort to rolling back at most {} (point {}), to the end (rollback done) at most {}",
                      rep.completions, rep.aborted, rep.other, format_duration(rep.worst_to_effect), rep.worst_point,
                      format_duration(rep.worst_to_end)));
  CHECK(rep.completions > 30);
  // Only the last completions: after the last old instance's retirement began (each
  // such point is checked above). 7 of 67 since a task's bounded call cancels its
  // deadline timer, which completes once more; 6 before.
  // With a readiness watch, 5 more: the watch's feed and deadline tasks are
  // stopped once the update has converged, and their completions are points too.
  CHECK(rep.other <= (WatchesReadiness<Orch> ? 12 : 7));
  // Start-ups in flight are cancelled and min_ready (2 s) is not waited for; only a
  // retirement already in flight (50 ms) finishes first.
  CHECK(rep.worst_to_effect <= 50ms);
}
