// Health probe throughput: rollout::HttpProbe on one thread against wrk -t1, the
// same server, the same concurrency and connection mode, in the same run.
//
// The server is examples/sample_service (one process, one thread), started
// through ProcessOrchestrator on a free 127.0.0.1 port. The probe runs on this
// program's one thread; wrk runs with one thread. Client and server share this
// machine's cores, for both.
//
// Each cell alternates the two, --rounds times (default 3), and keeps the best
// rate of each: on this shared VM a slow spell of a few seconds moves one run
// by up to 30%, and it should not decide a ratio. The per-round ratios'
// range is printed beside it.
//
// Usage: probe_bench [--smoke] [--seconds S] [--rounds R]
//        probe_bench --probes N --port P [--concurrency C] [--new-connections]
// The second form makes exactly N probes (C at a time, default 1) of a server
// already listening on 127.0.0.1:P and prints how many failed, with no timing.
// It is for callgrind, whose instruction counts do not depend on the machine's
// load (benchmarks/callgrind.sh starts the server and runs it). It starts no
// process itself: valgrind 3.19 lacks pidfd_open, which Boost.Process needs.
#include <rollout/http_probe.hpp>
#include <rollout/process_orchestrator.hpp>
#include <rollout/tcp_probe.hpp>
#include "support/run.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#ifndef ROLLOUT_SAMPLE_SERVICE
#error "ROLLOUT_SAMPLE_SERVICE must name the sample_service executable"
#endif

namespace asio = boost::asio;
using namespace rollout;
using namespace std::chrono_literals;

using rollout::test_support::run;

namespace {

struct ProbeRun {
  double per_second = 0;
  std::uint64_t failed = 0;
};

HttpProbeOptions bench_options(bool keep_alive, int concurrency) {
  HttpProbeOptions o;
  o.path = "/health";
  o.keep_alive = keep_alive;
  o.max_idle_per_endpoint = static_cast<std::size_t>(concurrency);
  o.timeout = 2s;
  return o;
}

/// `concurrency` coroutines probing `target` back to back; each checks `until()`
/// before it starts a probe and stops when it returns true. Returns the successful and the failed probes.
template <class Until>
std::pair<std::uint64_t, std::uint64_t> probe_loop(asio::io_context& io, const Instance& target, bool keep_alive, int concurrency,
                                                   Until until) {
  HttpProbe probe(bench_options(keep_alive, concurrency));
  std::uint64_t ok = 0, failed = 0;
  int running = concurrency;
  auto worker = [&]() -> asio::awaitable<void> {
    while (!until()) {
      const auto r = co_await probe.check(target);
      if (r.healthy) {
        ++ok;
      } else {
        ++failed;
      }
    }
    --running;
  };
  for (int k = 0; k < concurrency; ++k) asio::co_spawn(io, worker(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.restart();
  while (running > 0) io.run_one();
  return {ok, failed};
}

/// `concurrency` coroutines probing `target` back to back for `seconds`.
ProbeRun probe_run(asio::io_context& io, const Instance& target, bool keep_alive, int concurrency, double seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto until = t0 + std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
  const auto [ok, failed] =
      probe_loop(io, target, keep_alive, concurrency, [&] { return std::chrono::steady_clock::now() >= until; });
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return ProbeRun{static_cast<double>(ok) / wall, failed};
}

struct WrkRun {
  double per_second = 0;
  std::string note;
};

WrkRun wrk_run(const Endpoint& ep, bool keep_alive, int concurrency, double seconds) {
  const std::string cmd = fmt::format("wrk -t1 -c{} -d{}s {}http://{}:{}/health 2>&1", concurrency, std::max(1, static_cast<int>(seconds)),
                                      keep_alive ? "" : "-H 'Connection: close' ", ep.host, ep.port);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return WrkRun{0, "popen failed"};
  std::string out;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), p)) out += buf.data();
  const int rc = ::pclose(p);
  WrkRun r;
  std::smatch m;
  if (rc == 0 && std::regex_search(out, m, std::regex(R"(Requests/sec:\s+([0-9.]+))"))) r.per_second = std::stod(m[1]);
  else r.note = fmt::format("wrk failed (exit {}): {}", rc, out.substr(0, 200));
  if (std::regex_search(out, m, std::regex(R"(Socket errors:[^\n]*)"))) r.note = m[0];
  if (std::regex_search(out, m, std::regex(R"(Non-2xx or 3xx responses:[^\n]*)"))) r.note += (r.note.empty() ? "" : "; ") + std::string(m[0]);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  double seconds = 3;
  int rounds = 3;
  std::uint64_t probes = 0;  // > 0: the fixed-count mode
  int count_concurrency = 1;
  bool count_keep_alive = true;
  unsigned short count_port = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) smoke = true;
    else if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds = std::stod(argv[++i]);
    else if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (std::strcmp(argv[i], "--probes") == 0 && i + 1 < argc) probes = std::stoull(argv[++i]);
    else if (std::strcmp(argv[i], "--concurrency") == 0 && i + 1 < argc) count_concurrency = std::stoi(argv[++i]);
    else if (std::strcmp(argv[i], "--new-connections") == 0) count_keep_alive = false;
    else if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) count_port = static_cast<unsigned short>(std::stoul(argv[++i]));
    else {
      fmt::print(stderr, "probe_bench: unknown argument {:?}\n", argv[i]);
      return 2;
    }
  }
  if (smoke) {
    seconds = 1;
    rounds = 1;
  }
  if (rounds < 1) {
    fmt::print(stderr, "probe_bench: --rounds must be at least 1, got {}\n", rounds);
    return 2;
  }
  asio::io_context io;
  if (probes > 0) {
    if (count_port == 0) {
      fmt::print(stderr, "probe_bench: --probes needs --port\n");
      return 2;
    }
    // Workers stop starting probes once `probes` have finished or are under
    // way, so exactly `probes` are made.
    std::uint64_t started = 0;
    const Instance target("server", Revision{"v1"}, Endpoint{"127.0.0.1", count_port});
    const auto [ok, failed] = probe_loop(io, target, count_keep_alive, count_concurrency, [&] { return started++ >= probes; });
    fmt::print("probes {} ok {} failed {}\n", ok + failed, ok, failed);
    return failed == 0 && ok == probes ? 0 : 1;
  }
  TcpProbe ready(1s);
  ProcessOrchestratorOptions po;
  po.executable = ROLLOUT_SAMPLE_SERVICE;
  po.args = {"--port", "{port}", "--version", "v1", "--quiet"};
  po.ready_poll = 20ms;
  ProcessOrchestrator<TcpProbe> orch(ready, po);
  auto server = run(io, orch.create(Revision{"v1"}));
  if (!server) {
    fmt::print(stderr, "could not start the sample service: {}\n", server.error());
    return 1;
  }
  if (auto ready_result = run(io, orch.wait_ready(*server)); !ready_result) {
    fmt::print(stderr, "the sample service did not get ready: {}\n", ready_result.error());
    return 1;
  }
  const auto stop_server = [&] {
    run(io, [&]() -> asio::awaitable<bool> {
      co_await orch.shutdown();
      co_return true;
    }());
  };
  const bool have_wrk = std::system("command -v wrk >/dev/null 2>&1") == 0;

  fmt::print("HttpProbe (1 thread) against wrk -t1, GET /health on examples/sample_service (1 process, 1 thread), {:.0f} s per run,\n"
             "{} rounds per cell alternating the two, best run of each\n",
             seconds, rounds);
  fmt::print("(client and server share this machine's {} cores; the same server serves both, one after the other)\n",
             std::thread::hardware_concurrency());
  fmt::print("| connections | concurrency | HttpProbe probes/s | wrk req/s | probe / wrk | each round's probe / wrk | probe failures | wrk notes |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  std::vector<int> levels = smoke ? std::vector<int>{1, 16} : std::vector<int>{1, 16, 128};
  bool all_ok = true;
  for (bool keep_alive : {true, false}) {
    for (int c : levels) {
      ProbeRun p;  // the best round's rate, and the failures of all rounds
      WrkRun w;
      std::vector<double> ratios;
      for (int k = 0; k < rounds; ++k) {
        const auto pk = probe_run(io, *server, keep_alive, c, seconds);
        p.per_second = std::max(p.per_second, pk.per_second);
        p.failed += pk.failed;
        if (!have_wrk) continue;
        const auto wk = wrk_run(server->endpoint, keep_alive, c, seconds);
        if (!wk.note.empty()) w.note = wk.note;
        w.per_second = std::max(w.per_second, wk.per_second);
        if (wk.per_second > 0) ratios.push_back(pk.per_second / wk.per_second);
      }
      if (!have_wrk) w.note = "wrk not installed";
      const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
      fmt::print("| {} | {} | {:.0f} | {} | {} | {} | {} | {} |\n", keep_alive ? "keep-alive" : "new per probe", c, p.per_second,
                 w.per_second > 0 ? fmt::format("{:.0f}", w.per_second) : "-",
                 w.per_second > 0 ? fmt::format("{:.2f}", p.per_second / w.per_second) : "-",
                 ratios.empty() ? std::string("-") : fmt::format("{:.2f} to {:.2f}", *lo, *hi), p.failed, w.note);
      if (p.per_second <= 0) all_ok = false;
    }
  }
  fmt::print("Target: probe / wrk >= 0.8\n");
  stop_server();
  return all_ok ? 0 : 1;
}
