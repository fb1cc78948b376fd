// A blue-green release on this machine, in real time.
//
// - Instances are real TCP listeners on 127.0.0.1, on ports chosen by binding port 0.
// - The health probe is a real TCP connect (a policy written below in a few lines).
// - The load balancer is an in-memory routing table (a policy in a few lines).
//
// Release 1 moves traffic from blue (v1) to green (v2) and is promoted.
// Release 2 moves traffic from green to red (v3); one red instance dies during
// the verification window, and traffic goes straight back to green.
//
// Run: ./blue_green_local      (about ten seconds)
#include <rollout/rollout.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/core.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// LoadBalancer policy: an in-memory routing table, read back after each change.
struct RoutingTable {
  std::map<std::string, rollout::Percent> weights;

  asio::awaitable<rollout::result<void>> apply(const rollout::TrafficSplit& split) {
    for (const auto& share : split.shares()) weights[share.group] = share.weight;
    for (const auto& share : split.shares()) {  // verify: the table must now say what we asked
      if (weights[share.group] != share.weight) co_return rollout::Error(rollout::errc::lb_verify_mismatch);
    }
    co_return rollout::result<void>{};
  }
};

// HealthProbe policy: healthy if a TCP connection to the instance succeeds. The
// strategy bounds each probe with its timeout and cancels it if it runs over.
struct TcpConnectProbe {
  asio::awaitable<rollout::HealthResult> check(const rollout::Instance& instance) {
    asio::ip::tcp::socket socket(co_await asio::this_coro::executor);
    const asio::ip::tcp::endpoint to(asio::ip::make_address(instance.endpoint.host), instance.endpoint.port);
    auto [ec] = co_await socket.async_connect(to, asio::as_tuple(asio::use_awaitable));
    if (ec) co_return rollout::HealthResult::down(fmt::format("connect {}: {}", instance.endpoint, ec.message()));
    co_return rollout::HealthResult::up("connected");
  }
};

// A pretend service instance: a listener that accepts and closes connections.
class FakeInstance {
public:
  FakeInstance(asio::io_context& io, std::string id, rollout::Revision rev)
      : acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}),
        instance_{std::move(id), std::move(rev), {"127.0.0.1", acceptor_.local_endpoint().port()}} {
    asio::co_spawn(io, serve(), [](std::exception_ptr) {});  // ends with operation_aborted when stopped
  }
  const rollout::Instance& instance() const { return instance_; }
  void kill() { acceptor_.close(); }

private:
  asio::awaitable<void> serve() {
    for (;;) {
      auto [ec, peer] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
    }
  }
  asio::ip::tcp::acceptor acceptor_;
  rollout::Instance instance_;
};

rollout::Environment environment(const std::string& name, const std::vector<std::unique_ptr<FakeInstance>>& fleet) {
  rollout::Environment env{name, fleet.front()->instance().revision, {}};
  for (const auto& i : fleet) env.instances.push_back(i->instance());
  return env;
}

asio::awaitable<int> release(asio::io_context& io) {
  auto start = [&](const std::string& name, const std::string& rev, int n) {
    std::vector<std::unique_ptr<FakeInstance>> fleet;
    for (int i = 0; i < n; ++i) fleet.push_back(std::make_unique<FakeInstance>(io, fmt::format("{}-{}", name, i), rev));
    return fleet;
  };
  auto blue = start("blue", "v1", 2);
  auto green = start("green", "v2", 3);
  auto red = start("red", "v3", 3);

  RoutingTable lb;
  TcpConnectProbe probe;
  rollout::BlueGreenOptions opts;
  opts.probe.period = 250ms;
  opts.probe.timeout = 100ms;
  opts.verify_for = 2s;
  opts.scale_down_delay = 1s;
  auto print = [](const rollout::Event& e) { fmt::print("  {}\n", e); };

  fmt::print("release 1: blue (v1) -> green (v2)\n");
  rollout::BlueGreen<RoutingTable, TcpConnectProbe> first(lb, probe, environment("blue", blue), environment("green", green), opts);
  first.observers().add(print);
  const auto one = co_await first.run();
  fmt::print("=> {}\n\n", one);

  fmt::print("release 2: green (v2) -> red (v3); red-1 dies during verification\n");
  rollout::BlueGreen<RoutingTable, TcpConnectProbe> second(lb, probe, environment("green", green), environment("red", red), opts);
  second.observers().add(print);
  second.observers().add([&](const rollout::Event& e) {
    if (e.kind == rollout::EventKind::phase_changed && e.subject == "verifying") red[1]->kill();
  });
  const auto two = co_await second.run();
  fmt::print("=> {}\n", two);

  const bool as_expected = one.status == rollout::Status::promoted && two.status == rollout::Status::rolled_back &&
                           lb.weights["green"].is_full() && lb.weights["red"].is_zero();
  fmt::print("\nrouting table now: green {}, red {}, blue {}\n", lb.weights["green"], lb.weights["red"], lb.weights["blue"]);
  for (auto* fleet : {&blue, &green, &red}) {
    for (auto& i : *fleet) i->kill();
  }
  co_return as_expected ? 0 : 1;
}

int main() {
  asio::io_context io;
  int rc = 1;
  asio::co_spawn(io, release(io), [&](std::exception_ptr e, int r) {
    if (e) std::rethrow_exception(e);
    rc = r;
  });
  io.run();
  return rc;
}
