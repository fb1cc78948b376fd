#pragma once

// A real HTTP server on 127.0.0.1 (port chosen by binding port 0) for tests,
// with well-behaved and hostile endpoints. It runs on the test's io_context.
//
//   /ok                200 "ok" (keep-alive honoured)
//   /close-after       200 "ok" announcing keep-alive, then closes the connection anyway
//   /extra             200 "ok" with keep-alive, followed by a second response nobody asked for
//   /status/<code>     that status
//   /body              200 "status: green"
//   /name              200 with the server's name (for load-balancing tests)
//   /slow              200 after 5 s
//   /garbage           bytes that are not HTTP, then close
//   /badstatus         a status line whose code is not a number ("HTTP/1.1 2OO OK")
//   /reset             connection reset (RST)
//   /big               200 with a 1 MiB body
//   /endless           a chunked body that never ends
//   /flood             headers that never end
//   /slowloris         a status line dribbled one byte every 50 ms, forever
//   /metrics           whatever set_metrics() last gave (Prometheus text)
//   /hook              200; every request's target, body and Authorization are recorded (received())

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace rollout::test_support {

class TestHttpServer {
public:
  explicit TestHttpServer(boost::asio::io_context& io, std::string name = "server")
      : io_(io), name_(std::move(name)), acceptor_(io, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    boost::asio::co_spawn(io_, accept(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  const std::string& name() const { return name_; }
  /// Connections accepted and requests answered so far.
  int connections() const { return connections_; }
  int requests() const { return requests_; }
  /// Number of /slow requests currently in flight.
  int in_flight() const { return in_flight_; }

  /// A request as received (for webhook tests).
  struct Received {
    std::string target, body, authorization, host;
  };
  std::vector<Received> received() const {
    std::lock_guard lock(metrics_mutex_);
    return received_;
  }

  /// What `/metrics` serves (Prometheus text); may be changed from any thread.
  void set_metrics(std::string text) {
    std::lock_guard lock(metrics_mutex_);
    metrics_ = std::move(text);
  }

  /// Closes the listener and every connection; pending coroutines end.
  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& s : sockets_) s->close(ignored);
    for (auto* t : timers_) t->cancel();
  }

private:
  using tcp = boost::asio::ip::tcp;

  boost::asio::awaitable<void> accept() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) co_return;
      ++connections_;
      auto s = std::make_shared<tcp::socket>(std::move(socket));
      sockets_.insert(s);
      boost::asio::co_spawn(io_, serve(s), [this, s](std::exception_ptr) { sockets_.erase(s); });
    }
  }

  /// Sleeps on a timer that stop() can cancel.
  boost::asio::awaitable<bool> sleep(std::chrono::milliseconds d) {
    boost::asio::steady_timer t(io_, d);
    timers_.insert(&t);
    auto [ec] = co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    timers_.erase(&t);
    co_return !ec;
  }

  boost::asio::awaitable<void> write_raw(tcp::socket& s, std::string bytes) {
    co_await boost::asio::async_write(s, boost::asio::buffer(bytes), boost::asio::use_awaitable);
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<tcp::socket> s) {
    namespace http = boost::beast::http;
    namespace asio = boost::asio;
    boost::beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      auto [ec, n] = co_await http::async_read(*s, buffer, req, asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      ++requests_;
      {
        std::lock_guard lock(metrics_mutex_);
        received_.push_back(Received{std::string(req.target()), req.body(), std::string(req[http::field::authorization]),
                                      std::string(req[http::field::host])});
      }
      const std::string target(req.target());
      auto respond = [&](unsigned status, std::string body, bool keep) {
        http::response<http::string_body> res{static_cast<http::status>(status), 11};
        res.set("X-Server", name_);
        res.body() = std::move(body);
        res.keep_alive(keep);
        res.prepare_payload();
        return res;
      };
      if (target == "/ok" || target == "/hook" || target == "/body" || target == "/name" || target.rfind("/status/", 0) == 0) {
        const unsigned status = target.rfind("/status/", 0) == 0 ? static_cast<unsigned>(std::stoi(target.substr(8))) : 200;
        const bool no_body = status == 204 || status == 304 || status < 200;
        auto res = respond(status, no_body ? "" : target == "/body" ? "status: green" : target == "/name" ? name_ : "ok",
                           req.keep_alive());
        co_await http::async_write(*s, res, asio::use_awaitable);
        if (!req.keep_alive()) co_return;
      } else if (target == "/metrics") {
        std::string text;
        {
          std::lock_guard lock(metrics_mutex_);
          text = metrics_;
        }
        auto res = respond(200, std::move(text), req.keep_alive());
        res.set(http::field::content_type, "text/plain; version=0.0.4");
        co_await http::async_write(*s, res, asio::use_awaitable);
        if (!req.keep_alive()) co_return;
      } else if (target == "/close-after") {
        auto res = respond(200, "ok", true);
        co_await http::async_write(*s, res, asio::use_awaitable);
        s->close();
        co_return;
      } else if (target == "/extra") {
        co_await write_raw(*s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      } else if (target == "/slow") {
        ++in_flight_;
        const bool slept = co_await sleep(std::chrono::seconds(5));
        --in_flight_;
        if (!slept) co_return;
        auto res = respond(200, "slow ok", false);
        co_await http::async_write(*s, res, asio::use_awaitable);
        co_return;
      } else if (target == "/garbage") {
        co_await write_raw(*s, std::string("\x01\x02 not http at all\r\n\r\n", 22));
        co_return;
      } else if (target == "/badstatus") {
        co_await write_raw(*s, "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok");
        co_return;
      } else if (target == "/reset") {
        s->set_option(tcp::socket::linger(true, 0));
        s->close();
        co_return;
      } else if (target == "/big") {
        auto res = respond(200, std::string(1 << 20, 'x'), false);
        co_await http::async_write(*s, res, asio::use_awaitable);
        co_return;
      } else if (target == "/endless") {
        co_await write_raw(*s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        const std::string chunk = "1000\r\n" + std::string(0x1000, 'y') + "\r\n";
        for (;;) co_await write_raw(*s, chunk);
      } else if (target == "/flood") {
        co_await write_raw(*s, "HTTP/1.1 200 OK\r\n");
        for (int i = 0;; ++i) co_await write_raw(*s, fmt::format("X-Flood-{}: {}\r\n", i, std::string(64, 'f')));
      } else if (target == "/slowloris") {
        const std::string line = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for (std::size_t i = 0;; i = (i + 1) % line.size()) {
          co_await write_raw(*s, std::string(1, line[i]));
          if (!co_await sleep(std::chrono::milliseconds(50))) co_return;
        }
      } else {
        auto res = respond(404, "no such path", false);
        co_await http::async_write(*s, res, asio::use_awaitable);
        co_return;
      }
    }
  }

  boost::asio::io_context& io_;
  std::string name_;
  tcp::acceptor acceptor_;
  std::set<std::shared_ptr<tcp::socket>> sockets_;
  std::set<boost::asio::steady_timer*> timers_;
  mutable std::mutex metrics_mutex_;
  std::string metrics_;
  std::vector<Received> received_;
  int connections_ = 0;
  int requests_ = 0;
  int in_flight_ = 0;
};

}  // namespace rollout::test_support
