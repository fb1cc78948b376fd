#pragma once

/// @file
/// The statistical judge: a two-sided Mann-Whitney U test (exact for small samples
/// without ties, normal approximation with tie and continuity corrections
/// otherwise), per-metric classification against a baseline as Kayenta does,
/// and the weighted score.

#include <rollout/core/error.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rollout {

/// The outcome of one two-sided Mann-Whitney U test of `x` against `y`.
struct MannWhitneyResult {
  double u1 = 0;          ///< U of `x`: the number of (x, y) pairs with x > y, ties counting one half.
  double u2 = 0;          ///< U of `y` (`n1 * n2 - u1`).
  double z = 0;           ///< Standardised statistic of `u1` (continuity-corrected); 0 when exact.
  double p_value = 1;     ///< Two-sided p-value.
  bool exact = false;     ///< True when computed from the exact distribution.
  std::size_t n1 = 0;
  std::size_t n2 = 0;
};

namespace detail {

/// P(U <= u) under the null hypothesis for sample sizes n1 and n2 without ties,
/// by the recurrence p(n, m, u) = n/(n+m) p(n-1, m, u-m) + m/(n+m) p(n, m-1, u)
/// (Mann & Whitney, 1947), in probabilities so that nothing overflows.
inline double mann_whitney_exact_cdf(std::size_t n1, std::size_t n2, std::size_t u) {
  // table[m][k] = P(U = k) for the current n and m in 0..n2.
  std::vector<std::vector<double>> prev(n2 + 1), cur(n2 + 1);
  for (std::size_t m = 0; m <= n2; ++m) prev[m] = {1.0};  // n = 0: U is always 0
  for (std::size_t n = 1; n <= n1; ++n) {
    cur[0] = {1.0};  // m = 0: U is always 0
    for (std::size_t m = 1; m <= n2; ++m) {
      std::vector<double> dist(n * m + 1, 0.0);
      const double wn = static_cast<double>(n) / static_cast<double>(n + m);
      const double wm = static_cast<double>(m) / static_cast<double>(n + m);
      // The largest of all n + m values is an x (U grows by m) or a y (U unchanged).
      for (std::size_t k = 0; k < prev[m].size(); ++k) dist[k + m] += wn * prev[m][k];
      for (std::size_t k = 0; k < cur[m - 1].size(); ++k) dist[k] += wm * cur[m - 1][k];
      cur[m] = std::move(dist);
    }
    std::swap(prev, cur);
  }
  const auto& d = prev[n2];
  double sum = 0;
  for (std::size_t k = 0; k <= u && k < d.size(); ++k) sum += d[k];
  return std::min(1.0, sum);
}

}  // namespace detail

/// How `mann_whitney` computes the p-value.
enum class MannWhitneyMethod {
  automatic,   ///< Exact without ties and with n1 * n2 <= 2500, else asymptotic.
  exact,       ///< The exact null distribution (ties are ignored by it).
  asymptotic,  ///< Normal approximation, tie-corrected variance, 0.5 continuity correction.
};

/// Two-sided Mann-Whitney U test of samples `x` and `y` (as SciPy's
/// `mannwhitneyu(x, y)` and R's `wilcox.test`). Ties get midranks. The exact
/// p-value comes from the null distribution of U; the asymptotic one from the
/// normal approximation with the tie-corrected variance and a 0.5 continuity
/// correction, through Boost.Math's normal distribution. Empty samples give p = 1.
inline MannWhitneyResult mann_whitney(std::span<const double> x, std::span<const double> y,
                                      MannWhitneyMethod method = MannWhitneyMethod::automatic) {
  MannWhitneyResult r;
  r.n1 = x.size();
  r.n2 = y.size();
  if (x.empty() || y.empty()) return r;
  struct Obs {
    double v;
    bool from_x;
  };
  std::vector<Obs> all;
  all.reserve(x.size() + y.size());
  for (double v : x) all.push_back({v, true});
  for (double v : y) all.push_back({v, false});
  std::sort(all.begin(), all.end(), [](const Obs& a, const Obs& b) { return a.v < b.v; });
  const auto n = static_cast<double>(all.size());
  double rank_sum_x = 0, tie_term = 0;
  bool ties = false;
  for (std::size_t i = 0; i < all.size();) {
    std::size_t j = i;
    while (j < all.size() && all[j].v == all[i].v) ++j;
    const double t = static_cast<double>(j - i);
    const double midrank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    for (std::size_t k = i; k < j; ++k) {
      if (all[k].from_x) rank_sum_x += midrank;
    }
    if (t > 1) {
      ties = true;
      tie_term += t * t * t - t;
    }
    i = j;
  }
  const double n1 = static_cast<double>(r.n1), n2 = static_cast<double>(r.n2);
  r.u1 = rank_sum_x - n1 * (n1 + 1) / 2.0;
  r.u2 = n1 * n2 - r.u1;
  const bool exact = method == MannWhitneyMethod::exact ||
                     (method == MannWhitneyMethod::automatic && !ties && r.n1 * r.n2 <= 2500);
  if (exact) {
    r.exact = true;
    const auto u_min = static_cast<std::size_t>(std::floor(std::min(r.u1, r.u2)));
    r.p_value = std::min(1.0, 2.0 * detail::mann_whitney_exact_cdf(r.n1, r.n2, u_min));
    return r;
  }
  const double mu = n1 * n2 / 2.0;
  const double var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
  if (var <= 0) return r;  // every value equal: no evidence of a difference
  const double dist = std::abs(r.u1 - mu);
  const double z_abs = std::max(0.0, dist - 0.5) / std::sqrt(var);
  r.z = r.u1 >= mu ? z_abs : -z_abs;
  // Two-sided p = 2 * Q(|z|) = erfc(|z| / sqrt 2), the standard normal's upper
  // tail. Written with std::erfc rather than Boost.Math's normal distribution
  // (which computes the same erfc) because <boost/math/distributions/normal.hpp>
  // cost 1.5 s in every TU that includes <rollout/rollout.hpp> (g++ 12,
  // benchmarks/compile_bench --smoke: the umbrella went from 1.77x to 1.23x of
  // a <boost/asio.hpp>-only TU). test_analysis checks p against reference values.
  r.p_value = std::min(1.0, std::erfc(z_abs / std::sqrt(2.0)));
  return r;
}

/// Which change of a metric is bad. Kayenta's `direction`.
enum class Direction {
  increase,  ///< Only an increase fails (latency, error rate).
  decrease,  ///< Only a decrease fails (throughput, success rate).
  either,    ///< Any significant change fails.
};

/// How one metric of the canary compares with the baseline.
enum class JudgeClass { pass, high, low, no_data };

/// One metric for the statistical judge: samples of the canary and of the
/// baseline, compared with a Mann-Whitney U test and an effect size.
struct JudgeMetric {
  std::string name;                       ///< Shown in events and reasons.
  MetricQuery query;                      ///< Queried with `Want::samples` for the canary and the baseline scopes.
  Direction bad = Direction::either;      ///< Which change fails the metric.
  double tolerance = 0.25;                ///< Relative change of the mean that matters: |canary/baseline - 1| > tolerance.
  double weight = 1.0;                    ///< Share of the score (> 0).
  bool critical = false;                  ///< A critical metric that does not pass makes the score 0.
  bool must_have_data = false;            ///< No data then counts as failing instead of being left out.
};

/// The statistical judge's configuration. Defaults follow Kayenta (confidence
/// 0.98, pass 90, marginal 75).
struct JudgeSpec {
  std::vector<JudgeMetric> metrics;
  double confidence = 0.98;        ///< A difference is significant when p < 1 - confidence.
  double pass_score = 90;          ///< Score at or above: Pass.
  double marginal_score = 75;      ///< Score at or above (and below pass): Marginal.
  std::size_t min_samples = 5;     ///< Fewer samples on either side: NoData for that metric.

  /// Throws `invalid_option` naming `prefix.field` and the value for anything out of range.
  void validate(std::string_view prefix) const {
    if (metrics.empty()) throw invalid_option(detail::format("{}.metrics", prefix), "[]", "a judge needs at least one metric");
    if (!(confidence > 0.0 && confidence < 1.0)) {
      throw invalid_option(detail::format("{}.confidence", prefix), detail::format("{}", confidence), "must be within (0, 1)");
    }
    if (!(pass_score >= marginal_score && marginal_score >= 0 && pass_score <= 100)) {
      throw invalid_option(detail::format("{}.pass_score", prefix), detail::format("{} (marginal {})", pass_score, marginal_score),
                           "needs 0 <= marginal_score <= pass_score <= 100");
    }
    if (min_samples < 1) throw invalid_option(detail::format("{}.min_samples", prefix), "0", "must be at least 1");
    for (std::size_t i = 0; i < metrics.size(); ++i) {
      const auto& m = metrics[i];
      if (m.name.empty()) throw invalid_option(detail::format("{}.metrics[{}].name", prefix, i), "\"\"", "must not be empty");
      if (!(m.tolerance >= 0.0) || !std::isfinite(m.tolerance)) {
        throw invalid_option(detail::format("{}.metrics[{}].tolerance", prefix, i), detail::format("{}", m.tolerance), "must be >= 0");
      }
      if (!(m.weight > 0.0) || !std::isfinite(m.weight)) {
        throw invalid_option(detail::format("{}.metrics[{}].weight", prefix, i), detail::format("{}", m.weight), "must be > 0");
      }
    }
  }
};

/// One metric's judgement.
struct JudgeMetricResult {
  std::string name;
  JudgeClass cls = JudgeClass::no_data;
  MannWhitneyResult test;
  double canary_mean = 0;
  double baseline_mean = 0;
  bool critical = false;
  bool must_have_data = false;
  double weight = 1;
};

/// The judge's verdict on all metrics.
struct JudgeResult {
  enum Verdict { pass, marginal, fail, no_data };
  double score = 0;                          ///< 0..100.
  Verdict verdict = no_data;
  std::vector<JudgeMetricResult> metrics;
  std::string summary;                       ///< e.g. `score 50 (fail): latency high (p 0.0001, mean 212 vs 140)`.
};

/// Classifies one metric: NoData when either side has fewer than `min_samples`;
/// High or Low when the difference is significant (p < 1 - confidence) and the
/// means differ by more than `tolerance`; Pass otherwise, or when the change is
/// in the harmless direction.
inline JudgeMetricResult judge_metric(const JudgeMetric& m, std::span<const double> canary, std::span<const double> baseline,
                                      double confidence, std::size_t min_samples) {
  JudgeMetricResult r;
  r.name = m.name;
  r.critical = m.critical;
  r.must_have_data = m.must_have_data;
  r.weight = m.weight;
  auto mean = [](std::span<const double> s) { return s.empty() ? 0.0 : std::accumulate(s.begin(), s.end(), 0.0) / static_cast<double>(s.size()); };
  r.canary_mean = mean(canary);
  r.baseline_mean = mean(baseline);
  if (canary.size() < min_samples || baseline.size() < min_samples) {
    r.cls = JudgeClass::no_data;
    return r;
  }
  r.test = mann_whitney(canary, baseline);
  r.cls = JudgeClass::pass;
  if (r.test.p_value >= 1.0 - confidence) return r;
  const double ratio = r.baseline_mean != 0 ? r.canary_mean / r.baseline_mean
                       : r.canary_mean == 0 ? 1.0
                       : (r.canary_mean > 0 ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity());
  if (ratio > 1.0 + m.tolerance) r.cls = JudgeClass::high;
  else if (ratio < 1.0 - m.tolerance) r.cls = JudgeClass::low;
  if ((r.cls == JudgeClass::low && m.bad == Direction::increase) || (r.cls == JudgeClass::high && m.bad == Direction::decrease)) {
    r.cls = JudgeClass::pass;
  }
  return r;
}

/// Scores judged metrics as Kayenta does, with one change: when half or more of
/// the metrics have no data, the verdict is NoData (the canary then pauses as
/// inconclusive) rather than a score of 0, because no data is neither a pass nor
/// evidence of a fault. Otherwise: metrics without data are left out (or fail,
/// with `must_have_data`); the score is the weighted share of passing metrics x
/// 100; a critical metric that does not pass makes it 0.
inline JudgeResult judge_score(const JudgeSpec& spec, std::vector<JudgeMetricResult> metrics) {
  JudgeResult r;
  r.metrics = std::move(metrics);
  std::size_t no_data = 0;
  double considered = 0, passing = 0;
  bool critical_failed = false;
  std::string details;
  for (const auto& m : r.metrics) {
    const char* cls = m.cls == JudgeClass::pass ? "pass" : m.cls == JudgeClass::high ? "high" : m.cls == JudgeClass::low ? "low" : "no data";
    if (m.cls == JudgeClass::no_data) {
      ++no_data;
      details += detail::format("{}{} no data", details.empty() ? "" : ", ", m.name);
      if (!m.must_have_data) continue;
    } else {
      details += detail::format("{}{} {} (p {:.4g}, mean {:.4g} vs {:.4g})", details.empty() ? "" : ", ", m.name, cls, m.test.p_value,
                                m.canary_mean, m.baseline_mean);
    }
    considered += m.weight;
    if (m.cls == JudgeClass::pass) passing += m.weight;
    else if (m.critical) critical_failed = true;
  }
  if (r.metrics.empty() || no_data * 2 >= r.metrics.size()) {
    r.verdict = JudgeResult::no_data;
    r.summary = detail::format("no verdict: {} of {} metrics have no data ({})", no_data, r.metrics.size(), details);
    return r;
  }
  r.score = critical_failed || considered == 0 ? 0.0 : 100.0 * passing / considered;
  r.verdict = r.score >= spec.pass_score ? JudgeResult::pass : r.score >= spec.marginal_score ? JudgeResult::marginal : JudgeResult::fail;
  const char* v = r.verdict == JudgeResult::pass ? "pass" : r.verdict == JudgeResult::marginal ? "marginal" : "fail";
  r.summary = detail::format("score {:.4g} ({}{}): {}", r.score, v, critical_failed ? ", a critical metric failed" : "", details);
  return r;
}

}  // namespace rollout
