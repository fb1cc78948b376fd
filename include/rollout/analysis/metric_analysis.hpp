#pragma once

/// @file
/// Metric analysis with Argo Rollouts' semantics: per-metric measurements on an
/// interval, success and failure conditions, failure / inconclusive /
/// consecutive-error / consecutive-success limits, and the statistical judge.
/// One engine (`AnalysisRun`) serves inline analysis steps and background analysis.

#include <rollout/analysis/mann_whitney.hpp>
#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/parallel.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/run_context.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rollout {

/// A condition on a measured value: a threshold or a range. Flagger's
/// `thresholdRange{min, max}` is `within(min, max)`.
struct Condition {
  enum Kind { less_than, greater_than, within, outside };
  Kind kind = less_than;
  double a = 0;  ///< The threshold, or the low end of the range.
  double b = 0;  ///< The high end of the range.

  static Condition below(double max) { return {less_than, max, 0}; }
  static Condition above(double min) { return {greater_than, min, 0}; }
  static Condition between(double lo, double hi) { return {within, lo, hi}; }
  static Condition not_between(double lo, double hi) { return {outside, lo, hi}; }

  bool holds(double v) const noexcept {
    switch (kind) {
      case less_than: return v < a;
      case greater_than: return v > a;
      case within: return v >= a && v <= b;
      case outside: return v < a || v > b;
    }
    return false;
  }
  /// `< 0.05`, `> 99`, `in [0, 0.5]`, `outside [1, 2]`.
  std::string text() const {
    switch (kind) {
      case less_than: return detail::format("< {}", a);
      case greater_than: return detail::format("> {}", a);
      case within: return detail::format("in [{}, {}]", a, b);
      case outside: return detail::format("outside [{}, {}]", a, b);
    }
    return "?";
  }
};

/// The result of one measurement, with Argo's meanings.
enum class Measurement {
  successful,    ///< The success condition held (or the failure condition did not).
  failed,        ///< The failure condition held (or the success condition did not).
  inconclusive,  ///< Neither held (both set), or there was no data.
  error,         ///< The query failed (timeout, backend error, malformed reply).
};

/// What a measurement without data counts as. Never as a pass.
enum class NoDataIs { inconclusive, failed };

/// One metric of an analysis: what to measure, how often, and what counts as failure.
///
/// Either `query` with `success_condition` / `failure_condition`, or `judge`
/// (canary against baseline with the Mann-Whitney judge). The limits are
/// Argo's: the metric fails when failed measurements exceed `failure_limit`
/// (-1: never), is inconclusive when inconclusive ones exceed
/// `inconclusive_limit`, errors when consecutive errors exceed
/// `consecutive_error_limit`, and succeeds early after
/// `consecutive_success_limit` successes in a row (0: off). Without an
/// `interval` it measures once; with an interval and no `count` it measures
/// until the analysis is stopped (background analysis).
struct MetricCheck {
  std::string name;
  MetricQuery query;
  std::optional<JudgeSpec> judge;
  ScopeRole scope = ScopeRole::canary;
  std::optional<Duration> interval;
  std::optional<int> count;
  Duration initial_delay{0};
  std::optional<Condition> success_condition;
  std::optional<Condition> failure_condition;
  int failure_limit = 0;
  int inconclusive_limit = 0;
  int consecutive_error_limit = 4;
  int consecutive_success_limit = 0;
  NoDataIs no_data = NoDataIs::inconclusive;
  Duration timeout{std::chrono::seconds(30)};

  /// Throws `invalid_option` naming `prefix.field` and the value for anything out of range.
  void validate(std::string_view prefix) const {
    auto field = [&](const char* f) { return detail::format("{}.{}", prefix, f); };
    if (name.empty()) throw invalid_option(field("name"), "\"\"", "must not be empty");
    if (judge) {
      judge->validate(field("judge"));
    } else {
      if (query.expr.empty()) throw invalid_option(field("query.expr"), "\"\"", "needs a query, or a judge");
      if (!success_condition && !failure_condition) {
        throw invalid_option(field("success_condition"), "none", "set a success condition, a failure condition, or both");
      }
    }
    if (interval) require_duration(field("interval"), *interval, DurationRule::positive);
    if (count && *count < 1) throw invalid_option(field("count"), detail::format("{}", *count), "must be at least 1");
    if (count && *count > 1 && !interval) throw invalid_option(field("count"), detail::format("{}", *count), "needs an interval");
    require_duration(field("initial_delay"), initial_delay, DurationRule::non_negative);
    if (failure_limit < -1) throw invalid_option(field("failure_limit"), detail::format("{}", failure_limit), "must be -1 (off) or more");
    if (inconclusive_limit < 0) throw invalid_option(field("inconclusive_limit"), detail::format("{}", inconclusive_limit), "must not be negative");
    if (consecutive_error_limit < 0) {
      throw invalid_option(field("consecutive_error_limit"), detail::format("{}", consecutive_error_limit), "must not be negative");
    }
    if (consecutive_success_limit < 0) {
      throw invalid_option(field("consecutive_success_limit"), detail::format("{}", consecutive_success_limit), "must not be negative");
    }
    require_duration(field("timeout"), timeout, DurationRule::positive);
  }
};

/// A set of metrics measured together.
struct AnalysisSpec {
  std::string name = "analysis";
  std::vector<MetricCheck> metrics;

  void validate(std::string_view prefix) const {
    if (metrics.empty()) throw invalid_option(detail::format("{}.metrics", prefix), "[]", "an analysis needs at least one metric");
    for (std::size_t i = 0; i < metrics.size(); ++i) metrics[i].validate(detail::format("{}.metrics[{}]", prefix, i));
  }
};

/// The phase of an analysis or of one metric.
enum class AnalysisPhase { running, successful, failed, inconclusive, error };

inline const char* to_string(AnalysisPhase p) noexcept {
  switch (p) {
    case AnalysisPhase::running: return "running";
    case AnalysisPhase::successful: return "successful";
    case AnalysisPhase::failed: return "failed";
    case AnalysisPhase::inconclusive: return "inconclusive";
    case AnalysisPhase::error: return "error";
  }
  return "unknown";
}

inline const char* to_string(Measurement m) noexcept {
  switch (m) {
    case Measurement::successful: return "successful";
    case Measurement::failed: return "failed";
    case Measurement::inconclusive: return "inconclusive";
    case Measurement::error: return "error";
  }
  return "unknown";
}

/// A running analysis. `run()` measures every metric concurrently, each on its
/// own schedule, and returns once the analysis is decided: at the first failed
/// or errored metric (the others are cancelled), or when every metric has
/// finished. Background analyses with open-ended metrics return only on
/// failure, error or inconclusive, or when cancelled. After each measurement
/// `wake` is notified and a `metric_result` event is emitted.
///
/// Cancellation stops every query in flight. Query failures are measurements
/// (`error`), never exceptions.
template <MetricsSource M, Clock C>
class AnalysisRun {
public:
  using Emit = std::function<void(EventKind, const std::string& subject, std::string detail)>;

  /// What one metric has seen so far.
  struct MetricState {
    AnalysisPhase phase = AnalysisPhase::running;
    int measured = 0;
    int failed = 0;
    int inconclusive = 0;
    int consecutive_errors = 0;
    int consecutive_successes = 0;
    std::vector<std::string> values;  ///< Measured values (or `no data`, `error: ...`), in order.
    std::string last_detail;
  };

  /// Measures `spec` (copied) for `canary` against `baseline`. `wake` (may be
  /// null) is notified after each measurement; `emit` records the events.
  AnalysisRun(M& source, C clock, AnalysisSpec spec, Revision canary, Revision baseline, detail::Notifier* wake, Emit emit)
      : AnalysisRun(source, std::move(clock), std::make_shared<const AnalysisSpec>(std::move(spec)), std::move(canary),
                    std::move(baseline), wake, std::move(emit)) {}

  /// The same, sharing `spec` instead of copying it: a spec is about 0.4 KB
  /// with one metric, and `Canary` runs one per analysis step of each canary in
  /// flight. Throws `invalid_option` if `spec` is null.
  AnalysisRun(M& source, C clock, std::shared_ptr<const AnalysisSpec> spec, Revision canary, Revision baseline,
              detail::Notifier* wake, Emit emit)
      : source_(source),
        clock_(std::move(clock)),
        spec_(std::move(spec)),
        canary_(std::move(canary)),
        baseline_(std::move(baseline)),
        wake_(wake),
        emit_(std::move(emit)) {
    if (!spec_) throw invalid_option("spec", "null", "must point to an analysis spec");
    states_.resize(spec_->metrics.size());
  }

  /// Measures until decided (see the class comment).
  boost::asio::awaitable<void> run() {
    task_scope_.reset();
    return measure_all();
  }

  /// The same, for a run started as a `detail::Task` with that task's `scope`
  /// (as `Canary` does): one metric then measures in the task's own thread, with
  /// no worker task (a query's timeout cancels that thread; see `detail::call`).
  /// Cancellation and errors as `run()`.
  boost::asio::awaitable<void> run(detail::TaskScope scope) {
    task_scope_.emplace(std::move(scope));
    return measure_all();
  }

  /// The analysis phase: failed or error as soon as one metric is; otherwise
  /// running until every metric has finished, then inconclusive if any metric
  /// was, else successful. With `early_inconclusive`, an inconclusive metric
  /// makes the whole analysis inconclusive at once (background analysis pauses then).
  AnalysisPhase phase(bool early_inconclusive = false) const {
    bool running = false, inconclusive = false;
    for (const auto& s : states_) {
      if (s.phase == AnalysisPhase::failed || s.phase == AnalysisPhase::error) return s.phase;
      if (s.phase == AnalysisPhase::running) running = true;
      if (s.phase == AnalysisPhase::inconclusive) inconclusive = true;
    }
    if (inconclusive && (early_inconclusive || !running)) return AnalysisPhase::inconclusive;
    if (running) return AnalysisPhase::running;
    return AnalysisPhase::successful;
  }

  /// Why the analysis is where it is: the deciding metric, its values and the limit.
  std::string reason() const {
    for (const auto phase : {AnalysisPhase::failed, AnalysisPhase::error, AnalysisPhase::inconclusive}) {
      for (std::size_t i = 0; i < states_.size(); ++i) {
        if (states_[i].phase == phase) return describe(i);
      }
    }
    return detail::format("{}: every metric passed", spec_->name);
  }

  const std::vector<MetricState>& states() const noexcept { return states_; }
  const AnalysisSpec& spec() const noexcept { return *spec_; }

private:
  struct Decided {};

  /// Each metric measures in a thread whose cancellation this run owns, so a
  /// query's timeout cancels that thread (`detail::call(scope, ...)`) instead of
  /// a child coroutine spawned per query: one metric in a run started with a
  /// scope measures in the task's own thread; otherwise every metric runs in a
  /// worker task of its own (`scoped_for_each`).
  boost::asio::awaitable<void> measure_all() {
    try {
      if (task_scope_ && spec_->metrics.size() == 1) {
        co_await run_metric(0, *task_scope_);
      } else {
        std::vector<std::size_t> idx(spec_->metrics.size());
        std::iota(idx.begin(), idx.end(), std::size_t{0});
        co_await detail::scoped_for_each(idx.begin(), idx.end(), idx.size(),
                                         [this](std::size_t i, const detail::TaskScope& scope) { return run_metric(i, scope); });
      }
    } catch (const Decided&) {
      // A metric failed or errored: the others were stopped on purpose.
    }
  }

  std::string describe(std::size_t i) const {
    const auto& m = spec_->metrics[i];
    const auto& s = states_[i];
    std::string values;
    const std::size_t first = s.values.size() > 10 ? s.values.size() - 10 : 0;
    for (std::size_t k = first; k < s.values.size(); ++k) values += detail::format("{}{}", k > first ? ", " : "", s.values[k]);
    std::string limit;
    switch (s.phase) {
      case AnalysisPhase::failed:
        limit = detail::format("{} failed measurements, failure_limit {}", s.failed, m.failure_limit);
        break;
      case AnalysisPhase::error:
        limit = detail::format("{} consecutive errors, consecutive_error_limit {}", s.consecutive_errors, m.consecutive_error_limit);
        break;
      case AnalysisPhase::inconclusive:
        limit = detail::format("{} inconclusive measurements, inconclusive_limit {}", s.inconclusive, m.inconclusive_limit);
        break;
      default: limit = detail::format("{} measurements", s.measured); break;
    }
    std::string conditions;
    if (m.judge) conditions = "judge";
    if (m.failure_condition) conditions += detail::format("failure if {}", m.failure_condition->text());
    if (m.success_condition) conditions += detail::format("{}success if {}", conditions.empty() ? "" : ", ", m.success_condition->text());
    return detail::format("metric {} {} ({}; {}): {}", m.name, to_string(s.phase), conditions, limit, values.empty() ? s.last_detail : values);
  }

  Scope scope_of(ScopeRole role) const {
    return Scope{role, role == ScopeRole::canary ? canary_ : baseline_};
  }

  /// One measurement of a threshold metric.
  boost::asio::awaitable<std::pair<Measurement, std::string>> measure_value(const MetricCheck& m, detail::TaskScope task) {
    const auto scope = scope_of(m.scope);
    auto r = co_await detail::call(task, clock_, m.timeout, [&] { return detail::format("metrics.query({}, {})", m.name, scope); },
                              source_.query(m.query, scope));
    if (!r) co_return std::pair{Measurement::error, detail::format("error: {}", r.error().message)};
    if (auto* nd = std::get_if<NoData>(&*r)) {
      co_return std::pair{m.no_data == NoDataIs::failed ? Measurement::failed : Measurement::inconclusive,
                          detail::format("no data ({})", nd->why)};
    }
    if (!std::holds_alternative<double>(*r)) {
      co_return std::pair{Measurement::error, std::string("error: expected one value, got samples")};
    }
    const double v = std::get<double>(*r);
    if (!std::isfinite(v)) {
      co_return std::pair{m.no_data == NoDataIs::failed ? Measurement::failed : Measurement::inconclusive,
                          detail::format("no data ({})", v)};
    }
    Measurement out;
    if (m.failure_condition && m.failure_condition->holds(v)) out = Measurement::failed;
    else if (m.success_condition) {
      out = m.success_condition->holds(v) ? Measurement::successful
            : m.failure_condition          ? Measurement::inconclusive  // both set, neither held
                                           : Measurement::failed;
    } else {
      out = Measurement::successful;  // only a failure condition, and it did not hold
    }
    co_return std::pair{out, detail::format("{:.6g}", v)};
  }

  /// One judgement: samples of the canary and the baseline for every judge metric.
  boost::asio::awaitable<std::pair<Measurement, std::string>> measure_judge(const MetricCheck& m, detail::TaskScope task) {
    const auto& spec = *m.judge;
    std::vector<JudgeMetricResult> results;
    for (const auto& jm : spec.metrics) {
      std::vector<double> sides[2];
      const ScopeRole roles[2] = {ScopeRole::canary, ScopeRole::baseline};
      for (int side = 0; side < 2; ++side) {
        auto q = jm.query;
        q.want = MetricQuery::Want::samples;
        const auto scope = scope_of(roles[side]);
        auto r = co_await detail::call(task, clock_, m.timeout, [&] { return detail::format("metrics.query({}, {})", jm.name, scope); },
                                  source_.query(q, scope));
        if (!r) co_return std::pair{Measurement::error, detail::format("error: {}", r.error().message)};
        if (auto* s = std::get_if<Samples>(&*r)) {
          for (double v : *s) {
            if (std::isfinite(v)) sides[side].push_back(v);
          }
        } else if (auto* v = std::get_if<double>(&*r); v && std::isfinite(*v)) {
          sides[side].push_back(*v);
        }
      }
      results.push_back(judge_metric(jm, sides[0], sides[1], spec.confidence, spec.min_samples));
    }
    auto verdict = judge_score(spec, std::move(results));
    switch (verdict.verdict) {
      case JudgeResult::pass: co_return std::pair{Measurement::successful, verdict.summary};
      case JudgeResult::marginal: co_return std::pair{Measurement::inconclusive, verdict.summary};
      case JudgeResult::fail: co_return std::pair{Measurement::failed, verdict.summary};
      case JudgeResult::no_data: break;
    }
    co_return std::pair{m.no_data == NoDataIs::failed ? Measurement::failed : Measurement::inconclusive, verdict.summary};
  }

  boost::asio::awaitable<void> run_metric(std::size_t i, detail::TaskScope task) {
    const auto& m = spec_->metrics[i];
    auto& s = states_[i];
    if (m.initial_delay > Duration::zero()) co_await detail::sleep_for(clock_, m.initial_delay);
    const int count = m.count ? *m.count : (m.interval ? 0 : 1);  // 0: until stopped
    // Fixed rate: measurement k starts at start + k * interval (or at once if the
    // previous one overran), so detection time is interval x limit, not drifting.
    auto next = clock_.now();
    for (;;) {
      // Not `m.judge ? co_await a : co_await b`: g++ 12 destroys the temporary of
      // a conditional co_await twice.
      std::pair<Measurement, std::string> measured;
      if (m.judge) {
        measured = co_await measure_judge(m, task);
      } else {
        measured = co_await measure_value(m, task);
      }
      const auto result = measured.first;
      const auto& text = measured.second;
      ++s.measured;
      s.values.push_back(text);
      s.last_detail = text;
      switch (result) {
        case Measurement::successful:
          ++s.consecutive_successes;
          s.consecutive_errors = 0;
          break;
        case Measurement::failed:
          ++s.failed;
          s.consecutive_successes = 0;
          s.consecutive_errors = 0;
          break;
        case Measurement::inconclusive:
          ++s.inconclusive;
          s.consecutive_successes = 0;
          s.consecutive_errors = 0;
          break;
        case Measurement::error:
          ++s.consecutive_errors;
          s.consecutive_successes = 0;
          break;
      }
      if (m.failure_limit >= 0 && s.failed > m.failure_limit) s.phase = AnalysisPhase::failed;
      else if (s.consecutive_errors > m.consecutive_error_limit) s.phase = AnalysisPhase::error;
      else if (s.inconclusive > m.inconclusive_limit) s.phase = AnalysisPhase::inconclusive;
      else if (m.consecutive_success_limit > 0 && s.consecutive_successes >= m.consecutive_success_limit) {
        s.phase = AnalysisPhase::successful;
      } else if (count > 0 && s.measured >= count && result != Measurement::error) {
        s.phase = AnalysisPhase::successful;
      } else if (!m.interval && result == Measurement::error) {
        s.phase = AnalysisPhase::error;  // measured once and could not measure
      }
      emit_(EventKind::metric_result, m.name,
            detail::format("{}: {} (failed {}, inconclusive {}, consecutive errors {}){}", text, to_string(result), s.failed,
                           s.inconclusive, s.consecutive_errors,
                           s.phase == AnalysisPhase::running ? "" : detail::format(" -> metric {}", to_string(s.phase))));
      if (wake_) wake_->notify_all();
      if (s.phase == AnalysisPhase::failed || s.phase == AnalysisPhase::error) throw Decided{};  // cancels the other metrics
      if (s.phase != AnalysisPhase::running) co_return;
      next = detail::add_saturating(next, m.interval ? *m.interval : Duration(std::chrono::seconds(1)));
      if (clock_.now() < next) co_await detail::sleep_until(clock_, next);
    }
  }

  M& source_;
  C clock_;
  std::shared_ptr<const AnalysisSpec> spec_;  // never null
  Revision canary_;
  Revision baseline_;
  detail::Notifier* wake_;
  Emit emit_;
  std::vector<MetricState> states_;
  std::optional<detail::TaskScope> task_scope_;  // set by run(scope)
};

}  // namespace rollout

/// Formats as `< 0.05`.
template <>
struct fmt::formatter<rollout::Condition> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Condition& c, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(c.text(), ctx);
  }
};

/// Formats as `failed`.
template <>
struct fmt::formatter<rollout::AnalysisPhase> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::AnalysisPhase p, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(p), ctx);
  }
};
