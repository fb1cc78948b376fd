// The policy concepts, checked against archetypes (the minimal conforming
// policies from each concept's documentation) and against near-misses.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <map>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;

namespace archetype {

// The examples from concepts.hpp, verbatim.
struct MapLoadBalancer {
  std::map<std::string, rollout::Percent> weights;
  boost::asio::awaitable<rollout::result<void>> apply(const rollout::TrafficSplit& s) {
    for (const auto& share : s.shares()) weights[share.group] = share.weight;
    co_return rollout::result<void>{};
  }
};
static_assert(rollout::LoadBalancer<MapLoadBalancer>);

struct AlwaysUp {
  boost::asio::awaitable<rollout::HealthResult> check(const rollout::Instance&) { co_return rollout::HealthResult::up(); }
};
static_assert(rollout::HealthProbe<AlwaysUp>);

struct ConstantErrors {
  boost::asio::awaitable<rollout::result<rollout::MetricValue>> query(const rollout::MetricQuery&, const rollout::Scope&) {
    co_return rollout::MetricValue{0.001};
  }
};
static_assert(rollout::MetricsSource<ConstantErrors>);

struct NoopFleet {
  std::vector<rollout::Instance> fleet;
  boost::asio::awaitable<rollout::result<rollout::Instance>> create(const rollout::Revision& r) {
    fleet.push_back({"i" + std::to_string(fleet.size()), r, {"127.0.0.1", 0}});
    co_return fleet.back();
  }
  boost::asio::awaitable<rollout::result<void>> wait_ready(const rollout::Instance&) { co_return rollout::result<void>{}; }
  boost::asio::awaitable<rollout::result<void>> retire(const rollout::Instance& i) {
    std::erase(fleet, i);
    co_return rollout::result<void>{};
  }
  boost::asio::awaitable<rollout::result<std::vector<rollout::Instance>>> list() { co_return fleet; }
};
static_assert(rollout::Orchestrator<NoopFleet>);

struct PrintObserver {
  void on_event(const rollout::Event&) {}
};
static_assert(rollout::Observer<PrintObserver>);

struct MyClock {
  rollout::TimePoint now() const { return std::chrono::steady_clock::now(); }
  boost::asio::steady_timer make_timer(const boost::asio::any_io_executor& ex) const { return boost::asio::steady_timer(ex); }
};
static_assert(rollout::Clock<MyClock>);

}  // namespace archetype

namespace near_miss {

// Each of these is one mistake away from conforming.
struct ApplyReturnsBool {
  asio::awaitable<bool> apply(const TrafficSplit&);
};
struct ApplyNotAwaitable {
  result<void> apply(const TrafficSplit&);
};
struct ApplyTakesPercent {
  asio::awaitable<result<void>> apply(Percent);
};
struct CheckReturnsBool {
  asio::awaitable<bool> check(const Instance&);
};
struct QueryReturnsDouble {
  asio::awaitable<result<double>> query(const MetricQuery&, const Scope&);
};
struct QueryMissingScope {
  asio::awaitable<result<MetricValue>> query(const MetricQuery&);
};
struct FleetWithoutList {
  asio::awaitable<result<Instance>> create(const Revision&);
  asio::awaitable<result<void>> wait_ready(const Instance&);
  asio::awaitable<result<void>> retire(const Instance&);
};
struct FleetWithoutRetire {
  asio::awaitable<result<Instance>> create(const Revision&);
  asio::awaitable<result<void>> wait_ready(const Instance&);
  asio::awaitable<result<std::vector<Instance>>> list();
};
struct ClockWithoutTimer {
  TimePoint now() const;
};
struct ObserverWrongName {
  void on(const Event&);
};

static_assert(!LoadBalancer<ApplyReturnsBool>);
static_assert(!LoadBalancer<ApplyNotAwaitable>);
static_assert(!LoadBalancer<ApplyTakesPercent>);
static_assert(!LoadBalancer<archetype::AlwaysUp>);
static_assert(!HealthProbe<CheckReturnsBool>);
static_assert(!HealthProbe<archetype::MapLoadBalancer>);
static_assert(!MetricsSource<QueryReturnsDouble>);
static_assert(!MetricsSource<QueryMissingScope>);
static_assert(!Orchestrator<FleetWithoutList>);
static_assert(!Orchestrator<FleetWithoutRetire>);
static_assert(!Clock<ClockWithoutTimer>);
static_assert(!Observer<ObserverWrongName>);

// The optional readiness capability: a watch needs all three members, with these types.
struct Watch {
  void add(const Instance&) {}
  void remove(const std::string&) {}
  asio::awaitable<result<std::vector<ReadinessReport>>> next() { co_return std::vector<ReadinessReport>{}; }
};
struct WatchWithoutRemove {
  void add(const Instance&) {}
  asio::awaitable<result<std::vector<ReadinessReport>>> next() { co_return std::vector<ReadinessReport>{}; }
};
struct WatchNextNotAwaitable {
  void add(const Instance&) {}
  void remove(const std::string&) {}
  std::vector<ReadinessReport> next() { return {}; }
};
template <class W>
struct FleetThatWatches : archetype::NoopFleet {
  W watch_readiness() { return W{}; }
};
struct FleetThatWatchesWithoutList : FleetWithoutList {
  Watch watch_readiness() { return Watch{}; }
};
static_assert(ReadinessWatch<Watch>);
static_assert(!ReadinessWatch<WatchWithoutRemove>);
static_assert(!ReadinessWatch<WatchNextNotAwaitable>);
static_assert(WatchesReadiness<FleetThatWatches<Watch>>);
static_assert(!WatchesReadiness<FleetThatWatches<WatchWithoutRemove>>);
static_assert(!WatchesReadiness<archetype::NoopFleet>);                    // optional: a fleet without it is still an Orchestrator
static_assert(!WatchesReadiness<FleetThatWatchesWithoutList>);             // and it needs a whole Orchestrator

}  // namespace near_miss

// The shipped fakes and clocks model their concepts.
static_assert(LoadBalancer<testing::ScriptedLoadBalancer<testing::SimClock>>);
static_assert(LoadBalancer<testing::ScriptedLoadBalancer<SteadyClock>>);
static_assert(HealthProbe<testing::ScriptedProbe<testing::SimClock>>);
static_assert(MetricsSource<testing::ScriptedMetrics<testing::SimClock>>);
static_assert(Orchestrator<testing::FakeOrchestrator<testing::SimClock>>);
static_assert(!WatchesReadiness<testing::FakeOrchestrator<testing::SimClock>>);
static_assert(WatchesReadiness<testing::WatchingFakeOrchestrator<testing::SimClock>>);
static_assert(Observer<testing::InvariantChecker>);
static_assert(Clock<testing::SimClock>);
static_assert(Clock<SteadyClock>);

TEST_CASE("the documented archetypes do what their documentation says") {
  asio::io_context io;
  testing::SimClock clock;
  archetype::MapLoadBalancer lb;
  archetype::NoopFleet fleet;
  archetype::AlwaysUp probe;
  // Assertions stay outside the coroutine, where failures are easiest to read.
  bool applied = false, retired = false, healthy = false;
  std::size_t listed_after_create = 0, listed_after_retire = 99;
  std::string revision;
  // Built outside the coroutine: g++ 12 rejects initializer lists inside coroutine bodies.
  const auto split = TrafficSplit::of({{"blue", Percent::from_percent(30)}, {"green", Percent::from_percent(70)}});
  testing::run_sim(io, clock, [&]() -> asio::awaitable<void> {
    auto r = co_await lb.apply(split);
    applied = r.has_value();
    auto i = co_await fleet.create(Revision{"v2"});
    revision = i->revision.id;
    listed_after_create = (co_await fleet.list())->size();
    retired = (co_await fleet.retire(*i)).has_value();
    listed_after_retire = (co_await fleet.list())->size();
    healthy = (co_await probe.check(*i)).healthy;
  }());
  CHECK(applied);
  CHECK(revision == "v2");
  CHECK(listed_after_create == 1);
  CHECK(retired);
  CHECK(listed_after_retire == 0);
  CHECK(healthy);
  CHECK(lb.weights["green"].basis_points() == 7000);
  CHECK(lb.weights["blue"].basis_points() == 3000);
}
