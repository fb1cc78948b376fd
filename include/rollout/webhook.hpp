#pragma once

/// @file
/// `rollout::WebhookNotifier`: POSTs a JSON document for every state change of a
/// rollout to one or more URLs, asynchronously (opt-in header; link
/// `rollout::prometheus` for Boost.JSON/Boost.URL and `rollout::tls` for HTTPS).

#include <rollout/core/backoff.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/retry.hpp>
#include <rollout/detail/task.hpp>
#include <rollout/http_probe.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>

#include <fmt/format.h>

#include <openssl/ssl.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace rollout {

/// Options of a `WebhookNotifier`.
struct WebhookOptions {
  std::vector<std::string> urls;  ///< `http://host:port/path` or `https://...`.
  /// Extra headers, e.g. {"Authorization", "Bearer ..."}; values are sent, and
  /// printed as `<redacted>` when they are credentials.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string rollout;                   ///< The rollout's name, in every document.
  std::size_t queue_limit = 1000;        ///< Events waiting for delivery; beyond it the oldest is dropped.
  Duration timeout{std::chrono::seconds(5)};  ///< Bound on one POST.
  Backoff retry{};                       ///< Retries of a failed POST (any error or non-2xx).
  std::string ca_file;                   ///< For HTTPS: trusted CAs (empty: the system's store).
  /// The events that are sent: state changes, not every probe.
  std::set<EventKind> kinds{EventKind::run_started,      EventKind::step_completed,  EventKind::paused,
                            EventKind::resumed,          EventKind::check_failed,    EventKind::check_inconclusive,
                            EventKind::traffic_applied,  EventKind::rollback_started, EventKind::abort_requested,
                            EventKind::instance_failed,  EventKind::releasable,      EventKind::run_finished};
};

/// An `Observer` that delivers selected events as JSON webhooks:
///
/// ```json
/// {"rollout":"checkout","strategy":"canary","event":"rollback_started","at_ms":300020,
///  "subject":"stable","detail":"background analysis failed: ...","error":"analysis failed",
///  "weights":{"canary":0.1,"stable":0.9},"revisions":{"canary":"v42","stable":"v41"}}
/// ```
///
/// `weights` are the last verified split; `revisions` come from `map_group`.
/// Delivery never blocks the rollout: `on_event` only enqueues (bounded; when
/// full, the oldest event is dropped and counted in `dropped()`), and one
/// background coroutine POSTs each event to every URL in order, with `timeout`
/// and retries under `retry`. An event that still fails is counted in `failed()`.
/// HTTPS verifies the server's certificate and name.
///
/// Call `start()` once on the executor, and `co_await stop()` before destroying
/// it (it finishes the queue, or stops at once with `stop(false)`). Use one strand.
class WebhookNotifier {
public:
  /// Throws `invalid_option` for an unparsable URL, a header with CR/LF, or a zero queue.
  explicit WebhookNotifier(WebhookOptions options) : opts_(std::move(options)), rng_(opts_.retry.seed) {
    if (opts_.queue_limit == 0) throw invalid_option("queue_limit", "0", "must be at least 1");
    require_duration("timeout", opts_.timeout, DurationRule::positive);
    opts_.retry.validate("retry");
    for (std::size_t i = 0; i < opts_.urls.size(); ++i) {
      auto u = boost::urls::parse_uri(opts_.urls[i]);
      if (!u || (u->scheme() != "http" && u->scheme() != "https") || u->host().empty()) {
        throw invalid_option(detail::format("urls[{}]", i), detail::format("{:?}", opts_.urls[i]), "must be an http:// or https:// URL");
      }
      Target t;
      t.tls = u->scheme() == "https";
      t.host = std::string(u->host_address());  // `::1` for `[::1]`: what connect, resolve and TLS name checks take
      t.port = u->has_port() ? u->port_number() : static_cast<std::uint16_t>(t.tls ? 443 : 80);
      t.target = u->encoded_path().empty() ? std::string("/") : std::string(u->encoded_target());
      // For messages: no user info and no query string, which may carry credentials.
      t.url = detail::format("{}://{}{}", std::string_view(u->scheme()), Endpoint(t.host, t.port), std::string_view(u->encoded_path()));
      targets_.push_back(std::move(t));
    }
    HttpProbeOptions check;  // reuse the header validation (CR/LF injection, token names)
    check.headers = opts_.headers;
    check.validate();
    tls_ = std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_client);
    boost::system::error_code ec;
    if (!opts_.ca_file.empty()) {
      tls_->load_verify_file(opts_.ca_file, ec);
      if (ec) throw invalid_option("ca_file", opts_.ca_file, detail::format("could not be loaded: {}", ec.message()));
    } else {
      tls_->set_default_verify_paths(ec);
    }
    tls_->set_verify_mode(boost::asio::ssl::verify_peer);
  }

  /// Starts the delivery coroutine on `ex`.
  void start(const boost::asio::any_io_executor& ex) {
    wake_.emplace(ex);
    worker_.start(ex, deliver(), nullptr);
  }

  /// Names the revision behind a traffic group, for the `revisions` field.
  void map_group(const std::string& group, const std::string& revision) { revisions_[group] = revision; }

  /// Enqueues `e` if its kind is selected. Never blocks.
  void on_event(const Event& e) {
    if (e.kind == EventKind::traffic_applied && e.split) {
      weights_.clear();
      for (const auto& s : e.split->shares()) weights_[s.group] = s.weight.fraction();
    }
    if (!opts_.kinds.contains(e.kind)) return;
    if (queue_.size() >= opts_.queue_limit) {
      queue_.pop_front();
      ++dropped_;
    }
    queue_.push_back(document(e));
    if (wake_) wake_->notify_all();
  }

  /// Delivers what is queued (`drain`) or not, then stops the coroutine.
  boost::asio::awaitable<void> stop(bool drain = true) {
    stopping_ = true;
    if (!drain) queue_.clear();
    if (wake_) wake_->notify_all();
    while (drain && (!queue_.empty() || busy_) && !worker_.done()) {
      co_await detail::wait_for_change(SteadyClock{}, *wake_, detail::add_saturating(std::chrono::steady_clock::now(), std::chrono::milliseconds(50)));
    }
    co_await worker_.stop();
  }

  std::size_t delivered() const noexcept { return delivered_; }
  std::size_t failed() const noexcept { return failed_; }
  std::size_t dropped() const noexcept { return dropped_; }
  std::size_t queued() const noexcept { return queue_.size(); }
  /// The last delivery error, for logs ("" if none). Never contains header values.
  const std::string& last_error() const noexcept { return last_error_; }

private:
  struct Target {
    std::string url, host, target;
    std::uint16_t port = 0;
    bool tls = false;
  };

  std::string document(const Event& e) const {
    boost::json::object o;
    o["rollout"] = opts_.rollout;
    o["strategy"] = e.strategy;
    o["event"] = to_string(e.kind);
    o["at_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(e.at).count();
    o["subject"] = e.subject;
    o["detail"] = e.detail;
    if (e.error) o["error"] = e.error.message();
    boost::json::object w, r;
    for (const auto& [g, f] : weights_) w[g] = f;
    for (const auto& [g, rev] : revisions_) r[g] = rev;
    o["weights"] = std::move(w);
    o["revisions"] = std::move(r);
    return boost::json::serialize(o);
  }

  boost::asio::awaitable<void> deliver() {
    for (;;) {
      while (queue_.empty()) {
        if (stopping_) co_return;
        co_await detail::wait_for_change(SteadyClock{}, *wake_, TimePoint::max());
      }
      auto body = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      bool ok = true;
      for (const auto& t : targets_) {
        auto r = co_await detail::retry(
            SteadyClock{}, opts_.retry, rng_, [&] { return post_once(t, body); },
            [&](int, const Error& e, std::optional<Duration>) { last_error_ = e.message; });
        ok = ok && r.has_value();
      }
      busy_ = false;
      ++(ok ? delivered_ : failed_);
      wake_->notify_all();
    }
  }

  boost::asio::awaitable<result<void>> post_once(const Target& t, const std::string& body) {
    auto r = co_await detail::with_timeout(SteadyClock{}, opts_.timeout, post(t, body));
    if (!r) co_return Error(errc::timeout, detail::format("webhook {} timed out after {}", t.url, format_duration(opts_.timeout)));
    co_return std::move(*r);
  }

  template <class Stream>
  boost::asio::awaitable<result<void>> exchange(Stream& stream, const Target& t, const std::string& body) {
    namespace asio = boost::asio;
    namespace http = boost::beast::http;
    http::request<http::string_body> req{http::verb::post, t.target, 11};
    req.set(http::field::host, detail::format("{}", Endpoint(t.host, t.port)));
    req.set(http::field::content_type, "application/json");
    req.set(http::field::user_agent, "rollout");
    for (const auto& [k, v] : opts_.headers) req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    auto [wec, wn] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    if (wec) co_return Error(errc::lb_unavailable, detail::format("webhook {}: {}", t.url, wec.message()));
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);
    auto [rec, rn] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return Error(errc::lb_unavailable, detail::format("webhook {}: {}", t.url, rec.message()));
    const auto status = parser.get().result_int();
    if (status < 200 || status > 299) co_return Error(errc::lb_rejected, detail::format("webhook {}: HTTP {}", t.url, status));
    co_return result<void>{};
  }

  boost::asio::awaitable<result<void>> post(const Target& t, const std::string& body) {
    namespace asio = boost::asio;
    namespace beast = boost::beast;
    const Endpoint ep(t.host, t.port);
    beast::tcp_stream tcp(co_await asio::this_coro::executor);
    if (auto err = co_await detail::http_connect(tcp, ep, opts_.timeout)) {
      co_return Error(errc::lb_unavailable, detail::format("webhook {}: {}", t.url, *err));
    }
    if (!t.tls) co_return co_await exchange(tcp, t, body);
    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), *tls_);
    if (!detail::is_ip_address(t.host)) SSL_set_tlsext_host_name(stream.native_handle(), t.host.c_str());
    stream.set_verify_callback(asio::ssl::host_name_verification(t.host));
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) co_return Error(errc::lb_unavailable, detail::format("webhook {}: TLS handshake: {}", t.url, hec.message()));
    co_return co_await exchange(stream, t, body);
  }

  WebhookOptions opts_;
  std::vector<Target> targets_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  JitterEngine rng_;
  std::deque<std::string> queue_;
  std::map<std::string, double> weights_;
  std::map<std::string, std::string> revisions_;
  std::optional<detail::Notifier> wake_;
  detail::Task worker_;
  bool stopping_ = false;
  bool busy_ = false;
  std::size_t delivered_ = 0, failed_ = 0, dropped_ = 0;
  std::string last_error_;
};

static_assert(Observer<WebhookNotifier>);

}  // namespace rollout

/// Formats the options; credential header values print as `<redacted>`.
template <>
struct fmt::formatter<rollout::WebhookOptions> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::WebhookOptions& o, FormatContext& ctx) const {
    std::string headers;
    for (const auto& [name, value] : o.headers) {
      headers += rollout::detail::format("{}{}: {}", headers.empty() ? "" : ", ", name,
                                         rollout::detail::is_secret_header(name) ? std::string("<redacted>") : value);
    }
    std::string urls;
    for (const auto& u : o.urls) urls += rollout::detail::format("{}{}", urls.empty() ? "" : ", ", u);
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("webhooks [{}], queue {}, timeout {}{}", urls, o.queue_limit, rollout::format_duration(o.timeout),
                                headers.empty() ? std::string() : rollout::detail::format(", headers {{{}}}", headers)),
        ctx);
  }
};
