// WebhookNotifier and LogObserver against real HTTP(S) servers: documents, a
// server that is down, a slow one, a full queue, HTTPS, and no secret in logs.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support/http_server.hpp"
#include "support/temp_dir.hpp"
#include "support/tls_server.hpp"

#include <rollout/exposition.hpp>
#include <rollout/log_observer.hpp>
#include <rollout/strategy/canary.hpp>
#include <rollout/testing/testing.hpp>
#include <rollout/webhook.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/parse.hpp>

#include <fmt/format.h>

#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using test_support::TestHttpServer;

namespace {

struct Receiver {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  TestHttpServer server{io, "receiver"};
  std::thread thread{[this] { io.run(); }};
  ~Receiver() {
    asio::post(io, [this] { server.stop(); });
    work.reset();
    thread.join();
  }
  std::string url(const std::string& path) const { return fmt::format("http://127.0.0.1:{}{}", server.port(), path); }
};

std::vector<Event> story() {
  return {
      {0s, EventKind::run_started, "canary", "v42", "canary v41 -> v42, 2 steps", std::nullopt, {}},
      {1s, EventKind::probe_failed, "canary", "c-0", "HTTP 503", std::nullopt, {}},  // not selected: not sent
      {2s, EventKind::traffic_applied, "canary", "", "verified", TrafficSplit::of({{"stable", 90_pct}, {"canary", 10_pct}}), {}},
      {5min, EventKind::rollback_started, "canary", "stable", "background analysis failed: error-rate 0.12 > 0.05", std::nullopt,
       make_error_code(errc::analysis_failed)},
      {5min + 5ms, EventKind::run_finished, "canary", "stable", "RolledBack: error-rate 0.12 > 0.05", std::nullopt,
       make_error_code(errc::analysis_failed)},
  };
}

void deliver(WebhookNotifier& n, const std::vector<Event>& events) {
  asio::io_context io;
  n.start(io.get_executor());
  for (const auto& e : events) n.on_event(e);
  bool done = false;
  asio::co_spawn(io, n.stop(), [&](std::exception_ptr e) {
    done = true;
    if (e) std::rethrow_exception(e);
  });
  while (!done) io.run_one();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("every state change is POSTed as JSON with strategy, revisions, weights and reason") {
  Receiver r;
  WebhookOptions o;
  o.urls = {r.url("/hook")};
  o.rollout = "checkout";
  o.headers = {{"Authorization", "Bearer hook-s3cr3t"}};
  WebhookNotifier n(o);
  n.map_group("canary", "v42");
  n.map_group("stable", "v41");
  deliver(n, story());
  CHECK(n.delivered() == 4);
  CHECK(n.failed() == 0);
  const auto got = r.server.received();
  REQUIRE(got.size() == 4);
  CHECK(got[0].authorization == "Bearer hook-s3cr3t");  // sent ...
  CHECK_FALSE(contains(fmt::format("{}", o), "hook-s3cr3t"));  // ... never printed
  MESSAGE("webhook document as received: " << got[2].body);
  auto doc = boost::json::parse(got[2].body).as_object();
  CHECK(doc["rollout"].as_string() == "checkout");
  CHECK(doc["strategy"].as_string() == "canary");
  CHECK(doc["event"].as_string() == "rollback_started");
  CHECK(doc["at_ms"].as_int64() == 300000);
  CHECK(doc["detail"].as_string() == "background analysis failed: error-rate 0.12 > 0.05");
  CHECK(doc["error"].as_string() == "analysis failed");
  CHECK(doc["weights"].as_object()["canary"].as_double() == doctest::Approx(0.1));
  CHECK(doc["revisions"].as_object()["canary"].as_string() == "v42");
  CHECK(boost::json::parse(got[0].body).as_object()["event"].as_string() == "run_started");
}

TEST_CASE("a URL with an IPv6 address is delivered to, with a bracketed Host header") {
  Receiver r;
  WebhookOptions o;
  // IPv4-mapped, so the traffic goes to 127.0.0.1; the URL's brackets are not part of the address.
  o.urls = {fmt::format("http://[::ffff:127.0.0.1]:{}/hook", r.server.port())};
  WebhookNotifier n(o);
  deliver(n, {story()[0]});
  CHECK(n.delivered() == 1);
  CHECK(n.last_error().empty());
  const auto got = r.server.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0].host == fmt::format("[::ffff:127.0.0.1]:{}", r.server.port()));
  CHECK(got[0].target == "/hook");
}

TEST_CASE("a receiver that is down: retried with backoff, then counted as failed") {
  WebhookOptions o;
  o.urls = {fmt::format("http://user:pw@127.0.0.1:{}/hook?token=abc", test_support::free_port())};
  o.retry.max_attempts = 3;
  o.retry.initial = 10ms;
  o.retry.max_delay = 20ms;
  WebhookNotifier n(o);
  deliver(n, story());
  CHECK(n.delivered() == 0);
  CHECK(n.failed() == 4);
  CHECK(contains(n.last_error(), "Connection refused"));
  CHECK_FALSE(contains(n.last_error(), "pw"));      // no credentials from the URL in messages
  CHECK_FALSE(contains(n.last_error(), "token"));
}

TEST_CASE("a slow receiver times out, and a full queue drops the oldest and counts it") {
  Receiver r;
  WebhookOptions o;
  o.urls = {r.url("/slow")};  // answers after 5 s
  o.timeout = 200ms;
  o.retry.max_attempts = 1;
  o.queue_limit = 3;
  o.kinds = {EventKind::step_completed};
  WebhookNotifier n(o);
  std::vector<Event> burst;
  for (int i = 0; i < 20; ++i) burst.push_back({std::chrono::seconds(i), EventKind::step_completed, "canary", fmt::format("steps[{}]", i), "", std::nullopt, {}});
  deliver(n, burst);  // all 20 arrive before the worker runs: only the newest 3 are kept
  CHECK(n.dropped() == 17);
  CHECK(n.failed() == 3);
  CHECK(contains(n.last_error(), "timed out after 200ms"));
}

TEST_CASE("HTTPS delivery verifies the receiver") {
  test_support::TestPki pki;
  asio::io_context io;
  test_support::TlsServer tls(io, pki);
  std::thread t([&] { io.run(); });
  WebhookOptions o;
  o.urls = {fmt::format("https://127.0.0.1:{}/hook", tls.port())};
  o.ca_file = pki.ca();
  WebhookNotifier n(o);
  deliver(n, story());
  WebhookOptions untrusted = o;
  untrusted.ca_file.clear();
  untrusted.retry.max_attempts = 1;
  WebhookNotifier refused(untrusted);
  deliver(refused, {story().front()});
  asio::post(io, [&] { tls.stop(); });
  t.join();
  CHECK(n.delivered() == 4);
  CHECK(tls.bodies.size() == 4);
  CHECK(refused.failed() == 1);
  CHECK(contains(refused.last_error(), "TLS handshake"));
}

TEST_CASE("invalid options, and the log observer's lines") {
  WebhookOptions bad;
  bad.urls = {"ftp://example.com/x"};
  CHECK_THROWS_WITH(WebhookNotifier{bad}, "invalid option urls[0] = \"ftp://example.com/x\": must be an http:// or https:// URL");
  bad.urls = {"http://127.0.0.1/x"};
  bad.headers = {{"X-Token", "a\r\nInjected: 1"}};
  CHECK_THROWS_AS(WebhookNotifier{bad}, invalid_option);
  std::vector<std::string> lines;
  LogObserver log("checkout", [&](std::string_view l) { lines.emplace_back(l); });
  for (const auto& e : story()) log.on_event(e);
  REQUIRE(lines.size() == 5);
  CHECK(lines[3] == "[checkout] +5m canary rollback_started stable: background analysis failed: error-rate 0.12 > 0.05 [analysis failed]");
}

TEST_CASE("a real canary run, observed by a webhook, the exposition and the log") {
  Receiver r;
  asio::io_context io;
  testing::SimClock clock;
  testing::ScriptedLoadBalancer<> lb(clock, TrafficSplit::of({{"stable", Percent::full()}, {"canary", Percent{}}}));
  testing::ScriptedMetrics<> metrics(clock);
  metrics.script("error-rate", ScopeRole::canary, [](std::size_t, const Scope&, TimePoint now) {
    return result<MetricValue>(MetricValue{now - TimePoint{} >= 3min ? 0.12 : 0.001});
  });
  MetricCheck m;
  m.name = "error-rate";
  m.query = MetricQuery{"error-rate", "error_rate", 1min, MetricQuery::Want::value};
  m.interval = 1min;
  m.failure_limit = 1;
  m.failure_condition = Condition::above(0.05);
  CanaryOptions opts;
  opts.background = BackgroundAnalysis{{"slo", {m}}, 1};
  Canary<testing::ScriptedLoadBalancer<>, testing::ScriptedMetrics<>, testing::SimClock> canary(
      lb, metrics, Revision{"v41"}, Revision{"v42"}, CanaryPlan::of({steps::set_weight(10_pct), steps::pause(1h)}), opts, clock);
  WebhookOptions wo;
  wo.urls = {r.url("/hook")};
  wo.rollout = "checkout";
  WebhookNotifier hook(wo);
  hook.map_group("canary", "v42");
  hook.map_group("stable", "v41");
  StatusExposition status("checkout");
  status.map_group("canary", "v42");
  status.map_group("stable", "v41");
  std::vector<std::string> log_lines;
  LogObserver log("checkout", [&](std::string_view l) { log_lines.emplace_back(l); });
  canary.observers().add(hook);
  canary.observers().add(status);
  canary.observers().add(log);
  hook.start(io.get_executor());
  auto out = testing::run_sim(io, clock, canary.run());
  CHECK(out.status == Status::rolled_back);
  bool done = false;
  asio::co_spawn(io, hook.stop(), [&](std::exception_ptr e) {
    done = true;
    if (e) std::rethrow_exception(e);
  });
  while (!done) io.run_one();
  const auto got = r.server.received();
  CHECK(hook.failed() == 0);
  REQUIRE(got.size() == hook.delivered());
  std::string docs;
  for (const auto& g : got) docs += g.body + "\n";
  const auto text = status.render();
  CHECK(contains(text, "rollout_outcome{rollout=\"checkout\",status=\"RolledBack\"} 1"));
  CHECK(contains(text, "rollout_traffic_weight{rollout=\"checkout\",group=\"canary\",revision=\"v42\"} 0"));
  CHECK(contains(text, "rollout_analysis_result{rollout=\"checkout\",metric=\"error-rate\",result=\"failed\"} 1"));
  CHECK(contains(docs, "\"event\":\"rollback_started\""));
  MESSAGE("webhook documents of the run:\n" << docs);
  MESSAGE("exposition after the run:\n" << text);
}
