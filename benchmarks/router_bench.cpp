// WeightedRouter::pick() throughput with 1, 2 and 8 threads (this machine has 2
// cores, so 8 threads measure contention on the shared counters, not scaling).
//
// Usage: router_bench [--smoke]
#include <rollout/weighted_router.hpp>

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

using namespace rollout;

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const long per_thread = smoke ? 10'000 : 5'000'000;
  fmt::print("WeightedRouter::pick(), {} picks per thread, groups stable (3 instances) 95% / canary (1 instance) 5%\n",
             per_thread);
  fmt::print("| mode | threads | total picks | wall | picks/s | ns per pick per thread |\n|---|---|---|---|---|---|\n");
  for (auto mode : {WeightedRouter::Mode::smooth_round_robin, WeightedRouter::Mode::random}) {
    for (int threads : {1, 2, 8}) {
      WeightedRouter r(mode);
      for (int i = 0; i < 3; ++i) r.add("stable", Instance{fmt::format("stable-{}", i), Revision{"v1"}, Endpoint{"127.0.0.1", 9000}});
      r.add("canary", Instance{"canary-0", Revision{"v2"}, Endpoint{"127.0.0.1", 9001}});
      if (!r.apply_now(TrafficSplit::of({{"stable", Percent::from_basis_points(9500)}, {"canary", Percent::from_basis_points(500)}}))) return 1;
      std::atomic<long> sink{0};
      std::vector<std::thread> ts;
      const auto start = std::chrono::steady_clock::now();
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&] {
          long local = 0;
          for (long i = 0; i < per_thread; ++i) local += static_cast<long>(r.pick()->endpoint.port);
          sink += local;
        });
      }
      for (auto& t : ts) t.join();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double total = static_cast<double>(per_thread) * threads;
      fmt::print("| {} | {} | {:.0f} | {:.3f} s | {:.3g} | {:.1f} |\n", mode == WeightedRouter::Mode::random ? "random" : "swrr",
                 threads, total, secs, total / secs, secs * 1e9 / static_cast<double>(per_thread));
      if (sink.load() == 0) return 1;
    }
  }
  return 0;
}
