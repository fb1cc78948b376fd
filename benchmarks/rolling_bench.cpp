// Rolling update makespan, in simulated time: pipelined replacement
// (rollout::Rolling) against lockstep batches and against the lower bound, for
// heterogeneous start times. (CPU and memory at scale: scale_bench.)
//
// Usage: rolling_bench [--smoke]   (--smoke: tiny sizes, for CTest)
#include <rollout/strategy/rolling.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/io_context.hpp>

#include <fmt/core.h>

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

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  makespan_table(smoke ? 12 : 100);
  return 0;
}
