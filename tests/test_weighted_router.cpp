// WeightedRouter: exact smooth weighted round robin, statistical weighted random,
// membership changes, errors, concurrent readers, and use as a strategy's LoadBalancer,
// including a canary run on a thread pool through a strand while other threads
// route and record (the test TSan runs; see the tsan preset).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/counter_source.hpp>
#include <rollout/strategy/blue_green.hpp>
#include <rollout/strategy/canary.hpp>
#include <rollout/testing/testing.hpp>
#include <rollout/weighted_router.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <future>

#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <thread>
#include <vector>

using namespace rollout;
using namespace rollout::literals;

namespace {

Instance inst(const std::string& id) { return Instance{id, Revision{"v"}, Endpoint{"127.0.0.1", 9000}}; }

std::map<std::string, int> count_groups(WeightedRouter& r, int n) {
  std::map<std::string, int> out;
  for (int i = 0; i < n; ++i) {
    const Instance* p = r.pick();
    REQUIRE(p);
    ++out[p->id.substr(0, p->id.find('-'))];
  }
  return out;
}

}  // namespace

TEST_CASE("smooth weighted round robin is exact over every cycle, and smooth") {
  WeightedRouter r;
  r.add("a", inst("a-0"));
  r.add("b", inst("b-0"));
  r.add("c", inst("c-0"));
  REQUIRE(r.apply_now(TrafficSplit::of({{"a", 50_pct}, {"b", 25_pct}, {"c", 25_pct}})));
  std::string seq;
  for (int i = 0; i < 8; ++i) seq += r.pick()->id[0];
  CHECK(seq == "abcaabca");  // nginx's interleaving for weights 2:1:1, never "aabc"

  REQUIRE(r.apply_now(TrafficSplit::of({{"a", 99.5_pct}, {"b", 0.5_pct}})));
  auto counts = count_groups(r, 10'000);
  CHECK(counts["a"] == 9'950);
  CHECK(counts["b"] == 50);  // exactly 0.5%, not "about"
  CHECK(counts.count("c") == 0);  // a group the split does not name gets nothing
}

TEST_CASE("instances of a group share its traffic in turn") {
  WeightedRouter r;
  for (int i = 0; i < 3; ++i) r.add("green", inst("green-" + std::to_string(i)));
  r.add("blue", inst("blue-0"));
  REQUIRE(r.apply_now(TrafficSplit::of({{"green", Percent::full()}, {"blue", Percent{}}})));
  std::string ids;
  for (int i = 0; i < 6; ++i) ids += r.pick()->id.back();
  CHECK(ids == "012012");
  CHECK(r.remove("green-1"));
  CHECK_FALSE(r.remove("green-9"));
  for (int i = 0; i < 20; ++i) CHECK(r.pick()->id != "green-1");
}

TEST_CASE("an ejected instance is passed over until its time is up, and its turns are shared evenly") {
  WeightedRouter r;
  for (int i = 0; i < 3; ++i) r.add("green", inst("green-" + std::to_string(i)));
  r.add("blue", inst("blue-0"));
  REQUIRE(r.apply_now(TrafficSplit::of({{"green", Percent::full()}, {"blue", Percent{}}})));
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  auto picks = [&](std::chrono::steady_clock::time_point at, int n) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) ++out[r.pick_at(at)->id];
    return out;
  };
  CHECK(r.eject("green-1", t0 + std::chrono::seconds(10)));
  CHECK_FALSE(r.eject("green-9", t0 + std::chrono::seconds(10)));  // no such instance
  CHECK(r.ejected("green-1", t0));
  CHECK_FALSE(r.ejected("green-0", t0));
  auto during = picks(t0 + std::chrono::seconds(9), 300);
  CHECK(during.count("green-1") == 0);
  CHECK(during["green-0"] == 150);  // its 100 turns went half to each of the others
  CHECK(during["green-2"] == 150);
  CHECK(r.weight_of("green") == 10'000);  // weights and the read-back do not see ejections
  CHECK(r.apply_now(TrafficSplit::of({{"green", Percent::full()}, {"blue", Percent{}}})).has_value());

  auto after = picks(t0 + std::chrono::seconds(10), 300);  // the time is up: back in turn
  CHECK_FALSE(r.ejected("green-1", t0 + std::chrono::seconds(10)));
  CHECK(after == std::map<std::string, int>{{"green-0", 100}, {"green-1", 100}, {"green-2", 100}});

  // All ejected: sending somewhere beats sending nowhere (panic routing).
  for (int i = 0; i < 3; ++i) REQUIRE(r.eject("green-" + std::to_string(i), t0 + std::chrono::seconds(60)));
  CHECK(picks(t0 + std::chrono::seconds(20), 30) == std::map<std::string, int>{{"green-0", 10}, {"green-1", 10}, {"green-2", 10}});
  // Readmitted early by a later call; the ejection survives republishing; a removed instance's ends.
  REQUIRE(r.eject("green-0", t0));
  r.add("green", inst("green-3"));
  auto mixed = picks(t0 + std::chrono::seconds(20), 40);
  CHECK(mixed == std::map<std::string, int>{{"green-0", 20}, {"green-3", 20}});
  CHECK(r.remove("green-1"));
  CHECK_FALSE(r.ejected("green-1", t0));
  CHECK_FALSE(r.eject("green-1", t0 + std::chrono::seconds(10)));

  // By duration, on the steady clock that pick() reads.
  WeightedRouter live;
  live.add("g", inst("g-0"));
  live.add("g", inst("g-1"));
  REQUIRE(live.apply_now(TrafficSplit::all_to("g")));
  REQUIRE(live.eject("g-1", std::chrono::hours(1)));
  CHECK(live.ejected("g-1"));
  for (int i = 0; i < 10; ++i) CHECK(live.pick()->id == "g-0");
  REQUIRE(live.eject("g-1", Duration::zero()));  // readmitted
  CHECK_FALSE(live.ejected("g-1"));
  std::map<std::string, int> both;
  for (int i = 0; i < 10; ++i) ++both[live.pick()->id];
  CHECK(both == std::map<std::string, int>{{"g-0", 5}, {"g-1", 5}});
  CHECK_THROWS_WITH(live.eject("g-0", -std::chrono::seconds(1)), "invalid option duration = -1s: must not be negative");
  CHECK_FALSE(live.ejected("g-0"));
}

TEST_CASE("weighted random follows the weights within a statistical bound, reproducibly") {
  WeightedRouter r(WeightedRouter::Mode::random, 42);
  r.add("stable", inst("stable-0"));
  r.add("canary", inst("canary-0"));
  REQUIRE(r.apply_now(TrafficSplit::of({{"stable", 70_pct}, {"canary", 30_pct}})));
  const int n = 100'000;
  auto counts = count_groups(r, n);
  // Binomial(n, 0.3): sigma = sqrt(n p (1 - p)) = 144.9; accept 5 sigma.
  const double sigma = std::sqrt(n * 0.3 * 0.7);
  CHECK(std::abs(counts["canary"] - 0.3 * n) < 5 * sigma);
  WeightedRouter again(WeightedRouter::Mode::random, 42);
  again.add("stable", inst("stable-0"));
  again.add("canary", inst("canary-0"));
  REQUIRE(again.apply_now(TrafficSplit::of({{"stable", 70_pct}, {"canary", 30_pct}})));
  CHECK(count_groups(again, n) == counts);  // same seed, same picks
}

TEST_CASE("a split that gives weight to a group without instances is rejected, and nothing changes") {
  WeightedRouter r;
  r.add("stable", inst("stable-0"));
  REQUIRE(r.apply_now(TrafficSplit::all_to("stable")));
  const auto gen = r.generation();
  auto bad = r.apply_now(TrafficSplit::of({{"stable", 90_pct}, {"canary", 10_pct}}));
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error() == errc::unknown_server);
  CHECK(bad.error().message == "group canary gets 10% but has no instances");
  CHECK(r.generation() == gen);
  CHECK(r.weight_of("stable") == 10'000);
  CHECK(r.apply_now(TrafficSplit::of({{"stable", Percent::full()}, {"canary", Percent{}}})).has_value());  // 0% is fine
  WeightedRouter empty;
  CHECK(empty.pick() == nullptr);
  CHECK_THROWS_AS(empty.add("", inst("x-0")), invalid_option);
  r.add("x", inst("x-0"));
  CHECK_THROWS_WITH(r.add("y", inst("x-0")), "invalid option instance.id = \"x-0\": is already in group x");
}

TEST_CASE("readers on many threads while a writer republishes") {
  WeightedRouter r;
  r.add("blue", inst("blue-0"));
  r.add("green", inst("green-0"));
  REQUIRE(r.apply_now(TrafficSplit::all_to("blue")));
  std::atomic<bool> stop{false};
  std::atomic<long> picks{0}, nulls{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 8; ++t) {
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        const Instance* p = r.pick();
        if (!p) ++nulls;
        else if (p->id != "blue-0" && p->id != "green-0") ++nulls;
        ++picks;
      }
    });
  }
  for (int i = 0; i < 2'000; ++i) {
    const Percent w = Percent::from_basis_points(i % 10'001);
    REQUIRE(r.apply_now(TrafficSplit::between("green", w, "blue")));
    // Ejections made and ended while readers pick (TSan runs this test).
    REQUIRE(r.eject(i % 2 ? "blue-0" : "green-0", i % 3 ? std::chrono::hours(1) : Duration::zero()));
  }
  stop = true;
  for (auto& th : readers) th.join();
  CHECK(picks > 0);
  CHECK(nulls == 0);
  CHECK(r.generation() == 2'000 + 4);
}

TEST_CASE("a blue-green run switches the router") {
  boost::asio::io_context io;
  testing::SimClock clock;
  WeightedRouter router;
  router.add("blue", inst("blue-0"));
  router.add("green", inst("green-0"));
  REQUIRE(router.apply_now(TrafficSplit::all_to("blue")));
  testing::ScriptedProbe<> probe(clock);
  BlueGreen<WeightedRouter, testing::ScriptedProbe<>, testing::SimClock> bg(
      router, probe, Environment{"blue", {"v1"}, {inst("blue-0")}}, Environment{"green", {"v2"}, {inst("green-0")}}, {}, clock);
  auto out = testing::run_sim(io, clock, bg.run());
  CHECK(out.status == Status::promoted);
  CHECK(router.weight_of("green") == 10'000);
  CHECK(router.pick()->id == "green-0");
}

TEST_CASE("a canary on a thread pool, through a strand, while other threads route and record (real time)") {
  using namespace std::chrono_literals;
  boost::asio::thread_pool pool(2);
  auto strand = boost::asio::make_strand(pool);
  WeightedRouter router;
  router.add("stable", Instance{"s-0", Revision{"v1"}, Endpoint{"127.0.0.1", 9000}});
  router.add("canary", Instance{"c-0", Revision{"v2"}, Endpoint{"127.0.0.1", 9001}});
  REQUIRE(router.apply_now(TrafficSplit::all_to("stable")));
  CounterSource<> metrics;
  // Two "request" threads: pick a backend, record a success for its revision.
  std::atomic<bool> stop{false};
  std::atomic<long> to_canary{0};
  std::vector<std::thread> traffic;
  for (int t = 0; t < 2; ++t) {
    traffic.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        const Instance* p = router.pick();
        if (!p) continue;
        if (p->revision.id == "v2") ++to_canary;
        metrics.record(p->revision, true, 1ms);
        std::this_thread::sleep_for(100us);
      }
    });
  }
  MetricCheck errors;
  errors.name = "error-rate";
  errors.query = MetricQuery{"error-rate", "error_rate", 1s, MetricQuery::Want::value};
  errors.interval = 40ms;
  errors.initial_delay = 40ms;
  errors.inconclusive_limit = 5;
  errors.failure_condition = Condition::above(0.05);
  CanaryOptions o;
  o.background = BackgroundAnalysis{AnalysisSpec{"slo", {errors}}, 0};
  Canary<WeightedRouter, CounterSource<>> canary(router, metrics, Revision{"v1"}, Revision{"v2"},
                                                 CanaryPlan::of({steps::set_weight(20_pct), steps::pause(150ms),
                                                                 steps::set_weight(50_pct), steps::pause(150ms)}),
                                                 o);
  std::promise<Outcome> done;
  boost::asio::co_spawn(strand, canary.run(), [&](std::exception_ptr e, Outcome out) {
    if (e) {
      done.set_exception(e);
    } else {
      done.set_value(std::move(out));
    }
  });
  auto fut = done.get_future();
  REQUIRE(fut.wait_for(30s) == std::future_status::ready);
  const Outcome out = fut.get();
  stop = true;
  for (auto& th : traffic) th.join();
  pool.join();
  CHECK(out.status == Status::promoted);
  CHECK(router.weight_of("canary") == 10'000);
  CHECK(to_canary > 0);
}
