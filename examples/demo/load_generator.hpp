#pragma once

// A load generator for the demo and the end-to-end tests: a steady, open-loop
// rate of real HTTP/1.1 GET requests, sent on its own thread, that counts every
// outcome.
//
// - Each request asks `Target` where to go: an instance picked through
//   WeightedRouter, or HAProxy's frontend. No target is a failed request (that
//   is downtime).
// - Connections are kept alive, one pool per target key. Nothing is retried:
//   a refused or reset connection, a timeout, or a non-2xx response is a failed
//   request and is counted as such. A failure at the connection level is also
//   reported to `on_unreachable` (the demo ejects that instance from
//   WeightedRouter's picks, as a client-side load balancer does).
// - The revision that answered is read from the sample service's `X-Version`
//   header (the picked instance's revision when nothing came back). Every
//   outcome is recorded into a `CounterSource`, which judges canaries.
// - Requests are started on schedule whatever the latency (open loop), up to
//   `max_in_flight`; a request that could not start because that many were
//   still waiting is counted as `unsent` (a stall), never silently skipped.
//
// All state lives on the generator's thread; `snapshot()` copies it across.
#include <rollout/core/types.hpp>
#include <rollout/counter_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace demo {

using SteadyTime = std::chrono::steady_clock::time_point;

/// Where one request goes.
struct Pick {
  rollout::Endpoint endpoint;
  std::string key;       ///< Connection pool key (instance id, or "haproxy").
  std::string revision;  ///< Expected revision; "" when unknown (behind HAProxy).
};

/// Counts for one revision (or for everything).
struct Counts {
  std::uint64_t requests = 0;
  std::uint64_t ok = 0;
  std::uint64_t http_errors = 0;  ///< A response with a non-2xx status.
  std::uint64_t conn_errors = 0;  ///< Refused, reset, closed early or timed out: no response at all.
  std::uint64_t failed() const { return http_errors + conn_errors; }
  void add(const Counts& o) {
    requests += o.requests;
    ok += o.ok;
    http_errors += o.http_errors;
    conn_errors += o.conn_errors;
  }
  Counts minus(const Counts& o) const {
    Counts c;
    c.requests = requests - o.requests;
    c.ok = ok - o.ok;
    c.http_errors = http_errors - o.http_errors;
    c.conn_errors = conn_errors - o.conn_errors;
    return c;
  }
};

/// A failed request, kept for the reports (when it ended, when it was sent,
/// which revision, how).
struct Failure {
  SteadyTime at;
  SteadyTime sent;
  std::string revision;
  std::string what;
};

/// Everything counted so far, copied off the generator's thread.
struct Snapshot {
  SteadyTime taken;
  Counts total;
  std::map<std::string, Counts> by_revision;  ///< "?" for a failure with no known revision.
  std::uint64_t no_target = 0;                ///< Requests with nowhere to go (counted in total.conn_errors too).
  std::uint64_t unsent = 0;                   ///< Requests that could not start: max_in_flight were waiting.
  std::size_t in_flight = 0;
  std::vector<Failure> failures;              ///< Up to the first 10,000.

  Counts revision(const std::string& r) const {
    auto it = by_revision.find(r);
    return it == by_revision.end() ? Counts{} : it->second;
  }
};

/// One 100 ms slice of the run, for the timeline picture.
struct Slice {
  std::map<std::string, Counts> by_revision;
};

struct LoadOptions {
  double rate = 1000;                  ///< Requests per second.
  std::size_t max_in_flight = 256;
  std::chrono::milliseconds timeout{5000};  ///< Bound on each request, connect to last byte.
  /// Called on the generator's thread when a request to a pick failed at the
  /// connection level (refused, reset, timed out; not an HTTP error status).
  std::function<void(const Pick&)> on_unreachable;
};

class LoadGenerator {
public:
  using Target = std::function<std::optional<Pick>()>;

  LoadGenerator(Target target, rollout::CounterSource<>& metrics, LoadOptions options)
      : target_(std::move(target)), metrics_(metrics), opts_(options) {}
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;
  ~LoadGenerator() { stop(); }

  void start() {
    started_ = std::chrono::steady_clock::now();
    boost::asio::co_spawn(io_, pace(), rethrow);  // ends when stop() stops the io_context
    thread_ = std::thread([this] { io_.run(); });
  }

  /// Stops sending, lets requests in flight finish (up to the timeout), and joins.
  void stop() {
    if (!thread_.joinable()) return;
    boost::asio::post(io_, [this] { stopping_ = true; });
    thread_.join();
  }

  SteadyTime started() const { return started_; }

  /// A copy of the counts, taken on the generator's thread (waits for it).
  Snapshot snapshot() {
    if (!thread_.joinable()) return copy();
    std::promise<Snapshot> p;
    auto f = p.get_future();
    boost::asio::post(io_, [&] { p.set_value(copy()); });
    return f.get();
  }

  /// The 100 ms slices since start (call after stop()).
  const std::vector<Slice>& slices() const { return slices_; }

private:
  using Stream = boost::beast::tcp_stream;

  /// Completion of the generator's coroutines: an exception (a bug, or out of
  /// memory) ends the program from the generator's thread rather than being
  /// swallowed and leaving stop() waiting for a request that will never finish.
  static void rethrow(std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  }

  Snapshot copy() const {
    Snapshot s = snap_;
    s.taken = std::chrono::steady_clock::now();
    s.in_flight = in_flight_;
    return s;
  }

  boost::asio::awaitable<void> pace() {
    boost::asio::steady_timer timer(io_);
    std::uint64_t issued = 0;
    auto next = started_;
    while (!stopping_) {
      next += std::chrono::milliseconds(1);
      timer.expires_at(next);
      co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
      const auto due = static_cast<std::uint64_t>(elapsed * opts_.rate);
      for (; issued < due && !stopping_; ++issued) {
        if (in_flight_ >= opts_.max_in_flight) {
          ++snap_.unsent;
          continue;
        }
        ++in_flight_;
        boost::asio::co_spawn(io_, one(), rethrow);  // network errors are counted, not thrown
      }
    }
    // Let the requests in flight finish; they are bounded by the timeout.
    while (in_flight_ > 0) {
      timer.expires_after(std::chrono::milliseconds(5));
      co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    pools_.clear();
    io_.stop();
  }

  void count(const std::string& revision, bool ok, bool http, SteadyTime began, std::string what) {
    const auto now = std::chrono::steady_clock::now();
    Counts c;
    c.requests = 1;
    if (ok) {
      c.ok = 1;
    } else if (http) {
      c.http_errors = 1;
    } else {
      c.conn_errors = 1;
    }
    const std::string rev = revision.empty() ? "?" : revision;
    snap_.total.add(c);
    snap_.by_revision[rev].add(c);
    const auto slice = static_cast<std::size_t>((now - started_) / std::chrono::milliseconds(100));
    if (slices_.size() <= slice) slices_.resize(slice + 1);
    slices_[slice].by_revision[rev].add(c);
    if (!ok && snap_.failures.size() < 10000) snap_.failures.push_back(Failure{now, began, rev, std::move(what)});
    if (!revision.empty()) metrics_.record(rollout::Revision{revision}, ok, rollout::Duration(now - began));
  }

  boost::asio::awaitable<void> one() {
    namespace http = boost::beast::http;
    const auto began = std::chrono::steady_clock::now();
    const auto pick = target_();
    if (!pick) {
      ++snap_.no_target;
      count("", false, false, began, "no backend to send to");
      --in_flight_;
      co_return;
    }
    std::unique_ptr<Stream> stream;
    auto& pool = pools_[pick->key];
    if (!pool.empty()) {
      stream = std::move(pool.back());
      pool.pop_back();
    }
    boost::system::error_code ec;
    if (!stream) {
      stream = std::make_unique<Stream>(io_);
      stream->expires_after(opts_.timeout);
      const boost::asio::ip::tcp::endpoint to(boost::asio::ip::make_address(pick->endpoint.host, ec), pick->endpoint.port);
      if (!ec) std::tie(ec) = co_await stream->async_connect(to, boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    http::response<http::string_body> res;
    if (!ec) {
      stream->expires_after(opts_.timeout);
      http::request<http::empty_body> req(http::verb::get, "/", 11);
      req.set(http::field::host, pick->endpoint.host);
      req.keep_alive(true);
      std::tie(ec, std::ignore) = co_await http::async_write(*stream, req, boost::asio::as_tuple(boost::asio::use_awaitable));
      if (!ec) {
        boost::beast::flat_buffer buffer;
        std::tie(ec, std::ignore) =
            co_await http::async_read(*stream, buffer, res, boost::asio::as_tuple(boost::asio::use_awaitable));
      }
    }
    if (ec) {
      count(pick->revision, false, false, began, fmt::format("{} ({}): {}", pick->key, pick->endpoint.port, ec.message()));
      if (opts_.on_unreachable) opts_.on_unreachable(*pick);
    } else {
      const auto it = res.find("X-Version");
      const std::string revision = it != res.end() ? std::string(it->value()) : pick->revision;
      const bool ok = res.result_int() >= 200 && res.result_int() < 300;
      count(revision, ok, true, began, fmt::format("HTTP {} from {}", res.result_int(), revision));
      if (res.keep_alive() && !stopping_) pools_[pick->key].push_back(std::move(stream));
    }
    --in_flight_;
  }

  Target target_;
  rollout::CounterSource<>& metrics_;
  LoadOptions opts_;
  boost::asio::io_context io_;
  std::thread thread_;
  SteadyTime started_{};
  bool stopping_ = false;
  std::size_t in_flight_ = 0;
  Snapshot snap_;
  std::vector<Slice> slices_;
  std::map<std::string, std::vector<std::unique_ptr<Stream>>> pools_;
};

}  // namespace demo
