// Rollout wall time against its critical path: each strategy runs in real time
// (SteadyClock) with zero-latency fake policies and short configured waits, and
// the same configuration runs under the simulated clock, where the elapsed time
// is exactly the sum of the configured waits on the critical path. The
// difference is what the library itself adds.
//
// Usage: overhead_bench [--smoke] [--runs N]
#include <rollout/rollout.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;

namespace {

template <class C>
Outcome drive(asio::io_context& io, C& clock, asio::awaitable<Outcome> aw) {
  if constexpr (std::is_same_v<C, testing::SimClock>) {
    return testing::run_sim(io, clock, std::move(aw));
  } else {
    std::optional<Outcome> out;
    asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, Outcome o) {
      if (e) std::rethrow_exception(e);
      out = std::move(o);
    });
    io.run();
    return std::move(*out);
  }
}

/// Blue-green of 3 instances: probe every 20 ms, promote after 50 ms, verify 200 ms, drain 100 ms.
template <class C>
Outcome blue_green(C clock) {
  asio::io_context io;
  testing::ScriptedLoadBalancer<C> lb(clock, TrafficSplit::all_to("blue"), Duration::zero());
  testing::ScriptedProbe<C> probe(clock, Duration::zero());
  Environment blue("blue", Revision{"v1"});
  Environment green("green", Revision{"v2"});
  for (int i = 0; i < 3; ++i) green.instances.emplace_back(fmt::format("g-{}", i), Revision{"v2"}, Endpoint{"10.0.0.2", 8000});
  BlueGreenOptions o;
  o.probe.period = 20ms;
  o.auto_promote_after = 50ms;
  o.verify_for = 200ms;
  o.scale_down_delay = 100ms;
  BlueGreen<testing::ScriptedLoadBalancer<C>, testing::ScriptedProbe<C>, C> bg(lb, probe, blue, green, o, clock);
  return drive(io, clock, bg.run());
}

/// Canary: 10%, pause 100 ms, analysis (3 measurements 50 ms apart), 50%, pause 100 ms, promoted.
template <class C>
Outcome canary(C clock) {
  asio::io_context io;
  testing::ScriptedLoadBalancer<C> lb(clock, TrafficSplit::all_to("stable"), Duration::zero());
  testing::ScriptedMetrics<C> metrics(clock, Duration::zero());
  metrics.constant("error-rate", ScopeRole::canary, MetricValue{0.01});
  MetricCheck check;
  check.name = "error-rate";
  check.query = MetricQuery{"error-rate", "error_rate", 1min, MetricQuery::Want::value};
  check.count = 3;
  check.interval = 50ms;
  check.failure_condition = Condition::above(0.05);
  auto plan = CanaryPlan::of({steps::set_weight(10_pct), steps::pause(100ms), steps::analyze(AnalysisSpec{"slo", {check}}),
                              steps::set_weight(50_pct), steps::pause(100ms)});
  Canary<testing::ScriptedLoadBalancer<C>, testing::ScriptedMetrics<C>, C> run(lb, metrics, Revision{"v1"}, Revision{"v2"}, plan,
                                                                               CanaryOptions{}, clock);
  return drive(io, clock, run.run());
}

/// Rolling update of 10 instances, surge 2, unavailable 0; create 5 ms, ready 20-40 ms, retire 5 ms.
template <class C>
Outcome rolling(C clock) {
  asio::io_context io;
  testing::FakeOrchestrator<C> orch(clock);
  orch.set_create_latency(5ms);
  orch.set_retire_latency(5ms);
  for (int i = 0; i < 10; ++i) orch.adopt(Instance{fmt::format("v1-{}", i), Revision{"v1"}, Endpoint{"10.0.0.1", 9000}});
  orch.on_create = [](const Revision&, std::size_t n) {
    return testing::StartScript{std::chrono::milliseconds(20 + static_cast<int>(n % 3) * 10), false, false};
  };
  RollingOptions o;
  o.desired = 10;
  o.max_surge = 2;
  o.max_unavailable = 0;
  Rolling<testing::FakeOrchestrator<C>, C> roll(orch, Revision{"v1"}, Revision{"v2"}, o, clock);
  return drive(io, clock, roll.run());
}

double ms(Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void row(const char* name, const std::function<Outcome(testing::SimClock)>& sim, const std::function<Outcome(SteadyClock)>& real,
         int runs) {
  const auto critical = sim(testing::SimClock{});
  std::vector<double> walls;
  Status status = Status::promoted;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto out = real(SteadyClock{});
    walls.push_back(ms(std::chrono::steady_clock::now() - t0));
    if (out.status != Status::promoted) status = out.status;
  }
  std::sort(walls.begin(), walls.end());
  const double p50 = walls[walls.size() / 2];
  const double overhead = p50 - ms(critical.elapsed);
  const double target = ms(critical.elapsed) * 0.01 + 5.0;
  fmt::print("| {} | {} | {:.2f} ms | {:.2f} ms | {:.2f} ms | {:.2f} ms | {:.2f} ms | {} | {} |\n", name, critical.status,
             ms(critical.elapsed), walls.front(), p50, overhead, target, overhead < target ? "met" : "MISSED",
             status == Status::promoted ? "all promoted" : fmt::format("a run ended {}", status));
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 11;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) runs = 1;
    else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = std::stoi(argv[++i]);
  }
  fmt::print("Wall time against the critical path (zero-latency fakes, real time, {} runs each)\n", runs);
  fmt::print("| strategy | outcome | critical path (sum of configured waits) | wall min | wall p50 | overhead (p50) | target (1% + 5 ms) | | |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|\n");
  row("blue_green (3 instances)", [](testing::SimClock c) { return blue_green(c); }, [](SteadyClock c) { return blue_green(c); }, runs);
  row("canary (5 steps)", [](testing::SimClock c) { return canary(c); }, [](SteadyClock c) { return canary(c); }, runs);
  row("rolling (10 instances)", [](testing::SimClock c) { return rolling(c); }, [](SteadyClock c) { return rolling(c); }, runs);
  fmt::print("(the critical path is the same configuration's elapsed time under the simulated clock, where policies take no time)\n");
  return 0;
}
