#pragma once

/// @file
/// `rollout::Canary<LB, Metrics, Clock>`: step plans (Argo and Flagger style),
/// inline and background metric analysis with limits, the Mann-Whitney judge,
/// automatic rollback and live control.

#include <rollout/analysis/metric_analysis.hpp>
#include <rollout/concepts.hpp>
#include <rollout/core/backoff.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/control.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/core/percent.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/run_context.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>

#include <fmt/format.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rollout {

/// One step of a canary plan.
struct CanaryStep {
  enum Kind {
    set_weight,  ///< Send `weight` of traffic to the canary (Argo `setWeight`).
    pause,       ///< Wait `duration`, or until `promote()` when there is none (Argo `pause{}`).
    analyze,     ///< Run `analysis` to its end: pass continues, fail rolls back, inconclusive pauses.
  };
  Kind kind = pause;
  Percent weight{};
  std::optional<Duration> duration;
  AnalysisSpec analysis{};
};

namespace detail {
/// A step as text: `set_weight 5%`, `pause 10m`, `pause until promoted` or
/// `analyze <name>`; the step events' detail and `fmt::formatter<CanaryStep>`.
/// Built by appending, not by `format`: it runs on every step (see `join_int`).
/// (A template only for compile time, as `format_timeline` is.)
template <int = 0>
std::string step_label(const CanaryStep& s) {
  std::string text;
  switch (s.kind) {
    case CanaryStep::set_weight: text = "set_weight "; text += s.weight.text(); break;
    case CanaryStep::pause:
      text = "pause ";
      text += s.duration ? format_duration(*s.duration) : std::string("until promoted");
      break;
    case CanaryStep::analyze: text = "analyze "; text += s.analysis.name; break;
  }
  return text;
}
}  // namespace detail

/// Builders for plan steps: `steps::set_weight(5_pct)`, `steps::pause(10min)`,
/// `steps::pause()` (until promoted), `steps::analyze(spec)`.
namespace steps {
inline CanaryStep set_weight(Percent w) { return CanaryStep{CanaryStep::set_weight, w, std::nullopt, {}}; }
inline CanaryStep pause(Duration d) { return CanaryStep{CanaryStep::pause, {}, d, {}}; }
inline CanaryStep pause() { return CanaryStep{CanaryStep::pause, {}, std::nullopt, {}}; }
inline CanaryStep analyze(AnalysisSpec a) { return CanaryStep{CanaryStep::analyze, {}, std::nullopt, std::move(a)}; }
}  // namespace steps

/// A validated canary plan: the explicit steps, whichever way they were written.
///
/// - `CanaryPlan::of(steps)`: Argo-style explicit steps.
/// - `CanaryPlan::linear(step_weight, max_weight, interval)`: Flagger's
///   `stepWeight`/`maxWeight`/`interval`: step_weight, 2 x step_weight, ... up
///   to max_weight, one interval each, each followed by the per-step analysis if given.
/// - `CanaryPlan::weights({1, 2, 10, 50}, interval)`: Flagger's `stepWeights`.
///
/// The generated plan is plain steps (`steps()`, printable with fmt). After the
/// last step the canary is promoted to 100%.
///
/// Validation names the step and the field: weights must not decrease (unless
/// `allow_decrease`), durations must be positive, analyses must be valid, and a
/// plan needs at least one step.
///
/// A plan never changes once built: its copies share one list of steps (by
/// reference count, safe to copy from any thread), so a plan handed to many
/// canaries is held once.
class CanaryPlan {
public:
  /// (`of`, `linear` and `weights` are templates only for compile time: as plain
  /// inline functions they instantiated the shared steps' control block in every
  /// TU of the umbrella header, 2 MB of g++'s front-end heap; see `format_timeline`.)
  template <int = 0>
  static CanaryPlan of(std::vector<CanaryStep> steps, bool allow_decrease = false) {
    if (steps.empty()) throw invalid_option("steps", "[]", "a plan needs at least one step");
    Percent last{};
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const auto& s = steps[i];
      switch (s.kind) {
        case CanaryStep::set_weight:
          if (!allow_decrease && s.weight < last) {
            throw invalid_option(detail::format("steps[{}].weight", i), s.weight.text(),
                                 detail::format("must not be lower than the previous weight ({}); set allow_decrease to permit it",
                                                last.text()));
          }
          last = s.weight;
          break;
        case CanaryStep::pause:
          if (s.duration) require_duration(detail::format("steps[{}].duration", i), *s.duration, DurationRule::positive);
          break;
        case CanaryStep::analyze: s.analysis.validate(detail::format("steps[{}].analysis", i)); break;
      }
    }
    CanaryPlan p;
    p.steps_ = std::make_shared<const std::vector<CanaryStep>>(std::move(steps));
    return p;
  }

  /// Flagger's linear plan: `step_weight`, `2 x step_weight`, ... up to `max_weight`.
  template <int = 0>
  static CanaryPlan linear(Percent step_weight, Percent max_weight, Duration interval, std::optional<AnalysisSpec> each = {}) {
    if (step_weight.is_zero()) throw invalid_option("step_weight", step_weight.text(), "must be greater than 0%");
    if (max_weight < step_weight) {
      throw invalid_option("max_weight", max_weight.text(), detail::format("must be at least step_weight ({})", step_weight.text()));
    }
    std::vector<Percent> ws;
    for (std::int32_t bp = step_weight.basis_points(); bp <= max_weight.basis_points(); bp += step_weight.basis_points()) {
      ws.push_back(Percent::from_basis_points(bp));
    }
    return weights(std::move(ws), interval, std::move(each));
  }

  /// Flagger's `stepWeights`: each weight for one `interval`, then the per-step analysis.
  template <int = 0>
  static CanaryPlan weights(std::vector<Percent> ws, Duration interval, std::optional<AnalysisSpec> each = {}) {
    if (ws.empty()) throw invalid_option("step_weights", "[]", "needs at least one weight");
    require_duration("interval", interval, DurationRule::positive);
    std::vector<CanaryStep> out;
    for (auto w : ws) {
      out.push_back(steps::set_weight(w));
      out.push_back(steps::pause(interval));
      if (each) out.push_back(steps::analyze(*each));
    }
    return of(std::move(out));
  }

  const std::vector<CanaryStep>& steps() const noexcept { return *steps_; }

  // Copies share the steps: 1,000 canaries of one plan hold one copy of it
  // (scale_bench's plan is 712 bytes, its analysis step holding a 312-byte
  // metric). A move copies the pointer too, so a moved-from plan keeps its steps.
  CanaryPlan(const CanaryPlan&) = default;
  CanaryPlan& operator=(const CanaryPlan&) = default;

private:
  CanaryPlan() = default;
  std::shared_ptr<const std::vector<CanaryStep>> steps_;
};

/// Analysis that runs in the background from step `start_step` until the run
/// ends, across pauses. A failure ends the run at once, even in the middle of a
/// pause; an inconclusive metric pauses the canary until promoted or aborted.
struct BackgroundAnalysis {
  AnalysisSpec analysis;
  std::size_t start_step = 0;
};

/// Options of a canary run.
struct CanaryOptions {
  std::string stable_group = "stable";        ///< The load balancer's name for the stable side.
  std::string canary_group = "canary";        ///< ... and for the canary.
  std::optional<std::string> baseline_group;  ///< If set, a baseline of the stable revision gets the canary's weight too (Kayenta).
  std::optional<Revision> baseline;           ///< The baseline's revision (default: the stable revision).
  std::optional<BackgroundAnalysis> background;
  Duration lb_timeout{std::chrono::seconds(5)};
  Backoff lb_retry{};

  void validate(std::size_t plan_size) const {
    if (stable_group.empty()) throw invalid_option("stable_group", "\"\"", "must not be empty");
    if (canary_group.empty()) throw invalid_option("canary_group", "\"\"", "must not be empty");
    if (canary_group == stable_group) {
      throw invalid_option("canary_group", detail::format("\"{}\"", canary_group), "must differ from stable_group");
    }
    if (baseline_group && (baseline_group->empty() || *baseline_group == stable_group || *baseline_group == canary_group)) {
      throw invalid_option("baseline_group", detail::format("\"{}\"", *baseline_group), "must be non-empty and differ from the other groups");
    }
    if (background) {
      background->analysis.validate("background.analysis");
      if (background->start_step >= plan_size) {
        throw invalid_option("background.start_step", detail::format("{}", background->start_step),
                             detail::format("must be a step index below {}", plan_size));
      }
    }
    require_duration("lb_timeout", lb_timeout, DurationRule::positive);
    lb_retry.validate("lb_retry");
  }
};

/// The phases of a canary run.
enum class CanaryPhase { pending, progressing, paused, promoting, rolling_back, done };

inline const char* to_string(CanaryPhase p) noexcept {
  switch (p) {
    case CanaryPhase::pending: return "pending";
    case CanaryPhase::progressing: return "progressing";
    case CanaryPhase::paused: return "paused";
    case CanaryPhase::promoting: return "promoting";
    case CanaryPhase::rolling_back: return "rolling_back";
    case CanaryPhase::done: return "done";
  }
  return "unknown";
}

/// The observable state of a canary run: plain data, printable with fmt.
struct CanaryState {
  CanaryPhase phase = CanaryPhase::pending;
  std::size_t step = 0;         ///< Index of the current step.
  Percent step_weight{};        ///< The weight the plan allows now (the last set_weight).
  std::optional<TrafficSplit> applied;  ///< The last split the load balancer confirmed.
  std::string analysis;         ///< The latest analysis summary.
};

/// A canary release: shift a growing share of traffic to the new revision step
/// by step, measure it, and either promote it to 100% or put everything back on
/// stable. Plans and analysis follow Argo Rollouts (steps, metric limits,
/// background analysis, inconclusive pauses) and Flagger (generated steps,
/// threshold ranges); the judge follows Kayenta (baseline, Mann-Whitney, score).
///
/// A run (`co_await canary.run()`):
/// 1. Applies {stable 100%, canary 0%} (verified), so the starting state is known.
/// 2. Runs the plan's steps in order. `set_weight` applies the split (verified,
///    retried under `lb_retry`); `pause` waits; `analyze` runs an analysis to its end.
///    Background analysis starts at its step and runs until the end.
/// 3. After the last step, applies 100% canary (verified): `Promoted`.
///
/// On a failed or errored analysis, or an abort, traffic goes back to 100%
/// stable, verified, within one load balancer round trip of the decision:
/// `RolledBack` (or `Aborted`), with the metric, its values and the limit in the
/// reason. A failure to restore stable is `Failed` with both errors. An
/// inconclusive analysis pauses the run until `promote()` (go on) or `abort()`.
///
/// **Control.** `promote()` ends the current pause or inconclusive hold;
/// `promote_full()` skips every remaining step and analysis; `abort()` preempts
/// anything, including a full promotion in flight (Argo issue 4461): if the
/// abort arrives while 100% canary is being applied, stable is restored right
/// after. `pause()` freezes pause timers until `resume()`. Cancelling the caller
/// is an abort. The rollback itself is never cancelled.
///
/// Invariants (checked by `testing::CanaryInvariants`): the canary's weight never
/// exceeds the current step's weight; when `run()` returns, 100% of traffic is on
/// one side, named by `Outcome::active`.
template <LoadBalancer LB, MetricsSource M, Clock C = SteadyClock>
class Canary {
public:
  /// Validates everything and throws `invalid_option` (naming field and value) on bad input.
  Canary(LB& lb, M& metrics, Revision stable, Revision canary, CanaryPlan plan, CanaryOptions options = {}, C clock = C{})
      : lb_(lb),
        metrics_(metrics),
        stable_(std::move(stable)),
        canary_(std::move(canary)),
        plan_(std::move(plan)),
        options_(std::move(options)),
        clock_(std::move(clock)),
        ctx_("canary", clock_, observers_),
        rng_(options_.lb_retry.seed) {
    if (stable_.id.empty()) throw invalid_option("stable", "\"\"", "must not be empty");
    if (canary_.id.empty()) throw invalid_option("canary", "\"\"", "must not be empty");
    if (stable_ == canary_) throw invalid_option("canary", detail::format("\"{}\"", canary_.id), "must differ from the stable revision");
    options_.validate(plan_.steps().size());
    if (options_.baseline_group) {
      for (std::size_t i = 0; i < plan_.steps().size(); ++i) {
        const auto& s = plan_.steps()[i];
        if (s.kind == CanaryStep::set_weight && s.weight.basis_points() * 2 > Percent::full_scale) {
          throw invalid_option(detail::format("steps[{}].weight", i), s.weight.text(),
                               "must be at most 50% when a baseline gets the same weight");
        }
      }
    }
  }

  Canary(const Canary&) = delete;
  Canary& operator=(const Canary&) = delete;

  /// Runs the canary to its end. See the class comment.
  boost::asio::awaitable<Outcome> run() {
    if (started_) throw std::logic_error("Canary::run() may be called only once");
    started_ = true;
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    ex_ = co_await boost::asio::this_coro::executor;
    detail::Notifier wake(ex_);
    wake_ = &wake;
    ctx_.begin(expected_events());
    ctx_.emit(EventKind::run_started, canary_.id,
              detail::format("canary {} -> {}, {} steps", stable_, canary_, plan_.steps().size()));
    control_.set_listener([this](Control::Request r, const std::string& d) { on_request(r, d); });

    Ending end = co_await body();
    co_return co_await conclude(std::move(end));
  }

  Control& control() noexcept { return control_; }
  ObserverList& observers() noexcept { return observers_; }
  const CanaryState& state() const noexcept { return state_; }
  const CanaryPlan& plan() const noexcept { return plan_; }

private:
  using Run = AnalysisRun<M, C>;

  /// Why a wait ended early.
  enum class Interrupt { none, abort, background_failed, promote_full };

  void on_request(Control::Request r, const std::string& detail) {
    switch (r) {
      case Control::Request::promote:
      case Control::Request::promote_full: ctx_.emit(EventKind::promote_requested, canary_.id, detail); break;
      case Control::Request::abort: ctx_.emit(EventKind::abort_requested, canary_.id, detail); break;
      case Control::Request::pause: ctx_.emit(EventKind::paused, canary_.id, detail); break;
      case Control::Request::resume: ctx_.emit(EventKind::resumed, canary_.id, detail); break;
    }
    if (wake_) wake_->notify_all();
  }

  void set_phase(CanaryPhase p) {
    if (state_.phase == p) return;
    state_.phase = p;
    ctx_.emit(EventKind::phase_changed, to_string(p));
  }

  /// The events a run records when nothing goes wrong and nobody steps in
  /// (retries, holds and background findings add more); the timeline is reserved
  /// for them. Grown by doubling, a canary's timeline was a quarter slack.
  std::size_t expected_events() const {
    auto measurements = [](const AnalysisSpec& a) {
      std::size_t n = 0;
      for (const auto& m : a.metrics) n += m.count ? static_cast<std::size_t>(*m.count) : 1;
      return n;
    };
    std::size_t n = 7;  // run_started, progressing, the first split, promoting, the full split, done, run_finished
    for (const auto& s : plan_.steps()) {
      n += 2;  // step_started, step_completed
      if (s.kind == CanaryStep::set_weight) n += 1;                    // traffic_applied
      else if (s.kind == CanaryStep::pause && !s.duration) n += 4;     // paused (phase and event), promote_requested, progressing
      else if (s.kind == CanaryStep::analyze) n += 2 + measurements(s.analysis);  // check_started, results, verdict
    }
    if (options_.background) n += 1 + measurements(options_.background->analysis);
    return n;
  }

  Revision baseline_revision() const { return options_.baseline ? *options_.baseline : stable_; }

  TrafficSplit split_for(Percent w) const {
    std::vector<TrafficSplit::Share> shares;
    if (options_.baseline_group) {
      shares = {{options_.canary_group, w}, {*options_.baseline_group, w},
                {options_.stable_group, Percent::from_basis_points(Percent::full_scale - 2 * w.basis_points())}};
    } else {
      shares = {{options_.canary_group, w}, {options_.stable_group, w.complement()}};
    }
    return TrafficSplit::of(std::move(shares));
  }
  TrafficSplit all_canary() const {
    std::vector<TrafficSplit::Share> shares{{options_.canary_group, Percent::full()}, {options_.stable_group, Percent{}}};
    if (options_.baseline_group) shares.push_back({*options_.baseline_group, Percent{}});
    return TrafficSplit::of(std::move(shares));
  }

  boost::asio::awaitable<result<void>> apply(TrafficSplit split) {
    auto r = co_await detail::apply_verified(lb_, ctx_, split, options_.lb_timeout, options_.lb_retry, rng_);
    if (r) state_.applied = std::move(split);
    co_return r;
  }

  void emit_analysis(EventKind k, const std::string& subject, std::string detail) { ctx_.emit(k, subject, std::move(detail)); }

  /// A run of `spec`, which is a step of `plan_` or `options_`' background
  /// analysis: both outlive every analysis run (none outlives `run()`), so the
  /// run reads the spec in place through a pointer that owns nothing (the
  /// aliasing constructor with an empty owner) instead of copying it per canary.
  std::unique_ptr<Run> make_run(const AnalysisSpec& spec) {
    return std::make_unique<Run>(metrics_, clock_, std::shared_ptr<const AnalysisSpec>(std::shared_ptr<const void>(), &spec), canary_,
                                 baseline_revision(), wake_,
                                 [this](EventKind k, const std::string& s, std::string d) { emit_analysis(k, s, std::move(d)); });
  }

  /// Checks that preempt every wait: abort, a failed background analysis, a full promotion.
  Interrupt interrupted(bool honour_full = true) const {
    if (control_.abort_requested()) return Interrupt::abort;
    if (background_ && (background_->phase(true) == AnalysisPhase::failed || background_->phase(true) == AnalysisPhase::error)) {
      return Interrupt::background_failed;
    }
    if (honour_full && control_.full_promotion_requested()) return Interrupt::promote_full;
    return Interrupt::none;
  }

  /// Waits for a change or `deadline`; pass what it returns to `woke()`. (Two
  /// halves rather than one coroutine: one frame fewer on every wait.)
  boost::asio::awaitable<detail::Wake> wait(TimePoint deadline) { return detail::wait_for_change(clock_, *wake_, deadline); }
  /// A cancelled caller becomes an abort.
  void woke(detail::Wake why) {
    if (why == detail::Wake::cancelled) control_.abort("run() was cancelled by its caller");
  }

  /// Whether `check_background_inconclusive()` has anything to do (tested first,
  /// so that the common case starts no coroutine).
  bool background_inconclusive_unacknowledged() const {
    return background_ && !background_acknowledged_ && background_->phase(true) == AnalysisPhase::inconclusive;
  }

  /// Holds (phase paused) until `promote()`, or an interruption. A background
  /// analysis that turned inconclusive is acknowledged by the promote.
  boost::asio::awaitable<Interrupt> hold(std::string why) {
    set_phase(CanaryPhase::paused);
    ctx_.emit(EventKind::paused, canary_.id, std::move(why));
    for (;;) {
      if (auto i = interrupted(); i != Interrupt::none) co_return i;
      if (control_.take_promotion()) break;
      woke(co_await wait(TimePoint::max()));
    }
    set_phase(CanaryPhase::progressing);
    co_return Interrupt::none;
  }

  /// Background inconclusive: pause once per inconclusive metric, until promoted.
  boost::asio::awaitable<Interrupt> check_background_inconclusive() {
    if (!background_inconclusive_unacknowledged()) co_return Interrupt::none;
    background_acknowledged_ = true;
    co_return co_await hold(detail::format("background analysis inconclusive: {}; waiting for promote() or abort()", background_->reason()));
  }

  /// A timed pause: counts down only while not paused by the operator.
  boost::asio::awaitable<Interrupt> timed_pause(Duration d) {
    Duration left = d;
    for (;;) {
      if (auto i = interrupted(); i != Interrupt::none) co_return i;
      if (background_inconclusive_unacknowledged()) {
        if (auto i = co_await check_background_inconclusive(); i != Interrupt::none) co_return i;
      }
      if (control_.take_promotion()) co_return Interrupt::none;  // promote() ends the pause early
      if (left <= Duration::zero()) co_return Interrupt::none;
      if (control_.paused()) {
        woke(co_await wait(TimePoint::max()));
        continue;
      }
      const auto from = clock_.now();
      woke(co_await wait(detail::add_saturating(from, left)));
      left -= clock_.now() - from;
    }
  }

  /// Runs an inline analysis to its end.
  boost::asio::awaitable<std::pair<Interrupt, AnalysisPhase>> inline_analysis(const AnalysisSpec& spec) {
    auto run = make_run(spec);
    ctx_.emit(EventKind::check_started, spec.name, detail::format("{} metrics", spec.metrics.size()));
    detail::Task task;
    task.start(ex_, [&run](detail::TaskScope scope) { return run->run(std::move(scope)); }, wake_);
    Interrupt why = Interrupt::none;
    for (;;) {
      if (why = interrupted(); why != Interrupt::none) break;
      if (background_inconclusive_unacknowledged()) {
        if (auto i = co_await check_background_inconclusive(); i != Interrupt::none) {
          why = i;
          break;
        }
      }
      if (run->phase() != AnalysisPhase::running) break;
      woke(co_await wait(TimePoint::max()));
    }
    co_await task.stop();
    const auto phase = run->phase();
    last_reason_ = run->reason();
    state_.analysis = last_reason_;
    if (why == Interrupt::none) {
      const auto kind = phase == AnalysisPhase::successful     ? EventKind::check_passed
                        : phase == AnalysisPhase::inconclusive ? EventKind::check_inconclusive
                                                               : EventKind::check_failed;
      ctx_.emit(kind, spec.name, last_reason_);
    }
    co_return std::pair{why, phase};
  }

  boost::asio::awaitable<void> stop_analyses() {
    co_await background_task_.stop();
    background_.reset();
  }

  /// Back to 100% stable, verified; shielded from cancellation.
  boost::asio::awaitable<Outcome> roll_back(Status status, Error why) {
    set_phase(CanaryPhase::rolling_back);
    ctx_.emit(EventKind::rollback_started, options_.stable_group, why.message, std::nullopt, why.code);
    auto r = co_await apply(split_for(Percent{}));  // first: traffic moves within one round trip of the decision
    co_await stop_analyses();
    Outcome o;
    if (r) {
      o.status = status;
      o.code = why.code;
      o.reason = detail::format("{}; traffic back to 100% {}", why.message, options_.stable_group);
      o.active = options_.stable_group;
    } else {
      o.status = Status::failed;
      o.code = make_error_code(errc::rollback_failed);
      o.reason = detail::format("{}; restoring 100% {} failed too: {}", why.message, options_.stable_group, r.error().message);
    }
    co_return o;
  }

  /// How `body()` ended. The rollback it may ask for runs in `run()`: a frame
  /// that awaited it at each of its exits would hold an `Outcome`, an `Error` and
  /// an awaitable per exit (g++ gives every awaited temporary its own slot), and
  /// that frame is alive for a canary's whole life.
  struct Ending {
    Status status = Status::promoted;
    Error why;               ///< Why it rolls back or failed; for a promotion, the reason.
    bool roll_back = false;  ///< Traffic goes back to 100% stable (verified) before the outcome.
  };
  static Ending ended(Status s, Error why, bool roll_back = false) {
    Ending e;
    e.status = s;
    e.why = std::move(why);
    e.roll_back = roll_back;
    return e;
  }
  static Ending rolling_back(Status s, Error why) { return ended(s, std::move(why), true); }
  /// The end of `run()`: the rollback `body()` asked for, if any, then the
  /// outcome. A coroutine of its own, alive only at the end, so that the frame
  /// alive for a canary's whole life (`run()`'s) does not also hold the slots
  /// g++ gives each `Outcome` the end touches (that frame was 1,392 bytes, now
  /// 1,088). `run()`'s notifier, which the rollback's waits use, outlives it.
  boost::asio::awaitable<Outcome> conclude(Ending end) {
    Outcome out;
    if (end.roll_back) {
      out = co_await roll_back(end.status, std::move(end.why));
    } else {
      out = ended_without_rollback(std::move(end));
    }
    co_await stop_analyses();
    control_.set_listener({});
    set_phase(CanaryPhase::done);
    wake_ = nullptr;
    co_return ctx_.finish(std::move(out));
  }

  /// The outcome of a run that did not roll back: promoted, or failed before any traffic moved.
  Outcome ended_without_rollback(Ending e) const {
    Outcome o;
    o.status = e.status;
    o.code = e.why.code;
    o.reason = std::move(e.why.message);
    if (e.status == Status::promoted) o.active = options_.canary_group;
    return o;
  }

  Ending on_interrupt(Interrupt i) const {
    if (i == Interrupt::abort) {
      return rolling_back(Status::aborted, Error(errc::aborted, detail::format("aborted at step {}: {}", state_.step, control_.abort_reason())));
    }
    // background failed
    const auto phase = background_->phase(true);
    return rolling_back(Status::rolled_back, Error(phase == AnalysisPhase::error ? errc::analysis_error : errc::analysis_failed,
                                                   detail::format("background analysis {}: {}", to_string(phase), background_->reason())));
  }

  boost::asio::awaitable<Ending> body() {
    set_phase(CanaryPhase::progressing);
    // A known starting point: everything on stable.
    if (auto r = co_await apply(split_for(Percent{})); !r) {
      co_return ended(Status::failed, Error(r.error().code, detail::format("could not set the initial split: {}", r.error().message)));
    }
    const auto& all = plan_.steps();
    bool full = false;
    for (std::size_t i = 0; i < all.size() && !full; ++i) {
      state_.step = i;
      const auto& step = all[i];
      if (options_.background && options_.background->start_step == i && !background_) {
        background_ = make_run(options_.background->analysis);
        ctx_.emit(EventKind::check_started, options_.background->analysis.name, "background analysis started");
        background_task_.start(ex_, [this](detail::TaskScope scope) { return background_->run(std::move(scope)); }, wake_);
      }
      if (auto in = interrupted(); in != Interrupt::none) {
        if (in == Interrupt::promote_full) {
          full = true;
          break;
        }
        co_return on_interrupt(in);
      }
      const std::string label = detail::step_label(step);
      if (step.kind == CanaryStep::set_weight) state_.step_weight = step.weight;
      const std::string subject = detail::join_int("steps[", static_cast<long long>(i), "]");
      // A set_weight step's split, built once: recorded with the event, then applied.
      std::optional<TrafficSplit> split;
      if (step.kind == CanaryStep::set_weight) split = split_for(step.weight);
      ctx_.emit(EventKind::step_started, subject, label, split);
      Interrupt in = Interrupt::none;
      switch (step.kind) {
        case CanaryStep::set_weight: {
          auto r = co_await apply(std::move(*split));
          if (!r) {
            co_return rolling_back(Status::failed, Error(r.error().code, detail::format("set_weight {} failed: {}", step.weight, r.error().message)));
          }
          break;
        }
        case CanaryStep::pause:
          if (step.duration) {
            in = co_await timed_pause(*step.duration);
          } else {
            in = co_await hold("pause step: waiting for promote()");
          }
          break;
        case CanaryStep::analyze: {
          auto [why, phase] = co_await inline_analysis(step.analysis);
          in = why;
          if (in == Interrupt::none) {
            if (phase == AnalysisPhase::failed || phase == AnalysisPhase::error) {
              co_return rolling_back(Status::rolled_back,
                                     Error(phase == AnalysisPhase::error ? errc::analysis_error : errc::analysis_failed,
                                           detail::format("analysis {} {}: {}", step.analysis.name, to_string(phase), last_reason_)));
            }
            if (phase == AnalysisPhase::inconclusive) {
              in = co_await hold(detail::format("analysis {} inconclusive: {}; waiting for promote() or abort()", step.analysis.name, last_reason_));
            }
          }
          break;
        }
      }
      if (in == Interrupt::promote_full) {
        full = true;
      } else if (in != Interrupt::none) {
        co_return on_interrupt(in);
      }
      ctx_.emit(EventKind::step_completed, subject, label);
    }
    // Promotion. An abort that arrives while it is in flight still wins.
    if (auto in = interrupted(false); in != Interrupt::none) co_return on_interrupt(in);
    set_phase(CanaryPhase::promoting);
    state_.step_weight = Percent::full();
    auto r = co_await apply(all_canary());
    if (auto in = interrupted(false); in != Interrupt::none) co_return on_interrupt(in);
    if (!r) {
      co_return rolling_back(Status::failed, Error(r.error().code, detail::format("promotion to 100% {} failed: {}", options_.canary_group, r.error().message)));
    }
    co_return ended(Status::promoted, Error(error_code{}, full ? detail::format("{} promoted to 100% (full promotion requested)", canary_)
                                                                : detail::format("{} promoted to 100% after {} steps", canary_, all.size())));
  }

  LB& lb_;
  M& metrics_;
  Revision stable_;
  Revision canary_;
  CanaryPlan plan_;
  CanaryOptions options_;
  C clock_;
  ObserverList observers_;
  detail::RunContext<C> ctx_;
  Control control_;
  JitterEngine rng_;
  CanaryState state_;
  boost::asio::any_io_executor ex_;
  detail::Notifier* wake_ = nullptr;
  std::unique_ptr<Run> background_;
  detail::Task background_task_;
  bool background_acknowledged_ = false;
  std::string last_reason_;
  bool started_ = false;
};

}  // namespace rollout

/// Formats as `set_weight 5%`, `pause 10m`, `pause until promoted` or `analyze <name>`.
template <>
struct fmt::formatter<rollout::CanaryStep> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::CanaryStep& s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::detail::step_label(s), ctx);
  }
};

/// Formats as `[set_weight 5%, pause 1m, ...]`.
template <>
struct fmt::formatter<rollout::CanaryPlan> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::CanaryPlan& p, FormatContext& ctx) const {
    std::string text = "[";
    for (std::size_t i = 0; i < p.steps().size(); ++i) text += rollout::detail::format("{}{}", i ? ", " : "", p.steps()[i]);
    return fmt::formatter<std::string_view>::format(text + "]", ctx);
  }
};

/// Formats as `progressing`.
template <>
struct fmt::formatter<rollout::CanaryPhase> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::CanaryPhase p, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(p), ctx);
  }
};

/// Formats as `progressing at steps[3], step weight 10%, applied {canary: 10%, stable: 90%}`.
template <>
struct fmt::formatter<rollout::CanaryState> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::CanaryState& s, FormatContext& ctx) const {
    std::string text = rollout::detail::format("{} at steps[{}], step weight {}", rollout::to_string(s.phase), s.step, s.step_weight.text());
    if (s.applied) text += rollout::detail::format(", applied {}", *s.applied);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
