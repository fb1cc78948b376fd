// PrometheusSource and StatusExposition against a real Prometheus 2.42 scraping a
// real /metrics endpoint every second, the decoding against hostile JSON, and a
// canary whose error counter rises failing its analysis on real data.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support/run.hpp"
#include "support/http_server.hpp"
#include "support/prometheus.hpp"
#include "support/temp_dir.hpp"

#include <rollout/exposition.hpp>
#include <rollout/prometheus.hpp>
#include <rollout/strategy/canary.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using test_support::PrometheusProcess;
using test_support::TestHttpServer;

using test_support::run;

namespace {

/// The scrape target, on its own thread.
struct Target {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  TestHttpServer server{io, "target"};
  std::thread thread{[this] { io.run(); }};
  ~Target() {
    asio::post(io, [this] { server.stop(); });
    work.reset();
    thread.join();
  }
};

MetricQuery value_query(std::string expr) { return MetricQuery{"m", std::move(expr), 1min, MetricQuery::Want::value}; }
Scope canary(const char* rev = "v2") { return Scope{ScopeRole::canary, Revision{rev}}; }
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char* app_metrics =
    "# TYPE app_requests_total counter\n"
    "app_requests_total{version=\"v1\"} 1000\n"
    "app_requests_total{version=\"v2\"} 250\n"
    "# TYPE app_latency_ms gauge\n"
    "app_latency_ms{version=\"v2\"} 12.5\n";

}  // namespace

TEST_CASE("queries against a real Prometheus: values, no data, errors, NaN, samples, and the exposition") {
  Target target;
  StatusExposition status("checkout");
  status.map_group("canary", "v2");
  status.map_group("stable", "v1");
  for (const auto& e : std::vector<Event>{
           {0s, EventKind::run_started, "canary", "v2", "", std::nullopt, {}},
           {0s, EventKind::phase_changed, "canary", "progressing", "", std::nullopt, {}},
           {1s, EventKind::traffic_applied, "canary", "", "", TrafficSplit::of({{"stable", 90_pct}, {"canary", 10_pct}}), {}},
           {2s, EventKind::metric_result, "canary", "error-rate", "no data (empty result): inconclusive (failed 0, inconclusive 1, consecutive errors 0)", std::nullopt, {}},
           {3s, EventKind::metric_result, "canary", "error-rate", "0.001: successful (failed 0, inconclusive 1, consecutive errors 0)", std::nullopt, {}}}) {
    status.on_event(e);
  }
  MESSAGE("exposition:\n" << status.render());
  target.server.set_metrics(std::string(app_metrics) + status.render());
  asio::io_context io;
  PrometheusProcess prom(io, target.server.port());
  prom.wait_for("app_latency_ms");
  prom.wait_for("rollout_traffic_weight");

  PrometheusOptions o;
  o.server = Endpoint{"127.0.0.1", prom.port()};
  o.bearer_token = "s3cr3t";  // Prometheus ignores it; it must never be printed
  PrometheusSource src(o);
  CHECK_FALSE(contains(fmt::format("{}", o), "s3cr3t"));

  auto v = run(io, src.query(value_query("app_latency_ms{version=\"$revision\"}"), canary()));
  REQUIRE_MESSAGE(v.has_value(), (v ? "" : v.error().message));
  CHECK(std::get<double>(*v) == 12.5);
  v = run(io, src.query(value_query("sum(app_requests_total)"), canary()));
  CHECK(std::get<double>(*v) == 1250);
  v = run(io, src.query(value_query("scalar(app_latency_ms{version=\"$revision\"})"), canary()));
  CHECK(std::get<double>(*v) == 12.5);

  auto empty = run(io, src.query(value_query("app_latency_ms{version=\"$revision\"}"), canary("v9")));
  REQUIRE(empty.has_value());
  CHECK(std::get<NoData>(*empty).why == "empty result");  // no data, not 0

  // A revision that tries to break out of the label matcher is escaped: still just no data.
  auto hostile = run(io, src.query(value_query("app_latency_ms{version=\"$revision\"}"), canary("v2\"} or vector(1) or {x=\"")));
  REQUIRE(hostile.has_value());
  CHECK(std::holds_alternative<NoData>(*hostile));

  auto bad = run(io, src.query(value_query("sum(app_latency_ms"), canary()));
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error() == errc::query_failed);
  CHECK(contains(bad.error().message, "prometheus: bad_data: "));

  auto nan = run(io, src.query(value_query("0/0"), canary()));
  REQUIRE(nan.has_value());
  CHECK(std::get<NoData>(*nan).why == "the result is NaN or infinite");

  auto many = run(io, src.query(value_query("app_requests_total"), canary()));
  REQUIRE_FALSE(many.has_value());
  CHECK(contains(many.error().message, "the query returned 2 series"));

  auto samples = run(io, src.query(MetricQuery{"m", "app_latency_ms{version=\"$revision\"}", 5s, MetricQuery::Want::samples}, canary()));
  REQUIRE(samples.has_value());
  REQUIRE_MESSAGE(std::holds_alternative<Samples>(*samples), (std::holds_alternative<NoData>(*samples) ? std::get<NoData>(*samples).why : "a value"));
  CHECK_FALSE(std::get<Samples>(*samples).empty());
  for (double s : std::get<Samples>(*samples)) CHECK(s == 12.5);

  // The exposition, as Prometheus scraped it.
  v = run(io, src.query(value_query("rollout_traffic_weight{rollout=\"checkout\",group=\"canary\",revision=\"v2\"}"), canary()));
  CHECK(std::get<double>(*v) == doctest::Approx(0.1));
  v = run(io, src.query(value_query("rollout_analysis_result{metric=\"error-rate\",result=\"successful\"}"), canary()));
  CHECK(std::get<double>(*v) == 1);
  v = run(io, src.query(value_query("rollout_phase{phase=\"progressing\",strategy=\"canary\"}"), canary()));
  CHECK(std::get<double>(*v) == 1);
  v = run(io, src.query(value_query("time() - rollout_last_transition_timestamp_seconds"), canary()));
  CHECK(std::get<double>(*v) < 120);

  PrometheusOptions down = o;
  down.server.port = test_support::free_port();
  auto unreachable = run(io, PrometheusSource(down).query(value_query("up"), canary()));
  REQUIRE_FALSE(unreachable.has_value());
  CHECK(contains(unreachable.error().message, "Connection refused"));
  CHECK_FALSE(contains(unreachable.error().message, "s3cr3t"));
}

TEST_CASE("a samples query ends at now, so the newest scrape is always in it") {
  using detail::sample_range;
  using std::chrono::milliseconds;
  const milliseconds now(1795708061375);
  // 5 s in 60 points: a step of 83 ms, the last point exactly now (not 20 ms before it).
  auto r = sample_range(now, 5s, 60);
  CHECK(r.end == "1795708061.375");
  CHECK(r.step == "0.083");
  CHECK(r.start == "1795708056.478");  // now - 59 * 83 ms
  r = sample_range(now, 1min, 60);
  CHECK(r.step == "1.000");
  CHECK(r.start == "1795708002.375");
  // A window shorter than the points: 1 ms steps, as many as fit.
  r = sample_range(now, 10ms, 60);
  CHECK(r.step == "0.001");
  CHECK(r.start == "1795708061.366");
  r = sample_range(milliseconds(5), 1s, 2);
  CHECK(r.start == "0.000");  // 5 ms - 500 ms would be negative: the start saturates at 0
}

TEST_CASE("decoding: every result type, and hostile JSON named by its path") {
  using detail::decode_prometheus;
  const auto V = MetricQuery::Want::value, S = MetricQuery::Want::samples;
  auto vec = decode_prometheus(R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}})", V, true);
  CHECK(std::get<double>(*vec) == 0.25);
  auto scalar = decode_prometheus(R"({"status":"success","data":{"resultType":"scalar","result":[1.5,"7"]}})", V, true);
  CHECK(std::get<double>(*scalar) == 7);
  auto matrix = decode_prometheus(
      R"({"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]},{"metric":{},"values":[[1,"3"]]}]}})", S, true);
  CHECK(std::get<Samples>(*matrix) == Samples{1, 2, 3});
  auto empty = decode_prometheus(R"({"status":"success","data":{"resultType":"vector","result":[]}})", V, true);
  CHECK(std::get<NoData>(*empty).why == "empty result");
  auto inf = decode_prometheus(R"({"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}})", V, true);
  CHECK(std::holds_alternative<NoData>(*inf));
  auto inf_kept = decode_prometheus(R"({"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}})", V, false);
  CHECK(std::isinf(std::get<double>(*inf_kept)));
  auto err = decode_prometheus(R"({"status":"error","errorType":"execution","error":"query timed out in expression evaluation"})", V, true);
  CHECK(err.error() == errc::query_failed);
  CHECK(err.error().message == "prometheus: execution: query timed out in expression evaluation");

  // Hostile shapes: each is a protocol error that says where.
  auto path = [&](const char* body) {
    auto r = decode_prometheus(body, V, true);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == errc::protocol_error);
    return r.error().message;
  };
  CHECK(path("not json") == "prometheus: response is not JSON: syntax error");
  CHECK(path("[1,2]") == "prometheus: response is not a JSON object");
  CHECK(path(R"({"status":5})") == "prometheus: \"status\" is missing or not a string");
  CHECK(path(R"({"status":"success"})") == "prometheus: \"data\" is missing or not an object");
  CHECK(path(R"({"status":"success","data":{"resultType":"vector","result":{}}})") == "prometheus: \"data.result\" is not an array");
  CHECK(path(R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,2]}]}})") ==
        "prometheus: data.result[0].value is not [timestamp, \"value\"]");
  CHECK(path(R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,"12abc"]}]}})") ==
        "prometheus: data.result[0].value has a value that is not a number: \"12abc\"");
  CHECK(path(R"({"status":"success","data":{"resultType":"string","result":[1,"x"]}})") == "prometheus: unsupported resultType \"string\"");
  std::string deep(100, '[');
  deep += std::string(100, ']');
  CHECK(contains(path(deep.c_str()), "response is not JSON"));  // nesting deeper than 32 is refused
  std::string deeper(100000, '{');  // no recursion: refused at depth 33, without a stack overflow
  CHECK(contains(path(deeper.c_str()), "response is not JSON"));

  // Wrong types and missing fields, each named by its path.
  const std::vector<std::pair<std::string, std::string>> shapes{
      {R"({"status":"success","data":[]})", "prometheus: \"data\" is missing or not an object"},
      {R"({"status":"success","data":{"result":[]}})", "prometheus: \"data.resultType\" is missing or not a string"},
      {R"({"status":"success","data":{"resultType":7,"result":[]}})", "prometheus: \"data.resultType\" is missing or not a string"},
      {R"({"status":"success","data":{"resultType":"vector"}})", "prometheus: \"data.result\" is missing"},
      {R"({"status":"success","data":{"resultType":"vector","result":[5]}})", "prometheus: data.result[0] is not an object"},
      {R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}})", "prometheus: data.result[0].value is missing"},
      {R"({"status":"success","data":{"resultType":"vector","result":[{"value":["1","2"]}]}})",
       "prometheus: data.result[0].value is not [timestamp, \"value\"]"},
      {R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,"2",3]}]}})",
       "prometheus: data.result[0].value is not [timestamp, \"value\"]"},
      {R"({"status":"success","data":{"resultType":"vector","result":[{"value":null}]}})",
       "prometheus: data.result[0].value is not [timestamp, \"value\"]"},
      {R"({"status":"success","data":{"resultType":"matrix","result":[{"values":{}}]}})",
       "prometheus: data.result[0].values is missing or not an array"},
      {R"({"status":"success","data":{"resultType":"scalar","result":"7"}})", "prometheus: data.result is not [timestamp, \"value\"]"},
      {R"({"status":"pending"})", "prometheus: unexpected status \"pending\""},
      {"{\"status\":\"success\"} trailing", "prometheus: response is not JSON: extra data"},
      {"{\"status\":\"succ\xff\"}", "prometheus: response is not JSON: syntax error"},
      {"", "prometheus: response is not JSON: incomplete JSON"},
  };
  for (const auto& shape : shapes) {  // (no structured binding: clang 14 cannot capture one in CAPTURE)
    const std::string& body = shape.first;
    CAPTURE(body);
    CHECK(path(body.c_str()) == shape.second);
  }
  // Numbers as strings, with junk: only what Prometheus writes is a number.
  for (const char* v : {" 12", "12 ", "0x10", "1e999", "-1e999", "inf", "-inf", "nan", "Infinity", "", "1,5", "+1", "1.2.3", "--1", "-",
                        "12abc", "\u0031\u0032x"}) {
    CAPTURE(v);
    CHECK(contains(path(fmt::format(R"({{"status":"success","data":{{"resultType":"scalar","result":[1,"{}"]}}}})", v).c_str()),
                   "has a value that is not a number"));
  }
  for (const auto& good : std::vector<std::pair<const char*, double>>{{"1", 1}, {"-2.5e-05", -2.5e-05}, {".5", 0.5}, {"1e308", 1e308}, {"0", 0}}) {
    const char* text = good.first;
    CAPTURE(text);
    auto r = decode_prometheus(fmt::format(R"({{"status":"success","data":{{"resultType":"scalar","result":[1,"{}"]}}}})", text), V, true);
    REQUIRE(r.has_value());
    CHECK(std::get<double>(*r) == good.second);
  }
  // An error reply with its fields missing or of the wrong type still says what it can.
  auto missing = decode_prometheus(R"({"status":"error","error":5})", V, true);
  CHECK(missing.error() == errc::query_failed);
  CHECK(missing.error().message == "prometheus: unknown: (no message)");
  // A huge array whose last point is bad is refused, naming the point.
  std::string bad_tail = R"({"status":"success","data":{"resultType":"matrix","result":[{"values":[)";
  for (int i = 0; i < 100000; ++i) bad_tail += fmt::format("[{},\"{}\"],", i, i);
  bad_tail += R"([1,"oops"]]}]}})";
  CHECK(path(bad_tail.c_str()) == "prometheus: data.result[0].values[100000] has a value that is not a number: \"oops\"");
  std::string huge = R"({"status":"success","data":{"resultType":"matrix","result":[{"values":[)";
  for (int i = 0; i < 100000; ++i) huge += fmt::format("{}[{},\"{}\"]", i ? "," : "", i, i);
  huge += "]}]}}";
  auto big = decode_prometheus(huge, S, true);
  REQUIRE(big.has_value());
  CHECK(std::get<Samples>(*big).size() == 100000);
}

TEST_CASE("a canary whose error counter rises fails its analysis on real Prometheus data") {
  Target target;
  std::atomic<bool> stop{false}, bad{false};
  std::thread counters([&] {
    long requests = 0, errors = 0;
    while (!stop) {
      requests += 20;
      if (bad) errors += 6;  // 30% errors once bad
      target.server.set_metrics(fmt::format("# TYPE app_requests_total counter\napp_requests_total{{version=\"v2\"}} {}\n"
                                            "# TYPE app_errors_total counter\napp_errors_total{{version=\"v2\"}} {}\n",
                                            requests, errors));
      std::this_thread::sleep_for(100ms);
    }
  });
  asio::io_context io;
  PrometheusProcess prom(io, target.server.port());
  prom.wait_for("app_requests_total");
  PrometheusOptions po;
  po.server = Endpoint{"127.0.0.1", prom.port()};
  PrometheusSource src(po);
  testing::ScriptedLoadBalancer<SteadyClock> lb(SteadyClock{}, TrafficSplit::of({{"stable", Percent::full()}, {"canary", Percent{}}}),
                                                 1ms);
  MetricCheck errors;
  errors.name = "error-rate";
  errors.query = MetricQuery{"error-rate",
                             "sum(increase(app_errors_total{version=\"$revision\"}[5s])) / sum(increase(app_requests_total{version=\"$revision\"}[5s]))",
                             5s, MetricQuery::Want::value};
  errors.interval = 1s;
  errors.failure_limit = 1;
  errors.inconclusive_limit = 1000;  // the first seconds may have no data yet
  errors.failure_condition = Condition::above(0.05);
  CanaryOptions opts;
  opts.background = BackgroundAnalysis{{"slo", {errors}}, 0};
  Canary<testing::ScriptedLoadBalancer<SteadyClock>, PrometheusSource> canary(
      lb, src, Revision{"v1"}, Revision{"v2"}, CanaryPlan::of({steps::set_weight(10_pct), steps::pause(2min)}), opts);
  std::thread turn_bad([&] {
    std::this_thread::sleep_for(4s);
    bad = true;
  });
  const auto started = std::chrono::steady_clock::now();
  auto out = run(io, canary.run());
  turn_bad.join();
  stop = true;
  counters.join();
  CHECK(out.status == Status::rolled_back);
  CHECK(out.code == make_error_code(errc::analysis_failed));
  CHECK(contains(out.reason, "metric error-rate failed"));
  CHECK(lb.state().sole_group() == "stable");
  MESSAGE(fmt::format("rolled back {} after start (bad from 4s): {}",
                      format_duration(std::chrono::steady_clock::now() - started), out.reason));
  CHECK(std::chrono::steady_clock::now() - started < 1min);  // long before the 2 min pause would have ended
}
