// Every option field at its boundaries: 0, negative, the largest value of its
// type, durations just above max_option_duration and at Duration::max(), Percent
// above 100%, empty names and vectors, non-finite doubles. Each bad value is
// rejected with an invalid_option whose field() and value() name it; each value
// at the edge of the valid range is accepted.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/counter_source.hpp>
#include <rollout/haproxy.hpp>
#include <rollout/http_probe.hpp>
#include <rollout/process_orchestrator.hpp>
#include <rollout/strategy/blue_green.hpp>
#include <rollout/strategy/canary.hpp>
#include <rollout/strategy/rolling.hpp>
#include <rollout/tcp_probe.hpp>
#include <rollout/testing/testing.hpp>
#if ROLLOUT_WITH_PROMETHEUS
#include <rollout/prometheus.hpp>
#include <rollout/webhook.hpp>
#endif

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;
using testing::SimClock;

namespace {

constexpr Duration beyond = max_option_duration + std::chrono::seconds(1);
// Percent constants at namespace scope: clang 14 does not evaluate the consteval
// _pct literal inside generic lambdas and function templates (it emits a call).
constexpr Percent pct0 = 0_pct, pct5 = 5_pct, pct10 = 10_pct, pct20 = 20_pct, pct50 = 50_pct, pct100 = 100_pct;
constexpr double nan = std::numeric_limits<double>::quiet_NaN();
constexpr double inf = std::numeric_limits<double>::infinity();

/// One bad value: `make` must throw invalid_option naming `field` and `value`.
struct Bad {
  std::string field;
  std::string value;
  std::function<void()> make;
};

/// The objects under test, each built from defaults plus one change.
template <class F>
void bg(F mutate) {
  SimClock clock;
  testing::ScriptedLoadBalancer<> lb{clock, TrafficSplit::of({{"blue", Percent::full()}, {"green", Percent{}}})};
  testing::ScriptedProbe<> probe{clock};
  Environment blue{"blue", {"v1"}, {{"b-0", {"v1"}, {"10.0.0.1", 8000}}}};
  Environment green{"green", {"v2"}, {{"g-0", {"v2"}, {"10.0.0.2", 8000}}, {"g-1", {"v2"}, {"10.0.0.2", 8001}}}};
  BlueGreenOptions o;
  mutate(o, blue, green);
  BlueGreen<testing::ScriptedLoadBalancer<>, testing::ScriptedProbe<>, SimClock> b(lb, probe, blue, green, o, clock);
}
template <class F>
void bg_opt(F mutate) {
  bg([&](BlueGreenOptions& o, Environment&, Environment&) { mutate(o); });
}

MetricCheck metric() {
  MetricCheck m;
  m.name = "error-rate";
  m.query = MetricQuery{"error-rate", "sum(rate(errors[1m]))", 1min, MetricQuery::Want::value};
  m.interval = 1min;
  m.count = 3;
  m.failure_condition = Condition::above(0.05);
  return m;
}

template <class F>
void canary(F mutate) {
  SimClock clock;
  testing::ScriptedLoadBalancer<> lb{clock, TrafficSplit::of({{"stable", Percent::full()}, {"canary", Percent{}}})};
  testing::ScriptedMetrics<> metrics{clock};
  CanaryOptions o;
  Revision stable{"v1"}, next{"v2"};
  mutate(o, stable, next);
  Canary<testing::ScriptedLoadBalancer<>, testing::ScriptedMetrics<>, SimClock> c(
      lb, metrics, stable, next, CanaryPlan::of({steps::set_weight(pct10), steps::pause(1min)}), o, clock);
}
template <class F>
void canary_opt(F mutate) {
  canary([&](CanaryOptions& o, Revision&, Revision&) { mutate(o); });
}
// A metric check inside an analysis step: field names start with steps[1].analysis.metrics[0].
template <class F>
void check(F mutate) {
  auto m = metric();
  mutate(m);
  CanaryPlan::of({steps::set_weight(pct10), steps::analyze(AnalysisSpec{"a", {m}})});
}
template <class F>
void judge(F mutate) {
  auto m = metric();
  m.failure_condition.reset();
  JudgeSpec j;
  JudgeMetric jm;
  jm.name = "latency";
  jm.query = MetricQuery{"latency", "q", 1min, MetricQuery::Want::samples};
  j.metrics.push_back(jm);
  mutate(j);
  m.judge = j;
  CanaryPlan::of({steps::set_weight(pct10), steps::analyze(AnalysisSpec{"a", {m}})});
}

template <class F>
void rolling(F mutate) {
  SimClock clock;
  testing::FakeOrchestrator<> orch{clock};
  RollingOptions o;
  o.desired = 4;
  Revision from{"v1"}, to{"v2"};
  mutate(o, from, to);
  Rolling<testing::FakeOrchestrator<>, SimClock> r(orch, from, to, o, clock);
}
template <class F>
void rolling_opt(F mutate) {
  rolling([&](RollingOptions& o, Revision&, Revision&) { mutate(o); });
}

template <class F>
void http(F mutate) {
  HttpProbeOptions o;
  mutate(o);
  HttpProbe p(o);
}
template <class F>
void haproxy(F mutate) {
  HaproxyOptions o;
  o.address.unix_socket = "/run/haproxy.sock";
  o.groups["blue"] = {{"app", "blue1"}};
  mutate(o);
  HaproxyLoadBalancer lb(o);
}
template <class F>
void counter(F mutate) {
  CounterSourceOptions o;
  mutate(o);
  CounterSource<SimClock> c(o, SimClock{});
}
template <class F>
void process(F mutate) {
  ProcessOrchestratorOptions o;
  o.executable = "/usr/bin/true";
  mutate(o);
  o.validate();
}

constexpr auto i64max = std::numeric_limits<std::int64_t>::max();
constexpr auto i64min = std::numeric_limits<std::int64_t>::min();
constexpr auto imax = std::numeric_limits<int>::max();

std::vector<Bad> bad_values() {
  std::vector<Bad> v{
      // ---- BlueGreenOptions and its ProbeSpec and Backoff
      {"probe.initial_delay", "-1s", [] { bg_opt([](auto& o) { o.probe.initial_delay = -1s; }); }},
      {"probe.initial_delay", "8784h0m1s", [] { bg_opt([](auto& o) { o.probe.initial_delay = beyond; }); }},
      {"probe.period", "0s", [] { bg_opt([](auto& o) { o.probe.period = 0s; }); }},
      {"probe.period", "-1ms", [] { bg_opt([](auto& o) { o.probe.period = -1ms; }); }},
      {"probe.period", "forever", [] { bg_opt([](auto& o) { o.probe.period = Duration::max(); }); }},
      {"probe.timeout", "0s", [] { bg_opt([](auto& o) { o.probe.timeout = 0s; }); }},
      {"probe.timeout", "-forever", [] { bg_opt([](auto& o) { o.probe.timeout = Duration::min(); }); }},
      {"probe.success_threshold", "0", [] { bg_opt([](auto& o) { o.probe.success_threshold = 0; }); }},
      {"probe.success_threshold", "-2147483648", [] { bg_opt([](auto& o) { o.probe.success_threshold = std::numeric_limits<int>::min(); }); }},
      {"probe.failure_threshold", "0", [] { bg_opt([](auto& o) { o.probe.failure_threshold = 0; }); }},
      {"probe.failure_threshold", "-1", [] { bg_opt([](auto& o) { o.probe.failure_threshold = -1; }); }},
      {"probe_concurrency", "0", [] { bg_opt([](auto& o) { o.probe_concurrency = 0; }); }},
      {"ready_deadline", "0s", [] { bg_opt([](auto& o) { o.ready_deadline = 0s; }); }},
      {"ready_deadline", "forever", [] { bg_opt([](auto& o) { o.ready_deadline = Duration::max(); }); }},
      {"auto_promote_after", "-1ms", [] { bg_opt([](auto& o) { o.auto_promote_after = -1ms; }); }},
      {"auto_promote_after", "8784h0m1s", [] { bg_opt([](auto& o) { o.auto_promote_after = beyond; }); }},
      {"verify_for", "-30s", [] { bg_opt([](auto& o) { o.verify_for = -30s; }); }},
      {"verify_for", "forever", [] { bg_opt([](auto& o) { o.verify_for = Duration::max(); }); }},
      {"check_timeout", "0s", [] { bg_opt([](auto& o) { o.check_timeout = 0s; }); }},
      {"check_timeout", "8784h0m1s", [] { bg_opt([](auto& o) { o.check_timeout = beyond; }); }},
      {"scale_down_delay", "-1m", [] { bg_opt([](auto& o) { o.scale_down_delay = -1min; }); }},
      {"scale_down_delay", "forever", [] { bg_opt([](auto& o) { o.scale_down_delay = Duration::max(); }); }},
      {"lb_timeout", "0s", [] { bg_opt([](auto& o) { o.lb_timeout = 0s; }); }},
      {"lb_timeout", "forever", [] { bg_opt([](auto& o) { o.lb_timeout = Duration::max(); }); }},
      {"lb_retry.max_attempts", "0", [] { bg_opt([](auto& o) { o.lb_retry.max_attempts = 0; }); }},
      {"lb_retry.max_attempts", "-1", [] { bg_opt([](auto& o) { o.lb_retry.max_attempts = -1; }); }},
      {"lb_retry.initial", "0s", [] { bg_opt([](auto& o) { o.lb_retry.initial = 0s; }); }},
      {"lb_retry.max_delay", "100ms", [] { bg_opt([](auto& o) { o.lb_retry.max_delay = 100ms; }); }},
      {"lb_retry.max_delay", "forever", [] { bg_opt([](auto& o) { o.lb_retry.max_delay = Duration::max(); }); }},
      {"lb_retry.multiplier", "0.5", [] { bg_opt([](auto& o) { o.lb_retry.multiplier = 0.5; }); }},
      {"lb_retry.multiplier", "nan", [] { bg_opt([](auto& o) { o.lb_retry.multiplier = nan; }); }},
      {"lb_retry.multiplier", "inf", [] { bg_opt([](auto& o) { o.lb_retry.multiplier = inf; }); }},
      {"lb_retry.jitter", "-0.1", [] { bg_opt([](auto& o) { o.lb_retry.jitter = -0.1; }); }},
      {"lb_retry.jitter", "1.5", [] { bg_opt([](auto& o) { o.lb_retry.jitter = 1.5; }); }},
      {"lb_retry.jitter", "nan", [] { bg_opt([](auto& o) { o.lb_retry.jitter = nan; }); }},
      // ---- the environments
      {"active.name", "\"\"", [] { bg([](auto&, auto& b, auto&) { b.name.clear(); }); }},
      {"target.name", "\"blue\"", [] { bg([](auto&, auto&, auto& g) { g.name = "blue"; }); }},
      {"target.instances", "[]", [] { bg([](auto&, auto&, auto& g) { g.instances.clear(); }); }},
      {"target.instances[1].id", "\"g-0\"", [] { bg([](auto&, auto&, auto& g) { g.instances[1].id = "g-0"; }); }},
      // ---- CanaryOptions, plans, metric checks and the judge
      {"stable_group", "\"\"", [] { canary_opt([](auto& o) { o.stable_group.clear(); }); }},
      {"canary_group", "\"\"", [] { canary_opt([](auto& o) { o.canary_group.clear(); }); }},
      {"canary_group", "\"stable\"", [] { canary_opt([](auto& o) { o.canary_group = "stable"; }); }},
      {"baseline_group", "\"canary\"", [] { canary_opt([](auto& o) { o.baseline_group = "canary"; }); }},
      {"baseline_group", "\"\"", [] { canary_opt([](auto& o) { o.baseline_group = ""; }); }},
      {"lb_timeout", "0s", [] { canary_opt([](auto& o) { o.lb_timeout = 0s; }); }},
      {"lb_timeout", "forever", [] { canary_opt([](auto& o) { o.lb_timeout = Duration::max(); }); }},
      {"lb_retry.max_attempts", "0", [] { canary_opt([](auto& o) { o.lb_retry.max_attempts = 0; }); }},
      {"background.start_step", "2", [] { canary_opt([](auto& o) { o.background = BackgroundAnalysis{AnalysisSpec{"bg", {metric()}}, 2}; }); }},
      {"background.start_step", "18446744073709551615", [] {
         canary_opt([](auto& o) { o.background = BackgroundAnalysis{AnalysisSpec{"bg", {metric()}}, std::numeric_limits<std::size_t>::max()}; });
       }},
      {"background.analysis.metrics", "[]", [] { canary_opt([](auto& o) { o.background = BackgroundAnalysis{AnalysisSpec{"bg", {}}, 0}; }); }},
      {"stable", "\"\"", [] { canary([](auto&, auto& s, auto&) { s.id.clear(); }); }},
      {"canary", "\"v1\"", [] { canary([](auto&, auto&, auto& n) { n.id = "v1"; }); }},
      {"steps", "[]", [] { CanaryPlan::of({}); }},
      {"steps[1].weight", "10%", [] { CanaryPlan::of({steps::set_weight(pct20), steps::set_weight(pct10)}); }},
      {"steps[0].duration", "0s", [] { CanaryPlan::of({steps::pause(0s)}); }},
      {"steps[0].duration", "-1m", [] { CanaryPlan::of({steps::pause(-1min)}); }},
      {"steps[0].duration", "8784h0m1s", [] { CanaryPlan::of({steps::pause(beyond)}); }},
      {"steps[0].duration", "forever", [] { CanaryPlan::of({steps::pause(Duration::max())}); }},
      {"steps[0].analysis.metrics", "[]", [] { CanaryPlan::of({steps::analyze(AnalysisSpec{"a", {}})}); }},
      {"step_weight", "0%", [] { CanaryPlan::linear(pct0, pct50, 1min); }},
      {"max_weight", "10%", [] { CanaryPlan::linear(pct20, pct10, 1min); }},
      {"interval", "0s", [] { CanaryPlan::linear(pct10, pct50, 0s); }},
      {"interval", "forever", [] { CanaryPlan::weights({pct5}, Duration::max()); }},
      {"step_weights", "[]", [] { CanaryPlan::weights({}, 1min); }},
      {"weight", "101%", [] { (void)Percent::from_percent(101, "weight"); }},
      {"weight", "-1%", [] { (void)Percent::from_percent(-1, "weight"); }},
      {"weight", "9223372036854775807%", [] { (void)Percent::from_percent(i64max, "weight"); }},
      {"weight", "10001 basis points", [] { (void)Percent::from_basis_points(10001, "weight"); }},
      {"weight", "-9223372036854775808 basis points", [] { (void)Percent::from_basis_points(i64min, "weight"); }},
      {"steps[1].analysis.metrics[0].name", "\"\"", [] { check([](auto& m) { m.name.clear(); }); }},
      {"steps[1].analysis.metrics[0].interval", "0s", [] { check([](auto& m) { m.interval = 0s; }); }},
      {"steps[1].analysis.metrics[0].interval", "-1s", [] { check([](auto& m) { m.interval = -1s; }); }},
      {"steps[1].analysis.metrics[0].interval", "forever", [] { check([](auto& m) { m.interval = Duration::max(); }); }},
      {"steps[1].analysis.metrics[0].count", "0", [] { check([](auto& m) { m.count = 0; }); }},
      {"steps[1].analysis.metrics[0].count", "-2147483648", [] { check([](auto& m) { m.count = std::numeric_limits<int>::min(); }); }},
      {"steps[1].analysis.metrics[0].count", "2147483647", [] { check([](auto& m) { m.count = imax; m.interval.reset(); }); }},
      {"steps[1].analysis.metrics[0].initial_delay", "-1s", [] { check([](auto& m) { m.initial_delay = -1s; }); }},
      {"steps[1].analysis.metrics[0].initial_delay", "8784h0m1s", [] { check([](auto& m) { m.initial_delay = beyond; }); }},
      {"steps[1].analysis.metrics[0].failure_limit", "-2", [] { check([](auto& m) { m.failure_limit = -2; }); }},
      {"steps[1].analysis.metrics[0].inconclusive_limit", "-1", [] { check([](auto& m) { m.inconclusive_limit = -1; }); }},
      {"steps[1].analysis.metrics[0].consecutive_error_limit", "-1", [] { check([](auto& m) { m.consecutive_error_limit = -1; }); }},
      {"steps[1].analysis.metrics[0].consecutive_success_limit", "-1", [] { check([](auto& m) { m.consecutive_success_limit = -1; }); }},
      {"steps[1].analysis.metrics[0].timeout", "0s", [] { check([](auto& m) { m.timeout = 0s; }); }},
      {"steps[1].analysis.metrics[0].timeout", "forever", [] { check([](auto& m) { m.timeout = Duration::max(); }); }},
      {"steps[1].analysis.metrics[0].success_condition", "none", [] { check([](auto& m) { m.failure_condition.reset(); }); }},
      {"steps[1].analysis.metrics[0].judge.metrics", "[]", [] { judge([](auto& j) { j.metrics.clear(); }); }},
      {"steps[1].analysis.metrics[0].judge.confidence", "0", [] { judge([](auto& j) { j.confidence = 0; }); }},
      {"steps[1].analysis.metrics[0].judge.confidence", "1", [] { judge([](auto& j) { j.confidence = 1; }); }},
      {"steps[1].analysis.metrics[0].judge.confidence", "nan", [] { judge([](auto& j) { j.confidence = nan; }); }},
      {"steps[1].analysis.metrics[0].judge.pass_score", "101 (marginal 75)", [] { judge([](auto& j) { j.pass_score = 101; }); }},
      {"steps[1].analysis.metrics[0].judge.pass_score", "90 (marginal -1)", [] { judge([](auto& j) { j.marginal_score = -1; }); }},
      {"steps[1].analysis.metrics[0].judge.metrics[0].weight", "0", [] { judge([](auto& j) { j.metrics[0].weight = 0; }); }},
      {"steps[1].analysis.metrics[0].judge.metrics[0].weight", "inf", [] { judge([](auto& j) { j.metrics[0].weight = inf; }); }},
      {"steps[1].analysis.metrics[0].query.expr", "\"\"", [] { check([](auto& m) { m.query.expr.clear(); }); }},
      {"steps[1].analysis.metrics[0].judge.min_samples", "0", [] { judge([](auto& j) { j.min_samples = 0; }); }},
      {"steps[1].analysis.metrics[0].judge.metrics[0].name", "\"\"", [] { judge([](auto& j) { j.metrics[0].name.clear(); }); }},
      {"steps[1].analysis.metrics[0].judge.metrics[0].tolerance", "-0.1", [] { judge([](auto& j) { j.metrics[0].tolerance = -0.1; }); }},
      {"steps[1].analysis.metrics[0].judge.metrics[0].tolerance", "nan", [] { judge([](auto& j) { j.metrics[0].tolerance = nan; }); }},
      // ---- RollingOptions
      {"desired", "0", [] { rolling_opt([](auto& o) { o.desired = 0; }); }},
      {"desired", "-1", [] { rolling_opt([](auto& o) { o.desired = -1; }); }},
      {"desired", "9223372036854775807", [] { rolling_opt([](auto& o) { o.desired = i64max; }); }},
      {"desired", "1000001", [] { rolling_opt([](auto& o) { o.desired = 1'000'001; }); }},
      {"max_surge", "-1", [] { rolling_opt([](auto& o) { o.max_surge = -1; }); }},
      {"max_surge", "9223372036854775807", [] { rolling_opt([](auto& o) { o.max_surge = i64max; }); }},
      {"max_unavailable", "-9223372036854775808", [] { rolling_opt([](auto& o) { o.max_unavailable = i64min; }); }},
      {"max_surge", "0 (max_unavailable 0%)", [] { rolling_opt([](auto& o) { o.max_surge = 0; o.max_unavailable = pct0; }); }},
      {"min_ready", "-1s", [] { rolling_opt([](auto& o) { o.min_ready = -1s; }); }},
      {"min_ready", "forever", [] { rolling_opt([](auto& o) { o.min_ready = Duration::max(); }); }},
      {"ready_deadline", "0s", [] { rolling_opt([](auto& o) { o.ready_deadline = 0s; }); }},
      {"ready_deadline", "8784h0m1s", [] { rolling_opt([](auto& o) { o.ready_deadline = beyond; }); }},
      {"max_failed_instances", "0", [] { rolling_opt([](auto& o) { o.max_failed_instances = 0; }); }},
      {"progress_deadline", "0s", [] { rolling_opt([](auto& o) { o.progress_deadline = 0s; }); }},
      {"progress_deadline", "forever", [] { rolling_opt([](auto& o) { o.progress_deadline = Duration::max(); }); }},
      {"partition", "-1", [] { rolling_opt([](auto& o) { o.partition = -1; }); }},
      {"partition", "5", [] { rolling_opt([](auto& o) { o.partition = 5; }); }},
      {"call_timeout", "0s", [] { rolling_opt([](auto& o) { o.call_timeout = 0s; }); }},
      {"call_timeout", "forever", [] { rolling_opt([](auto& o) { o.call_timeout = Duration::max(); }); }},
      {"retry.initial", "-1ms", [] { rolling_opt([](auto& o) { o.retry.initial = -1ms; }); }},
      {"burst", "0", [] { rolling_opt([](auto& o) { o.burst = 0; }); }},
      {"burst", "9223372036854775807", [] { rolling_opt([](auto& o) { o.burst = i64max; }); }},
      {"from", "\"\"", [] { rolling([](auto&, auto& f, auto&) { f.id.clear(); }); }},
      {"to", "\"v1\"", [] { rolling([](auto&, auto&, auto& t) { t.id = "v1"; }); }},
      // ---- HttpProbe
      {"path", "\"\"", [] { http([](auto& o) { o.path.clear(); }); }},
      {"path", "\"health\"", [] { http([](auto& o) { o.path = "health"; }); }},
      {"path", "\"/a b\"", [] { http([](auto& o) { o.path = "/a b"; }); }},
      {"path", "\"/h\\r\\nHost: evil\"", [] { http([](auto& o) { o.path = "/h\r\nHost: evil"; }); }},
      {"min_status", "0..399", [] { http([](auto& o) { o.min_status = 0; }); }},
      {"min_status", "200..600", [] { http([](auto& o) { o.max_status = 600; }); }},
      {"min_status", "400..399", [] { http([](auto& o) { o.min_status = 400; }); }},
      {"headers[0].name", "\"\"", [] { http([](auto& o) { o.headers = {{"", "x"}}; }); }},
      {"headers[0].name", "\"X Y\"", [] { http([](auto& o) { o.headers = {{"X Y", "x"}}; }); }},
      {"headers[0].value", "<redacted>", [] { http([](auto& o) { o.headers = {{"Authorization", "Bearer t\r\nX: y"}}; }); }},
      {"timeout", "0s", [] { http([](auto& o) { o.timeout = 0s; }); }},
      {"timeout", "forever", [] { http([](auto& o) { o.timeout = Duration::max(); }); }},
      {"max_idle_per_endpoint", "0", [] { http([](auto& o) { o.max_idle_per_endpoint = 0; }); }},
      {"idle_timeout", "0s", [] { http([](auto& o) { o.idle_timeout = 0s; }); }},
      {"idle_timeout", "forever", [] { http([](auto& o) { o.idle_timeout = Duration::max(); }); }},
      {"body_limit", "0", [] { http([](auto& o) { o.body_limit = 0; }); }},
      {"header_limit", "0", [] { http([](auto& o) { o.header_limit = 0; }); }},
      {"timeout", "0s", [] { TcpProbe p(0s); }},
      {"timeout", "8784h0m1s", [] { TcpProbe p(beyond); }},
      // ---- HaproxyLoadBalancer (names are covered in test_haproxy too)
      {"address", "{}", [] { haproxy([](auto& o) { o.address.unix_socket.clear(); }); }},
      {"command_timeout", "0s", [] { haproxy([](auto& o) { o.command_timeout = 0s; }); }},
      {"command_timeout", "forever", [] { haproxy([](auto& o) { o.command_timeout = Duration::max(); }); }},
      {"groups", "\"\"", [] { haproxy([](auto& o) { o.groups[""] = {{"app", "s1"}}; }); }},
      {"groups[blue][0].backend", "\"\"", [] { haproxy([](auto& o) { o.groups["blue"] = {{"", "s1"}}; }); }},
      {"groups[blue][0].server", "\"s1; shutdown sessions\"", [] { haproxy([](auto& o) { o.groups["blue"] = {{"app", "s1; shutdown sessions"}}; }); }},
      // ---- CounterSource and ProcessOrchestrator
      {"bucket", "0s", [] { counter([](auto& o) { o.bucket = 0s; }); }},
      {"bucket", "forever", [] { counter([](auto& o) { o.bucket = Duration::max(); }); }},
      {"buckets", "1", [] { counter([](auto& o) { o.buckets = 1; }); }},
      {"buckets", "18446744073709551615", [] { counter([](auto& o) { o.buckets = std::numeric_limits<std::size_t>::max(); }); }},
      {"latency_samples", "0", [] { counter([](auto& o) { o.latency_samples = 0; }); }},
      {"latency_samples", "18446744073709551615", [] { counter([](auto& o) { o.latency_samples = std::numeric_limits<std::size_t>::max(); }); }},
      {"executable", "\"\"", [] { process([](auto& o) { o.executable.clear(); }); }},
      {"executable", "\"bin/service\"", [] { process([](auto& o) { o.executable = "bin/service"; }); }},
      {"ready_poll", "0s", [] { process([](auto& o) { o.ready_poll = 0s; }); }},
      {"watch_probes", "0", [] { process([](auto& o) { o.watch_probes = 0; }); }},
      {"drain", "-1s", [] { process([](auto& o) { o.drain = -1s; }); }},
      {"drain", "forever", [] { process([](auto& o) { o.drain = Duration::max(); }); }},
      {"grace", "0s", [] { process([](auto& o) { o.grace = 0s; }); }},
  };
#if ROLLOUT_WITH_PROMETHEUS
  auto prom = [](auto mutate) {
    PrometheusOptions o;
    mutate(o);
    PrometheusSource s(o);
  };
  auto hook = [](auto mutate) {
    WebhookOptions o;
    o.urls = {"http://127.0.0.1:9/hook"};
    mutate(o);
    WebhookNotifier n(o);
  };
  std::vector<Bad> more{
      {"server.host", "\"\"", [prom] { prom([](auto& o) { o.server.host.clear(); }); }},
      {"timeout", "0s", [prom] { prom([](auto& o) { o.timeout = 0s; }); }},
      {"timeout", "forever", [prom] { prom([](auto& o) { o.timeout = Duration::max(); }); }},
      {"samples", "1", [prom] { prom([](auto& o) { o.samples = 1; }); }},
      {"samples", "11001", [prom] { prom([](auto& o) { o.samples = 11001; }); }},
      {"max_response", "0", [prom] { prom([](auto& o) { o.max_response = 0; }); }},
      {"path_prefix", "\"prom\"", [prom] { prom([](auto& o) { o.path_prefix = "prom"; }); }},
      {"path_prefix", "\"/p q\"", [prom] { prom([](auto& o) { o.path_prefix = "/p q"; }); }},
      {"bearer_token", "<redacted>", [prom] { prom([](auto& o) { o.bearer_token = "secret\r\nX-Evil: 1"; }); }},
      {"queue_limit", "0", [hook] { hook([](auto& o) { o.queue_limit = 0; }); }},
      {"timeout", "0s", [hook] { hook([](auto& o) { o.timeout = 0s; }); }},
      {"timeout", "8784h0m1s", [hook] { hook([](auto& o) { o.timeout = beyond; }); }},
      {"retry.max_attempts", "0", [hook] { hook([](auto& o) { o.retry.max_attempts = 0; }); }},
      {"urls[0]", "\"ftp://127.0.0.1/x\"", [hook] { hook([](auto& o) { o.urls = {"ftp://127.0.0.1/x"}; }); }},
      {"urls[0]", "\"\"", [hook] { hook([](auto& o) { o.urls = {""}; }); }},
      {"headers[0].value", "<redacted>", [hook] { hook([](auto& o) { o.headers = {{"Authorization", "Bearer a\nb"}}; }); }},
  };
  v.insert(v.end(), more.begin(), more.end());
#endif
  return v;
}

}  // namespace

TEST_CASE("every option field at its boundaries is rejected, naming the field and the value") {
  std::size_t tried = 0;
  for (const auto& b : bad_values()) {
    CAPTURE(b.field);
    CAPTURE(b.value);
    ++tried;
    std::string got = "accepted";
    try {
      b.make();
    } catch (const invalid_option& e) {
      CHECK(e.field() == b.field);
      CHECK(e.value() == b.value);
      got = e.what();
      CHECK(got.find(fmt::format("invalid option {} = {}: ", b.field, b.value)) == 0);
      if (b.value == "<redacted>") CHECK(got.find("secret") == std::string::npos);
    }
    CHECK_MESSAGE(got != "accepted", "accepted a bad value");
  }
  MESSAGE(fmt::format("{} bad option values tried, each rejected with its field and value", tried));
  CHECK(tried > 150);
}

TEST_CASE("the values at the edges of each range are accepted") {
  // Each of these is the extreme that must still work.
  CHECK_NOTHROW(bg_opt([](auto& o) {
    o.probe.initial_delay = 0s;
    o.probe.period = max_option_duration;
    o.probe.timeout = 1ns;
    o.probe.success_threshold = std::numeric_limits<int>::max();
    o.verify_for = 0s;
    o.auto_promote_after = max_option_duration;
    o.scale_down_delay = 0s;
    o.lb_retry.max_attempts = 1;
    o.lb_retry.jitter = 1.0;
    o.lb_retry.multiplier = 1.0;
  }));
  CHECK_NOTHROW(CanaryPlan::of({steps::set_weight(Percent::from_basis_points(1)), steps::set_weight(pct100), steps::pause(max_option_duration)}));
  CHECK_NOTHROW((void)Percent::from_percent(100, "weight"));
  CHECK_NOTHROW((void)Percent::from_basis_points(0, "weight"));
  CHECK_NOTHROW(check([](auto& m) {
    m.failure_limit = -1;
    m.consecutive_error_limit = 0;
    m.timeout = max_option_duration;
  }));
  CHECK_NOTHROW(rolling_opt([](auto& o) {
    o.desired = RollingOptions::max_fleet;
    o.max_surge = RollingOptions::max_fleet;
    o.max_unavailable = 0;
    o.partition = RollingOptions::max_fleet;
  }));
  CHECK_NOTHROW(rolling_opt([](auto& o) {
    o.max_surge = 0;
    o.max_unavailable = pct100;
  }));
  CHECK_NOTHROW(http([](auto& o) {
    o.min_status = 100;
    o.max_status = 599;
  }));
  CHECK_NOTHROW(counter([](auto& o) { o.buckets = 2; }));
}
