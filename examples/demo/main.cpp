// rollout's demo: real processes of the sample service, live HTTP load, and four
// releases in a row, with nothing but this machine.
//
//   1. blue-green v1 -> v2
//   2. canary v2 -> v3 (good), judged by CounterSource from the live traffic: promoted
//   3. canary v3 -> v4 (bad: 30% errors): rolled back automatically
//   4. rolling update v3 -> v5, surge 1, unavailable 0
//
// Usage: demo [--lb router|haproxy] [--rate N] [--instances N] [--svg PATH]
//
// `--lb router` (the default) routes through rollout::WeightedRouter inside the
// load generator; `--lb haproxy` starts a real HAProxy and sends the load
// through it. The exit code is 0 only if every phase ended as planned and no
// request was lost that should not have been (the bad build's own 500s are
// expected; any connection error, or any failure elsewhere, is not).
#include "scenario.hpp"
#include "timeline_svg.hpp"

#include <rollout/rollout.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#ifndef ROLLOUT_DEMO_SAMPLE_SERVICE
#error "ROLLOUT_DEMO_SAMPLE_SERVICE must name the sample_service executable"
#endif

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

struct Args {
  demo::LbKind lb = demo::LbKind::router;
  double rate = 1000;
  int instances = 3;
  std::string svg = "rollout-timeline.svg";
  std::string sample_service = ROLLOUT_DEMO_SAMPLE_SERVICE;
};

/// Parses all of `s` as a number (std::from_chars: no locale, no trailing junk).
template <class T>
bool number(const std::string& s, T& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(fmt::format("{} needs a value", k));
      return argv[++i];
    };
    if (k == "--lb") {
      const auto v = value();
      if (v == "router") {
        a.lb = demo::LbKind::router;
      } else if (v == "haproxy") {
        a.lb = demo::LbKind::haproxy;
      } else {
        throw std::invalid_argument(fmt::format("--lb: {:?} is not router or haproxy", v));
      }
    } else if (k == "--rate") {
      const auto v = value();
      if (!number(v, a.rate) || !(a.rate >= 10 && a.rate <= 20000)) {
        throw std::invalid_argument(fmt::format("--rate: {:?} is not a number within 10..20000", v));
      }
    } else if (k == "--instances") {
      const auto v = value();
      if (!number(v, a.instances) || a.instances < 1 || a.instances > 20) {
        throw std::invalid_argument(fmt::format("--instances: {:?} is not a whole number within 1..20", v));
      }
    } else if (k == "--svg") {
      a.svg = value();
    } else if (k == "--sample-service") {
      a.sample_service = value();
    } else {
      throw std::invalid_argument(fmt::format("unknown option {:?} (see the comment at the top of examples/demo/main.cpp)", k));
    }
  }
  return a;
}

/// The live status: one updating line on a terminal, a plain line a second otherwise.
class Status {
public:
  Status(demo::Scenario& s, demo::Traffic& t, demo::Fleet& f, demo::LoadGenerator& l)
      : scenario_(s), traffic_(t), fleet_(f), load_(l), tty_(::isatty(STDOUT_FILENO) != 0) {}

  /// Prints an event line (the events worth a human's attention).
  void event(const rollout::Event& e) {
    using K = rollout::EventKind;
    switch (e.kind) {
      case K::run_started: case K::traffic_applied: case K::rollback_started: case K::check_failed:
      case K::instance_unhealthy: case K::releasable: case K::run_finished: case K::instance_ready:
      case K::instance_retired: case K::paused:
        break;
      case K::metric_result:
        if (e.detail.find("failed") == std::string::npos) return;
        break;
      default: return;
    }
    clear();
    const auto subject = e.kind == K::traffic_applied && e.split ? fmt::format("{}", *e.split) : e.subject;
    fmt::print("  {:>6.1f}s  {:<10} {:<18} {}{}\n", since_start(), e.strategy, fmt::format("{}", e.kind), subject,
               e.detail.empty() ? "" : " | " + e.detail.substr(0, 160));
    std::fflush(stdout);
  }

  void line(const std::string& s) {
    clear();
    fmt::print("{}\n", s);
    std::fflush(stdout);
  }

  asio::awaitable<void> ticker(const bool& done) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    auto last = load_.snapshot();
    for (int tick = 1; !done; ++tick) {
      t.expires_after(250ms);
      co_await t.async_wait(asio::use_awaitable);
      if (done) break;
      if (!tty_ && tick % 4 != 0) continue;  // a plain line a second
      const auto now = load_.snapshot();
      const double dt = std::chrono::duration<double>(now.taken - last.taken).count();
      const double rps = dt > 0 ? static_cast<double>(now.total.requests - last.total.requests) / dt : 0;
      last = now;
      std::string weights;
      for (const auto& [g, w] : traffic_.weights()) {
        if (!w.is_zero()) weights += fmt::format("{}{} {}", weights.empty() ? "" : " ", g, w);
      }
      std::map<std::string, int> up;
      auto running = co_await fleet_.orchestrator().list();
      if (running) {
        for (const auto& i : *running) ++up[i.revision.id];
      }
      std::string health;
      for (const auto& [r, k] : up) health += fmt::format("{}{}:{}", health.empty() ? "" : " ", r, k);
      const auto text = fmt::format("[{:6.1f}s] {} | {} | traffic {} | up {} | {:.0f} req/s | failed {}", since_start(),
                                    scenario_.phase(), scenario_.step(), weights, health, rps, now.total.failed());
      if (tty_) {
        fmt::print("\r\033[2K{}", text.substr(0, 200));
        drawn_ = true;
      } else {
        fmt::print("{}\n", text);
      }
      std::fflush(stdout);
    }
    clear();
  }

private:
  double since_start() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - load_.started()).count(); }
  void clear() {
    if (tty_ && drawn_) fmt::print("\r\033[2K");
    drawn_ = false;
  }

  demo::Scenario& scenario_;
  demo::Traffic& traffic_;
  demo::Fleet& fleet_;
  demo::LoadGenerator& load_;
  bool tty_;
  bool drawn_ = false;
};

void summary(const std::vector<demo::PhaseReport>& phases, const demo::Snapshot& all) {
  fmt::print("\n| phase | duration | requests | failed | of which expected | lost | outcome | as planned |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  for (const auto& p : phases) {
    fmt::print("| {} | {:.1f} s | {} | {} | {} | {} | {} | {} |\n", p.name, p.seconds(), p.counts.requests, p.counts.failed(),
               std::min(p.allowed_failures, p.counts.failed()), p.lost(), p.outcome.status, p.as_expected() ? "yes" : "NO");
  }
  fmt::print("| whole run | | {} | {} | | | | |\n\n", all.total.requests, all.total.failed());
  for (const auto& p : phases) {
    if (p.detection_ms) {
      fmt::print("{}: first bad response -> 100% stable, verified: {:.0f} ms; canary exposure (weight applied -> stable): {:.0f} ms; "
                 "the bad build answered {} requests, {} with a 500 ({:.3f}% of the phase's requests)\n",
                 p.name, *p.detection_ms, p.exposure_ms.value_or(0), p.bad_build.requests, p.bad_build.http_errors,
                 p.counts.requests ? 100.0 * static_cast<double>(p.bad_build.http_errors) / static_cast<double>(p.counts.requests) : 0.0);
    }
    if (!p.as_expected()) fmt::print("{}: {}\n", p.name, p.outcome.reason);
  }
}

asio::awaitable<int> run(Args args) {
  rollout::CounterSource<> metrics;
  rollout::WeightedRouter router;
  std::optional<demo::HaproxyServerProcess> haproxy;
  std::unique_ptr<rollout::HaproxyLoadBalancer> haproxy_lb;
  std::unique_ptr<demo::Traffic> traffic;
  if (args.lb == demo::LbKind::haproxy) {
    haproxy.emplace();
    co_await haproxy->start();
    rollout::HaproxyOptions ho;
    ho.address.unix_socket = haproxy->admin_socket();
    haproxy_lb = std::make_unique<rollout::HaproxyLoadBalancer>(ho);
    traffic = std::make_unique<demo::Traffic>(*haproxy_lb, haproxy->frontend());
    fmt::print("HAProxy started: frontend 127.0.0.1:{}, runtime API {}\n", haproxy->frontend().port, haproxy->admin_socket());
  } else {
    traffic = std::make_unique<demo::Traffic>(router);
  }
  std::vector<std::string> bad;
  bad.push_back("v4");
  demo::Fleet fleet(*traffic, args.sample_service, bad);
  demo::LoadOptions lo;
  lo.rate = args.rate;
  lo.on_unreachable = [&](const demo::Pick& p) { traffic->unreachable(p); };
  demo::LoadGenerator load([&] { return traffic->pick(); }, metrics, lo);
  demo::ScenarioOptions so;
  so.instances = args.instances;
  demo::Scenario scenario(*traffic, fleet, load, metrics, so);
  Status status(scenario, *traffic, fleet, load);
  scenario.on_event = [&](const rollout::Event& e) { status.event(e); };

  fmt::print("rollout demo: {} instances of the sample service per revision, {} requests/s through {}\n", args.instances, args.rate,
             args.lb == demo::LbKind::haproxy ? "HAProxy" : "WeightedRouter");
  co_await scenario.bootstrap(rollout::Revision{"v1"});
  load.start();
  bool done = false, ticker_ended = false;
  std::exception_ptr ticker_error;
  asio::co_spawn(co_await asio::this_coro::executor, status.ticker(done), [&](std::exception_ptr e) {
    ticker_ended = true;
    ticker_error = e;
  });

  std::vector<demo::PhaseReport> phases;
  asio::steady_timer pause(co_await asio::this_coro::executor);
  auto announce = [&](const std::string& s) -> asio::awaitable<void> {
    pause.expires_after(1s);  // a moment of steady traffic between phases, so the picture shows each one apart
    co_await pause.async_wait(asio::use_awaitable);
    status.line(fmt::format("\n== {} ==", s));
  };
  int exit_code = 0;
  try {
    co_await announce("1. blue-green v1 -> v2");
    phases.push_back(co_await scenario.blue_green(rollout::Revision{"v1"}, rollout::Revision{"v2"}));
    co_await announce("2. canary v2 -> v3 (a good build)");
    phases.push_back(co_await scenario.canary(rollout::Revision{"v2"}, rollout::Revision{"v3"}, false));
    co_await announce("3. canary v3 -> v4 (a bad build: 30% of its responses are 500)");
    phases.push_back(co_await scenario.canary(rollout::Revision{"v3"}, rollout::Revision{"v4"}, true));
    co_await announce("4. rolling update v3 -> v5 (surge 1, unavailable 0)");
    phases.push_back(co_await scenario.rolling(rollout::Revision{"v3"}, rollout::Revision{"v5"}));
  } catch (const std::exception& e) {
    status.line(fmt::format("the demo stopped: {}", e.what()));
    exit_code = 2;
  }
  done = true;
  asio::steady_timer wait(co_await asio::this_coro::executor);
  while (!ticker_ended) {  // it references this frame: let it see `done` and end
    wait.expires_after(20ms);
    co_await wait.async_wait(asio::use_awaitable);
  }
  load.stop();
  if (ticker_error) std::rethrow_exception(ticker_error);
  const auto all = load.snapshot();
  summary(phases, all);
  for (const auto& p : phases) {
    if (!p.as_expected()) exit_code = exit_code ? exit_code : 1;
  }
  if (all.unsent) fmt::print("{} requests could not be sent on time (the load generator stalled)\n", all.unsent);

  std::ofstream svg(args.svg);
  svg << demo::timeline_svg(load.slices(), load.started(), phases, traffic->changes(),
                            fmt::format("rollout demo through {}: {} req/s, {} requests, {} failed",
                                        args.lb == demo::LbKind::haproxy ? "HAProxy" : "WeightedRouter", args.rate,
                                        all.total.requests, all.total.failed()));
  svg.close();
  fmt::print("timeline written to {}\n", args.svg);

  co_await fleet.shutdown();
  if (haproxy) co_await haproxy->stop();
  fmt::print("{}\n", exit_code == 0 ? "every phase went as planned; no request was lost that should not have been"
                                    : "SOMETHING WENT WRONG: see the table above");
  co_return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "demo: {}\n", e.what());
    return 2;
  }
  asio::io_context io;
  int rc = 2;
  bool finished = false;
  std::exception_ptr error;
  asio::co_spawn(io, run(std::move(args)), [&](std::exception_ptr e, int r) {
    finished = true;
    error = e;
    rc = r;
  });
  // Not io.run(): every child process keeps an exit monitor pending while it lives.
  while (!finished) io.run_one();
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      fmt::print(stderr, "demo: {}\n", e.what());
      return 2;
    }
  }
  return rc;
}
