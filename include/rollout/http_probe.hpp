#pragma once

/// @file
/// `rollout::HttpProbe`: a real HTTP/1.1 health probe over Beast (opt-in header).

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
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace rollout {

/// Options of an `HttpProbe`.
struct HttpProbeOptions {
  std::string path = "/health";      ///< Request target; must start with '/'.
  bool head = false;                 ///< HEAD instead of GET.
  unsigned min_status = 200;         ///< Healthy status range, inclusive.
  unsigned max_status = 399;
  std::optional<std::string> body_contains;  ///< If set, the body must contain it (GET only).
  /// Extra request headers, e.g. {"Host", "api.internal"} or {"Authorization", "Bearer ..."}.
  /// Values are sent, never logged: `fmt` prints credentials as `<redacted>`.
  std::vector<std::pair<std::string, std::string>> headers;
  Duration timeout{std::chrono::seconds(1)};  ///< Covers connect, write and read together.
  bool keep_alive = false;                    ///< Reuse connections between probes.
  std::size_t max_idle_per_endpoint = 4;      ///< With keep_alive: idle connections kept per endpoint (>= 1).
  std::size_t body_limit = 64 * 1024;         ///< A larger body is a failed probe.
  std::uint32_t header_limit = 8 * 1024;      ///< Larger headers are a failed probe.

  /// Throws `invalid_option` naming the field and the value. Rejects CR, LF and
  /// other control characters in the path and headers, so a configured value can
  /// never inject a second header or request.
  void validate() const {
    auto clean = [](std::string_view s) {
      return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c >= 0x20 && c != 0x7f; });
    };
    if (path.empty() || path.front() != '/' || !clean(path) || path.find(' ') != std::string::npos) {
      throw invalid_option("path", detail::format("{:?}", path), "must start with '/' and contain no spaces or control characters");
    }
    if (max_idle_per_endpoint < 1) throw invalid_option("max_idle_per_endpoint", "0", "must be at least 1");
    if (min_status < 100 || max_status > 599 || min_status > max_status) {
      throw invalid_option("min_status", detail::format("{}..{}", min_status, max_status), "must be a range within 100..599");
    }
    for (std::size_t i = 0; i < headers.size(); ++i) {
      const auto& [name, value] = headers[i];
      const bool token = !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char c) {
        return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
      });
      if (!token) throw invalid_option(detail::format("headers[{}].name", i), detail::format("{:?}", name), "must be an HTTP token");
      if (!clean(value)) {
        throw invalid_option(detail::format("headers[{}].value", i), "<redacted>", "must not contain control characters (CR, LF)");
      }
    }
    require_duration("timeout", timeout, DurationRule::positive);
    if (body_limit == 0) throw invalid_option("body_limit", "0", "must be greater than 0");
    if (header_limit == 0) throw invalid_option("header_limit", "0", "must be greater than 0");
  }
};

namespace detail {

/// True for header names whose values are secrets.
inline bool is_secret_header(std::string_view name) {
  std::string lower(name);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "authorization" || lower == "proxy-authorization" || lower == "cookie" || lower == "x-api-key" ||
         lower.find("token") != std::string::npos || lower.find("secret") != std::string::npos;
}

/// "timed out after 1s", "connection refused", ... for a probe's detail.
inline std::string describe_http_error(const boost::system::error_code& ec, Duration timeout) {
  namespace http = boost::beast::http;
  if (ec == boost::beast::error::timeout) return detail::format("timed out after {}", format_duration(timeout));
  if (ec == http::error::body_limit) return "response body too large";
  if (ec == http::error::header_limit) return "response headers too large";
  if (ec == http::error::end_of_stream) return "connection closed before a response";
  if (ec.category() == make_error_code(http::error::bad_status).category()) return detail::format("malformed response: {}", ec.message());
  return ec.message();
}

/// Opens a TCP connection to `ep` (an address or a host name) within `timeout`.
/// Returns the stream, or a sentence saying why not.
inline boost::asio::awaitable<std::variant<std::string, std::unique_ptr<boost::beast::tcp_stream>>> http_connect(
    const Endpoint& ep, Duration timeout) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  using tcp = asio::ip::tcp;
  auto ex = co_await asio::this_coro::executor;
  auto stream = std::make_unique<beast::tcp_stream>(ex);
  stream->expires_after(timeout);
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(ep.host, ec);
  if (!ec) {
    auto [cec] = co_await stream->async_connect(tcp::endpoint(addr, ep.port), asio::as_tuple(asio::use_awaitable));
    ec = cec;
  } else {
    tcp::resolver resolver(ex);
    auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), asio::as_tuple(asio::use_awaitable));
    if (rec) co_return detail::format("resolve {}: {}", ep.host, rec.message());
    auto [cec, where] = co_await stream->async_connect(results, asio::as_tuple(asio::use_awaitable));
    ec = cec;
  }
  if (ec) co_return detail::format("connect {}: {}", ep, describe_http_error(ec, timeout));
  co_return std::move(stream);
}

/// The result of one request/response exchange.
struct HttpExchange {
  HealthResult result;
  bool stale = false;     ///< Failed before any response byte: the connection was dead.
  bool reusable = false;  ///< The connection may serve another request.
};

/// Sends the probe's request on `stream` (plain or TLS) and judges the response.
template <class Stream>
boost::asio::awaitable<HttpExchange> http_exchange(Stream& stream, const HttpProbeOptions& opts, const Endpoint& ep) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  HttpExchange out;
  http::request<http::empty_body> req{opts.head ? http::verb::head : http::verb::get, opts.path, 11};
  req.set(http::field::host, detail::format("{}:{}", ep.host, ep.port));
  req.set(http::field::user_agent, "rollout-probe");
  for (const auto& [name, value] : opts.headers) req.set(name, value);
  req.keep_alive(opts.keep_alive);
  const char* verb = opts.head ? "HEAD" : "GET";
  auto [wec, wn] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
  if (wec) {
    out.stale = true;
    out.result = HealthResult::down(detail::format("{} {}: {}", verb, opts.path, describe_http_error(wec, opts.timeout)));
    co_return out;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(opts.body_limit);
  parser.header_limit(opts.header_limit);
  if (opts.head) parser.skip(true);
  auto [rec, rn] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
  if (rec) {
    out.stale = rn == 0 && (rec == http::error::end_of_stream || rec == asio::error::connection_reset || rec == asio::error::eof);
    out.result = HealthResult::down(detail::format("{} {}: {}", verb, opts.path, describe_http_error(rec, opts.timeout)));
    co_return out;
  }
  const auto& res = parser.get();
  const unsigned status = res.result_int();
  out.reusable = res.keep_alive();
  if (status < opts.min_status || status > opts.max_status) {
    out.result = HealthResult::down(detail::format("HTTP {} (expected {}..{})", status, opts.min_status, opts.max_status));
    co_return out;
  }
  if (opts.body_contains && res.body().find(*opts.body_contains) == std::string::npos) {
    out.result = HealthResult::down(detail::format("HTTP {} but the body lacks {:?}", status, *opts.body_contains));
    co_return out;
  }
  out.result = HealthResult::up(detail::format("HTTP {}", status));
  co_return out;
}

}  // namespace detail

/// A health probe that sends one HTTP/1.1 request to the instance's endpoint and
/// checks the status (and optionally the body). Models `HealthProbe`.
///
/// A refused connection, a timeout, a malformed response, an oversized body or
/// headers, or an unexpected status is a failed probe with a detail saying which;
/// `check` never throws for them and never hangs: `timeout` bounds connect, write
/// and read together, and the body and headers are bounded too.
///
/// With `keep_alive`, up to `max_idle_per_endpoint` idle connections per endpoint
/// are kept between probes (one is enough unless probes of one endpoint overlap);
/// a stale one (closed by the server) is replaced once, transparently.
///
/// Cancellation: `check` honours terminal cancellation (the strategy's timeout
/// and abort); the connection in use is then dropped. Use one strand.
class HttpProbe {
public:
  /// Throws `invalid_option` if `options` are invalid.
  explicit HttpProbe(HttpProbeOptions options = {}) : opts_(std::move(options)) { opts_.validate(); }

  boost::asio::awaitable<HealthResult> check(const Instance& instance) {
    namespace beast = boost::beast;
    namespace asio = boost::asio;
    const auto started = std::chrono::steady_clock::now();
    const auto elapsed = [&] { return Duration(std::chrono::steady_clock::now() - started); };
    const std::string key = detail::format("{}", instance.endpoint);
    std::unique_ptr<beast::tcp_stream> stream;
    bool reused = false;
    if (auto it = idle_.find(key); opts_.keep_alive && it != idle_.end() && !it->second.empty()) {
      stream = std::move(it->second.back());
      it->second.pop_back();
      reused = true;
    }
    for (;;) {
      if (!stream) {
        auto connected = co_await detail::http_connect(instance.endpoint, opts_.timeout);
        if (auto* err = std::get_if<std::string>(&connected)) co_return HealthResult::down(*err, elapsed());
        stream = std::move(std::get<std::unique_ptr<beast::tcp_stream>>(connected));
      }
      const auto left = opts_.timeout - elapsed();
      if (left <= Duration::zero()) co_return HealthResult::down(detail::format("timed out after {}", format_duration(opts_.timeout)), elapsed());
      stream->expires_after(left);
      auto outcome = co_await detail::http_exchange(*stream, opts_, instance.endpoint);
      if (outcome.stale && reused) {  // the kept connection was closed by the server: one fresh try
        stream.reset();
        reused = false;
        continue;
      }
      if (outcome.reusable && opts_.keep_alive) {
        auto& pool = idle_[key];
        if (pool.size() < opts_.max_idle_per_endpoint) {
          stream->expires_never();
          pool.push_back(std::move(stream));
        }
      }
      outcome.result.latency = elapsed();
      co_return std::move(outcome.result);
    }
  }

  const HttpProbeOptions& options() const noexcept { return opts_; }

private:
  HttpProbeOptions opts_;
  std::map<std::string, std::vector<std::unique_ptr<boost::beast::tcp_stream>>> idle_;
};

static_assert(HealthProbe<HttpProbe>);

}  // namespace rollout

/// Formats the options on one line; secret header values print as `<redacted>`.
template <>
struct fmt::formatter<rollout::HttpProbeOptions> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::HttpProbeOptions& o, FormatContext& ctx) const {
    std::string headers;
    for (const auto& [name, value] : o.headers) {
      headers += rollout::detail::format("{}{}: {}", headers.empty() ? "" : ", ", name,
                                         rollout::detail::is_secret_header(name) ? std::string("<redacted>") : value);
    }
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("{} {} expecting {}..{}{}, timeout {}{}{}", o.head ? "HEAD" : "GET", o.path, o.min_status, o.max_status,
                                o.body_contains ? rollout::detail::format(" containing {:?}", *o.body_contains) : std::string(),
                                rollout::format_duration(o.timeout), o.keep_alive ? ", keep-alive" : "",
                                headers.empty() ? std::string() : rollout::detail::format(", headers {{{}}}", headers)),
        ctx);
  }
};
