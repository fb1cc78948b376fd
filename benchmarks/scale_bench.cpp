// Scale in simulated time: CPU per instance-step and peak memory per instance for
//   - 1,000 concurrent canaries in one io_context,
//   - a 10,000-instance rolling update,
//   - 100 concurrent blue-greens of 100 instances each,
// with rollout's scripted policies (no I/O), so the figures are the library's own.
//
// Each scenario runs in its own process (this program, re-executed with
// --only), so that its peak RSS is its own. CPU is the best of 7 runs: on a
// shared VM single runs of one binary vary by 2x within a minute.
//
// Usage: scale_bench [--smoke]
//        scale_bench --only canary|canary_floor|canary_floor_bare|rolling|rolling_watch|blue_green [--size N] [--runs R]   (one row; also for callgrind)
#include <rollout/rollout.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <sys/resource.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using testing::SimClock;

namespace {

long rss_kb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/// What one scenario run measured.
struct Row {
  std::string scenario;
  std::size_t instances = 0;  ///< canaries, instances updated, or instances switched
  std::size_t steps = 0;      ///< instance-steps (see the legend)
  std::string outcome;
  Duration simulated{};
  double cpu = 0;
  std::size_t timeline_bytes = 0;  ///< heap and inline bytes of every outcome's event timeline
};

/// The bytes an outcome's timeline holds (`Timeline::memory_bytes`): the part
/// of the peak memory that is the run's explanation of itself.
std::size_t timeline_bytes(const Outcome& o) { return o.timeline.memory_bytes(); }
std::size_t timeline_bytes(const std::vector<Outcome>& outs) {
  std::size_t n = 0;
  for (const auto& o : outs) n += timeline_bytes(o);
  return n;
}

/// Spawns `n` runs of `make()` on one io_context and drives them to the end.
template <class Strategy>
std::vector<Outcome> run_all(asio::io_context& io, SimClock& clock, std::vector<std::unique_ptr<Strategy>>& runs) {
  std::vector<Outcome> out(runs.size());
  std::size_t done = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    asio::co_spawn(io, runs[i]->run(), [&out, &done, i](std::exception_ptr e, Outcome o) {
      if (e) std::rethrow_exception(e);
      out[i] = std::move(o);
      ++done;
    });
  }
  clock.run(io);
  if (done != runs.size()) throw std::runtime_error("some runs never completed");
  return out;
}

std::string summarize(const std::vector<Outcome>& outs) {
  std::map<std::string, int> by;
  for (const auto& o : outs) ++by[fmt::format("{}", o.status)];
  std::string s;
  for (const auto& [k, n] : by) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", n, k);
  return s;
}

/// `n` canaries: 10% -> pause 1 min -> analysis -> 50% -> pause 1 min -> promoted.
/// Returns their outcomes; `cpu` gets the CPU time of the run, `steps` the
/// instance-steps of one canary (one per plan step, and its promotion).
std::vector<Outcome> run_canaries(std::size_t n, double& cpu, std::size_t& steps) {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedMetrics<> metrics(clock);
  metrics.constant("error-rate", ScopeRole::canary, MetricValue{0.01});
  MetricCheck check;
  check.name = "error-rate";
  check.query = MetricQuery{"error-rate", "error_rate", 1min, MetricQuery::Want::value};
  check.count = 1;
  check.failure_condition = Condition::above(0.05);
  const auto plan = CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1min), steps::analyze(AnalysisSpec{"slo", {check}}),
                                    steps::set_weight(50_pct), steps::pause(1min)});
  using LB = testing::ScriptedLoadBalancer<>;
  using C = Canary<LB, testing::ScriptedMetrics<>, SimClock>;
  std::vector<std::unique_ptr<LB>> lbs;
  std::vector<std::unique_ptr<C>> runs;
  for (std::size_t i = 0; i < n; ++i) {
    lbs.push_back(std::make_unique<LB>(clock, TrafficSplit::all_to("stable")));
    runs.push_back(std::make_unique<C>(*lbs.back(), metrics, Revision{"v1"}, Revision{"v2"}, plan, CanaryOptions{}, clock));
  }
  const double cpu0 = cpu_seconds();
  auto outs = run_all(io, clock, runs);
  cpu = cpu_seconds() - cpu0;
  steps = plan.steps().size() + 1;
  return outs;
}

/// 1,000 canaries (see `run_canaries`). An instance-step is one plan step of one
/// canary (5 per canary) or its promotion.
Row canaries(std::size_t n) {
  double cpu = 0;
  std::size_t per = 0;
  const auto outs = run_canaries(n, cpu, per);
  return Row{"canary", n, n * per, summarize(outs), outs.front().elapsed, cpu, timeline_bytes(outs)};
}

/// The floor under the canary row: what one concurrent run costs in the design
/// itself (a strategy's `run()` is an `awaitable<Outcome>`, spawned by its
/// caller, that awaits its steps on the clock and returns its timeline), with
/// nothing else of rollout in it: no strategy object, no load balancer, no
/// metrics, no analysis, no traffic switch, no events emitted on the way.
/// Each run awaits six steps (a coroutine each, sleeping 20 s on the simulated
/// clock), like a canary's five steps and promotion, then returns an `Outcome`
/// holding a copy of a real canary's timeline (one canary run beforehand).
/// (`--only canary_floor_bare`: the same without the timeline; not in the table.)
struct Skeleton {
  SimClock& clock;
  const Timeline* timeline;  ///< copied into the outcome; none for canary_floor_bare

  asio::awaitable<void> step(Duration d) { co_await detail::sleep_for(clock, d); }

  asio::awaitable<Outcome> run() {
    for (int i = 0; i < 6; ++i) co_await step(20s);
    Outcome o;
    o.status = Status::promoted;
    o.active = "canary";
    if (timeline) o.timeline = *timeline;
    co_return o;
  }
};

Row canary_floors(std::size_t n, bool with_timeline) {
  double ignored = 0;
  std::size_t per = 0;
  const Timeline timeline = run_canaries(1, ignored, per).front().timeline;
  asio::io_context io;
  SimClock clock;
  std::vector<std::unique_ptr<Skeleton>> runs;
  for (std::size_t i = 0; i < n; ++i) runs.push_back(std::make_unique<Skeleton>(Skeleton{clock, with_timeline ? &timeline : nullptr}));
  const auto start = clock.now();
  const double cpu0 = cpu_seconds();
  const auto outs = run_all(io, clock, runs);
  return Row{with_timeline ? "canary_floor" : "canary_floor_bare", n, n * per, summarize(outs), clock.now() - start, cpu_seconds() - cpu0, timeline_bytes(outs)};
}

/// One 10,000-instance rolling update, surge 25%, unavailable 10%, start-up 1-30 s.
/// An instance-step is one created, ready, retiring or retired transition (four per replacement).
/// `Orch` waits for each start-up with `wait_ready`, or through a `ReadinessWatch`.
template <class Orch>
Row rolling(std::size_t n, const char* name) {
  asio::io_context io;
  SimClock clock;
  Orch orch(clock);
  orch.set_create_latency(50ms);
  orch.set_retire_latency(50ms);
  for (std::size_t i = 0; i < n; ++i) orch.adopt(Instance{fmt::format("v1-{:05}", i), Revision{"v1"}, Endpoint{"10.0.0.1", 9000}});
  std::mt19937_64 rng(7);
  orch.on_create = [&](const Revision&, std::size_t) {
    return testing::StartScript{std::chrono::seconds(std::uniform_int_distribution<int>(1, 30)(rng)), false, false};
  };
  RollingOptions o;
  o.desired = static_cast<std::int64_t>(n);
  o.max_surge = 25_pct;
  o.max_unavailable = 10_pct;
  Rolling<Orch, SimClock> roll(orch, Revision{"v1"}, Revision{"v2"}, o, clock);
  const double cpu0 = cpu_seconds();
  const auto out = testing::run_sim(io, clock, roll.run());
  const double cpu = cpu_seconds() - cpu0;
  std::size_t steps = 0;
  for (const auto& e : out.timeline) {
    if (e.kind == EventKind::instance_created || e.kind == EventKind::instance_ready || e.kind == EventKind::instance_retiring ||
        e.kind == EventKind::instance_retired) {
      ++steps;
    }
  }
  return Row{name, n, steps, fmt::format("1 {}", out.status), out.elapsed, cpu, timeline_bytes(out)};
}

/// 100 blue-greens of 100 instances: probe every 10 s, verify for 1 min.
/// An instance-step is one probe of one instance.
Row blue_greens(std::size_t n) {
  constexpr std::size_t per = 100;
  asio::io_context io;
  SimClock clock;
  testing::ScriptedProbe<> probe(clock);
  BlueGreenOptions o;
  o.probe.period = 10s;
  o.verify_for = 1min;
  o.scale_down_delay = 30s;
  using LB = testing::ScriptedLoadBalancer<>;
  using B = BlueGreen<LB, testing::ScriptedProbe<>, SimClock>;
  std::vector<std::unique_ptr<LB>> lbs;
  std::vector<std::unique_ptr<B>> runs;
  for (std::size_t k = 0; k < n; ++k) {
    Environment blue("blue", Revision{"v1"});
    Environment green("green", Revision{"v2"});
    for (std::size_t i = 0; i < per; ++i) {
      blue.instances.emplace_back(fmt::format("b{}-{}", k, i), Revision{"v1"}, Endpoint{"10.0.0.1", 8000});
      green.instances.emplace_back(fmt::format("g{}-{}", k, i), Revision{"v2"}, Endpoint{"10.0.0.2", 8000});
    }
    lbs.push_back(std::make_unique<LB>(clock, TrafficSplit::all_to("blue")));
    runs.push_back(std::make_unique<B>(*lbs.back(), probe, blue, green, o, clock));
  }
  const double cpu0 = cpu_seconds();
  const auto outs = run_all(io, clock, runs);
  return Row{"blue_green", n * per, probe.total_probes(), summarize(outs), outs.front().elapsed, cpu_seconds() - cpu0, timeline_bytes(outs)};
}

Row run_one(const std::string& which, std::size_t size) {
  if (which == "canary") return canaries(size);
  if (which == "canary_floor") return canary_floors(size, true);
  if (which == "canary_floor_bare") return canary_floors(size, false);
  if (which == "rolling") return rolling<testing::FakeOrchestrator<>>(size, "rolling");
  if (which == "rolling_watch") return rolling<testing::WatchingFakeOrchestrator<>>(size, "rolling_watch");
  if (which == "blue_green") return blue_greens(size);
  throw std::invalid_argument("--only: " + which + " is not canary, canary_floor, canary_floor_bare, rolling, rolling_watch or blue_green");
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  std::string only;
  std::size_t size = 0;
  int runs = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) smoke = true;
    else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    else if (std::strcmp(argv[i], "--size") == 0 && i + 1 < argc) size = std::stoul(argv[++i]);
    else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = std::stoi(argv[++i]);
  }
  if (!only.empty()) {
    if (size == 0) {
      fmt::print(stderr, "scale_bench: --only needs --size N with N > 0\n");
      return 2;
    }
    // One scenario: the first run measures peak memory, the best of `runs` CPU.
    const long before = rss_kb();
    Row best = run_one(only, size);
    const long after = rss_kb();
    for (int k = 1; k < runs; ++k) {
      Row r = run_one(only, size);
      if (r.cpu < best.cpu) best = r;
    }
    const double per_step = best.cpu * 1e6 / static_cast<double>(best.steps);
    const double rss_per = static_cast<double>(after - before) * 1024.0 / static_cast<double>(best.instances);
    fmt::print("| {} | {} | {} | {} | {:.3f} s | {} | {:.2f} us | {:.0f} B | {} | {:.0f} B |\n", best.scenario, best.instances,
               best.outcome, format_duration(best.simulated), best.cpu, best.steps, per_step, rss_per,
               per_step < 5.0 && rss_per < 2048 ? "met" : "MISSED",
               static_cast<double>(best.timeline_bytes) / static_cast<double>(best.instances));
    return 0;
  }
  struct Spec {
    const char* name;
    std::size_t size;
  };
  const std::array<Spec, 5> specs{Spec{"canary", smoke ? 20u : 1000u}, Spec{"canary_floor", smoke ? 20u : 1000u}, Spec{"rolling", smoke ? 200u : 10000u},
                                  Spec{"rolling_watch", smoke ? 200u : 10000u}, Spec{"blue_green", smoke ? 2u : 100u}};
  const int runs_each = smoke ? 1 : 7;
  fmt::print("Scale in simulated time (scripted policies, no I/O), each scenario in its own process, CPU best of {}\n", runs_each);
  fmt::print("| scenario | instances | outcome | simulated | CPU | instance-steps | CPU per instance-step | peak RSS per instance | target (< 5 us, < 2 KB) | of which timeline |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  int failures = 0;
  for (const auto& s : specs) {
    const auto cmd = fmt::format("'{}' --only {} --size {} --runs {}", argv[0], s.name, s.size, runs_each);
    if (std::system(cmd.c_str()) != 0) ++failures;
  }
  fmt::print("canary: 1,000 canaries of 5 steps (10%, pause 1m, analysis, 50%, pause 1m) and a promotion each; an instance is a canary,\n"
             "  an instance-step one step or the promotion. canary_floor: the design's own cost per concurrent run, nothing else of\n"
             "  rollout: 1,000 spawned awaitable<Outcome> coroutines, each awaiting six step coroutines that sleep 20 s on the clock,\n"
             "  then returning an Outcome with a copy of one real canary's timeline (no strategy, load balancer, metrics, analysis or\n"
             "  switch; --only canary_floor_bare measures it without the timeline). rolling: one update of 10,000 instances (surge 25%, unavailable 10%,\n"
             "  start-up 1-30 s); an instance-step is a created, ready, retiring or retired transition; rolling waits for each\n"
             "  start-up with its own wait_ready call, rolling_watch (the same update) through one ReadinessWatch. blue_green:\n"
             "  100 switches of 100 instances each (probe every 10 s, 1 min verification); an instance-step is one probe.\n"
             "  Memory includes the scripted policies and every run's full event timeline; the last column is the timeline's\n"
             "  share (its events, strings and splits, per instance).\n");
  return failures == 0 ? 0 : 1;
}
