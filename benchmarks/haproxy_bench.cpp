// HaproxyLoadBalancer::apply() (set weights + read back and verify) against the
// bare runtime API round trip, measured in the same run, against a real HAProxy.
//
// Usage: haproxy_bench [--smoke]
#include "support/haproxy.hpp"

#include <rollout/haproxy.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;

namespace {

template <class T>
T run(asio::io_context& io, asio::awaitable<T> aw) {
  std::optional<T> out;
  asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T v) {
    if (e) std::rethrow_exception(e);
    out.emplace(std::move(v));
  });
  io.restart();
  io.run();
  return std::move(*out);
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const int iterations = smoke ? 5 : 300;
  fmt::print("HAProxy 2.6 runtime API over a unix socket, {} iterations each (p50 / p99)\n", iterations);
  fmt::print("| servers | bare round trip | apply + verify | apply / round trip | per server touched |\n|---|---|---|---|---|\n");
  for (int n : {2, 10, 50}) {
    asio::io_context io;
    std::vector<test_support::HaproxyProcess::Server> servers;
    HaproxyOptions o;
    for (int i = 0; i < n; ++i) {
      const std::string name = fmt::format("s{}", i);
      servers.push_back({name, test_support::free_port(), 1});
      o.groups[i % 2 ? "green" : "blue"].push_back({"app", name});
    }
    test_support::HaproxyProcess haproxy(io, servers);
    o.address.unix_socket = haproxy.admin_socket();
    HaproxyLoadBalancer lb(o);
    std::vector<double> bare, apply;
    for (int i = 0; i < iterations; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      auto r = run(io, lb.command("get weight app/s0"));
      bare.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      if (!r) return fmt::print("round trip failed: {}\n", r.error().message), 1;
      const auto w = Percent::from_basis_points(i % 2 ? 4000 : 6000);
      t0 = std::chrono::steady_clock::now();
      auto a = run(io, lb.apply(TrafficSplit::between("green", w, "blue")));
      apply.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      if (!a) return fmt::print("apply failed: {}\n", a.error().message), 1;
    }
    const double b50 = percentile(bare, 0.5), b99 = percentile(bare, 0.99), a50 = percentile(apply, 0.5), a99 = percentile(apply, 0.99);
    fmt::print("| {} | {:.0f} / {:.0f} us | {:.0f} / {:.0f} us | {:.2f}x | {:.3f}x |\n", n, b50, b99, a50, a99, a50 / b50, a50 / b50 / n);
  }
  fmt::print("(apply sends every server's weight and state in one batch, then reads 'show servers state' back: two round trips "
             "whatever the number of servers)\n");
  return 0;
}
