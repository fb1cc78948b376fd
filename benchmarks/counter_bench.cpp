// CounterSource::record() throughput with 1, 2 and 8 threads (2 cores here: 8
// threads measure contention on shared buckets, not scaling), and query cost.
//
// Usage: counter_bench [--smoke]
#include <rollout/counter_source.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

using namespace rollout;

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const long per_thread = smoke ? 10'000 : 2'000'000;
  fmt::print("CounterSource::record(), {} records per thread (every 20th an error)\n", per_thread);
  fmt::print("| threads | revisions | total records | wall | records/s | ns per record per thread |\n|---|---|---|---|---|---|\n");
  for (int threads : {1, 2, 8}) {
    for (int revisions : {1, 2}) {
      CounterSource<> src;
      src.track(Revision{"v1"});
      src.track(Revision{"v2"});
      std::vector<std::thread> ts;
      const auto start = std::chrono::steady_clock::now();
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          const Revision rev{revisions == 2 && t % 2 ? "v2" : "v1"};
          for (long i = 0; i < per_thread; ++i) src.record(rev, i % 20 != 0, std::chrono::microseconds(200 + i % 100));
        });
      }
      for (auto& t : ts) t.join();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double total = static_cast<double>(per_thread) * threads;
      fmt::print("| {} | {} | {:.0f} | {:.3f} s | {:.3g} | {:.1f} |\n", threads, revisions, total, secs, total / secs,
                 secs * 1e9 / static_cast<double>(per_thread));
    }
  }
  CounterSource<> src;
  for (int i = 0; i < 100'000; ++i) src.record(Revision{"v1"}, i % 20 != 0, std::chrono::microseconds(200 + i % 100));
  for (const char* expr : {"error_rate", "latency_p99"}) {
    const int n = smoke ? 10 : 1000;
    const auto start = std::chrono::steady_clock::now();
    double sink = 0;
    for (int i = 0; i < n; ++i) {
      auto r = src.evaluate(MetricQuery{expr, expr, std::chrono::minutes(1), MetricQuery::Want::value},
                            Scope{ScopeRole::canary, Revision{"v1"}});
      if (r && std::holds_alternative<double>(*r)) sink += std::get<double>(*r);
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / n;
    fmt::print("query {} over a 1 min window (8,192 latencies kept): {:.1f} us (checksum {:.3g})\n", expr, us, sink);
  }
  return 0;
}
