// CounterSource: windows, rates, quantiles, samples, errors, concurrent writers,
// and a canary judged by it reacting within seconds.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/counter_source.hpp>
#include <rollout/strategy/canary.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using testing::SimClock;

namespace {

MetricQuery q(std::string expr, Duration window = 1min, MetricQuery::Want want = MetricQuery::Want::value) {
  return MetricQuery{expr, expr, window, want};
}
Scope of(const char* rev) { return Scope{ScopeRole::canary, Revision{rev}}; }

double value(const result<MetricValue>& r) {
  REQUIRE(r.has_value());
  REQUIRE(std::holds_alternative<double>(*r));
  return std::get<double>(*r);
}
bool no_data(const result<MetricValue>& r) { return r.has_value() && std::holds_alternative<NoData>(*r); }

}  // namespace

TEST_CASE("error rate, request rate and request count over a sliding window") {
  SimClock clock;
  asio::io_context io;
  CounterSource<SimClock> src({}, clock);
  for (int i = 0; i < 100; ++i) src.record(Revision{"v2"}, i % 10 != 0, 5ms);
  CHECK(value(src.evaluate(q("error_rate"), of("v2"))) == doctest::Approx(0.1));
  CHECK(value(src.evaluate(q("requests"), of("v2"))) == 100);
  CHECK(value(src.evaluate(q("request_rate"), of("v2"))) == doctest::Approx(100.0 / 60));
  CHECK(no_data(src.evaluate(q("error_rate"), of("v1"))));  // never seen: no data, not 0

  clock.run_for(io, 30s);
  for (int i = 0; i < 100; ++i) src.record(Revision{"v2"}, true, 5ms);
  CHECK(value(src.evaluate(q("error_rate"), of("v2"))) == doctest::Approx(0.05));      // both halves
  CHECK(value(src.evaluate(q("error_rate", 10s), of("v2"))) == doctest::Approx(0.0));  // only the recent half
  clock.run_for(io, 2min);
  auto old = src.evaluate(q("error_rate"), of("v2"));
  CHECK(no_data(old));  // everything fell out of the window
  CHECK(std::get<NoData>(*old).why == "no requests of v2 in the last 1m");
}

TEST_CASE("latency quantiles and samples") {
  SimClock clock;
  CounterSource<SimClock> src({}, clock);
  for (int ms = 1; ms <= 100; ++ms) src.record(Revision{"v2"}, true, std::chrono::milliseconds(ms));
  CHECK(value(src.evaluate(q("latency_p50"), of("v2"))) == 50);
  CHECK(value(src.evaluate(q("latency_p99"), of("v2"))) == 99);
  CHECK(value(src.evaluate(q("latency_p100"), of("v2"))) == 100);
  CHECK(value(src.evaluate(q("latency_p999"), of("v2"))) == 100);
  auto samples = src.evaluate(q("latency_p99", 1min, MetricQuery::Want::samples), of("v2"));
  REQUIRE(samples.has_value());
  CHECK(std::get<Samples>(*samples).size() == 100);
  CHECK(no_data(src.evaluate(q("latency_p99"), of("v1"))));
}

TEST_CASE("error rate samples are per bucket, for the Mann-Whitney judge") {
  SimClock clock;
  asio::io_context io;
  CounterSource<SimClock> src({}, clock);
  for (int second = 0; second < 3; ++second) {
    for (int i = 0; i < 10; ++i) src.record(Revision{"v2"}, i >= second, 1ms);  // 0, 1, 2 errors of 10
    clock.run_for(io, 1s);
  }
  auto r = src.evaluate(q("error_rate", 10s, MetricQuery::Want::samples), of("v2"));
  REQUIRE(r.has_value());
  auto s = std::get<Samples>(*r);
  std::sort(s.begin(), s.end());
  CHECK(s == Samples{0.0, 0.1, 0.2});
}

TEST_CASE("bad queries are errors that name the query") {
  CounterSource<> src;
  src.record(Revision{"v2"}, true, 1ms);
  auto unknown = src.evaluate(q("cpu"), of("v2"));
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error() == errc::invalid_option);
  CHECK(unknown.error().message == "CounterSource: unknown query \"cpu\" (error_rate, request_rate, requests, latency_p<q>)");
  CHECK(src.evaluate(q("latency_pxx"), of("v2")).error().message ==
        "CounterSource: \"latency_pxx\" is not latency_p<quantile>, e.g. latency_p99");
  CHECK(src.evaluate(q("error_rate", 1h), of("v2")).error().message == "CounterSource: window 1h for error_rate must be within 0..9m59s");
  CounterSourceOptions bad;
  bad.bucket = 0s;
  CHECK_THROWS_WITH(CounterSource<>{bad}, "invalid option bucket = 0s: must be greater than 0");
}

TEST_CASE("concurrent writers lose nothing") {
  CounterSource<> src;
  src.track(Revision{"v2"});
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t) {
    writers.emplace_back([&, t] {
      const Revision rev{t % 2 ? "v2" : "v3"};  // two revisions, one created by a writer
      for (int i = 0; i < 50'000; ++i) src.record(rev, i % 10 != 0, std::chrono::microseconds(100 + i % 50));
    });
  }
  for (auto& w : writers) w.join();
  CHECK(value(src.evaluate(q("requests", 5min), of("v2"))) == 200'000);
  CHECK(value(src.evaluate(q("requests", 5min), of("v3"))) == 200'000);
  CHECK(value(src.evaluate(q("error_rate", 5min), of("v2"))) == doctest::Approx(0.1));
}

TEST_CASE("a canary judged by CounterSource rolls back within seconds of going bad") {
  asio::io_context io;
  SimClock clock;
  CounterSource<SimClock> src({}, clock);
  testing::ScriptedLoadBalancer<> lb(clock, TrafficSplit::of({{"stable", Percent::full()}, {"canary", Percent{}}}));
  // Simulated traffic: 200 requests/s to the canary, which starts failing 30% at t = 20 s.
  bool stop = false;
  auto traffic = [&]() -> asio::awaitable<void> {
    while (!stop) {  // `stop` is set by the canary's completion handler
      for (int i = 0; i < 20; ++i) src.record(Revision{"v2"}, !(clock.elapsed() >= 20s && i % 10 < 3), 2ms);
      co_await detail::sleep_for(clock, 100ms);
    }
  };
  asio::co_spawn(io, traffic(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  MetricCheck errors;
  errors.name = "error-rate";
  errors.query = MetricQuery{"error-rate", "error_rate", 5s, MetricQuery::Want::value};
  errors.interval = 1s;
  errors.failure_limit = 1;
  errors.failure_condition = Condition::above(0.05);
  CanaryOptions opts;
  opts.background = BackgroundAnalysis{{"slo", {errors}}, 0};
  Canary<testing::ScriptedLoadBalancer<>, CounterSource<SimClock>, SimClock> canary(
      lb, src, Revision{"v1"}, Revision{"v2"}, CanaryPlan::of({steps::set_weight(10_pct), steps::pause(10min)}), opts, clock);
  std::optional<Outcome> out;
  asio::co_spawn(io, canary.run(), [&](std::exception_ptr e, Outcome o) {
    if (e) std::rethrow_exception(e);
    out = std::move(o);
    stop = true;
  });
  clock.run(io);
  REQUIRE(out);
  CHECK(out->status == Status::rolled_back);
  std::optional<Event> decided;
  for (const auto& e : out->timeline) {
    if (e.kind == EventKind::rollback_started) decided = e;
  }
  REQUIRE(decided);
  // The 5 s window crosses 5% within ~1 s of going bad; two failed measurements
  // (failure_limit 1) one second apart: decided between 21 and 23 s.
  MESSAGE(fmt::format("canary bad from 20s, rollback decided at {}", format_duration(decided->at)));
  CHECK(decided->at > 20s);
  CHECK(decided->at < 23s);
  CHECK(lb.state().sole_group() == "stable");
}
