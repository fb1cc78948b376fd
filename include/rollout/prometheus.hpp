#pragma once

/// @file
/// `rollout::PrometheusSource`: a `MetricsSource` that queries a real Prometheus
/// over its HTTP API (opt-in header; link `rollout::prometheus`, which brings
/// Boost.JSON and Boost.URL).

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/http_probe.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/url/url.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rollout {

/// Options of a `PrometheusSource`.
struct PrometheusOptions {
  Endpoint server{"127.0.0.1", 9090};
  std::string path_prefix;                 ///< e.g. "/prometheus" behind a reverse proxy.
  Duration timeout{std::chrono::seconds(5)};  ///< Bound on each query (connect, send, receive).
  std::optional<std::string> bearer_token;    ///< Sent as `Authorization: Bearer ...`; never logged or printed.
  std::size_t samples = 60;                   ///< Points per series for `Want::samples`: step = window / samples, the last point at now.
  bool non_finite_is_no_data = true;          ///< NaN and +-Inf count as no data (otherwise as the value).
  std::size_t max_response = 16 * 1024 * 1024;  ///< A larger response is an error.
  std::map<std::string, std::string> variables;  ///< Extra `$name` substitutions for query templates.

  void validate() const {
    if (server.host.empty()) throw invalid_option("server.host", "\"\"", "must not be empty");
    require_duration("timeout", timeout, DurationRule::positive);
    // Prometheus refuses a range query of more than 11,000 points per series.
    if (samples < 2 || samples > 11000) throw invalid_option("samples", detail::format("{}", samples), "must be within 2..11000");
    if (max_response == 0) throw invalid_option("max_response", "0", "must be greater than 0");
    const bool clean_prefix = std::all_of(path_prefix.begin(), path_prefix.end(), [](unsigned char c) { return c > 0x20 && c != 0x7f; });
    if (!path_prefix.empty() && (path_prefix.front() != '/' || !clean_prefix)) {
      throw invalid_option("path_prefix", detail::format("{:?}", path_prefix), "must start with '/' and contain no spaces or control characters");
    }
    if (bearer_token && bearer_token->find_first_of("\r\n") != std::string::npos) {
      throw invalid_option("bearer_token", "<redacted>", "must not contain CR or LF");
    }
  }
};

namespace detail {

/// `v` as a PromQL double-quoted string's content: backslash, quote and control
/// characters escaped, so a revision id can never break out of a label matcher.
inline std::string promql_escape(std::string_view v) {
  std::string out;
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: out += c;
    }
  }
  return out;
}

/// A duration as Prometheus writes it: `90s`, `5m`, `1500ms`.
inline std::string promql_duration(Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  if (ms % 60000 == 0) return detail::format("{}m", ms / 60000);
  if (ms % 1000 == 0) return detail::format("{}s", ms / 1000);
  return detail::format("{}ms", ms);
}

/// Replaces `$revision`, `$role`, `$window` and the extra variables in `expr`.
/// Longer names first, so `$revision_label` is not read as `$revision` + `_label`.
inline std::string expand_query(std::string expr, const Scope& scope, Duration window,
                                const std::map<std::string, std::string>& extra) {
  std::vector<std::pair<std::string, std::string>> vars;
  for (const auto& [k, v] : extra) vars.emplace_back("$" + k, promql_escape(v));
  vars.emplace_back("$revision", promql_escape(scope.revision.id));
  vars.emplace_back("$role", detail::format("{}", scope.role));
  vars.emplace_back("$window", promql_duration(window));
  std::sort(vars.begin(), vars.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  for (const auto& [key, value] : vars) {
    for (auto at = expr.find(key); at != std::string::npos; at = expr.find(key, at + value.size())) expr.replace(at, key.size(), value);
  }
  return expr;
}

/// The `start`, `end` and `step` of a range query for `Want::samples`, in
/// seconds with millisecond precision. The last point is `now` itself, so the
/// newest scrape is always in the samples; the others go back `step` at a time,
/// `samples` points in all, within the last `window`. (Starting at now - window
/// instead would let the rounding of the step leave out the last few ms.)
struct SampleRange {
  std::string start, end, step;
};
inline SampleRange sample_range(std::chrono::milliseconds now, Duration window, std::size_t samples) {
  using std::chrono::milliseconds;
  const auto span = std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(window));
  const auto step = std::max(milliseconds(1), span / static_cast<std::int64_t>(std::max<std::size_t>(samples, 1)));
  const auto points = std::min<std::int64_t>(static_cast<std::int64_t>(samples), span / step);
  const auto seconds = [](milliseconds ms) { return detail::format("{}.{:03}", ms.count() / 1000, ms.count() % 1000); };
  const auto start = std::max(milliseconds(0), now - step * (std::max<std::int64_t>(points, 1) - 1));  // never before 1970
  return SampleRange{seconds(start), seconds(now), seconds(step)};
}

/// Parses a Prometheus sample value ("1.5", "-2e-05", "NaN", "+Inf") strictly:
/// the whole string must be one decimal number as Prometheus writes it. No
/// whitespace, no hex, no other spellings of NaN or infinity, nothing out of
/// double's range. (std::from_chars, unlike strtod, accepts none of those.)
inline std::optional<double> prometheus_number(std::string_view s) {
  if (s == "NaN") return std::nan("");
  if (s == "+Inf" || s == "Inf") return HUGE_VAL;
  if (s == "-Inf") return -HUGE_VAL;
  if (s.empty() || s.size() > 64) return std::nullopt;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  const bool negative = *first == '-';
  if (negative) ++first;
  if (first == last || !((*first >= '0' && *first <= '9') || *first == '.')) return std::nullopt;  // "-inf", "nan", "-"
  double v = 0;
  const auto [end, ec] = std::from_chars(first, last, v);
  if (ec != std::errc() || end != last) return std::nullopt;  // junk after the number, or out of range
  return negative ? -v : v;
}

/// Decodes a Prometheus API response body. `status: error` becomes
/// `errc::query_failed` with Prometheus' own `errorType: error`; anything not
/// shaped as the API documents becomes `errc::protocol_error` naming the JSON path.
inline result<MetricValue> decode_prometheus(std::string_view body, MetricQuery::Want want, bool non_finite_is_no_data) {
  namespace json = boost::json;
  boost::system::error_code ec;
  json::parse_options po;
  po.max_depth = 32;
  const json::value doc = json::parse(body, ec, {}, po);
  if (ec) return Error(errc::protocol_error, detail::format("prometheus: response is not JSON: {}", ec.message()));
  auto bad = [](std::string what) { return Error(errc::protocol_error, detail::format("prometheus: {}", what)); };
  const auto* root = doc.if_object();
  if (!root) return bad("response is not a JSON object");
  const auto* status = root->if_contains("status");
  if (!status || !status->is_string()) return bad("\"status\" is missing or not a string");
  if (status->as_string() == "error") {
    const auto* type = root->if_contains("errorType");
    const auto* error = root->if_contains("error");
    return Error(errc::query_failed,
                 detail::format("prometheus: {}: {}", type && type->is_string() ? std::string_view(type->as_string()) : "unknown",
                                error && error->is_string() ? std::string_view(error->as_string()) : "(no message)"));
  }
  if (status->as_string() != "success") return bad(detail::format("unexpected status {:?}", std::string_view(status->as_string())));
  const auto* data = root->if_contains("data");
  if (!data || !data->is_object()) return bad("\"data\" is missing or not an object");
  const auto* type = data->as_object().if_contains("resultType");
  const auto* res = data->as_object().if_contains("result");
  if (!type || !type->is_string()) return bad("\"data.resultType\" is missing or not a string");
  if (!res) return bad("\"data.result\" is missing");
  const std::string_view rtype = type->as_string();
  // [timestamp, "value"] pairs.
  auto point = [&](const json::value& p, const std::string& where) -> result<double> {
    const auto* arr = p.if_array();
    if (!arr || arr->size() != 2 || !(*arr)[0].is_number() || !(*arr)[1].is_string()) {
      return bad(detail::format("{} is not [timestamp, \"value\"]", where));
    }
    auto v = prometheus_number((*arr)[1].as_string());
    if (!v) return bad(detail::format("{} has a value that is not a number: {:?}", where, std::string_view((*arr)[1].as_string())));
    return *v;
  };
  std::vector<double> values;
  if (rtype == "scalar") {
    auto v = point(*res, "data.result");
    if (!v) return v.error();
    values.push_back(*v);
  } else if (rtype == "vector" || rtype == "matrix") {
    const auto* series = res->if_array();
    if (!series) return bad("\"data.result\" is not an array");
    if (want == MetricQuery::Want::value && rtype == "vector" && series->size() > 1) {
      return Error(errc::query_failed, detail::format("prometheus: the query returned {} series; aggregate it to one (e.g. sum(...))", series->size()));
    }
    for (std::size_t i = 0; i < series->size(); ++i) {
      const auto* s = (*series)[i].if_object();
      if (!s) return bad(detail::format("data.result[{}] is not an object", i));
      if (rtype == "vector") {
        const auto* v = s->if_contains("value");
        if (!v) return bad(detail::format("data.result[{}].value is missing", i));
        auto x = point(*v, detail::format("data.result[{}].value", i));
        if (!x) return x.error();
        values.push_back(*x);
      } else {
        const auto* vs = s->if_contains("values");
        if (!vs || !vs->is_array()) return bad(detail::format("data.result[{}].values is missing or not an array", i));
        for (std::size_t k = 0; k < vs->as_array().size(); ++k) {
          auto x = point(vs->as_array()[k], detail::format("data.result[{}].values[{}]", i, k));
          if (!x) return x.error();
          values.push_back(*x);
        }
      }
    }
    if (want == MetricQuery::Want::value && rtype == "matrix") {
      return Error(errc::query_failed, "prometheus: a range vector cannot be one value; use an instant expression");
    }
  } else {
    return bad(detail::format("unsupported resultType {:?}", rtype));
  }
  if (non_finite_is_no_data) {
    const auto before = values.size();
    std::erase_if(values, [](double v) { return !std::isfinite(v); });
    if (values.empty() && before > 0) return MetricValue{NoData{"the result is NaN or infinite"}};
  }
  if (values.empty()) return MetricValue{NoData{"empty result"}};
  if (want == MetricQuery::Want::samples) return MetricValue{Samples(std::move(values))};
  return MetricValue{values.front()};
}

}  // namespace detail

/// Queries Prometheus' HTTP API: `/api/v1/query` for a value, `/api/v1/query_range`
/// (over `MetricQuery::window`, `samples` points per series) for samples.
///
/// Query templates: `$revision` (the scope's revision, escaped for a PromQL
/// string), `$role` (`stable`, `canary`, `baseline`), `$window` (the window as a
/// PromQL duration) and `options.variables`. For example
/// `sum(rate(http_errors_total{version="$revision"}[$window]))`.
///
/// Results: a vector of one series or a scalar is the value; an empty result is
/// `NoData` ("empty result"), distinct from 0; NaN and +-Inf are `NoData` unless
/// `non_finite_is_no_data` is off; several series for a value, or a matrix for a
/// value, are `errc::query_failed` (aggregate the query). `status: error` is
/// `errc::query_failed` with Prometheus' `errorType: error`. A response that is
/// not the documented JSON is `errc::protocol_error` naming the JSON path. An
/// unreachable server is `errc::query_failed` with the connect error.
///
/// Each query is bounded by `timeout` and honours terminal cancellation. The
/// bearer token is sent, never logged: fmt prints it as `<redacted>`.
class PrometheusSource {
public:
  explicit PrometheusSource(PrometheusOptions options) : opts_(std::move(options)) { opts_.validate(); }

  boost::asio::awaitable<result<MetricValue>> query(const MetricQuery& q, const Scope& scope) {
    const auto expr = detail::expand_query(q.expr, scope, q.window, opts_.variables);
    boost::urls::url target(opts_.path_prefix + (q.want == MetricQuery::Want::samples ? "/api/v1/query_range" : "/api/v1/query"));
    target.params().append(boost::urls::param_view("query", expr));  // Boost.URL percent-encodes the PromQL
    if (q.want == MetricQuery::Want::samples) {
      const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch());
      const auto range = detail::sample_range(now_ms, q.window, opts_.samples);
      target.params().append(boost::urls::param_view("start", range.start));
      target.params().append(boost::urls::param_view("end", range.end));
      target.params().append(boost::urls::param_view("step", range.step));
    }
    auto r = co_await detail::with_timeout(SteadyClock{}, opts_.timeout, fetch(std::string(target.buffer())));
    if (!r) co_return Error(errc::timeout, detail::format("prometheus query {} timed out after {}", q.name, format_duration(opts_.timeout)));
    if (!*r) co_return Error(r->error().code, detail::format("{} (query {})", r->error().message, q.name));
    co_return detail::decode_prometheus(**r, q.want, opts_.non_finite_is_no_data);
  }

  const PrometheusOptions& options() const noexcept { return opts_; }

private:
  boost::asio::awaitable<result<std::string>> fetch(std::string target) {
    namespace asio = boost::asio;
    namespace beast = boost::beast;
    namespace http = beast::http;
    beast::tcp_stream stream(co_await asio::this_coro::executor);
    if (auto err = co_await detail::http_connect(stream, opts_.server, opts_.timeout)) {
      co_return Error(errc::query_failed, detail::format("prometheus: {}", *err));
    }
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, detail::format("{}", opts_.server));  // `[::1]:9090` for an IPv6 address
    req.set(http::field::user_agent, "rollout");
    req.set(http::field::accept, "application/json");
    if (opts_.bearer_token) req.set(http::field::authorization, "Bearer " + *opts_.bearer_token);
    auto [wec, wn] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    if (wec) co_return Error(errc::query_failed, detail::format("prometheus: {}", detail::describe_http_error(wec, opts_.timeout)));
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(opts_.max_response);
    auto [rec, rn] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return Error(errc::protocol_error, detail::format("prometheus: {}", detail::describe_http_error(rec, opts_.timeout)));
    auto res = parser.release();
    const auto status = res.result_int();
    // Prometheus answers errors (400 bad_data, 422 execution, 503 timeout) with its JSON envelope.
    if (status != 200 && res[http::field::content_type].find("json") == std::string_view::npos) {
      co_return Error(status == 401 || status == 403 ? errc::permission_denied : errc::query_failed,
                      detail::format("prometheus: HTTP {}", status));
    }
    co_return std::move(res.body());
  }

  PrometheusOptions opts_;
};

static_assert(MetricsSource<PrometheusSource>);

}  // namespace rollout

/// Formats the options on one line; the bearer token prints as `<redacted>`.
template <>
struct fmt::formatter<rollout::PrometheusOptions> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::PrometheusOptions& o, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("prometheus at {}{}, timeout {}{}", o.server, o.path_prefix, rollout::format_duration(o.timeout),
                                o.bearer_token ? ", bearer token <redacted>" : ""),
        ctx);
  }
};
