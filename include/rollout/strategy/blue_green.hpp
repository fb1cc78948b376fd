#pragma once

/// @file
/// `rollout::BlueGreen<LB, Health, Clock>`: a health-gated, verified switch with
/// pre- and post-promotion checks and automatic rollback.

#include <rollout/analysis/health_monitor.hpp>
#include <rollout/analysis/probe_schedule.hpp>
#include <rollout/concepts.hpp>
#include <rollout/core/backoff.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/control.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/run_context.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>

namespace rollout {

/// A user-supplied check of an environment (smoke tests, synthetic traffic, a
/// metric query...). It returns a `Verdict`: `pass`, `fail` (the run fails or rolls
/// back) or `inconclusive` (the run holds until `promote()` or `abort()`, as Argo
/// Rollouts does). It is cancelled when the run is aborted or the target turns
/// unhealthy, and bounded by `BlueGreenOptions::check_timeout`.
using EnvironmentCheck = std::function<boost::asio::awaitable<Verdict>(const Environment&)>;

/// Options of a blue-green run. Defaults follow Kubernetes probes and Argo
/// Rollouts' blue-green (`autoPromotionEnabled` true, `scaleDownDelaySeconds` 30).
struct BlueGreenOptions {
  ProbeSpec probe{};                                         ///< Readiness and health probing of the target.
  std::size_t probe_concurrency = 16;                        ///< Probes in flight at once (>= 1).
  Duration ready_deadline{std::chrono::minutes(10)};         ///< Time for the target to become ready (> 0).
  EnvironmentCheck pre_promotion_check;                      ///< Optional; runs before any traffic moves.
  bool auto_promote = true;                                  ///< Promote without waiting for `promote()`.
  Duration auto_promote_after{0};                            ///< Delay before auto-promotion (>= 0).
  Duration verify_for{std::chrono::seconds(30)};             ///< Post-switch window of continued probing (>= 0).
  EnvironmentCheck post_promotion_check;                     ///< Optional; runs during the verification window.
  Duration check_timeout{std::chrono::minutes(10)};          ///< Bound on each check (> 0).
  Duration scale_down_delay{std::chrono::seconds(30)};       ///< Drain time before the old side is releasable (>= 0).
  Duration lb_timeout{std::chrono::seconds(5)};              ///< Bound on each `lb.apply` (> 0).
  Backoff lb_retry{};                                        ///< Retries of transient load balancer errors.

  /// Throws `invalid_option` naming the field and the value for any option out of range.
  void validate() const {
    probe.validate("probe");
    if (probe_concurrency < 1) throw invalid_option("probe_concurrency", "0", "must be at least 1");
    require_duration("ready_deadline", ready_deadline, DurationRule::positive);
    require_duration("auto_promote_after", auto_promote_after, DurationRule::non_negative);
    require_duration("verify_for", verify_for, DurationRule::non_negative);
    require_duration("check_timeout", check_timeout, DurationRule::positive);
    require_duration("scale_down_delay", scale_down_delay, DurationRule::non_negative);
    require_duration("lb_timeout", lb_timeout, DurationRule::positive);
    lb_retry.validate("lb_retry");
  }
};

/// The phases of a blue-green run, in order.
enum class BlueGreenPhase {
  pending,              ///< `run()` not called yet.
  readiness,            ///< Probing the target until every instance is ready.
  pre_promotion_check,  ///< Running the pre-promotion check; no traffic on the target.
  awaiting_promotion,   ///< Waiting for `promote()` or the auto-promotion delay.
  switching,            ///< Applying 100% on the target.
  verifying,            ///< Post-switch window: probing the target, running the post check.
  rolling_back,         ///< Switching back to the active environment.
  scaling_down,         ///< Waiting `scale_down_delay` before the idle side is releasable.
  done,                 ///< `run()` has returned.
};

/// The observable state of a blue-green run: plain data, printable with fmt.
struct BlueGreenState {
  BlueGreenPhase phase = BlueGreenPhase::pending;
  std::optional<TrafficSplit> applied;  ///< The last split the load balancer confirmed during this run.
};

/// Name of a phase, e.g. `awaiting_promotion`.
inline const char* to_string(BlueGreenPhase p) noexcept {
  switch (p) {
    case BlueGreenPhase::pending: return "pending";
    case BlueGreenPhase::readiness: return "readiness";
    case BlueGreenPhase::pre_promotion_check: return "pre_promotion_check";
    case BlueGreenPhase::awaiting_promotion: return "awaiting_promotion";
    case BlueGreenPhase::switching: return "switching";
    case BlueGreenPhase::verifying: return "verifying";
    case BlueGreenPhase::rolling_back: return "rolling_back";
    case BlueGreenPhase::scaling_down: return "scaling_down";
    case BlueGreenPhase::done: return "done";
  }
  return "unknown";
}

/// A blue-green release: bring up the target environment next to the active one,
/// prove it ready and (optionally) correct while it gets no traffic, switch all
/// traffic to it in one verified step, keep verifying it, and switch back at once
/// if it fails. It follows Argo Rollouts' blue-green, with Kubernetes probe
/// semantics, and adds a verified switch, bounded retries and abort at any time.
///
/// A run (`co_await bg.run()`):
/// 1. **Readiness.** Every target instance is probed (at most
///    `probe_concurrency` at once) until it passes `probe.success_threshold`
///    consecutive probes. Not all ready within `ready_deadline`: `Failed`, traffic untouched.
/// 2. **Pre-promotion check** (if set). `fail`: `Failed`, traffic untouched;
///    `inconclusive`: the gate becomes manual.
/// 3. **Gate.** `auto_promote` after `auto_promote_after`, or `control().promote()`.
///    Probing continues; a target instance crossing `failure_threshold` fails the
///    run, and a single failed probe defers the switch until it passes again.
/// 4. **Switch.** `lb.apply(100% target)`, verified by the load balancer's
///    read-back, retried under `lb_retry` for transient errors. If it still fails,
///    100% goes back on the active environment (verified) and the run is `Failed`
///    with the load balancer's error.
/// 5. **Verification.** Probing (and the post-promotion check, if set) continues
///    for `verify_for`. A failure switches back at once (one load balancer round
///    trip after the decision): `RolledBack`.
/// 6. **Scale-down delay.** The side that stopped receiving traffic is reported
///    `releasable` (event and `Outcome::releasable`) after `scale_down_delay`, so
///    clients still connected to it can drain. Traffic does not wait for it.
///
/// Invariants (checked by `testing::BlueGreenInvariants`): traffic only goes to
/// an environment whose every instance is passing its probes; when `run()`
/// returns, 100% of traffic is on one environment, named by `Outcome::active`.
///
/// **Cancellation and abort.** `control().abort()`, or cancelling the coroutine
/// that awaits `run()`, preempts whatever is in flight (probes, checks, the gate,
/// the verification window, the scale-down delay). Before the switch, traffic is
/// untouched and the run ends `Aborted`. After it, traffic is switched back
/// (shielded: the switch back itself is never cancelled) and the run ends
/// `Aborted`. **Errors** never escape as exceptions: they become the `Outcome`.
/// A policy that throws is treated as a failed call.
///
/// `run()` may be called once. `LB`, `Health` and observers are held by
/// reference and must outlive the run. Use one strand.
template <LoadBalancer LB, HealthProbe Health, Clock C = SteadyClock>
class BlueGreen {
public:
  /// Validates everything and throws `invalid_option` (naming field and value) on
  /// bad input: empty or equal environment names, an empty target, duplicate
  /// instance ids, or any option out of range.
  BlueGreen(LB& lb, Health& probe, Environment active, Environment target, BlueGreenOptions options = {}, C clock = C{})
      : lb_(lb),
        probe_(probe),
        active_(std::move(active)),
        target_(std::move(target)),
        options_(std::move(options)),
        clock_(std::move(clock)),
        ctx_("blue_green", clock_, observers_),
        rng_(options_.lb_retry.seed) {
    if (active_.name.empty()) throw invalid_option("active.name", "\"\"", "must not be empty");
    if (target_.name.empty()) throw invalid_option("target.name", "\"\"", "must not be empty");
    if (active_.name == target_.name) {
      throw invalid_option("target.name", detail::format("\"{}\"", target_.name), "must differ from active.name");
    }
    if (target_.instances.empty()) throw invalid_option("target.instances", "[]", "must not be empty");
    std::set<std::string> ids;
    for (std::size_t i = 0; i < target_.instances.size(); ++i) {
      const auto& id = target_.instances[i].id;
      if (id.empty()) throw invalid_option(detail::format("target.instances[{}].id", i), "\"\"", "must not be empty");
      if (!ids.insert(id).second) {
        throw invalid_option(detail::format("target.instances[{}].id", i), detail::format("\"{}\"", id), "appears twice");
      }
    }
    options_.validate();
  }

  BlueGreen(const BlueGreen&) = delete;
  BlueGreen& operator=(const BlueGreen&) = delete;

  /// Runs the release to its end and returns how it went. See the class comment.
  boost::asio::awaitable<Outcome> run() {
    if (started_) throw std::logic_error("BlueGreen::run() may be called only once");
    started_ = true;
    // Cancellation of our caller is turned into an abort below; we must not let
    // it throw out of the rollback that follows.
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    auto ex = co_await boost::asio::this_coro::executor;

    detail::Notifier wake(ex);
    wake_ = &wake;
    // Reserved for a switch nobody steps into: one readiness event per target
    // instance and eleven for the run (started, six phases, the promotion, the
    // verified switch, releasable, finished).
    ctx_.begin(target_.instances.size() + 11);
    ctx_.emit(EventKind::run_started, target_.name,
              detail::format("blue-green from {} to {} ({} instances)", active_, target_.revision, target_.instances.size()));
    control_.set_listener([this](Control::Request r, const std::string& detail) { on_request(r, detail); });

    HealthMonitor<Health, C> monitor(probe_, clock_, target_.instances, options_.probe, options_.probe_concurrency, &wake,
                                     [this](EventKind k, const std::string& subject, std::string detail) {
                                       ctx_.emit(k, subject, std::move(detail));
                                     });
    monitor_ = &monitor;
    detail::Task probing;
    probing.start(ex, monitor.run(), &wake);

    Outcome out = co_await body();

    co_await probing.stop();
    monitor_ = nullptr;
    co_await scale_down(out);
    control_.set_listener({});
    set_phase(BlueGreenPhase::done);
    wake_ = nullptr;
    co_return ctx_.finish(std::move(out));
  }

  /// The live control handle: promote, abort, pause, resume.
  Control& control() noexcept { return control_; }
  /// Attach observers before `run()`.
  ObserverList& observers() noexcept { return observers_; }
  const BlueGreenState& state() const noexcept { return state_; }
  const Environment& active() const noexcept { return active_; }
  const Environment& target() const noexcept { return target_; }
  const BlueGreenOptions& options() const noexcept { return options_; }

private:
  enum class Stop { done, deadline, aborted, unhealthy };

  void set_phase(BlueGreenPhase p) {
    if (state_.phase == p) return;
    state_.phase = p;
    ctx_.emit(EventKind::phase_changed, to_string(p));
  }

  void on_request(Control::Request r, const std::string& detail) {
    switch (r) {
      case Control::Request::promote:
      case Control::Request::promote_full: ctx_.emit(EventKind::promote_requested, target_.name, detail); break;
      case Control::Request::abort: ctx_.emit(EventKind::abort_requested, target_.name, detail); break;
      case Control::Request::pause: ctx_.emit(EventKind::paused, target_.name, detail); break;
      case Control::Request::resume: ctx_.emit(EventKind::resumed, target_.name, detail); break;
    }
    if (wake_) wake_->notify_all();
  }

  /// Waits for a change or `deadline`. A cancelled caller becomes an abort.
  boost::asio::awaitable<void> wait(TimePoint deadline) {
    const auto why = co_await detail::wait_for_change(clock_, *wake_, deadline);
    if (why == detail::Wake::cancelled) control_.abort("run() was cancelled by its caller");
  }

  /// Waits until `done()` holds, `deadline` passes, an abort arrives, or (when
  /// `watch_health`) a target instance becomes unhealthy.
  template <class Done>
  boost::asio::awaitable<Stop> wait_until(Done done, TimePoint deadline, bool watch_health) {
    for (;;) {
      if (control_.abort_requested()) co_return Stop::aborted;
      if (watch_health && first_unhealthy()) co_return Stop::unhealthy;
      if (done()) co_return Stop::done;
      if (clock_.now() >= deadline) co_return Stop::deadline;
      co_await wait(deadline);
    }
  }

  const typename HealthMonitor<Health, C>::Entry* first_unhealthy() const {
    for (const auto& e : monitor_->entries()) {
      if (e.tracker.state() == ProbeTracker::State::unhealthy) return &e;
    }
    return nullptr;
  }

  std::string unhealthy_reason(const char* when) const {
    const auto* e = first_unhealthy();
    return detail::format("target {} instance {} became unhealthy {}: {} consecutive failed probes, last: {}", target_.name,
                          e->instance.id, when, e->tracker.consecutive_failures(), e->last.detail);
  }

  /// An outcome that leaves traffic where it was (on the active environment).
  Outcome untouched(Status s, Error why) const {
    Outcome o;
    o.status = s;
    o.code = why.code;
    o.reason = std::move(why.message);
    o.active = active_.name;
    o.releasable = target_.name;
    return o;
  }

  boost::asio::awaitable<void> run_check(const EnvironmentCheck& check, std::string name, std::optional<Verdict>& out) {
    try {
      auto v = co_await detail::with_timeout(clock_, options_.check_timeout, check(target_));
      out = v ? std::move(*v) : Verdict::failed(detail::format("{} timed out after {}", name, format_duration(options_.check_timeout)));
    } catch (const boost::system::system_error& e) {
      if (e.code() == boost::asio::error::operation_aborted) throw;
      out = Verdict::failed(detail::format("{} threw: {}", name, e.what()));
    } catch (const std::exception& e) {
      out = Verdict::failed(detail::format("{} threw: {}", name, e.what()));
    }
  }

  void report_verdict(const std::string& name, const Verdict& v) {
    const auto kind = v.kind == Verdict::pass   ? EventKind::check_passed
                      : v.kind == Verdict::fail ? EventKind::check_failed
                                                : EventKind::check_inconclusive;
    ctx_.emit(kind, name, v.detail);
  }

  /// 100% on `env`, 0% on the other environment: both are named, so the load
  /// balancer never has to guess what to do with a group the split leaves out.
  TrafficSplit all_on(const Environment& env) const {
    const auto& other = &env == &target_ ? active_ : target_;
    return TrafficSplit::of({{env.name, Percent::full()}, {other.name, Percent{}}});
  }

  boost::asio::awaitable<result<void>> switch_to(const Environment& env) {
    auto split = all_on(env);
    auto r = co_await detail::apply_verified(lb_, ctx_, split, options_.lb_timeout, options_.lb_retry, rng_);
    if (r) state_.applied = std::move(split);
    co_return r;
  }

  boost::asio::awaitable<Outcome> roll_back(Status s, Error why) {
    set_phase(BlueGreenPhase::rolling_back);
    ctx_.emit(EventKind::rollback_started, active_.name, why.message, std::nullopt, why.code);
    auto r = co_await switch_to(active_);
    Outcome o;
    if (r) {
      o = untouched(s, std::move(why));
      o.reason += detail::format("; traffic switched back to {}", active_.name);
    } else {
      o.status = Status::failed;
      o.code = make_error_code(errc::rollback_failed);
      o.reason = detail::format("{}; switching back to {} failed too: {}", why.message, active_.name, r.error().message);
    }
    co_return o;
  }

  boost::asio::awaitable<Outcome> body() {
    const auto forever = TimePoint::max();
    auto aborted = [this](const char* when) {
      return Error(errc::aborted, detail::format("aborted {}: {}", when, control_.abort_reason()));
    };

    // 1. Readiness.
    set_phase(BlueGreenPhase::readiness);
    const auto ready_by = detail::add_saturating(clock_.now(), options_.ready_deadline);
    auto stop = co_await wait_until([this] { return monitor_->all_passing(); }, ready_by, false);
    if (stop == Stop::aborted) co_return untouched(Status::aborted, aborted("during readiness"));
    if (stop == Stop::deadline) {
      co_return untouched(Status::failed,
                          Error(errc::not_ready, detail::format("target {} not ready after {}: {}", target_.name,
                                                                format_duration(options_.ready_deadline),
                                                                monitor_->describe_not_passing())));
    }

    // 2. Pre-promotion check.
    bool manual = !options_.auto_promote;
    if (options_.pre_promotion_check) {
      set_phase(BlueGreenPhase::pre_promotion_check);
      ctx_.emit(EventKind::check_started, "pre_promotion_check", detail::format("against {}", target_.name));
      std::optional<Verdict> verdict;
      detail::Task check;
      check.start(co_await boost::asio::this_coro::executor,
                  run_check(options_.pre_promotion_check, "pre_promotion_check", verdict), wake_);
      stop = co_await wait_until([&] { return check.done(); }, forever, true);
      co_await check.stop();
      if (stop == Stop::aborted) co_return untouched(Status::aborted, aborted("during the pre-promotion check"));
      if (stop == Stop::unhealthy) co_return untouched(Status::failed, Error(errc::unhealthy, unhealthy_reason("during the pre-promotion check")));
      if (!verdict) verdict = Verdict::failed("pre_promotion_check ended without a verdict");
      report_verdict("pre_promotion_check", *verdict);
      if (verdict->kind == Verdict::fail) {
        co_return untouched(Status::failed, Error(errc::check_failed, detail::format("pre_promotion_check failed: {}", verdict->detail)));
      }
      if (verdict->kind == Verdict::inconclusive) {
        manual = true;
        ctx_.emit(EventKind::paused, target_.name, "pre-promotion check inconclusive: waiting for promote() or abort()");
      }
    }

    // 3. Promotion gate.
    set_phase(BlueGreenPhase::awaiting_promotion);
    const auto auto_at = manual ? forever : detail::add_saturating(clock_.now(), options_.auto_promote_after);
    ctx_.emit(EventKind::awaiting_promotion, target_.name,
              manual ? std::string("waiting for control().promote()")
                     : detail::format("auto-promotion in {}", format_duration(options_.auto_promote_after)));
    bool promoted = false;
    TimePoint passing_by = forever;  // after promotion, instances must be passing again within ready_deadline
    for (;;) {
      if (control_.abort_requested()) co_return untouched(Status::aborted, aborted("while awaiting promotion"));
      if (first_unhealthy()) {
        co_return untouched(Status::failed, Error(errc::unhealthy, unhealthy_reason("while awaiting promotion")));
      }
      if (!promoted && (control_.take_promotion() || control_.full_promotion_requested() ||
                        (!control_.paused() && clock_.now() >= auto_at))) {
        promoted = true;
        passing_by = detail::add_saturating(clock_.now(), options_.ready_deadline);
      }
      if (promoted && monitor_->all_passing()) break;
      if (promoted && clock_.now() >= passing_by) {
        co_return untouched(Status::failed,
                            Error(errc::not_ready, detail::format("target {} not passing probes within {} of promotion: {}",
                                                                  target_.name, format_duration(options_.ready_deadline),
                                                                  monitor_->describe_not_passing())));
      }
      co_await wait(promoted ? passing_by : (control_.paused() ? forever : auto_at));
    }

    // 4. Switch.
    set_phase(BlueGreenPhase::switching);
    target_had_traffic_ = true;
    auto switched = co_await switch_to(target_);
    if (!switched) {
      const auto& err = switched.error();
      ctx_.emit(EventKind::rollback_started, active_.name, detail::format("switch to {} failed: {}", target_.name, err.message),
                std::nullopt, err.code);
      auto restored = co_await switch_to(active_);
      if (restored) {
        Outcome o = untouched(Status::failed, Error(err.code, detail::format("switch to {} failed: {}; traffic restored to {}",
                                                                             target_.name, err.message, active_.name)));
        co_return o;
      }
      Outcome o;
      o.status = Status::failed;
      o.code = make_error_code(errc::rollback_failed);
      o.reason = detail::format("switch to {} failed: {}; restoring {} failed too: {}", target_.name, err.message,
                                active_.name, restored.error().message);
      co_return o;
    }

    // 5. Verification window.
    set_phase(BlueGreenPhase::verifying);
    const auto verify_until = detail::add_saturating(clock_.now(), options_.verify_for);
    std::optional<Verdict> post;
    detail::Task post_check;
    if (options_.post_promotion_check) {
      ctx_.emit(EventKind::check_started, "post_promotion_check", detail::format("against {}", target_.name));
      post_check.start(co_await boost::asio::this_coro::executor,
                       run_check(options_.post_promotion_check, "post_promotion_check", post), wake_);
    }
    bool reported = false;
    bool held = false;  // an inconclusive post check holds the run until promote() or abort()
    for (;;) {
      if (control_.abort_requested()) {
        co_await post_check.stop();
        co_return co_await roll_back(Status::aborted, aborted("during verification"));
      }
      if (first_unhealthy()) {
        co_await post_check.stop();
        co_return co_await roll_back(Status::rolled_back, Error(errc::unhealthy, unhealthy_reason("after the switch")));
      }
      if (post && !reported) {
        reported = true;
        report_verdict("post_promotion_check", *post);
        if (post->kind == Verdict::fail) {
          co_await post_check.stop();
          co_return co_await roll_back(Status::rolled_back,
                                       Error(errc::check_failed, detail::format("post_promotion_check failed: {}", post->detail)));
        }
        if (post->kind == Verdict::inconclusive) {
          held = true;
          ctx_.emit(EventKind::paused, target_.name, "post-promotion check inconclusive: waiting for promote() or abort()");
        }
      }
      if (held && (control_.take_promotion() || control_.full_promotion_requested())) held = false;
      const bool check_ok = !options_.post_promotion_check || (post && !held);
      const bool window_over = clock_.now() >= verify_until;
      if (window_over && check_ok) break;
      co_await wait(window_over ? forever : verify_until);
    }
    co_await post_check.stop();
    Outcome o;
    o.status = Status::promoted;
    o.active = target_.name;
    o.releasable = active_.name;
    o.reason = detail::format("{} serves 100% and passed {} of verification", target_.name, format_duration(options_.verify_for));
    co_return o;
  }

  boost::asio::awaitable<void> scale_down(const Outcome& out) {
    if (out.releasable.empty()) co_return;
    // Only a side that received traffic needs its clients drained.
    const bool had_traffic = out.releasable == active_.name || target_had_traffic_;
    bool cut_short = false;
    if (had_traffic && options_.scale_down_delay > Duration::zero()) {
      set_phase(BlueGreenPhase::scaling_down);
      const auto until = detail::add_saturating(clock_.now(), options_.scale_down_delay);
      // An abort cuts the delay short, also one that arrived after the verification
      // passed but before this wait began; the abort that ended the run (an Aborted
      // outcome) does not, because the side it left still needs draining.
      const bool abort_ended_run = out.status == Status::aborted;
      while (clock_.now() < until && (abort_ended_run || !control_.abort_requested())) co_await wait(until);
      cut_short = clock_.now() < until;
    }
    ctx_.emit(EventKind::releasable, out.releasable,
              !had_traffic ? std::string("never received traffic; may be scaled down")
              : cut_short  ? std::string("scale-down delay cut short by abort; may be scaled down")
                           : detail::format("no traffic for {}; may be scaled down", format_duration(options_.scale_down_delay)));
  }

  LB& lb_;
  Health& probe_;
  Environment active_;
  Environment target_;
  BlueGreenOptions options_;
  C clock_;
  ObserverList observers_;
  detail::RunContext<C> ctx_;
  Control control_;
  JitterEngine rng_;
  BlueGreenState state_;
  detail::Notifier* wake_ = nullptr;
  HealthMonitor<Health, C>* monitor_ = nullptr;
  bool started_ = false;
  bool target_had_traffic_ = false;
};

}  // namespace rollout

/// Formats the options on one line, e.g. for a start-up log.
template <>
struct fmt::formatter<rollout::BlueGreenOptions> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::BlueGreenOptions& o, FormatContext& ctx) const {
    using rollout::format_duration;
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("probe {{{}}}, concurrency {}, ready within {}, pre-check {}, {}, verify {}, post-check {}, "
                                "check timeout {}, scale-down delay {}, lb timeout {}, lb retry {{{}}}",
                                o.probe, o.probe_concurrency, format_duration(o.ready_deadline), o.pre_promotion_check ? "yes" : "no",
                                o.auto_promote ? rollout::detail::format("auto-promote after {}", format_duration(o.auto_promote_after))
                                   : std::string("manual promotion"),
                                format_duration(o.verify_for), o.post_promotion_check ? "yes" : "no", format_duration(o.check_timeout),
                                format_duration(o.scale_down_delay), format_duration(o.lb_timeout), o.lb_retry),
        ctx);
  }
};

/// Formats as `readiness`.
template <>
struct fmt::formatter<rollout::BlueGreenPhase> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::BlueGreenPhase p, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(p), ctx);
  }
};

/// Formats as `verifying, applied {blue: 0%, green: 100%}`.
template <>
struct fmt::formatter<rollout::BlueGreenState> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::BlueGreenState& s, FormatContext& ctx) const {
    std::string text = rollout::to_string(s.phase);
    if (s.applied) text += rollout::detail::format(", applied {}", *s.applied);
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
