// BlueGreen<LB, Health>: every phase, every failure path and an abort at every
// suspension point, under the simulated clock with the scripted policies (the
// fault matrix is in test_fault_matrix.cpp). Invariants are checked after every
// event by testing::BlueGreenInvariants.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/strategy/blue_green.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace std::chrono_literals;
using testing::Fault;
using testing::SimClock;
using Bg = BlueGreen<testing::ScriptedLoadBalancer<>, testing::ScriptedProbe<>, SimClock>;

namespace {

Environment make_env(const std::string& name, const std::string& rev, int n) {
  Environment e{name, {rev}, {}};
  for (int i = 0; i < n; ++i) {
    e.instances.push_back({fmt::format("{}-{}", name[0], i), {rev}, {"10.0.0.1", static_cast<std::uint16_t>(8000 + i)}});
  }
  return e;
}

std::vector<std::string> ids(const Environment& e) {
  std::vector<std::string> out;
  for (const auto& i : e.instances) out.push_back(i.id);
  return out;
}

// One blue-green scenario: blue (1 instance, v1) active, green (3 instances, v2) target.
struct Scenario {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedLoadBalancer<> lb{clock, TrafficSplit::of({{"blue", Percent::full()}, {"green", Percent{}}})};
  testing::ScriptedProbe<> probe{clock};
  Environment blue = make_env("blue", "v1", 1);
  Environment green = make_env("green", "v2", 3);
  BlueGreenOptions opts;
  testing::InvariantChecker invariants;
  std::vector<std::pair<Duration, std::function<void(Bg&)>>> actions;

  // Schedules `f(bg)` at simulated time `at` after the run starts.
  void at(Duration when, std::function<void(Bg&)> f) { actions.emplace_back(when, std::move(f)); }

  Outcome run() {
    Bg bg(lb, probe, blue, green, opts, clock);
    testing::BlueGreenInvariants rules("blue", "green", ids(green), [this] { return lb.state(); });
    rules.install(invariants);
    bg.observers().add(invariants);
    for (auto& [when, f] : actions) {
      asio::co_spawn(io, [](SimClock c, Duration w, std::function<void(Bg&)> f, Bg& bg) -> asio::awaitable<void> {
        co_await detail::sleep_for(c, w);
        f(bg);
      }(clock, when, f, bg), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    }
    auto out = testing::run_sim(io, clock, bg.run());
    CHECK_MESSAGE(invariants.ok(), invariants.report());
    CHECK(detail::live_tasks() == 0);     // no background coroutine outlived run()
    CHECK(clock.pending_timers() == 0);   // and no timer was left armed
    // When run() returns, 100% of traffic is on exactly one environment, the one the outcome names.
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
std::optional<Event> find_last(const Outcome& o, EventKind k, const std::string& subject = {}) {
  std::optional<Event> last;
  for (const auto& e : o.timeline) {
    if (e.kind == k && (subject.empty() || e.subject == subject)) last = e;
  }
  return last;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("happy path: ready, auto-promoted, switched, verified, old side released after the delay") {
  Scenario s;
  auto out = s.run();
  CHECK(out.status == Status::promoted);
  CHECK(out.active == "green");
  CHECK(out.releasable == "blue");
  CHECK_FALSE(out.code);
  CHECK(out.elapsed == 60s + 7ms);
  std::vector<std::string> lines;
  for (const auto& e : out.timeline) lines.push_back(fmt::format("{}", e));
  CHECK(lines == std::vector<std::string>{
                     "+0s blue_green run_started green: blue-green from blue(v1, 1 instances) to v2 (3 instances)",
                     "+0s blue_green phase_changed readiness",
                     "+2ms blue_green instance_ready g-0: 1 consecutive successful probes",
                     "+2ms blue_green instance_ready g-1: 1 consecutive successful probes",
                     "+2ms blue_green instance_ready g-2: 1 consecutive successful probes",
                     "+2ms blue_green phase_changed awaiting_promotion",
                     "+2ms blue_green awaiting_promotion green: auto-promotion in 0s",
                     "+2ms blue_green phase_changed switching",
                     "+7ms blue_green traffic_applied green: verified by read-back {blue: 0%, green: 100%}",
                     "+7ms blue_green phase_changed verifying",
                     "+30.007s blue_green phase_changed scaling_down",
                     "+1m0.007s blue_green releasable blue: no traffic for 30s; may be scaled down",
                     "+1m0.007s blue_green phase_changed done",
                     "+1m0.007s blue_green run_finished green: Promoted: green serves 100% and passed 30s of verification",
                 });
  CHECK(s.lb.calls() == 1);
  CHECK(s.lb.history().size() == 2);
  CHECK(out.timeline.capacity() == out.timeline.size());  // reserved for exactly these
}

TEST_CASE("probes run concurrently up to the bound") {
  Scenario s;
  s.green = make_env("green", "v2", 10);
  s.opts.probe_concurrency = 3;
  s.probe.set_latency(1s);
  auto out = s.run();
  REQUIRE(out.status == Status::promoted);
  // 10 probes of 1 s, 3 at a time: the last instance is ready after 4 s.
  CHECK(find(out, EventKind::instance_ready, "g-0")->at == 1s);
  CHECK(find(out, EventKind::instance_ready, "g-5")->at == 2s);
  CHECK(find(out, EventKind::instance_ready, "g-9")->at == 4s);
  CHECK(find(out, EventKind::traffic_applied)->at == 4s + 5ms);
}

TEST_CASE("target never ready: Failed at the deadline, traffic never touched") {
  Scenario s;
  s.opts.ready_deadline = 1min;
  s.probe.always_down("g-2", "HTTP 503 from /health");
  auto out = s.run();
  CHECK(out.status == Status::failed);
  CHECK(out.code == make_error_code(errc::not_ready));
  CHECK(out.reason == "target green not ready after 1m: g-2 (unhealthy after 6 probes: HTTP 503 from /health)");
  CHECK(out.active == "blue");
  CHECK(out.releasable == "green");
  CHECK(s.lb.calls() == 0);
  CHECK(out.elapsed == 1min);  // no scale-down delay: green never had traffic
  CHECK(find(out, EventKind::releasable, "green")->detail == "never received traffic; may be scaled down");
}

TEST_CASE("one instance of three flaps: the failure threshold decides") {
  SUBCASE("isolated failures defer the switch but never fail the run") {
    Scenario s;
    s.opts.probe.period = 2s;
    s.probe.sequence("g-1", {false, true, false, true, false, false, true});  // at most two in a row
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    // The switch waited for g-1 to pass again (second probe, at 2 s).
    CHECK(find(out, EventKind::traffic_applied)->at == 2s + 2ms + 5ms);
  }
  SUBCASE("three consecutive failures after the switch roll back") {
    Scenario s;
    s.opts.probe.period = 2s;
    s.probe.sequence("g-1", {true, true, false, false, false});
    auto out = s.run();
    CHECK(out.status == Status::rolled_back);
    CHECK(out.code == make_error_code(errc::unhealthy));
    CHECK(contains(out.reason, "g-1 became unhealthy after the switch: 3 consecutive failed probes"));
    const auto bad = find(out, EventKind::instance_unhealthy, "g-1");
    REQUIRE(bad);
    CHECK(bad->at == 8s + 2ms);  // probes at 4, 6, 8 s failed
  }
  SUBCASE("three consecutive failures before the switch fail the gate") {
    Scenario s;
    s.opts.probe.period = 2s;
    s.opts.auto_promote = false;
    s.probe.sequence("g-1", {true, false, false, false});
    auto out = s.run();
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::unhealthy));
    CHECK(contains(out.reason, "while awaiting promotion"));
    CHECK(s.lb.calls() == 0);
  }
}

TEST_CASE("pre-promotion check") {
  SUBCASE("failing: Failed, traffic untouched") {
    Scenario s;
    std::string checked;
    s.opts.pre_promotion_check = [&](const Environment& env) -> asio::awaitable<Verdict> {
      checked = env.name;
      co_await detail::sleep_for(s.clock, 20s);
      co_return Verdict::failed("smoke test: GET /checkout returned 500");
    };
    auto out = s.run();
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::check_failed));
    CHECK(out.reason == "pre_promotion_check failed: smoke test: GET /checkout returned 500");
    CHECK(checked == "green");
    CHECK(s.lb.calls() == 0);
    CHECK(find(out, EventKind::check_failed)->at == 20s + 2ms);
  }
  SUBCASE("passing: promoted after it") {
    Scenario s;
    s.opts.pre_promotion_check = [&](const Environment&) -> asio::awaitable<Verdict> {
      co_await detail::sleep_for(s.clock, 20s);
      co_return Verdict::passed("checkout ok");
    };
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(find(out, EventKind::traffic_applied)->at == 20s + 7ms);
  }
  SUBCASE("inconclusive: holds for a manual promote") {
    Scenario s;
    s.opts.pre_promotion_check = [](const Environment&) -> asio::awaitable<Verdict> { co_return Verdict::unsure("no traffic yet"); };
    s.at(1h, [](Bg& bg) { bg.control().promote(); });
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(find(out, EventKind::check_inconclusive));
    CHECK(find(out, EventKind::traffic_applied)->at == 1h + 5ms);
  }
  SUBCASE("throwing or hanging: Failed with a reason, not an exception or a hang") {
    Scenario s;
    s.opts.check_timeout = 1min;
    s.opts.pre_promotion_check = [&](const Environment&) -> asio::awaitable<Verdict> {
      co_await detail::sleep_until(s.clock, TimePoint::max());
      co_return Verdict::passed();
    };
    auto out = s.run();
    CHECK(out.status == Status::failed);
    CHECK(out.reason == "pre_promotion_check failed: pre_promotion_check timed out after 1m");
    Scenario t;
    t.opts.pre_promotion_check = [](const Environment&) -> asio::awaitable<Verdict> {
      throw std::runtime_error("database unreachable");
      co_return Verdict::passed();
    };
    out = t.run();
    CHECK(out.status == Status::failed);
    CHECK(out.reason == "pre_promotion_check failed: pre_promotion_check threw: database unreachable");
  }
}

TEST_CASE("manual promotion, auto-promotion delay, and abort at the gate") {
  SUBCASE("manual promote") {
    Scenario s;
    s.opts.auto_promote = false;
    s.at(10min, [](Bg& bg) { bg.control().promote(); });
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(find(out, EventKind::promote_requested)->at == 10min);
    CHECK(find(out, EventKind::traffic_applied)->at == 10min + 5ms);
  }
  SUBCASE("auto-promotion after a delay") {
    Scenario s;
    s.opts.auto_promote_after = 5min;
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(find(out, EventKind::traffic_applied)->at == 5min + 2ms + 5ms);
  }
  SUBCASE("pause holds auto-promotion until resume") {
    Scenario s;
    s.opts.auto_promote_after = 5min;
    s.at(1min, [](Bg& bg) { bg.control().pause(); });
    s.at(20min, [](Bg& bg) { bg.control().resume(); });
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(find(out, EventKind::traffic_applied)->at == 20min + 5ms);
  }
  SUBCASE("abort while waiting: Aborted, traffic untouched, immediately") {
    Scenario s;
    s.opts.auto_promote = false;
    s.at(5min, [](Bg& bg) { bg.control().abort("release window closed"); });
    auto out = s.run();
    CHECK(out.status == Status::aborted);
    CHECK(out.code == make_error_code(errc::aborted));
    CHECK(out.reason == "aborted while awaiting promotion: release window closed");
    CHECK(out.active == "blue");
    CHECK(s.lb.calls() == 0);
    CHECK(out.elapsed == 5min);
  }
  SUBCASE("abort preempts in-flight probes") {
    Scenario s;
    s.opts.probe.timeout = 10min;
    s.probe.set_latency(5min);  // every probe takes five minutes
    s.at(1s, [](Bg& bg) { bg.control().abort(); });
    auto out = s.run();
    CHECK(out.status == Status::aborted);
    CHECK(out.elapsed == 1s);  // did not wait for the probes
    CHECK(contains(out.reason, "during readiness"));
  }
}

TEST_CASE("load balancer errors during the switch") {
  SUBCASE("transient: retried with backoff, then promoted") {
    Scenario s;
    s.lb.fail_call(1, Fault::fail(Error(errc::lb_unavailable, "connect: connection refused")));
    s.lb.fail_call(2, Fault::read_back_disagrees());
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(s.lb.calls() == 3);
    const auto err = find(out, EventKind::lb_error);
    REQUIRE(err);
    CHECK(contains(err->detail, "attempt 1 failed: lb.apply({blue: 0%, green: 100%}): connect: connection refused; retrying in"));
    CHECK(find_last(out, EventKind::lb_error)->error == make_error_code(errc::lb_verify_mismatch));
  }
  SUBCASE("permanent: restored to the active side, Failed with the LB's words") {
    Scenario s;
    s.lb.fail_call(1, Fault::fail(Error(errc::lb_rejected, "Permission denied: need 'admin' level.")));
    auto out = s.run();
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::lb_rejected));
    CHECK(out.reason == "switch to green failed: lb.apply({blue: 0%, green: 100%}): Permission denied: need 'admin' level.; traffic restored to blue");
    CHECK(out.active == "blue");
    CHECK(s.lb.calls() == 2);  // not retried; then blue re-applied and verified
    CHECK(find_last(out, EventKind::traffic_applied)->split->sole_group() == "blue");
  }
  SUBCASE("transient until the attempts run out") {
    Scenario s;
    s.opts.lb_retry.max_attempts = 3;
    for (std::size_t k = 1; k <= 3; ++k) s.lb.fail_call(k, Fault::hang_forever());
    auto out = s.run();
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::timeout));
    CHECK(contains(out.reason, "lb.apply({blue: 0%, green: 100%}) timed out after 5s"));
    CHECK(s.lb.calls() == 4);
  }
  SUBCASE("restoring fails too: Failed, both errors reported, never silent") {
    Scenario s;
    s.lb.fail_call(1, Fault::fail(Error(errc::unknown_server, "No such server.")));
    s.lb.fail_call(2, Fault::fail(Error(errc::lb_rejected, "Unknown command.")));
    auto out = s.run();
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::rollback_failed));
    CHECK(out.reason == "switch to green failed: lb.apply({blue: 0%, green: 100%}): No such server.; restoring blue failed too: "
                        "lb.apply({blue: 100%, green: 0%}): Unknown command.");
    CHECK(out.active.empty());
  }
}

TEST_CASE("post-promotion failures roll back, verified, within one LB round trip") {
  SUBCASE("target unhealthy during verification") {
    Scenario s;
    s.opts.probe.period = 2s;
    s.probe.down_from("g-2", TimePoint{} + 5s);
    auto out = s.run();
    CHECK(out.status == Status::rolled_back);
    CHECK(out.active == "blue");
    CHECK(out.releasable == "green");
    const auto decided = find(out, EventKind::instance_unhealthy, "g-2");
    const auto back = find_last(out, EventKind::traffic_applied);
    REQUIRE(decided);
    REQUIRE(back);
    CHECK(back->split->sole_group() == "blue");
    CHECK(back->at - decided->at == s.lb.latency());  // one LB round trip after the decision
    CHECK(s.lb.state().sole_group() == "blue");
    // The target had traffic, so it drains for the scale-down delay before release.
    CHECK(find(out, EventKind::releasable, "green")->at == back->at + 30s);
  }
  SUBCASE("post-promotion check fails") {
    Scenario s;
    s.opts.post_promotion_check = [&](const Environment&) -> asio::awaitable<Verdict> {
      co_await detail::sleep_for(s.clock, 10s);
      co_return Verdict::failed("p99 latency 870 ms > 500 ms");
    };
    auto out = s.run();
    CHECK(out.status == Status::rolled_back);
    CHECK(out.code == make_error_code(errc::check_failed));
    CHECK(out.reason == "post_promotion_check failed: p99 latency 870 ms > 500 ms; traffic switched back to blue");
    CHECK(find_last(out, EventKind::traffic_applied)->at == 10s + 7ms + 5ms);
  }
  SUBCASE("post-promotion check passes after the window: verification waits for it") {
    Scenario s;
    s.opts.verify_for = 10s;
    s.opts.post_promotion_check = [&](const Environment&) -> asio::awaitable<Verdict> {
      co_await detail::sleep_for(s.clock, 45s);
      co_return Verdict::passed();
    };
    auto out = s.run();
    CHECK(out.status == Status::promoted);
    CHECK(find(out, EventKind::phase_changed, "scaling_down")->at == 45s + 7ms);
  }
  SUBCASE("switching back fails: Failed with both errors") {
    Scenario s;
    s.opts.probe.period = 2s;
    s.opts.lb_retry.max_attempts = 2;
    s.probe.down_from("g-0", TimePoint{} + 3s);
    s.lb.fail_call(2, Fault::fail(Error(errc::lb_unavailable, "socket closed")));
    s.lb.fail_call(3, Fault::fail(Error(errc::lb_unavailable, "socket closed")));
    auto out = s.run();
    CHECK(out.status == Status::failed);
    CHECK(out.code == make_error_code(errc::rollback_failed));
    CHECK(contains(out.reason, "g-0 became unhealthy after the switch"));
    CHECK(contains(out.reason, "switching back to blue failed too: lb.apply({blue: 100%, green: 0%}): socket closed"));
  }
}

TEST_CASE("abort during verification switches back and ends Aborted") {
  Scenario s;
  s.at(10s, [](Bg& bg) { bg.control().abort("paged: error budget burning"); });
  auto out = s.run();
  CHECK(out.status == Status::aborted);
  CHECK(out.reason == "aborted during verification: paged: error budget burning; traffic switched back to blue");
  CHECK(out.active == "blue");
  CHECK(find_last(out, EventKind::traffic_applied)->at == 10s + 5ms);
}

TEST_CASE("cancelling the caller aborts, and the switch back is not cancelled") {
  Scenario s;
  Bg bg(s.lb, s.probe, s.blue, s.green, s.opts, s.clock);
  asio::cancellation_signal sig;
  std::optional<Outcome> out;
  asio::co_spawn(s.io, bg.run(), asio::bind_cancellation_slot(sig.slot(), [&](std::exception_ptr e, Outcome o) {
                   if (e) std::rethrow_exception(e);
                   out = std::move(o);
                 }));
  s.clock.run_for(s.io, 10s);
  REQUIRE(bg.state().phase == BlueGreenPhase::verifying);
  sig.emit(asio::cancellation_type::terminal);
  s.clock.run(s.io);
  REQUIRE(out);
  CHECK(out->status == Status::aborted);
  CHECK(contains(out->reason, "run() was cancelled by its caller"));
  CHECK(s.lb.state().sole_group() == "blue");
  CHECK(find_last(*out, EventKind::traffic_applied)->at == 10s + 5ms);
  CHECK(detail::live_tasks() == 0);
}

TEST_CASE("an abort during the scale-down delay cuts it short") {
  Scenario s;
  s.at(45s, [](Bg& bg) { bg.control().abort("need the capacity"); });
  auto out = s.run();
  CHECK(out.status == Status::promoted);  // promotion was already complete
  CHECK(out.elapsed == 45s);
  CHECK(find(out, EventKind::releasable, "blue")->detail == "scale-down delay cut short by abort; may be scaled down");
}

TEST_CASE("invalid options are rejected with the field and the value") {
  auto reject = [](auto mutate) {
    Scenario s;
    mutate(s);
    try {
      Bg bg(s.lb, s.probe, s.blue, s.green, s.opts, s.clock);
    } catch (const invalid_option& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(reject([](Scenario& s) { s.opts.probe.period = 0s; }) == "invalid option probe.period = 0s: must be greater than 0");
  CHECK(reject([](Scenario& s) { s.opts.ready_deadline = -1s; }) == "invalid option ready_deadline = -1s: must be greater than 0");
  CHECK(reject([](Scenario& s) { s.opts.verify_for = -30s; }) == "invalid option verify_for = -30s: must not be negative");
  CHECK(reject([](Scenario& s) { s.opts.auto_promote_after = -1ms; }) ==
        "invalid option auto_promote_after = -1ms: must not be negative");
  CHECK(reject([](Scenario& s) { s.opts.scale_down_delay = -1min; }) ==
        "invalid option scale_down_delay = -1m: must not be negative");
  CHECK(reject([](Scenario& s) { s.opts.lb_timeout = 0s; }) == "invalid option lb_timeout = 0s: must be greater than 0");
  CHECK(reject([](Scenario& s) { s.opts.probe_concurrency = 0; }) == "invalid option probe_concurrency = 0: must be at least 1");
  CHECK(reject([](Scenario& s) { s.opts.lb_retry.max_attempts = 0; }) ==
        "invalid option lb_retry.max_attempts = 0: must be at least 1");
  CHECK(reject([](Scenario& s) { s.green.instances.clear(); }) == "invalid option target.instances = []: must not be empty");
  CHECK(reject([](Scenario& s) { s.green.name = "blue"; }) == "invalid option target.name = \"blue\": must differ from active.name");
  CHECK(reject([](Scenario& s) { s.blue.name.clear(); }) == "invalid option active.name = \"\": must not be empty");
  CHECK(reject([](Scenario& s) { s.green.instances[1].id = "g-0"; }) ==
        "invalid option target.instances[1].id = \"g-0\": appears twice");
  CHECK(reject([](Scenario& s) { s.opts.check_timeout = Duration::min(); }) ==
        "invalid option check_timeout = -forever: must be greater than 0");
  CHECK(reject([](Scenario&) {}) == "accepted");
}

TEST_CASE("state and options print with fmt") {
  BlueGreenOptions o;
  CHECK(fmt::format("{}", o) ==
        "probe {period 10s, timeout 1s, initial delay 0s, thresholds 1/3}, concurrency 16, ready within 10m, pre-check no, "
        "auto-promote after 0s, verify 30s, post-check no, check timeout 10m, scale-down delay 30s, lb timeout 5s, "
        "lb retry {5 attempts, 200ms x2 up to 5s, jitter 0.2}");
  BlueGreenState st;
  st.phase = BlueGreenPhase::verifying;
  st.applied = TrafficSplit::of({{"blue", Percent{}}, {"green", Percent::full()}});
  CHECK(fmt::format("{}", st) == "verifying, applied {blue: 0%, green: 100%}");
}

// The README's "Write your own policy" test, verbatim (with the README's aliases), so it stays true.
namespace readme {
using LB = testing::ScriptedLoadBalancer<>;
using Probe = testing::ScriptedProbe<>;
TEST_CASE("README: a stale read-back is retried; a refusal restores blue") {
  boost::asio::io_context io;
  testing::SimClock clock;
  LB lb(clock, TrafficSplit::of({{"blue", Percent::full()}, {"green", Percent{}}}));
  Probe probe(clock);
  Environment blue{"blue", {"v1"}, {}};
  Environment green{"green", {"v2"}, {{"g-0", {"v2"}, {"10.0.0.2", 8080}}}};
  lb.fail_call(1, testing::Fault::read_back_disagrees());
  lb.fail_call(2, testing::Fault::fail(Error(errc::lb_rejected, "PUT /weights/green = 10000: HTTP 403: read-only")));
  BlueGreen<LB, Probe, testing::SimClock> bg(lb, probe, blue, green, {}, clock);
  testing::InvariantChecker checker;
  testing::BlueGreenInvariants rules("blue", "green", {"g-0"}, [&] { return lb.state(); });
  rules.install(checker);
  bg.observers().add(checker);
  const Outcome out = testing::run_sim(io, clock, bg.run());  // 30 s of simulated time, instantly
  CHECK(out.status == Status::failed);
  CHECK(out.code == make_error_code(errc::lb_rejected));
  CHECK(out.active == "blue");
  CHECK(lb.calls() == 3);  // mismatch retried, refusal not, then blue re-applied and verified
  CHECK_MESSAGE(checker.ok(), checker.report());
}
}  // namespace readme

TEST_CASE("an abort at every suspension point takes effect at once and ends on blue, with nothing leaked") {
  struct Fixture {
    asio::io_context io;
    SimClock clock;
    testing::ScriptedLoadBalancer<> lb{clock, TrafficSplit::of({{"blue", Percent::full()}, {"green", Percent{}}})};
    testing::ScriptedProbe<> probe{clock};
    testing::InvariantChecker invariants;
    std::unique_ptr<testing::BlueGreenInvariants> rules;
    std::unique_ptr<Bg> bg;
    Fixture() {
      BlueGreenOptions o;  // Kubernetes/Argo defaults: probe every 10 s, verify 30 s, scale down after 30 s
      const auto green = make_env("green", "v2", 3);
      bg = std::make_unique<Bg>(lb, probe, make_env("blue", "v1", 1), green, o, clock);
      rules = std::make_unique<testing::BlueGreenInvariants>("blue", "green", ids(green), [this] { return lb.state(); });
      rules->install(invariants);
      bg->observers().add(invariants);
    }
    Bg& strategy() { return *bg; }
  };
  const auto rep = testing::abort_sweep([] { return std::make_unique<Fixture>(); }, [](Fixture& f, const Outcome& out, std::size_t k) {
    CAPTURE(k);
    CHECK_MESSAGE(f.invariants.ok(), f.invariants.report());
    CHECK(detail::live_tasks() == 0);
    CHECK(f.clock.pending_timers() == 0);
    if (out.status == Status::aborted) {
      CHECK(f.lb.state().sole_group() == "blue");
      CHECK(out.code == make_error_code(errc::aborted));
    } else {  // the abort came after the switch was verified: promoted, scale-down cut short
      CHECK(out.status == Status::promoted);
      CHECK(f.lb.state().sole_group() == "green");
    }
  });
  MESSAGE(fmt::format("blue-green abort sweep: {} abort points, {} Aborted, {} already promoted; abort to effect at most {} "
                      "(point {}), to the end at most {}",
                      rep.completions, rep.aborted, rep.other, format_duration(rep.worst_to_effect), rep.worst_point,
                      format_duration(rep.worst_to_end)));
  CHECK(rep.completions > 50);
  CHECK(rep.aborted > 0);
  // At once: no pending timer (probe period 10 s, verification 30 s) is waited for; at most a
  // switch already in flight (5 ms) and the switch back (5 ms). After an abort that moved
  // traffic back, run() still drains green for scale_down_delay (30 s) before it returns,
  // as designed; an abort after the verification passed cuts that delay short instead.
  CHECK(rep.worst_to_effect <= 10ms);
  CHECK(rep.worst_to_end <= 30s + 10ms);
}
