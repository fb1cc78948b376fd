// End to end: real sample-service processes under continuous load from a load
// generator that counts every request outcome, released with each strategy,
// through the in-process WeightedRouter and through a real HAProxy.
//
// Each test prints one line with its figures, so CI logs show them. Bounds are
// derived from the configured schedule (probe period, analysis interval), never
// from measured wall time of this machine.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "scenario.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <fstream>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#ifndef ROLLOUT_E2E_REPORT
#error "ROLLOUT_E2E_REPORT must name the file the figures are appended to"
#endif
#ifndef ROLLOUT_SAMPLE_SERVICE
#error "ROLLOUT_SAMPLE_SERVICE must name the sample_service executable"
#endif

namespace asio = boost::asio;
using namespace std::chrono_literals;
using demo::LbKind;
using rollout::Revision;
using rollout::Status;

namespace {

constexpr double rate = 500;  // requests per second

const char* name(LbKind k) { return k == LbKind::router ? "WeightedRouter" : "HAProxy"; }

/// What one end-to-end run produced.
struct Run {
  demo::PhaseReport phase;
  demo::Snapshot load;  ///< Everything the load generator counted, start to end.
  std::map<std::string, std::string> exits;  ///< How each retired process ended.
};

/// How each process of v1 and v2 ended (ids are `<revision>-<n>`, n counting all instances).
std::map<std::string, std::string> exits(demo::Fleet& fleet) {
  std::map<std::string, std::string> out;
  for (const char* rev : {"v1", "v2"}) {
    for (int k = 0; k < 16; ++k) {
      const auto id = fmt::format("{}-{}", rev, k);
      if (auto e = fleet.orchestrator().last_exit(id)) out[id] = e->text();
    }
  }
  return out;
}

using PhaseFn = std::function<asio::awaitable<demo::PhaseReport>(demo::Scenario&, demo::Fleet&)>;

/// Starts the load balancer, `instances` of v1 with all traffic, the load, then
/// runs `phase` under it, with half a second of steady load before and after.
Run run_phase(LbKind kind, demo::ScenarioOptions so, PhaseFn phase, std::vector<std::string> bad = {}) {
  asio::io_context io;
  std::optional<Run> out;
  std::exception_ptr error;
  bool done = false;
  auto body = [&]() -> asio::awaitable<void> {
    rollout::CounterSource<> metrics;
    rollout::WeightedRouter router;
    std::optional<demo::HaproxyServerProcess> haproxy;
    std::unique_ptr<rollout::HaproxyLoadBalancer> haproxy_lb;
    std::unique_ptr<demo::Traffic> traffic;
    if (kind == LbKind::haproxy) {
      haproxy.emplace();
      co_await haproxy->start();
      rollout::HaproxyOptions ho;
      ho.address.unix_socket = haproxy->admin_socket();
      haproxy_lb = std::make_unique<rollout::HaproxyLoadBalancer>(ho);
      traffic = std::make_unique<demo::Traffic>(*haproxy_lb, haproxy->frontend());
    } else {
      traffic = std::make_unique<demo::Traffic>(router);
    }
    demo::Fleet fleet(*traffic, ROLLOUT_SAMPLE_SERVICE, bad);
    demo::LoadOptions lo;
    lo.rate = rate;
    lo.on_unreachable = [&](const demo::Pick& p) { traffic->unreachable(p); };
    demo::LoadGenerator load([&] { return traffic->pick(); }, metrics, lo);
    demo::Scenario scenario(*traffic, fleet, load, metrics, so);
    co_await scenario.bootstrap(Revision{"v1"});
    load.start();
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(500ms);
    co_await t.async_wait(asio::use_awaitable);
    Run r;
    r.phase = co_await phase(scenario, fleet);
    t.expires_after(500ms);
    co_await t.async_wait(asio::use_awaitable);
    load.stop();
    r.load = load.snapshot();
    r.exits = exits(fleet);
    out = std::move(r);
    co_await fleet.shutdown();
    if (haproxy) co_await haproxy->stop();
  };
  asio::co_spawn(io, body(), [&](std::exception_ptr e) {
    error = e;
    done = true;
  });
  while (!done) io.run_one();  // not io.run(): child exit monitors stay pending while children live
  if (error) std::rethrow_exception(error);
  REQUIRE(out);
  return std::move(*out);
}

/// Prints a test's figures, and appends them to ROLLOUT_E2E_REPORT, which .ci/run
/// prints (CTest shows a passing test's output only when verbose).
void report(const std::string& line) {
  MESSAGE(line);
  std::ofstream(ROLLOUT_E2E_REPORT, std::ios::app) << line << "\n";
}

/// Requests sent during the phase that failed, whenever they ended. The phase's
/// counts are of requests that ended during it, and a request can fail after
/// its phase: through an HAProxy without `option redispatch`, one sent to an
/// instance that had just died ended about 3 s later (3 retries a second apart,
/// then a 503).
std::size_t failed_sent_in_phase(const Run& r) {
  return static_cast<std::size_t>(std::count_if(r.load.failures.begin(), r.load.failures.end(), [&](const demo::Failure& f) {
    return f.sent >= r.phase.began && f.sent <= r.phase.ended;
  }));
}

/// The phase's figures; with failures, also what failed (the three commonest
/// kinds over the whole run), so that an unexpected one can be told apart.
std::string figures(LbKind kind, const Run& r) {
  std::string line = fmt::format(
      "{} through {}: {} | {:.1f} s, {} requests, {} failed ({} HTTP errors, {} connection errors), {} unsent, {} sent in the phase failed",
      r.phase.name, name(kind), r.phase.outcome.status, r.phase.seconds(), r.phase.counts.requests, r.phase.counts.failed(),
      r.phase.counts.http_errors, r.phase.counts.conn_errors, r.phase.unsent, failed_sent_in_phase(r));
  std::map<std::string, int> kinds;
  for (const auto& f : r.load.failures) ++kinds[f.what];
  std::vector<std::pair<int, std::string>> commonest;
  for (const auto& [what, n] : kinds) commonest.emplace_back(n, what);
  std::sort(commonest.begin(), commonest.end(), std::greater<>());
  if (commonest.size() > 3) commonest.resize(3);
  for (std::size_t i = 0; i < commonest.size(); ++i) {
    line += fmt::format("{} {} x {}", i == 0 ? " | failures:" : ",", commonest[i].first, commonest[i].second);
  }
  return line;
}

/// The load really flowed: at least 80% of the configured rate over the phase.
void check_load_flowed(const Run& r) {
  CHECK(static_cast<double>(r.phase.counts.requests) >= 0.8 * rate * r.phase.seconds());
  CHECK(r.load.unsent == 0);
}

void blue_green_zero_loss(LbKind kind) {
  demo::ScenarioOptions so;
  so.instances = 3;
  auto r = run_phase(kind, so, [](demo::Scenario& s, demo::Fleet&) { return s.blue_green(Revision{"v1"}, Revision{"v2"}); });
  report(figures(kind, r));
  CHECK(r.phase.outcome.status == Status::promoted);
  CHECK(r.phase.outcome.active == "v2");
  // Zero failed requests across the switch and across the release of blue...
  CHECK(r.phase.counts.failed() == 0);
  CHECK(r.load.total.failed() == 0);
  check_load_flowed(r);
  // ... and blue really was released: each v1 process ended on its own after SIGTERM.
  for (int k = 0; k < 3; ++k) CHECK(r.exits[fmt::format("v1-{}", k)] == "exited with code 0");
  // Traffic really moved: v2 answered, and v1 answered nothing after the switch.
  CHECK(r.load.revision("v2").ok > 0);
}

void rolling_zero_loss(LbKind kind) {
  demo::ScenarioOptions so;
  so.instances = 4;
  auto r = run_phase(kind, so, [](demo::Scenario& s, demo::Fleet&) { return s.rolling(Revision{"v1"}, Revision{"v2"}); });
  report(figures(kind, r));
  CHECK(r.phase.outcome.status == Status::promoted);
  CHECK(r.phase.counts.failed() == 0);
  CHECK(r.load.total.failed() == 0);
  check_load_flowed(r);
  // Retire is deregister, drain, SIGTERM: every old process finished its requests and exited 0.
  for (int k = 0; k < 4; ++k) CHECK(r.exits[fmt::format("v1-{}", k)] == "exited with code 0");
  REQUIRE(r.phase.outcome.fleet);
  CHECK(r.load.revision("v2").ok > 0);
}

void good_canary(LbKind kind) {
  demo::ScenarioOptions so;
  so.instances = 3;
  auto r = run_phase(kind, so, [](demo::Scenario& s, demo::Fleet&) { return s.canary(Revision{"v1"}, Revision{"v2"}, false); });
  report(figures(kind, r));
  CHECK(r.phase.outcome.status == Status::promoted);
  CHECK(r.phase.counts.failed() == 0);
  CHECK(r.load.total.failed() == 0);
  check_load_flowed(r);
  CHECK(r.load.revision("v2").ok > 0);
}

void bad_canary(LbKind kind) {
  demo::ScenarioOptions so;
  so.instances = 3;
  auto r = run_phase(
      kind, so, [](demo::Scenario& s, demo::Fleet&) { return s.canary(Revision{"v1"}, Revision{"v2"}, true); },
      std::vector<std::string>{"v2"});
  const auto& p = r.phase;
  const double w = 0.10, error_rate = 0.30;  // the first canary weight, the bad build's error rate
  report(fmt::format("{} | first bad response -> 100% stable verified: {:.0f} ms, exposure {:.0f} ms, bad build answered {}, "
                      "failed {} = {:.3f}% of {} requests",
                      figures(kind, r), p.detection_ms.value_or(-1), p.exposure_ms.value_or(-1), p.bad_build.requests,
                      p.counts.failed(), 100.0 * static_cast<double>(p.counts.failed()) / static_cast<double>(p.counts.requests),
                      p.counts.requests));
  CHECK(p.outcome.status == Status::rolled_back);
  CHECK(p.outcome.active == "v1");
  REQUIRE(p.detection_ms);
  REQUIRE(p.exposure_ms);
  // Detection: the first measurement comes after initial_delay, and a metric fails
  // on its (failure_limit + 1)-th failed measurement (Argo's failureLimit counts
  // the failures tolerated): initial_delay + interval x failure_limit, plus a
  // margin for the query and one load balancer round trip.
  const demo::ScenarioOptions o;
  const double bound_ms = static_cast<double>((o.canary_interval + o.canary_interval * o.canary_failure_limit).count()) + 500;
  CHECK(*p.detection_ms <= bound_ms);
  // Every failure is the bad build's own 500: no connection error, nothing from v1.
  CHECK(p.counts.conn_errors == 0);
  CHECK(p.lost() == 0);
  CHECK(r.load.revision("v1").failed() == 0);
  // The canary got no more than its weight for as long as it was exposed...
  const double exposed_s = *p.exposure_ms / 1000.0;
  const double expected = rate * w * exposed_s;
  CHECK(static_cast<double>(p.bad_build.requests) <= expected + 4 * std::sqrt(expected) + 10);
  // ... and failed requests stay within weight x error rate x detection time (4 sigma).
  const double allowed = rate * w * error_rate * (bound_ms / 1000.0);
  CHECK(static_cast<double>(p.counts.failed()) <= allowed + 4 * std::sqrt(allowed));
  CHECK(p.counts.failed() > 0);  // the bad build really was bad, and really got traffic
}

void target_dies(LbKind kind) {
  demo::ScenarioOptions so;
  so.instances = 3;
  std::string killed;
  bool kill_sent = false;
  std::optional<demo::SteadyTime> kill_at, restored_at;
  auto r = run_phase(kind, so, [&](demo::Scenario& s, demo::Fleet& fleet) {
    return s.blue_green(Revision{"v1"}, Revision{"v2"}, [&](const rollout::Event& e) {
      if (e.kind == rollout::EventKind::phase_changed && e.subject == "verifying" && killed.empty()) {
        killed = "v2-3";  // the first target instance (v1 took ids 0..2)
        kill_sent = fleet.kill(killed);
        kill_at = std::chrono::steady_clock::now();
      }
      if (kill_at && !restored_at && e.kind == rollout::EventKind::traffic_applied && e.split && e.split->weight_of("v1").is_full()) {
        restored_at = std::chrono::steady_clock::now();
      }
    });
  });
  const double back_ms = kill_at && restored_at ? std::chrono::duration<double, std::milli>(*restored_at - *kill_at).count() : -1;
  report(fmt::format("{} | {} killed (SIGKILL) at the start of verification; kill -> 100% v1 verified: {:.0f} ms", figures(kind, r),
                      killed, back_ms));
  REQUIRE(restored_at);
  CHECK(killed == "v2-3");
  CHECK(kill_sent);
  CHECK(r.exits[killed] == "killed by signal 9 (SIGKILL)");
  CHECK(r.phase.outcome.status == Status::rolled_back);
  CHECK(r.phase.outcome.active == "v1");
  // Failures are bounded by the probe schedule: the dead instance had a third of
  // the traffic until failure_threshold probes failed (period apart, each within
  // the timeout), plus one load balancer round trip.
  const auto bg = demo::blue_green_options(so);
  const double window_s = std::chrono::duration<double>(bg.probe.period * bg.probe.failure_threshold + bg.probe.timeout).count() + 0.25;
  const double allowed = rate / 3 * window_s;
  CHECK(static_cast<double>(r.phase.counts.failed()) <= allowed);
  CHECK(static_cast<double>(failed_sent_in_phase(r)) <= allowed);  // also those that ended after the phase
  if (kind == LbKind::haproxy) {
    // HAProxy sends what reached the dead instance to another server at once
    // (the demo backend's `retries 3`, `option redispatch 1` and `retry-on
    // conn-failure empty-response`): nothing fails. Without them, each such
    // request failed with a 503 after three retries a second apart (67 a run).
    CHECK(failed_sent_in_phase(r) == 0);
  } else {
    // The load generator reports a refused connection and the router ejects the
    // instance (`WeightedRouter::eject`): only what was sent to it before the
    // first refusal came back fails, one request in practice. The bound allows
    // 50 ms of its traffic. Without the ejection, its whole share failed until
    // the strategy switched back (67 a run).
    CHECK(static_cast<double>(failed_sent_in_phase(r)) <= rate / 3 * 0.05 + 1);
  }
  CHECK(back_ms <= window_s * 1000);
  CHECK(r.load.revision("v1").failed() == 0);
}

}  // namespace

TEST_CASE("blue-green of 3 -> 3 through WeightedRouter loses no request") { blue_green_zero_loss(LbKind::router); }
TEST_CASE("blue-green of 3 -> 3 through HAProxy loses no request") { blue_green_zero_loss(LbKind::haproxy); }
TEST_CASE("rolling update of 4 through WeightedRouter loses no request") { rolling_zero_loss(LbKind::router); }
TEST_CASE("rolling update of 4 through HAProxy loses no request") { rolling_zero_loss(LbKind::haproxy); }
TEST_CASE("good canary through WeightedRouter is promoted with no request lost") { good_canary(LbKind::router); }
TEST_CASE("good canary through HAProxy is promoted with no request lost") { good_canary(LbKind::haproxy); }
TEST_CASE("bad canary through WeightedRouter is rolled back within its analysis schedule") { bad_canary(LbKind::router); }
TEST_CASE("bad canary through HAProxy is rolled back within its analysis schedule") { bad_canary(LbKind::haproxy); }
TEST_CASE("blue-green whose target dies during verification switches back through WeightedRouter") { target_dies(LbKind::router); }
TEST_CASE("blue-green whose target dies during verification switches back through HAProxy") { target_dies(LbKind::haproxy); }
