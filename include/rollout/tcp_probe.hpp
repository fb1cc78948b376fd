#pragma once

/// @file
/// `rollout::TcpProbe`: a health probe that only opens a TCP connection (opt-in header).

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <fmt/format.h>

#include <chrono>
#include <string>

namespace rollout {

/// Healthy when a TCP connection to the instance's endpoint opens within
/// `timeout`; the connection is closed at once. Models `HealthProbe`. Never throws
/// for an unreachable target; honours terminal cancellation.
class TcpProbe {
public:
  /// Throws `invalid_option` unless `timeout` is positive.
  explicit TcpProbe(Duration timeout = std::chrono::seconds(1)) : timeout_(timeout) {
    require_duration("timeout", timeout_, DurationRule::positive);
  }

  boost::asio::awaitable<HealthResult> check(const Instance& instance) {
    namespace asio = boost::asio;
    using tcp = asio::ip::tcp;
    const auto started = std::chrono::steady_clock::now();
    boost::beast::tcp_stream stream(co_await asio::this_coro::executor);
    stream.expires_after(timeout_);
    boost::system::error_code ec;
    const auto addr = asio::ip::make_address(instance.endpoint.host, ec);
    if (!ec) {
      auto [cec] = co_await stream.async_connect(tcp::endpoint(addr, instance.endpoint.port), asio::as_tuple(asio::use_awaitable));
      ec = cec;
    } else {
      tcp::resolver resolver(stream.get_executor());
      auto [rec, results] = co_await resolver.async_resolve(instance.endpoint.host, std::to_string(instance.endpoint.port),
                                                            asio::as_tuple(asio::use_awaitable));
      if (rec) co_return HealthResult::down(detail::format("resolve {}: {}", instance.endpoint.host, rec.message()));
      auto [cec, where] = co_await stream.async_connect(results, asio::as_tuple(asio::use_awaitable));
      ec = cec;
    }
    const Duration took = std::chrono::steady_clock::now() - started;
    if (ec == boost::beast::error::timeout) {
      co_return HealthResult::down(detail::format("connect {}: timed out after {}", instance.endpoint, format_duration(timeout_)), took);
    }
    if (ec) co_return HealthResult::down(detail::format("connect {}: {}", instance.endpoint, ec.message()), took);
    co_return HealthResult::up("connected", took);
  }

private:
  Duration timeout_;
};

static_assert(HealthProbe<TcpProbe>);

}  // namespace rollout
