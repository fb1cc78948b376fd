// Metric analysis: the Mann-Whitney judge against textbook values, the judge's
// scoring, and Argo's measurement limits, under the simulated clock.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/analysis/mann_whitney.hpp>
#include <rollout/analysis/metric_analysis.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace std::chrono_literals;
using testing::SimClock;

TEST_CASE("Mann-Whitney U against textbook values") {
  // Source: SciPy documentation, scipy.stats.mannwhitneyu, "Examples" (ages at
  // diagnosis, males vs females), after R. Shier (2004), "Statistics: 2.3 The
  // Mann-Whitney U Test", Mathematics Learning Support Centre: U1 = 17, U2 = 3,
  // exact two-sided p = 0.1111..., asymptotic (continuity-corrected) p = 0.11134688653314041.
  const std::vector<double> males{19, 22, 16, 29, 24}, females{20, 11, 17, 12};
  auto exact = mann_whitney(males, females);
  CHECK(exact.exact);
  CHECK(exact.u1 == 17.0);
  CHECK(exact.u2 == 3.0);
  CHECK(exact.p_value == doctest::Approx(1.0 / 9.0).epsilon(1e-12));
  auto asym = mann_whitney(males, females, MannWhitneyMethod::asymptotic);
  CHECK_FALSE(asym.exact);
  CHECK(asym.z == doctest::Approx(6.5 / 4.08248290463863).epsilon(1e-12));
  CHECK(asym.p_value == doctest::Approx(0.11134688653314041).epsilon(1e-9));
  // Symmetric: swapping the samples swaps U1 and U2 and keeps p.
  auto swapped = mann_whitney(females, males);
  CHECK(swapped.u1 == 3.0);
  CHECK(swapped.p_value == doctest::Approx(exact.p_value));

  // Source: R, wilcox.test(c(1, 2, 3), c(4, 5, 6), exact = FALSE): W = 0, p-value = 0.08086;
  // the exact test gives 2 / C(6, 3) = 0.1.
  const std::vector<double> a{1, 2, 3}, b{4, 5, 6};
  CHECK(mann_whitney(a, b, MannWhitneyMethod::asymptotic).u1 == 0.0);
  CHECK(mann_whitney(a, b, MannWhitneyMethod::asymptotic).p_value == doctest::Approx(0.0808556).epsilon(1e-6));
  CHECK(mann_whitney(a, b).p_value == doctest::Approx(0.1).epsilon(1e-12));

  // Ties: midranks and the tie-corrected variance, worked by hand:
  // ranks 1, 3, 3 | 3, 5, 6 -> U1 = 1; var = 9/12 * (7 - 24/30) = 4.65;
  // z = (3.5 - 0.5) / sqrt(4.65) = 1.39122; p = 2 * (1 - Phi(1.39122)) = 0.1641597.
  const std::vector<double> tx{1, 2, 2}, ty{2, 3, 4};
  auto tied = mann_whitney(tx, ty);
  CHECK_FALSE(tied.exact);  // ties force the approximation
  CHECK(tied.u1 == 1.0);
  CHECK(tied.p_value == doctest::Approx(0.1641597).epsilon(1e-6));

  // Degenerate inputs.
  const std::vector<double> same{5, 5, 5}, empty{};
  CHECK(mann_whitney(same, same).p_value == 1.0);
  CHECK(mann_whitney(empty, a).p_value == 1.0);
}

TEST_CASE("the exact distribution sums to one and matches brute-force counting") {
  // P(U <= u) for n1 = 4, n2 = 3 by enumerating all C(7, 3) = 35 arrangements.
  std::vector<int> counts(13, 0);
  for (int mask = 0; mask < (1 << 7); ++mask) {
    if (__builtin_popcount(static_cast<unsigned>(mask)) != 4) continue;  // positions of x among 7 ranks
    int u = 0, ys_below = 0;
    for (int pos = 0; pos < 7; ++pos) {
      if (mask & (1 << pos)) u += ys_below;
      else ++ys_below;
    }
    ++counts[static_cast<std::size_t>(u)];
  }
  int cumulative = 0;
  for (std::size_t u = 0; u <= 12; ++u) {
    cumulative += counts[u];
    CHECK(detail::mann_whitney_exact_cdf(4, 3, u) == doctest::Approx(cumulative / 35.0).epsilon(1e-12));
  }
  CHECK(detail::mann_whitney_exact_cdf(20, 30, 600) == doctest::Approx(1.0));
}

TEST_CASE("judge: significance, effect size and direction classify a metric") {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> base(100, 5), slow(140, 5), same(100, 5);
  std::vector<double> baseline, worse, similar;
  for (int i = 0; i < 60; ++i) {
    baseline.push_back(base(rng));
    worse.push_back(slow(rng));
    similar.push_back(same(rng));
  }
  JudgeMetric latency{"latency", {}, Direction::increase, 0.25};
  CHECK(judge_metric(latency, worse, baseline, 0.98, 5).cls == JudgeClass::high);
  CHECK(judge_metric(latency, similar, baseline, 0.98, 5).cls == JudgeClass::pass);
  CHECK(judge_metric(latency, baseline, worse, 0.98, 5).cls == JudgeClass::pass);  // lower latency is harmless
  JudgeMetric throughput{"throughput", {}, Direction::decrease, 0.25};
  CHECK(judge_metric(throughput, baseline, worse, 0.98, 5).cls == JudgeClass::low);
  JudgeMetric any{"any", {}, Direction::either, 0.25};
  CHECK(judge_metric(any, baseline, worse, 0.98, 5).cls == JudgeClass::low);
  // Significant but within tolerance: +40% with a 50% tolerance passes.
  JudgeMetric lenient{"lenient", {}, Direction::increase, 0.5};
  CHECK(judge_metric(lenient, worse, baseline, 0.98, 5).cls == JudgeClass::pass);
  // Too few samples is no data, never a pass.
  CHECK(judge_metric(latency, std::vector<double>{1, 2}, baseline, 0.98, 5).cls == JudgeClass::no_data);
}

TEST_CASE("judge: weighted score, critical metrics, no data and thresholds") {
  JudgeSpec spec;
  auto r = [](const char* n, JudgeClass c, double w = 1, bool critical = false, bool must = false) {
    JudgeMetricResult m;
    m.name = n;
    m.cls = c;
    m.weight = w;
    m.critical = critical;
    m.must_have_data = must;
    return m;
  };
  auto all_pass = judge_score(spec, {r("a", JudgeClass::pass), r("b", JudgeClass::pass)});
  CHECK(all_pass.score == 100);
  CHECK(all_pass.verdict == JudgeResult::pass);
  auto weighted = judge_score(spec, {r("a", JudgeClass::pass, 4), r("b", JudgeClass::high, 1)});
  CHECK(weighted.score == 80);
  CHECK(weighted.verdict == JudgeResult::marginal);
  auto failing = judge_score(spec, {r("a", JudgeClass::pass), r("b", JudgeClass::high)});
  CHECK(failing.score == 50);
  CHECK(failing.verdict == JudgeResult::fail);
  auto critical = judge_score(spec, {r("a", JudgeClass::pass, 9), r("b", JudgeClass::low, 1, true)});
  CHECK(critical.score == 0);
  CHECK(critical.verdict == JudgeResult::fail);
  CHECK(critical.summary.find("a critical metric failed") != std::string::npos);
  // No data is left out of the score, unless the metric must have data.
  auto left_out = judge_score(spec, {r("a", JudgeClass::pass), r("b", JudgeClass::pass), r("c", JudgeClass::no_data)});
  CHECK(left_out.score == 100);
  auto must = judge_score(spec, {r("a", JudgeClass::pass), r("b", JudgeClass::pass), r("c", JudgeClass::no_data, 1, false, true)});
  CHECK(must.score == doctest::Approx(66.6667).epsilon(1e-4));
  // Half or more without data: no verdict.
  auto empty = judge_score(spec, {r("a", JudgeClass::pass), r("b", JudgeClass::no_data)});
  CHECK(empty.verdict == JudgeResult::no_data);
}

namespace {

struct Harness {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedMetrics<> metrics{clock, 100ms};
  std::vector<std::string> events;

  AnalysisPhase run(const AnalysisSpec& spec, std::string* reason = nullptr) {
    spec.validate("analysis");
    AnalysisRun<testing::ScriptedMetrics<>, SimClock> run(metrics, clock, spec, Revision{"v2"}, Revision{"v1"}, nullptr,
                                                          [this](EventKind, const std::string& s, std::string d) {
                                                            events.push_back(fmt::format("{} {}: {}", format_duration(clock.elapsed()), s, d));
                                                          });
    testing::run_sim(io, clock, run.run());
    if (reason) *reason = run.reason();
    return run.phase();
  }
  void values(const std::string& metric, std::vector<double> v) {
    metrics.script(metric, ScopeRole::canary, [v](std::size_t n, const Scope&, TimePoint) {
      return result<MetricValue>(MetricValue{v[std::min(n, v.size() - 1)]});
    });
  }
};

MetricCheck error_rate(std::optional<Duration> interval = 1min, std::optional<int> count = std::nullopt) {
  MetricCheck m;
  m.name = "error-rate";
  m.query = MetricQuery{"error-rate", "sum(rate(errors[1m]))", 1min, MetricQuery::Want::value};
  m.interval = interval;
  m.count = count;
  m.failure_condition = Condition::above(0.05);
  return m;
}

}  // namespace

TEST_CASE("analysis: failure_limit counts failed measurements, Argo-style") {
  Harness h;
  h.values("error-rate", {0.01, 0.06, 0.02, 0.07, 0.08, 0.01});
  auto m = error_rate(1min, 10);
  m.failure_limit = 2;  // the third failure fails the metric
  AnalysisSpec spec{"check", {m}};
  std::string reason;
  CHECK(h.run(spec, &reason) == AnalysisPhase::failed);
  CHECK(h.clock.elapsed() == 4min + 100ms);  // measurements at 0, 1, 2, 3, 4 min: the fifth (0.08) is the third failure
  CHECK(reason ==
        "metric error-rate failed (failure if > 0.05; 3 failed measurements, failure_limit 2): 0.01, 0.06, 0.02, 0.07, 0.08");
}

TEST_CASE("analysis: runs can share one spec instead of copying it; a null spec is refused") {
  Harness h;
  h.values("error-rate", {0.01, 0.06, 0.07, 0.08});
  auto m = error_rate(1min, 4);
  m.failure_limit = 1;
  const auto spec = std::make_shared<const AnalysisSpec>(AnalysisSpec{"shared", {m}});
  using Run = AnalysisRun<testing::ScriptedMetrics<>, SimClock>;
  const auto ignore = [](EventKind, const std::string&, std::string) {};
  Run a(h.metrics, h.clock, spec, Revision{"v2"}, Revision{"v1"}, nullptr, ignore);
  Run b(h.metrics, h.clock, spec, Revision{"v2"}, Revision{"v1"}, nullptr, ignore);
  CHECK(&a.spec() == spec.get());  // read in place, not copied
  CHECK(&b.spec() == spec.get());
  testing::run_sim(h.io, h.clock, a.run());
  CHECK(a.phase() == AnalysisPhase::failed);  // 0.06 and 0.07: the second failure passes failure_limit 1
  CHECK(a.reason() == "metric error-rate failed (failure if > 0.05; 2 failed measurements, failure_limit 1): 0.01, 0.06, 0.07");
  CHECK(b.phase() == AnalysisPhase::running);  // its own state: b has not measured
  try {
    Run bad(h.metrics, h.clock, std::shared_ptr<const AnalysisSpec>(), Revision{"v2"}, Revision{"v1"}, nullptr, ignore);
    FAIL("a null spec was accepted");
  } catch (const invalid_option& e) {
    CHECK(std::string(e.what()) == "invalid option spec = null: must point to an analysis spec");
  }
}

TEST_CASE("analysis: success and failure conditions, and inconclusive when neither holds") {
  Harness h;
  h.values("error-rate", {0.03});
  auto m = error_rate(std::nullopt);
  m.success_condition = Condition::below(0.01);
  AnalysisSpec spec{"check", {m}};
  std::string reason;
  CHECK(h.run(spec, &reason) == AnalysisPhase::inconclusive);  // 0.03: not < 0.01, not > 0.05
  CHECK(reason.find("inconclusive_limit 0") != std::string::npos);

  Harness ok;
  ok.values("error-rate", {0.001});
  CHECK(ok.run(spec) == AnalysisPhase::successful);
  Harness only_success;
  only_success.values("error-rate", {0.03});
  auto s = error_rate(std::nullopt);
  s.failure_condition.reset();
  s.success_condition = Condition::between(0, 0.01);
  CHECK(only_success.run({"check", {s}}) == AnalysisPhase::failed);  // success condition alone: not met is a failure
}

TEST_CASE("analysis: no data is inconclusive by default, never a pass, and can be made a failure") {
  Harness h;  // nothing scripted: every query has no data
  auto m = error_rate(1min, 3);
  std::string reason;
  CHECK(h.run({"check", {m}}, &reason) == AnalysisPhase::inconclusive);
  CHECK(reason.find("no data") != std::string::npos);
  Harness nan;
  nan.values("error-rate", {std::nan("")});
  CHECK(nan.run({"check", {m}}) == AnalysisPhase::inconclusive);
  Harness strict;
  m.no_data = NoDataIs::failed;
  CHECK(strict.run({"check", {m}}) == AnalysisPhase::failed);
}

TEST_CASE("analysis: consecutive_error_limit (default 4) turns five errors in a row into an error") {
  Harness h;
  h.metrics.script("error-rate", ScopeRole::canary, [](std::size_t n, const Scope&, TimePoint) -> result<MetricValue> {
    if (n == 2) return MetricValue{0.0};  // one success resets the streak
    return Error(errc::query_failed, "bad_data: parse error at char 12");
  });
  auto m = error_rate(30s);
  std::string reason;
  CHECK(h.run({"check", {m}}, &reason) == AnalysisPhase::error);
  // errors at 0, 30 s; success at 1 m; then five errors at 1.5 m .. 3.5 m.
  CHECK(h.clock.elapsed() == 3min + 30s + 100ms);
  CHECK(reason.find("5 consecutive errors, consecutive_error_limit 4") != std::string::npos);
  CHECK(reason.find("parse error at char 12") != std::string::npos);
}

TEST_CASE("analysis: consecutive_success_limit ends early, count ends, initial_delay delays") {
  Harness h;
  h.values("error-rate", {0.0});
  auto m = error_rate(1min);
  m.consecutive_success_limit = 3;
  m.initial_delay = 5min;
  CHECK(h.run({"check", {m}}) == AnalysisPhase::successful);
  CHECK(h.clock.elapsed() == 7min + 100ms);  // measurements at 5, 6, 7 min

  Harness c;
  c.values("error-rate", {0.0});
  CHECK(c.run({"check", {error_rate(1min, 4)}}) == AnalysisPhase::successful);
  CHECK(c.clock.elapsed() == 3min + 100ms);
}

TEST_CASE("analysis: a failing metric cancels the others at once") {
  Harness h;
  h.values("error-rate", {0.5});
  auto slow = error_rate(1h, 5);
  slow.name = "slow";
  slow.query.name = "slow";
  h.values("slow", {0.0});
  CHECK(h.run({"check", {error_rate(std::nullopt), slow}}) == AnalysisPhase::failed);
  CHECK(h.clock.elapsed() == 100ms);  // nobody waited for the hourly metric
  CHECK(h.clock.pending_timers() == 0);
}

TEST_CASE("analysis: the judge compares the canary's samples with the baseline's") {
  Harness h;
  auto samples = [](double mean, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(mean, mean * 0.05);
    Samples s;
    for (int i = 0; i < 50; ++i) s.push_back(d(rng));
    return s;
  };
  h.metrics.constant("latency", ScopeRole::canary, samples(180, 1));
  h.metrics.constant("latency", ScopeRole::baseline, samples(120, 2));
  h.metrics.constant("cpu", ScopeRole::canary, samples(50, 3));
  h.metrics.constant("cpu", ScopeRole::baseline, samples(50, 4));
  MetricCheck judge;
  judge.name = "judge";
  judge.judge = JudgeSpec{{JudgeMetric{"latency", {"latency", "histogram_quantile(...)", 1min, {}}, Direction::increase, 0.25, 1, true},
                           JudgeMetric{"cpu", {"cpu", "rate(cpu[1m])", 1min, {}}, Direction::either, 0.25}}};
  std::string reason;
  CHECK(h.run({"judge", {judge}}, &reason) == AnalysisPhase::failed);
  CHECK(reason.find("score 0 (fail, a critical metric failed): latency high") != std::string::npos);

  Harness fine;
  fine.metrics.constant("latency", ScopeRole::canary, samples(120, 5));
  fine.metrics.constant("latency", ScopeRole::baseline, samples(120, 6));
  fine.metrics.constant("cpu", ScopeRole::canary, samples(50, 7));
  fine.metrics.constant("cpu", ScopeRole::baseline, samples(50, 8));
  CHECK(fine.run({"judge", {judge}}) == AnalysisPhase::successful);

  Harness none;  // no samples at all: no verdict, which is inconclusive
  CHECK(none.run({"judge", {judge}}) == AnalysisPhase::inconclusive);
}

TEST_CASE("analysis options are validated with the field and the value") {
  auto reject = [](MetricCheck m) {
    try {
      AnalysisSpec{"a", {m}}.validate("analysis");
    } catch (const invalid_option& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  auto m = error_rate();
  CHECK(reject(m) == "accepted");
  auto bad = m;
  bad.interval = 0s;
  CHECK(reject(bad) == "invalid option analysis.metrics[0].interval = 0s: must be greater than 0");
  bad = m;
  bad.failure_limit = -2;
  CHECK(reject(bad) == "invalid option analysis.metrics[0].failure_limit = -2: must be -1 (off) or more");
  bad = m;
  bad.failure_condition.reset();
  CHECK(reject(bad) == "invalid option analysis.metrics[0].success_condition = none: set a success condition, a failure condition, or both");
  bad = m;
  bad.count = 3;
  bad.interval.reset();
  CHECK(reject(bad) == "invalid option analysis.metrics[0].count = 3: needs an interval");
  bad = m;
  bad.name.clear();
  CHECK(reject(bad) == "invalid option analysis.metrics[0].name = \"\": must not be empty");
  bad = m;
  bad.consecutive_error_limit = -1;
  CHECK(reject(bad) == "invalid option analysis.metrics[0].consecutive_error_limit = -1: must not be negative");
  MetricCheck j;
  j.name = "judge";
  j.judge = JudgeSpec{};
  CHECK(reject(j) == "invalid option analysis.metrics[0].judge.metrics = []: a judge needs at least one metric");
}
