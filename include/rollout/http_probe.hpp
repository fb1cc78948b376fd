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
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/serializer.hpp>

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
  /// With keep_alive: an idle connection unused this long is closed, so
  /// connections to instances that are gone do not pile up (90 s is Go's
  /// net/http default). The probe also forgets an endpoint it has not probed for
  /// this long. Applied when a later probe starts; must be positive.
  Duration idle_timeout{std::chrono::seconds(90)};
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
    require_duration("idle_timeout", idle_timeout, DurationRule::positive);
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

/// Whether `host` is an IPv4 or IPv6 address rather than a name. TLS sends no
/// server name for an address: RFC 6066 forbids literal addresses in SNI.
inline bool is_ip_address(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  return !ec;
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

/// Connects `stream` to `ep` (an address or a host name) within `timeout`.
/// Returns nothing on success, or a sentence saying why not.
inline boost::asio::awaitable<std::optional<std::string>> http_connect(boost::beast::tcp_stream& stream, const Endpoint& ep,
                                                                       Duration timeout) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  stream.expires_after(timeout);
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(ep.host, ec);
  if (!ec) {
    auto [cec] = co_await stream.async_connect(tcp::endpoint(addr, ep.port), asio::as_tuple(asio::use_awaitable));
    ec = cec;
  } else {
    tcp::resolver resolver(stream.get_executor());
    auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), asio::as_tuple(asio::use_awaitable));
    if (rec) co_return detail::format("resolve {}: {}", ep.host, rec.message());
    auto [cec, where] = co_await stream.async_connect(results, asio::as_tuple(asio::use_awaitable));
    ec = cec;
  }
  if (ec) co_return detail::format("connect {}: {}", ep, describe_http_error(ec, timeout));
  co_return std::nullopt;
}

/// The probe's request to `ep`, serialized by Beast once so that every probe
/// writes one buffer: Beast's serializer walks the header fields as a buffer
/// sequence on every write, which was a third of a keep-alive probe's CPU
/// (callgrind, probe_bench --probes).
inline std::string http_request(const HttpProbeOptions& opts, const Endpoint& ep) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  http::request<http::empty_body> req{opts.head ? http::verb::head : http::verb::get, opts.path, 11};
  req.set(http::field::host, detail::format("{}", ep));  // `[::1]:80` for an IPv6 address
  req.set(http::field::user_agent, "rollout-probe");
  for (const auto& [name, value] : opts.headers) req.set(name, value);
  req.keep_alive(opts.keep_alive);
  http::request_serializer<http::empty_body> sr(req);
  std::string out;
  boost::system::error_code ec;
  while (!sr.is_done()) {
    sr.next(ec, [&](boost::system::error_code&, const auto& buffers) {
      out += beast::buffers_to_string(buffers);
      sr.consume(beast::buffer_bytes(buffers));
    });
    if (ec) throw boost::system::system_error(ec, "serializing the probe's request");  // an empty body cannot fail
  }
  return out;
}

/// The result of one request/response exchange.
struct HttpExchange {
  HealthResult result;
  bool stale = false;     ///< Failed before any response byte: the connection was dead.
  bool reusable = false;  ///< The connection may serve another request.
};

/// Sends `request` (from `http_request`) on `stream` (plain or TLS) and judges
/// the response, read through `buffer` (the connection's; empty on entry).
template <class Stream>
boost::asio::awaitable<HttpExchange> http_exchange(Stream& stream, const HttpProbeOptions& opts, std::string_view request,
                                                   boost::beast::flat_buffer& buffer) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  HttpExchange out;
  const char* verb = opts.head ? "HEAD" : "GET";
  auto [wec, wn] = co_await asio::async_write(stream, asio::const_buffer(request.data(), request.size()), asio::as_tuple(asio::use_awaitable));
  if (wec) {
    out.stale = true;
    out.result = HealthResult::down(detail::format("{} {}: {}", verb, opts.path, describe_http_error(wec, opts.timeout)));
    co_return out;
  }
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
  // Bytes after the response were not asked for: the connection is out of step.
  out.reusable = res.keep_alive() && buffer.size() == 0;
  if (status < opts.min_status || status > opts.max_status) {
    out.result = HealthResult::down(detail::format("HTTP {} (expected {}..{})", status, opts.min_status, opts.max_status));
    co_return out;
  }
  if (opts.body_contains && res.body().find(*opts.body_contains) == std::string::npos) {
    out.result = HealthResult::down(detail::format("HTTP {} but the body lacks {:?}", status, *opts.body_contains));
    co_return out;
  }
  out.result = HealthResult::up("HTTP " + std::to_string(status));  // not fmt: this is every healthy probe's path
  co_return out;
}

/// One connection of an `HttpProbe`, with its read buffer.
struct HttpConnection {
  explicit HttpConnection(const boost::asio::any_io_executor& ex) : stream(ex) {}
  boost::beast::tcp_stream stream;
  boost::beast::flat_buffer buffer;
  std::chrono::steady_clock::time_point idle_since{};  ///< When it was last put back in the pool.
};

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
/// a stale one (closed by the server) is replaced once, transparently. An idle
/// connection unused for `idle_timeout` is closed when a later probe starts, and
/// so is the probe's record of an endpoint it has not probed for that long.
///
/// Cancellation: `check` honours terminal cancellation (the strategy's timeout
/// and abort); the connection in use is then dropped. Use one strand.
class HttpProbe {
public:
  /// Throws `invalid_option` if `options` are invalid.
  explicit HttpProbe(HttpProbeOptions options = {}) : opts_(std::move(options)) { opts_.validate(); }

  boost::asio::awaitable<HealthResult> check(const Instance& instance) {
    const auto started = std::chrono::steady_clock::now();
    const auto elapsed = [&] { return Duration(std::chrono::steady_clock::now() - started); };
    if (started >= next_sweep_) sweep(started);
    auto [it, fresh] = endpoints_.try_emplace(instance.endpoint);
    EndpointState& state = it->second;  // stays valid: `sweep` never erases an endpoint in use
    if (fresh) state.request = detail::http_request(opts_, instance.endpoint);
    state.last_used = started;
    const InUse in_use(state);
    std::unique_ptr<detail::HttpConnection> conn;
    bool reused = false;
    if (opts_.keep_alive && !state.idle.empty()) {
      conn = std::move(state.idle.back());
      state.idle.pop_back();
      reused = true;
    }
    for (;;) {
      if (!conn) {
        conn = std::make_unique<detail::HttpConnection>(co_await boost::asio::this_coro::executor);
        if (auto err = co_await detail::http_connect(conn->stream, instance.endpoint, opts_.timeout)) {
          co_return HealthResult::down(std::move(*err), elapsed());
        }
      }
      const auto left = opts_.timeout - elapsed();
      if (left <= Duration::zero()) co_return HealthResult::down(detail::format("timed out after {}", format_duration(opts_.timeout)), elapsed());
      conn->stream.expires_after(left);
      auto outcome = co_await detail::http_exchange(conn->stream, opts_, state.request, conn->buffer);
      if (outcome.stale && reused) {  // the kept connection was closed by the server: one fresh try
        conn.reset();
        reused = false;
        continue;
      }
      if (outcome.reusable && opts_.keep_alive && state.idle.size() < opts_.max_idle_per_endpoint) {
        conn->stream.expires_never();
        conn->idle_since = std::chrono::steady_clock::now();
        state.idle.push_back(std::move(conn));
      }
      outcome.result.latency = elapsed();
      co_return std::move(outcome.result);
    }
  }

  const HttpProbeOptions& options() const noexcept { return opts_; }

  /// Idle connections kept for reuse, over all endpoints (for monitoring).
  std::size_t idle_connections() const noexcept {
    std::size_t n = 0;
    for (const auto& [ep, state] : endpoints_) n += state.idle.size();
    return n;
  }

private:
  /// What the probe keeps per endpoint: the serialized request and the idle connections.
  struct EndpointState {
    std::string request;
    std::vector<std::unique_ptr<detail::HttpConnection>> idle;  ///< Most recently used last.
    std::chrono::steady_clock::time_point last_used{};
    std::size_t in_use = 0;  ///< Probes of this endpoint under way.
  };
  /// Counts a probe under way for as long as its coroutine lives (also when it is cancelled).
  struct InUse {
    explicit InUse(EndpointState& s) : state(s) { ++state.in_use; }
    InUse(const InUse&) = delete;
    InUse& operator=(const InUse&) = delete;
    ~InUse() { --state.in_use; }
    EndpointState& state;
  };

  /// Closes idle connections older than `idle_timeout`, and forgets endpoints
  /// neither used nor probed for as long. Runs at most once per `idle_timeout`.
  void sweep(std::chrono::steady_clock::time_point now) {
    const auto expired = [&](std::chrono::steady_clock::time_point t) { return now - t >= opts_.idle_timeout; };
    for (auto it = endpoints_.begin(); it != endpoints_.end();) {
      auto& idle = it->second.idle;
      std::erase_if(idle, [&](const auto& c) { return expired(c->idle_since); });
      if (idle.empty() && it->second.in_use == 0 && expired(it->second.last_used)) {
        it = endpoints_.erase(it);
      } else {
        ++it;
      }
    }
    next_sweep_ = now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(opts_.idle_timeout);
  }

  HttpProbeOptions opts_;
  std::map<Endpoint, EndpointState> endpoints_;
  std::chrono::steady_clock::time_point next_sweep_{};
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
