// Rolling update benchmarks, in simulated time:
//  1. makespan of pipelined replacement (rollout::Rolling) against lockstep batches
//     and against the lower bound, for heterogeneous start times;
//  2. CPU time and peak memory per instance for a 10,000-instance update.
//
// Usage: rolling_bench [--smoke | --scale N]   (--smoke: tiny sizes, for CTest; --scale N: only part 2)
#include <rollout/strategy/rolling.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/io_context.hpp>

#include <fmt/core.h>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using testing::SimClock;

namespace {

constexpr Duration create_latency = 50ms;
constexpr Duration retire_latency = 50ms;

struct Fleet {
  asio::io_context io;
  SimClock clock;
  testing::FakeOrchestrator<> orch{clock};
  explicit Fleet(std::int64_t n) {
    orch.set_create_latency(create_latency);
    orch.set_retire_latency(retire_latency);
    for (std::int64_t i = 0; i < n; ++i) orch.adopt({fmt::format("v1-{:05}", i), {"v1"}, {"10.0.0.1", 9000}});
  }
};

std::vector<Duration> heterogeneous(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Duration> out;
  for (std::size_t i = 0; i < n; ++i) {
    const bool slow = std::uniform_int_distribution<int>(0, 9)(rng) < 2;  // 20% slow starters
    out.emplace_back(std::chrono::seconds(slow ? std::uniform_int_distribution<int>(60, 120)(rng)
                                               : std::uniform_int_distribution<int>(5, 15)(rng)));
  }
  return out;
}

double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

void makespan_table(std::int64_t desired) {
  const auto lat = heterogeneous(static_cast<std::size_t>(desired), 42);
  struct Pair {
    Budget surge, unavailable;
  };
  const std::vector<Pair> pairs{{1, 0}, {5, 0}, {10, 0}, {25_pct, 0}, {0, 10_pct}, {25_pct, 25_pct}};
  fmt::print("Makespan, desired {}: start-up 5-15 s (80%) or 60-120 s (20%), create and retire 50 ms each\n", desired);
  fmt::print("| max_surge | max_unavailable | lanes | pipelined (rollout) | lockstep batches | lower bound | lockstep / pipelined |\n");
  fmt::print("|---|---|---|---|---|---|---|\n");
  for (const auto& p : pairs) {
    Fleet f(desired);
    f.orch.on_create = [&](const Revision&, std::size_t n) { return testing::StartScript{lat[n % lat.size()], false, false}; };
    RollingOptions o;
    o.desired = desired;
    o.max_surge = p.surge;
    o.max_unavailable = p.unavailable;
    Rolling<testing::FakeOrchestrator<>, SimClock> roll(f.orch, {"v1"}, {"v2"}, o, f.clock);
    const auto out = testing::run_sim(f.io, f.clock, roll.run());
    if (out.status != Status::promoted) fmt::print("!! {}\n", out);
    // Lockstep: batches of (surge + unavailable) replacements; each batch creates,
    // waits for its slowest instance, then retires, before the next batch starts.
    const auto lanes = std::max<std::int64_t>(1, roll.budgets().surge + roll.budgets().unavailable);
    Duration lockstep{}, sum{}, longest{};
    for (std::size_t b = 0; b < lat.size(); b += static_cast<std::size_t>(lanes)) {
      const auto end = std::min(lat.size(), b + static_cast<std::size_t>(lanes));
      lockstep += create_latency + *std::max_element(lat.begin() + static_cast<std::ptrdiff_t>(b), lat.begin() + static_cast<std::ptrdiff_t>(end)) +
                  retire_latency;
    }
    for (const auto& l : lat) {
      sum += create_latency + l + retire_latency;
      longest = std::max(longest, create_latency + l + retire_latency);
    }
    const auto bound = std::max(longest, sum / lanes);
    fmt::print("| {} | {} | {} | {:.1f} s | {:.1f} s | {:.1f} s | {:.2f}x |\n", p.surge.text(), p.unavailable.text(), lanes,
               seconds(out.elapsed), seconds(lockstep), seconds(bound), seconds(lockstep) / seconds(out.elapsed));
  }
}

long peak_rss_kb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct ScaleRun {
  Outcome out;
  double cpu = 0, wall = 0;
  std::size_t steps = 0;
};

ScaleRun scale_once(std::int64_t desired) {
  Fleet f(desired);
  std::mt19937_64 rng(7);
  f.orch.on_create = [&](const Revision&, std::size_t) {
    return testing::StartScript{std::chrono::seconds(std::uniform_int_distribution<int>(1, 30)(rng)), false, false};
  };
  RollingOptions o;
  o.desired = desired;
  o.max_surge = 25_pct;
  o.max_unavailable = 10_pct;
  Rolling<testing::FakeOrchestrator<>, SimClock> roll(f.orch, {"v1"}, {"v2"}, o, f.clock);
  ScaleRun r;
  const double cpu0 = cpu_seconds();
  const auto wall0 = std::chrono::steady_clock::now();
  r.out = testing::run_sim(f.io, f.clock, roll.run());
  r.cpu = cpu_seconds() - cpu0;
  r.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  for (const auto& e : r.out.timeline) {
    if (e.kind == EventKind::instance_created || e.kind == EventKind::instance_ready || e.kind == EventKind::instance_retiring ||
        e.kind == EventKind::instance_retired) {
      ++r.steps;
    }
  }
  return r;
}

void scale_table(std::int64_t desired) {
  const long rss_before = peak_rss_kb();
  ScaleRun best = scale_once(desired);  // the first run also measures peak memory
  const long rss_after = peak_rss_kb();
  for (int i = 0; i < 2; ++i) {  // CPU: the best of three, because this machine is shared
    auto r = scale_once(desired);
    if (r.cpu < best.cpu) best = std::move(r);
  }
  fmt::print("\nScale, desired {} (surge 25%, unavailable 10%, start-up 1-30 s), simulated time, best of 3\n", desired);
  fmt::print("| outcome | simulated | wall | CPU | instance-steps | CPU per instance-step | CPU per replacement | peak RSS growth per instance |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  fmt::print("| {} | {} | {:.3f} s | {:.3f} s | {} | {:.2f} us | {:.2f} us | {:.0f} B |\n", best.out.status,
             format_duration(best.out.elapsed), best.wall, best.cpu, best.steps, best.cpu * 1e6 / static_cast<double>(best.steps),
             best.cpu * 1e6 / static_cast<double>(desired),
             static_cast<double>(rss_after - rss_before) * 1024.0 / static_cast<double>(desired));
  fmt::print("(an instance-step is one created, ready, retiring or retired transition: four per replacement; "
             "memory includes the fake fleet and the full event timeline)\n");
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  if (argc > 2 && std::strcmp(argv[1], "--scale") == 0) {  // only the scale run, e.g. under callgrind
    scale_table(std::stoll(argv[2]));
    return 0;
  }
  makespan_table(smoke ? 12 : 100);
  scale_table(smoke ? 200 : 10'000);
  return 0;
}
