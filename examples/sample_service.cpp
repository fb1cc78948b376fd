// The sample service that rollout's examples, tests and demo deploy: a small
// Beast HTTP/1.1 server with keep-alive.
//
//   GET /health   -> 200 "ok"            (503 with --unhealthy)
//   GET /version  -> 200 "<version>"
//   GET /*        -> 200 "hello from <version>", or 500 with probability --error-rate
//
// Options: --port N (0: any free port), --version V, --error-rate F (0..1),
// --latency-ms N (added to every response but /health), --seed N, --unhealthy,
// --quiet (do not print the port).
// It prints "listening on <port>" once it accepts connections.
//
// SIGTERM or SIGINT: stop accepting, close idle keep-alive connections, finish
// every request in flight (answering with "Connection: close"), then exit 0.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

struct Config {
  unsigned short port = 0;
  std::string version = "v1";
  double error_rate = 0;
  int latency_ms = 0;
  unsigned long long seed = 1;
  bool unhealthy = false;
  bool quiet = false;
};

struct Server;

/// One client connection. Idle: waiting for the next request; busy: handling one.
struct Session : std::enable_shared_from_this<Session> {
  Session(tcp::socket s, Server& server) : stream(std::move(s)), server(server) {}
  beast::tcp_stream stream;
  Server& server;
  bool busy = false;
};

struct Server {
  asio::io_context& io;
  Config cfg;
  tcp::acceptor acceptor;
  std::set<std::shared_ptr<Session>> sessions;
  std::mt19937_64 rng;
  bool stopping = false;

  Server(asio::io_context& io, Config c)
      : io(io), cfg(std::move(c)), acceptor(io, {asio::ip::make_address("127.0.0.1"), cfg.port}), rng(cfg.seed) {}

  asio::awaitable<void> accept() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;  // closed on shutdown
      auto s = std::make_shared<Session>(std::move(socket), *this);
      sessions.insert(s);
      asio::co_spawn(io, serve(s), asio::detached);  // a session ends by itself; errors end it
    }
  }

  http::response<http::string_body> respond(const http::request<http::string_body>& req) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.set(http::field::server, "rollout-sample-service");
    res.set(http::field::content_type, "text/plain");
    res.set("X-Version", cfg.version);
    const auto target = req.target();
    if (target == "/health") {
      res.result(cfg.unhealthy ? http::status::service_unavailable : http::status::ok);
      res.body() = cfg.unhealthy ? "unhealthy\n" : "ok\n";
    } else if (target == "/version") {
      res.result(http::status::ok);
      res.body() = cfg.version + "\n";
    } else if (std::uniform_real_distribution<double>(0, 1)(rng) < cfg.error_rate) {
      res.result(http::status::internal_server_error);
      res.body() = fmt::format("error from {}\n", cfg.version);
    } else {
      res.result(http::status::ok);
      res.body() = fmt::format("hello from {}\n", cfg.version);
    }
    res.keep_alive(req.keep_alive() && !stopping);
    res.prepare_payload();
    return res;
  }

  asio::awaitable<void> serve(std::shared_ptr<Session> s) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      s->busy = false;
      auto [rec, n] = co_await http::async_read(s->stream, buffer, req, asio::as_tuple(asio::use_awaitable));
      if (rec) break;
      s->busy = true;
      if (cfg.latency_ms > 0 && req.target() != "/health") {
        asio::steady_timer t(io, std::chrono::milliseconds(cfg.latency_ms));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      auto res = respond(req);
      const bool keep = res.keep_alive();
      auto [wec, w] = co_await http::async_write(s->stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !keep) break;
    }
    beast::error_code ignored;
    s->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    s->stream.socket().close(ignored);
    sessions.erase(s);
  }

  /// Graceful stop: no new connections; idle ones are closed; busy ones finish.
  void stop() {
    stopping = true;
    beast::error_code ignored;
    acceptor.close(ignored);
    for (const auto& s : sessions) {
      if (!s->busy) s->stream.socket().cancel(ignored);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "sample_service: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (a == "--port") cfg.port = static_cast<unsigned short>(std::stoul(next()));
      else if (a == "--version") cfg.version = next();
      else if (a == "--error-rate") cfg.error_rate = std::stod(next());
      else if (a == "--latency-ms") cfg.latency_ms = std::stoi(next());
      else if (a == "--seed") cfg.seed = std::stoull(next());
      else if (a == "--unhealthy") cfg.unhealthy = true;
      else if (a == "--quiet") cfg.quiet = true;
      else {
        std::fprintf(stderr, "sample_service: unknown option %s\n", a.c_str());
        return 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "sample_service: invalid value for %s\n", a.c_str());
      return 2;
    }
  }
  if (!(cfg.error_rate >= 0 && cfg.error_rate <= 1)) {
    std::fprintf(stderr, "sample_service: --error-rate must be within 0..1, got %g\n", cfg.error_rate);
    return 2;
  }
  asio::io_context io;
  Server server(io, cfg);
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) server.stop();
  });
  asio::co_spawn(io, server.accept(), asio::detached);
  if (!server.cfg.quiet) fmt::print("listening on {}\n", server.acceptor.local_endpoint().port());
  std::fflush(stdout);
  io.run();
  return 0;
}
