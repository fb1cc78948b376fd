#pragma once

/// @file
/// `rollout::HttpsProbe`: the HTTP probe over TLS (opt-in header; link
/// `rollout::tls`, which brings OpenSSL).

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/http_probe.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/verify_mode.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <fmt/format.h>

#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

namespace rollout {

/// Options of an `HttpsProbe`: the HTTP options plus TLS.
struct HttpsProbeOptions {
  HttpProbeOptions http;
  std::string ca_file;       ///< PEM file of trusted CAs; empty: the system's trust store.
  std::string server_name;   ///< SNI and the name the certificate must match; empty: the endpoint's host.
  bool verify_peer = true;   ///< Verify the certificate chain and name. Turning it off is explicit.
};

/// `HttpProbe` over TLS (Beast's `ssl_stream`, OpenSSL). Certificates are
/// verified by default: chain against `ca_file` (or the system store) and the
/// name against `server_name` (or the endpoint's host, as an IP or DNS name).
/// A failed handshake is a failed probe whose detail names the cause
/// ("certificate verify failed", ...). One connection per probe. Models
/// `HealthProbe`; honours terminal cancellation; never throws for an unhealthy
/// target.
class HttpsProbe {
public:
  /// Throws `invalid_option` for invalid options or an unreadable `ca_file`.
  explicit HttpsProbe(HttpsProbeOptions options)
      : opts_(std::move(options)), ctx_(std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_client)) {
    opts_.http.validate();
    if (opts_.http.keep_alive) throw invalid_option("http.keep_alive", "true", "is not supported over TLS; each probe connects anew");
    boost::system::error_code ec;
    if (!opts_.ca_file.empty()) {
      ctx_->load_verify_file(opts_.ca_file, ec);
      if (ec) throw invalid_option("ca_file", opts_.ca_file, detail::format("could not be loaded: {}", ec.message()));
    } else {
      ctx_->set_default_verify_paths(ec);
    }
    ctx_->set_verify_mode(opts_.verify_peer ? boost::asio::ssl::verify_peer : boost::asio::ssl::verify_none);
  }

  boost::asio::awaitable<HealthResult> check(const Instance& instance) {
    namespace asio = boost::asio;
    namespace beast = boost::beast;
    const auto started = std::chrono::steady_clock::now();
    const auto elapsed = [&] { return Duration(std::chrono::steady_clock::now() - started); };
    beast::tcp_stream tcp(co_await asio::this_coro::executor);
    if (auto err = co_await detail::http_connect(tcp, instance.endpoint, opts_.http.timeout)) co_return HealthResult::down(std::move(*err), elapsed());
    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), *ctx_);
    const std::string name = opts_.server_name.empty() ? instance.endpoint.host : opts_.server_name;
    if (!detail::is_ip_address(name) && !SSL_set_tlsext_host_name(stream.native_handle(), name.c_str())) {
      co_return HealthResult::down(detail::format("TLS: cannot use {:?} as server name", name), elapsed());
    }
    if (opts_.verify_peer) stream.set_verify_callback(asio::ssl::host_name_verification(name));
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) {
      co_return HealthResult::down(detail::format("TLS handshake with {}: {}", instance.endpoint, detail::describe_http_error(hec, opts_.http.timeout)),
                                   elapsed());
    }
    const std::string request = detail::http_request(opts_.http, instance.endpoint);
    beast::flat_buffer buffer;
    auto outcome = co_await detail::http_exchange(stream, opts_.http, request, buffer);
    outcome.result.latency = elapsed();
    co_return std::move(outcome.result);
  }

private:
  HttpsProbeOptions opts_;
  std::unique_ptr<boost::asio::ssl::context> ctx_;  // stable address: streams refer to it
};

static_assert(HealthProbe<HttpsProbe>);

}  // namespace rollout
