// HttpProbe, HttpsProbe and TcpProbe against real servers on 127.0.0.1: healthy,
// error statuses, timeouts, garbage, resets, oversized and endless responses,
// keep-alive reuse, header injection, secret redaction, and TLS verification
// against a CA made in the test.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support/http_server.hpp"
#include "support/temp_dir.hpp"
#include "support/tls_server.hpp"

#include <rollout/analysis/probe_schedule.hpp>
#include <rollout/http_probe.hpp>
#include <rollout/https_probe.hpp>
#include <rollout/tcp_probe.hpp>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <string>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using namespace rollout;
using namespace std::chrono_literals;
using test_support::TestHttpServer;

namespace {

Instance at(std::uint16_t port) { return Instance{"i-0", Revision{"v1"}, Endpoint{"127.0.0.1", port}}; }

/// A port on 127.0.0.1 with nothing listening.
std::uint16_t closed_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();  // closed when `a` goes away
}

/// Runs `probe.check()` on `path` against a fresh server, `times` times, and returns the last result.
template <class Probe>
HealthResult check(Probe& probe, TestHttpServer*& server_out, int times = 1) {
  asio::io_context io;
  TestHttpServer server(io);
  server_out = &server;
  HealthResult out;
  auto body = [&]() -> asio::awaitable<void> {
    for (int i = 0; i < times; ++i) out = co_await probe.check(at(server.port()));
    server.stop();
  };
  asio::co_spawn(io, body(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io.run();
  return out;
}

HealthResult http(std::string path, HttpProbeOptions o = {}) {
  o.path = std::move(path);
  if (o.timeout == HttpProbeOptions{}.timeout) o.timeout = 300ms;
  HttpProbe probe(o);
  TestHttpServer* s = nullptr;
  return check(probe, s);
}

/// Options probing `path` over kept-alive connections.
HttpProbeOptions keep_alive(std::string path) {
  HttpProbeOptions o;
  o.path = std::move(path);
  o.keep_alive = true;
  return o;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("healthy and unhealthy statuses") {
  auto ok = http("/ok");
  CHECK(ok.healthy);
  CHECK(ok.detail == "HTTP 200");
  CHECK(ok.latency > Duration::zero());
  auto bad = http("/status/500");
  CHECK_FALSE(bad.healthy);
  CHECK(bad.detail == "HTTP 500 (expected 200..399)");
  HttpProbeOptions strict;
  strict.min_status = strict.max_status = 204;
  CHECK(http("/status/204", strict).healthy);
  CHECK_FALSE(http("/ok", strict).healthy);
}

TEST_CASE("a refused connection is a failed probe, not an exception") {
  HttpProbeOptions o;
  o.timeout = 300ms;
  HttpProbe probe(o);
  const auto port = closed_port();
  asio::io_context io;
  HealthResult r;
  auto body = [&]() -> asio::awaitable<void> { r = co_await probe.check(at(port)); };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK_FALSE(r.healthy);
  CHECK(r.detail == fmt::format("connect 127.0.0.1:{}: Connection refused", port));
}

TEST_CASE("hostile responses end in a failed probe within the timeout") {
  // Each of these would hang or exhaust memory without limits; each must end
  // with a clear detail well before the server's 5 s slow path.
  const auto started = std::chrono::steady_clock::now();
  auto slow = http("/slow");
  CHECK(slow.detail == "GET /slow: timed out after 300ms");
  auto garbage = http("/garbage");
  CHECK_FALSE(garbage.healthy);
  CHECK(contains(garbage.detail, "malformed response"));
  auto badstatus = http("/badstatus");
  CHECK_FALSE(badstatus.healthy);
  CHECK(contains(badstatus.detail, "malformed response"));
  auto reset = http("/reset");
  CHECK_FALSE(reset.healthy);
  CHECK((contains(reset.detail, "reset") || contains(reset.detail, "closed")));
  auto big = http("/big");
  CHECK(big.detail == "GET /big: response body too large");
  auto endless = http("/endless");
  CHECK(endless.detail == "GET /endless: response body too large");
  auto flood = http("/flood");
  CHECK(flood.detail == "GET /flood: response headers too large");
  auto slowloris = http("/slowloris");
  CHECK(slowloris.detail == "GET /slowloris: timed out after 300ms");
  CHECK(std::chrono::steady_clock::now() - started < 5s);  // nothing waited for the slow server
}

TEST_CASE("body check and HEAD") {
  HttpProbeOptions o;
  o.body_contains = "green";
  CHECK(http("/body", o).healthy);
  o.body_contains = "blue";
  auto r = http("/body", o);
  CHECK_FALSE(r.healthy);
  CHECK(r.detail == "HTTP 200 but the body lacks \"blue\"");
  HttpProbeOptions head;
  head.head = true;
  CHECK(http("/ok", head).healthy);
}

TEST_CASE("an IPv6 endpoint gets a bracketed Host header") {
  CHECK(fmt::format("{}", Endpoint{"::1", 8080}) == "[::1]:8080");
  CHECK(fmt::format("{}", Endpoint{"127.0.0.1", 8080}) == "127.0.0.1:8080");
  CHECK(fmt::format("{}", Endpoint{"api.internal", 80}) == "api.internal:80");
  // A real probe of an IPv4-mapped IPv6 address: the traffic goes to 127.0.0.1.
  asio::io_context io;
  TestHttpServer server(io);
  HttpProbeOptions o;
  o.path = "/ok";
  HttpProbe probe(o);
  HealthResult r;
  const auto port = server.port();
  auto body = [&]() -> asio::awaitable<void> {
    r = co_await probe.check(Instance{"i-6", Revision{"v1"}, Endpoint{"::ffff:127.0.0.1", port}});
    server.stop();
  };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK(r.healthy);
  const auto got = server.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0].host == fmt::format("[::ffff:127.0.0.1]:{}", port));
}

TEST_CASE("keep-alive reuses one connection, and replaces one the server closed") {
  auto o = keep_alive("/ok");
  asio::io_context io;
  TestHttpServer server(io);
  HttpProbe reuse(o);
  o.path = "/close-after";
  HttpProbe stale(o);
  HealthResult last_reuse, last_stale;
  int conns_after_reuse = 0;
  auto body = [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 5; ++i) last_reuse = co_await reuse.check(at(server.port()));
    conns_after_reuse = server.connections();
    for (int i = 0; i < 3; ++i) last_stale = co_await stale.check(at(server.port()));
    server.stop();
  };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK(last_reuse.healthy);
  CHECK(conns_after_reuse == 1);  // five probes, one connection
  CHECK(last_stale.healthy);      // each stale connection was replaced transparently
  CHECK(server.connections() == 1 + 3);
}

TEST_CASE("keep-alive with overlapping probes keeps up to max_idle_per_endpoint connections") {
  auto o = keep_alive("/ok");
  o.max_idle_per_endpoint = 3;
  asio::io_context io;
  TestHttpServer server(io);
  HttpProbe probe(o);
  int healthy = 0, conns_after_first_round = 0;
  // Rounds of 4 overlapping probes of one endpoint: the first round opens 4
  // connections and keeps 3; each later round reuses those 3 and opens 1 more.
  auto one = [&]() -> asio::awaitable<void> {
    if ((co_await probe.check(at(server.port()))).healthy) ++healthy;
  };
  auto body = [&]() -> asio::awaitable<void> {
    for (int round = 0; round < 3; ++round) {
      int done = 0;
      for (int k = 0; k < 4; ++k) asio::co_spawn(io, one(), [&](std::exception_ptr e) { if (e) std::rethrow_exception(e); ++done; });
      asio::steady_timer t(io);
      while (done < 4) {
        t.expires_after(1ms);
        co_await t.async_wait(asio::use_awaitable);
      }
      if (round == 0) conns_after_first_round = server.connections();
    }
    server.stop();
  };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK(healthy == 12);
  CHECK(conns_after_first_round == 4);
  CHECK(server.connections() == 4 + 1 + 1);
  HttpProbeOptions bad;
  bad.max_idle_per_endpoint = 0;
  CHECK_THROWS_WITH_AS(HttpProbe{bad}, doctest::Contains("max_idle_per_endpoint"), invalid_option);
}

TEST_CASE("keep-alive does not reuse a connection that sent more than one response") {
  auto o = keep_alive("/extra");
  asio::io_context io;
  TestHttpServer server(io);
  HttpProbe probe(o);
  HealthResult first, second;
  auto body = [&]() -> asio::awaitable<void> {
    first = co_await probe.check(at(server.port()));
    second = co_await probe.check(at(server.port()));
    server.stop();
  };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK(first.healthy);
  CHECK(second.healthy);
  // The unasked-for second response must not be taken as the answer to the
  // second probe: that probe opens its own connection and the server answers it.
  CHECK(server.connections() == 2);
  CHECK(server.requests() == 2);
  CHECK(probe.idle_connections() == 0);
}

TEST_CASE("keep-alive closes connections idle for idle_timeout, also to endpoints no longer probed") {
  auto o = keep_alive("/ok");
  o.idle_timeout = 100ms;
  asio::io_context io;
  TestHttpServer kept(io, "kept"), gone(io, "gone");
  HttpProbe probe(o);
  std::size_t idle_before = 0, idle_after = 0;
  bool healthy = true;
  auto body = [&]() -> asio::awaitable<void> {
    healthy = (co_await probe.check(at(kept.port()))).healthy && healthy;
    healthy = (co_await probe.check(at(gone.port()))).healthy && healthy;
    idle_before = probe.idle_connections();
    healthy = (co_await probe.check(at(kept.port()))).healthy && healthy;  // within idle_timeout: reused
    asio::steady_timer t(io, 250ms);
    co_await t.async_wait(asio::use_awaitable);
    healthy = (co_await probe.check(at(kept.port()))).healthy && healthy;  // after it: both idle ones closed
    idle_after = probe.idle_connections();
    kept.stop();
    gone.stop();
  };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK(healthy);
  CHECK(idle_before == 2);
  CHECK(kept.connections() == 2);  // one for the first two probes, a new one after the timeout
  CHECK(gone.connections() == 1);
  CHECK(idle_after == 1);  // the new connection to `kept`; the one to `gone` was closed
}

TEST_CASE("the strategy's timeout cancels a probe in flight") {
  HttpProbeOptions o;
  o.path = "/slow";
  o.timeout = 10s;  // the probe alone would wait for the 5 s server
  HttpProbe probe(o);
  asio::io_context io;
  TestHttpServer server(io);
  HealthResult r;
  auto body = [&]() -> asio::awaitable<void> {
    r = co_await probe_once(SteadyClock{}, probe, at(server.port()), 200ms);
    server.stop();
  };
  const auto started = std::chrono::steady_clock::now();
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK(r.detail == "probe.check timed out after 200ms");
  CHECK(std::chrono::steady_clock::now() - started < 5s);
}

TEST_CASE("options: injection through path or headers is rejected, secrets are redacted") {
  auto reject = [](HttpProbeOptions o) {
    try {
      HttpProbe p(o);
    } catch (const invalid_option& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  HttpProbeOptions o;
  o.headers = {{"Host", "api.internal"}, {"Authorization", "Bearer s3cr3t-token"}};
  CHECK(reject(o) == "accepted");
  auto evil = o;
  evil.headers.push_back({"X-Trace", "1\r\nX-Injected: yes"});
  CHECK(reject(evil) == "invalid option headers[2].value = <redacted>: must not contain control characters (CR, LF)");
  evil = o;
  evil.headers.push_back({"Bad Name", "x"});
  CHECK(reject(evil) == "invalid option headers[2].name = \"Bad Name\": must be an HTTP token");
  evil = o;
  evil.path = "/health HTTP/1.1\r\nHost: evil";
  CHECK(contains(reject(evil), "invalid option path = "));
  evil = o;
  evil.path = "health";
  CHECK(contains(reject(evil), "must start with '/'"));
  evil = o;
  evil.timeout = 0s;
  CHECK(reject(evil) == "invalid option timeout = 0s: must be greater than 0");
  const auto printed = fmt::format("{}", o);
  CHECK_FALSE(contains(printed, "s3cr3t"));
  CHECK(contains(printed, "Authorization: <redacted>"));
  CHECK(contains(printed, "Host: api.internal"));
}

TEST_CASE("TcpProbe: connected or refused") {
  TcpProbe probe(300ms);
  TestHttpServer* s = nullptr;
  auto up = check(probe, s);
  CHECK(up.healthy);
  CHECK(up.detail == "connected");
  const auto port = closed_port();
  asio::io_context io;
  HealthResult down;
  auto body = [&]() -> asio::awaitable<void> { down = co_await probe.check(at(port)); };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  CHECK_FALSE(down.healthy);
  CHECK(down.detail == fmt::format("connect 127.0.0.1:{}: Connection refused", port));
  CHECK_THROWS_AS(TcpProbe(0s), invalid_option);
}

// ---- HTTPS ----------------------------------------------------------------------

namespace {

using test_support::TestPki;
using test_support::TlsServer;

/// What the TLS server saw of the probe's request.
struct TlsSeen {
  std::string server_name, host;
};

HealthResult https_check(const TestPki& pki, HttpsProbeOptions o, std::string host = "127.0.0.1", TlsSeen* seen = nullptr) {
  asio::io_context io;
  TlsServer server(io, pki);
  o.http.path = "/health";
  o.http.timeout = 2s;
  HttpsProbe probe(o);
  HealthResult r;
  auto body = [&]() -> asio::awaitable<void> {
    r = co_await probe.check(Instance{"i", Revision{"v"}, Endpoint{host, server.port()}});
    server.stop();
  };
  asio::co_spawn(io, body(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  if (seen && !server.hosts.empty()) *seen = TlsSeen{server.server_names.back(), server.hosts.back()};
  return r;
}

}  // namespace

TEST_CASE("HTTPS: verified against the test CA, refused without it or for the wrong name") {
  TestPki pki;
  HttpsProbeOptions trusted;
  trusted.ca_file = pki.ca();
  auto ok = https_check(pki, trusted);
  CHECK(ok.healthy);
  CHECK(ok.detail == "HTTP 200");

  auto untrusted = https_check(pki, HttpsProbeOptions{});  // system trust store: our CA is not in it
  CHECK_FALSE(untrusted.healthy);
  CHECK(contains(untrusted.detail, "TLS handshake"));
  CHECK(contains(untrusted.detail, "certificate verify failed"));

  auto wrong_name = trusted;
  wrong_name.server_name = "api.example.com";  // the certificate is for 127.0.0.1 and localhost
  auto mismatch = https_check(pki, wrong_name);
  CHECK_FALSE(mismatch.healthy);
  CHECK(contains(mismatch.detail, "certificate verify failed"));

  auto by_dns = trusted;
  by_dns.server_name = "localhost";
  TlsSeen seen;
  CHECK(https_check(pki, by_dns, "127.0.0.1", &seen).healthy);
  CHECK(seen.server_name == "localhost");  // a name goes into SNI ...
  seen = {};
  // An IPv6 address (IPv4-mapped, so the traffic goes to 127.0.0.1; the certificate names 127.0.0.1, not this
  // address, hence no verification here): no SNI (RFC 6066 forbids addresses in it), and a bracketed Host.
  HttpsProbeOptions unverified;
  unverified.verify_peer = false;
  CHECK(https_check(pki, unverified, "::ffff:127.0.0.1", &seen).healthy);
  CHECK(seen.server_name.empty());  // ... an address does not
  CHECK(seen.host.starts_with("[::ffff:127.0.0.1]:"));
  seen = {};
  CHECK(https_check(pki, trusted, "127.0.0.1", &seen).healthy);
  CHECK(seen.server_name.empty());
  CHECK(seen.host.starts_with("127.0.0.1:"));

  HttpsProbeOptions opted_out;  // verification off only when asked for
  opted_out.verify_peer = false;
  CHECK(https_check(pki, opted_out).healthy);

  HttpsProbeOptions bad_ca;
  bad_ca.ca_file = "/nonexistent/ca.pem";
  CHECK_THROWS_AS(HttpsProbe{bad_ca}, invalid_option);
}
