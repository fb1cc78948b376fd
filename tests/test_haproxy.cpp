// HaproxyLoadBalancer against a real HAProxy 2.6 with real HTTP backends: the
// observed split follows the applied weights, drain keeps requests in flight
// alive, names cannot inject commands, HAProxy's errors keep their words, a
// stopped or killed HAProxy gives a clean error, and dynamic servers come and go.
// Replies HAProxy itself never sends (truncated, oversized, non-UTF-8,
// interleaved) come from a stand-in on a real unix socket.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support/haproxy.hpp"
#include "support/http_server.hpp"
#include "support/temp_dir.hpp"

#include <rollout/haproxy.hpp>
#include <rollout/http_probe.hpp>
#include <rollout/strategy/blue_green.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using test_support::HaproxyProcess;
using test_support::TestHttpServer;

namespace {

/// HTTP backends on their own thread, so the test can use blocking clients.
struct Backends {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::vector<std::unique_ptr<TestHttpServer>> servers;
  std::thread thread;

  explicit Backends(const std::vector<std::string>& names) {
    for (const auto& n : names) servers.push_back(std::make_unique<TestHttpServer>(io, n));
    thread = std::thread([this] { io.run(); });
  }
  ~Backends() {
    asio::post(io, [this] {
      for (auto& s : servers) s->stop();
    });
    work.reset();
    thread.join();
  }
  std::uint16_t port(std::size_t i) const { return servers[i]->port(); }
};

/// One blocking GET through HAProxy (a new connection each time, so every request is balanced).
std::pair<unsigned, std::string> get(std::uint16_t port, const std::string& target) {
  asio::io_context io;
  beast::tcp_stream s(io);
  s.expires_after(10s);
  s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(s, req);
  beast::flat_buffer b;
  http::response<http::string_body> res;
  http::read(s, b, res);
  return {res.result_int(), std::string(res["X-Server"])};
}

std::map<std::string, int> traffic(std::uint16_t port, int n) {
  std::map<std::string, int> by_server;
  for (int i = 0; i < n; ++i) {
    auto [status, server] = get(port, "/name");
    REQUIRE(status == 200);
    ++by_server[server.substr(0, server.find_first_of("0123456789"))];
  }
  return by_server;
}

/// Runs a coroutine on `io` to completion.
template <class T>
T run(asio::io_context& io, asio::awaitable<T> aw) {
  std::optional<T> out;
  std::exception_ptr err;
  asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T v) {
    err = e;
    if (!e) out.emplace(std::move(v));
  });
  io.restart();
  io.run();
  if (err) std::rethrow_exception(err);
  return std::move(*out);
}

struct Fixture {
  Backends backends{{"blue1", "blue2", "green1", "green2"}};
  asio::io_context io;
  HaproxyProcess haproxy{io,
                         {{"blue1", backends.port(0), 100},
                          {"blue2", backends.port(1), 100},
                          {"green1", backends.port(2), 0},
                          {"green2", backends.port(3), 0}}};

  HaproxyOptions options(std::string socket = {}) const {
    HaproxyOptions o;
    o.address.unix_socket = socket.empty() ? haproxy.admin_socket() : socket;
    o.groups = {{"blue", {{"app", "blue1"}, {"app", "blue2"}}}, {"green", {{"app", "green1"}, {"app", "green2"}}}};
    return o;
  }
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("the observed split follows the applied weights") {
  Fixture f;
  HaproxyLoadBalancer lb(f.options());
  auto r = run(f.io, lb.apply(TrafficSplit::of({{"blue", 75_pct}, {"green", 25_pct}})));
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
  const int n = 400;
  auto counts = traffic(f.haproxy.frontend_port(), n);
  // HAProxy's roundrobin is deterministic, but allow the binomial 4-sigma band.
  const double sigma = std::sqrt(n * 0.25 * 0.75);
  MESSAGE(fmt::format("75/25 applied: blue {} green {} of {}", counts["blue"], counts["green"], n));
  CHECK(std::abs(counts["green"] - 0.25 * n) < 4 * sigma);
  CHECK(counts["blue"] + counts["green"] == n);

  r = run(f.io, lb.apply(TrafficSplit::of({{"blue", Percent{}}, {"green", Percent::full()}})));
  REQUIRE(r.has_value());
  counts = traffic(f.haproxy.frontend_port(), 50);
  CHECK(counts["green"] == 50);
  // The read-back shows blue draining, green ready.
  auto state = run(f.io, lb.command("show servers state app"));
  REQUIRE(state.has_value());
  auto parsed = detail::parse_servers_state(*state);
  REQUIRE(parsed);
  CHECK(((*parsed)[HaproxyServer{"app", "blue1"}].admin_state & 0x08) != 0);
  CHECK((*parsed)[HaproxyServer{"app", "green1"}].weight == 256);
}

TEST_CASE("the runtime API over TCP works the same") {
  Fixture f;
  auto o = f.options();
  o.address.unix_socket.clear();
  o.address.tcp = Endpoint{"127.0.0.1", f.haproxy.api_port()};
  HaproxyLoadBalancer lb(o);
  auto r = run(f.io, lb.apply(TrafficSplit::of({{"blue", Percent{}}, {"green", Percent::full()}})));
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
  CHECK(traffic(f.haproxy.frontend_port(), 10)["green"] == 10);
}

TEST_CASE("weights keep each group's share within one weight step") {
  // Unit check of the rounding, over many splits and group sizes.
  for (int blue_n : {1, 2, 3, 7}) {
    for (int green_n : {1, 2, 5}) {
      std::map<std::string, std::vector<HaproxyServer>> groups;
      for (int i = 0; i < blue_n; ++i) groups["blue"].push_back({"app", fmt::format("b{}", i)});
      for (int i = 0; i < green_n; ++i) groups["green"].push_back({"app", fmt::format("g{}", i)});
      for (int bp : {0, 1, 50, 100, 333, 500, 2500, 5000, 7777, 9950, 9999, 10000}) {
        CAPTURE(blue_n);
        CAPTURE(green_n);
        CAPTURE(bp);
        auto w = detail::haproxy_weights(groups, {{"green", bp}, {"blue", 10000 - bp}});
        int total = 0, green = 0;
        for (const auto& [s, weight] : w) {
          CHECK(weight >= 0);
          CHECK(weight <= 256);
          total += weight;
          if (s.server[0] == 'g') green += weight;
        }
        REQUIRE(total > 0);
        const double share = static_cast<double>(green) / total, target = bp / 10000.0;
        CHECK(std::abs(share - target) <= 1.0 / total + 1e-12);  // one weight step
        if (bp == 0) CHECK(green == 0);        // 0% is exactly nothing
        if (bp == 10000) CHECK(green == total);
      }
    }
  }
}

TEST_CASE("drain keeps a request in flight alive") {
  Fixture f;
  HaproxyLoadBalancer lb(f.options());
  REQUIRE(run(f.io, lb.apply(TrafficSplit::of({{"blue", Percent::full()}, {"green", Percent{}}}))).has_value());
  auto slow = std::async(std::launch::async, [&] { return get(f.haproxy.frontend_port(), "/slow"); });
  std::this_thread::sleep_for(300ms);  // the request is now with a blue server
  REQUIRE(run(f.io, lb.apply(TrafficSplit::of({{"blue", Percent{}}, {"green", Percent::full()}}))).has_value());
  auto [status, server] = slow.get();
  CHECK(status == 200);
  CHECK(contains(server, "blue"));
  CHECK(traffic(f.haproxy.frontend_port(), 10)["green"] == 10);
}

TEST_CASE("names that could inject a command are rejected before anything is sent") {
  Fixture f;
  for (const std::string bad : {"blue1 weight 0; shutdown sessions server app/green1", "blue1\nshow info", "a;b", "a#b", "a b",
                                "bl\xc3\xa4u", "app/blue1", ""}) {
    CAPTURE(bad);
    auto o = f.options();
    o.groups["blue"].push_back(HaproxyServer{"app", bad});
    CHECK_THROWS_AS(HaproxyLoadBalancer{o}, invalid_option);
    auto ob = f.options();
    ob.groups["blue"].push_back(HaproxyServer{bad, "blue1"});
    CHECK_THROWS_AS(HaproxyLoadBalancer{ob}, invalid_option);
  }
  HaproxyLoadBalancer lb(f.options());
  Instance evil{"x;del server app/blue1", Revision{"v9"}, Endpoint{"127.0.0.1", 1}};
  CHECK_THROWS_WITH_AS(run(f.io, lb.register_instance(evil, "app")),
                       "invalid option instance.id = \"x;del server app/blue1\": must be 1-256 characters of A-Z a-z 0-9 . - _ :",
                       invalid_option);
  auto raw = run(f.io, lb.command("show info\nshutdown sessions server app/blue1"));
  CHECK_FALSE(raw.has_value());
  // Nothing was changed: both blue servers still serve.
  CHECK(traffic(f.haproxy.frontend_port(), 20)["blue"] == 20);
}

TEST_CASE("HAProxy's errors keep their words") {
  Fixture f;
  auto o = f.options();
  o.groups["green"] = {{"app", "green1"}, {"app", "nope"}};
  HaproxyLoadBalancer lb(o);
  auto r = run(f.io, lb.apply(TrafficSplit::all_to("green")));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == errc::unknown_server);
  CHECK(contains(r.error().message, "haproxy: No such server."));

  HaproxyLoadBalancer user(f.options(f.haproxy.user_socket()));
  r = run(f.io, user.apply(TrafficSplit::all_to("green")));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == errc::permission_denied);
  CHECK(contains(r.error().message, "haproxy: Permission denied"));

  auto unmapped = run(f.io, lb.apply(TrafficSplit::all_to("purple")));
  CHECK(unmapped.error() == errc::unknown_server);
}

namespace {

/// A stand-in for HAProxy's runtime API on a real unix socket: each connection
/// reads one command line, gets `reply(n, line)` (n counts connections from 0),
/// and is closed, as HAProxy does in non-interactive mode.
struct FakeRuntimeApi {
  asio::local::stream_protocol::acceptor acceptor;
  std::string path;
  std::function<std::string(int, const std::string&)> reply;
  std::vector<std::string> commands;

  FakeRuntimeApi(asio::io_context& io, std::string socket_path, std::function<std::string(int, const std::string&)> r)
      : acceptor(io), path(std::move(socket_path)), reply(std::move(r)) {
    ::unlink(path.c_str());
    acceptor.open();
    acceptor.bind(asio::local::stream_protocol::endpoint(path));
    acceptor.listen();
    asio::co_spawn(io, serve(), [](std::exception_ptr e) {  // ends when the acceptor closes (accept fails)
      if (e) std::rethrow_exception(e);
    });
  }
  ~FakeRuntimeApi() { ::unlink(path.c_str()); }

  asio::awaitable<void> serve() {
    for (int n = 0;; ++n) {
      auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      std::string line;
      auto [rec, rn] = co_await asio::async_read_until(sock, asio::dynamic_buffer(line), '\n', asio::as_tuple(asio::use_awaitable));
      if (rec) co_return;
      line.resize(rn - 1);
      commands.push_back(line);
      const auto out = reply(n, line);
      co_await asio::async_write(sock, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
    }
  }
};

// A valid `show servers state app` dump for blue1 and green1.
std::string state_dump(int blue_admin, int blue_weight, int green_admin, int green_weight) {
  return fmt::format(
      "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight\n"
      "3 app 1 blue1 127.0.0.1 2 {} {} 1\n3 app 2 green1 127.0.0.1 2 {} {} 1\n\n",
      blue_admin, blue_weight, green_admin, green_weight);
}

}  // namespace

TEST_CASE("hostile runtime API replies on a real socket: each is a clear error, none is taken for success") {
  const std::string good_set = "\n\n\n\n";  // four commands, four empty answers
  const std::string good_state = state_dump(0x08, 0, 0, 256);
  struct Case {
    const char* name;
    std::string set_reply;    // answer to the weight commands
    std::string state_reply;  // answer to the read-back
    errc code;
    std::string message;      // a part of the error message
  };
  std::string non_utf8 = "No such server \xff\xfe\xc3(\n\n";
  std::string oversized(3 << 20, 'A');
  std::string interleaved = "1\n# be_id be_name srv_id srv_name\n3 app 1 blue1 127.0.0.1 2 8 0 1\n1\n3 app 2 green1 127.0.0.1 2 0 256 1\n"
                            "3 app 1 blue1 127.0.0.1 2 0 256 1\n";
  const std::vector<Case> cases{
      {"well-formed (control)", good_set, good_state, errc{}, ""},
      {"truncated answers", "\n", good_state, errc::protocol_error, "haproxy: 1 answers to 4 commands"},
      {"truncated state dump", good_set, "1\n# be_id be_name\n3 app 1 blu", errc::protocol_error, "haproxy: malformed reply to show servers state app"},
      {"state dump cut after the header", good_set, "1\n# be_id be_name srv_id srv_name\n", errc::lb_verify_mismatch, "app/blue1 missing"},
      {"weight with junk", good_set, "1\n3 app 1 blue1 127.0.0.1 2 8 0x 1\n3 app 2 green1 127.0.0.1 2 0 256 1\n", errc::protocol_error,
       "malformed reply"},
      {"non-UTF-8 error", non_utf8, good_state, errc::unknown_server, "haproxy: No such server \\xff\\xfe\\xc3("},
      {"oversized set reply", oversized, good_state, errc::protocol_error, "haproxy: reply larger than 1 MiB"},
      {"oversized state reply", good_set, oversized, errc::protocol_error, "haproxy: reply larger than 1 MiB"},
      {"interleaved state dumps", good_set, interleaved, errc::protocol_error, "malformed reply"},
      {"an error instead of the dump", good_set, "Can't find backend.\n\n", errc::unknown_server, "haproxy: Can't find backend."},
      {"the dump of another state", good_set, state_dump(0, 256, 0, 256), errc::lb_verify_mismatch, "app/blue1 weight 256 admin 0x0"},
      {"empty reply", "", good_state, errc::lb_unavailable, "closed the connection without a reply"},
  };
  const test_support::TempDir dir;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    asio::io_context io;
    FakeRuntimeApi api(io, (dir.path() / "admin.sock").string(), [&](int n, const std::string&) { return n == 0 ? c.set_reply : c.state_reply; });
    HaproxyOptions o;
    o.address.unix_socket = api.path;
    o.command_timeout = 5s;
    o.groups = {{"blue", {{"app", "blue1"}}}, {"green", {{"app", "green1"}}}};
    HaproxyLoadBalancer lb(o);
    auto r = run(io, [](HaproxyLoadBalancer& lb, FakeRuntimeApi& api) -> asio::awaitable<result<void>> {
      auto out = co_await lb.apply(TrafficSplit::all_to("green"));
      api.acceptor.close();
      co_return out;
    }(lb, api));
    if (c.code == errc{}) {
      CHECK(r.has_value());
    } else {
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error() == c.code);
      CHECK_MESSAGE(contains(r.error().message, c.message), r.error().message);
      CHECK(r.error().message.size() < 600);  // bounded, even for a 3 MiB reply
      CHECK(r.error().message.find('\xff') == std::string::npos);  // escaped, never raw
    }
    // The commands sent were the fixed, validated ones: nothing from a reply went back.
    REQUIRE_FALSE(api.commands.empty());
    // Make before break: green is readied before blue is drained, so no request finds no server between them.
    CHECK(api.commands[0] == "set server app/green1 weight 256; set server app/green1 state ready; set server app/blue1 weight 0; set server app/blue1 state drain");
  }
  MESSAGE(fmt::format("{} hostile runtime API replies tried", cases.size() - 1));
}

TEST_CASE("a stopped HAProxy times out, a killed one fails cleanly, neither hangs") {
  Fixture f;
  auto o = f.options();
  o.command_timeout = 500ms;
  HaproxyLoadBalancer lb(o);
  f.haproxy.signal(SIGSTOP);
  auto started = std::chrono::steady_clock::now();
  auto r = run(f.io, lb.apply(TrafficSplit::all_to("green")));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == errc::timeout);
  CHECK(std::chrono::steady_clock::now() - started < 5s);

  // Killed while a command is in flight: the exchange ends with the connection.
  o.command_timeout = 30s;
  HaproxyLoadBalancer patient(o);
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);
    f.haproxy.signal(SIGKILL);
  });
  started = std::chrono::steady_clock::now();
  r = run(f.io, patient.apply(TrafficSplit::all_to("green")));
  killer.join();
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == errc::lb_unavailable);
  CHECK(std::chrono::steady_clock::now() - started < 10s);  // far from the 30 s timeout
  r = run(f.io, patient.apply(TrafficSplit::all_to("green")));
  CHECK(r.error() == errc::lb_unavailable);
  CHECK(contains(r.error().message, "connect"));
}

TEST_CASE("register and deregister dynamic servers") {
  Fixture f;
  Backends extra({"green3"});
  HaproxyLoadBalancer lb(f.options());
  REQUIRE(run(f.io, lb.apply(TrafficSplit::of({{"blue", Percent{}}, {"green", Percent::full()}}))).has_value());
  Instance g3{"green3", Revision{"v2"}, Endpoint{"127.0.0.1", extra.port(0)}};
  auto r = run(f.io, lb.register_instance(g3, "app", 256));
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
  auto counts = traffic(f.haproxy.frontend_port(), 30);
  CHECK(counts["green"] == 30);
  CHECK(extra.servers[0]->requests() > 0);  // the new server takes its share
  REQUIRE(run(f.io, lb.drain_instance(g3)).has_value());
  r = run(f.io, lb.deregister_instance(g3));
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
  auto state = run(f.io, lb.command("show servers state app"));
  REQUIRE(state.has_value());
  CHECK_FALSE(contains(*state, "green3"));
  const int before = extra.servers[0]->requests();
  traffic(f.haproxy.frontend_port(), 10);
  CHECK(extra.servers[0]->requests() == before);
}

TEST_CASE("a blue-green run through HAProxy with real HTTP probes") {
  Fixture f;
  HaproxyLoadBalancer lb(f.options());
  REQUIRE(run(f.io, lb.apply(TrafficSplit::of({{"blue", Percent::full()}, {"green", Percent{}}}))).has_value());
  HttpProbeOptions po;
  po.path = "/ok";
  po.timeout = 500ms;
  HttpProbe probe(po);
  auto env = [&](const std::string& name, std::size_t a, std::size_t b) {
    return Environment{name, Revision{name == "blue" ? "v1" : "v2"},
                       {Instance{name + "1", Revision{"v"}, Endpoint{"127.0.0.1", f.backends.port(a)}},
                        Instance{name + "2", Revision{"v"}, Endpoint{"127.0.0.1", f.backends.port(b)}}}};
  };
  BlueGreenOptions o;
  o.probe.period = 100ms;
  o.probe.timeout = 500ms;
  o.verify_for = 300ms;
  o.scale_down_delay = 100ms;
  BlueGreen<HaproxyLoadBalancer, HttpProbe> bg(lb, probe, env("blue", 0, 1), env("green", 2, 3), o);
  auto out = run(f.io, bg.run());
  CHECK(out.status == Status::promoted);
  CHECK(traffic(f.haproxy.frontend_port(), 20)["green"] == 20);
  MESSAGE(fmt::format("{}", out));
}
