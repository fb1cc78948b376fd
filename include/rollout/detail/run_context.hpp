#pragma once

/// @file
/// What every strategy run shares: the timeline and its observers, and the
/// verified, retried, shielded traffic switch.

#include <rollout/concepts.hpp>
#include <rollout/core/backoff.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/retry.hpp>
#include <rollout/detail/scoped_call.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <concepts>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rollout::detail {

/// The timeline of one run: stamps events with the time since `begin()` on the
/// strategy's clock, records them, and forwards them to the observers.
template <Clock C>
class RunContext {
public:
  RunContext(std::string strategy, C clock, const ObserverList& observers)
      : strategy_(std::move(strategy)), clock_(std::move(clock)), observers_(&observers) {}

  /// The most events `begin()` reserves (2 MB of records). Counts come from
  /// options (a metric measured ten million times, a million-instance fleet),
  /// and must not allocate gigabytes before anything has happened; past this
  /// the timeline grows as it fills.
  static constexpr std::size_t max_reserved_events = std::size_t{1} << 16;
  /// The text `begin()` reserves per expected event: subject and detail
  /// together ("v2-00042" and "v2 at 10.0.0.1:9000", say).
  static constexpr std::size_t reserved_text_per_event = 24;

  /// Starts the clock, and reserves the timeline for `expected_events` (at most
  /// `max_reserved_events`): a strategy knows how many events a run records when
  /// nothing goes wrong, and a buffer grown by doubling leaves up to half of it
  /// unused.
  void begin(std::size_t expected_events = 0) {
    start_ = clock_.now();
    const auto n = std::min(expected_events, max_reserved_events);
    timeline_.reserve(n, n * reserved_text_per_event);
  }
  const C& clock() const noexcept { return clock_; }
  Duration elapsed() const { return clock_.now() - start_; }

  /// Records an event and delivers it to the observers. (If an observer throws,
  /// the exception leaves `run()`, and the timeline with it.)
  /// (The texts are views: a literal or a caller's string is copied once, into
  /// the timeline's buffer, and into an `Event` only when an observer watches.)
  void emit(EventKind kind, std::string_view subject = {}, std::string_view detail = {}, std::optional<TrafficSplit> split = {},
            error_code ec = {}) {
    if (observers_->empty()) {  // nobody watching: record the parts, build no Event
      timeline_.append(elapsed(), kind, strategy_, subject, detail, std::move(split), ec);
      return;
    }
    Event e{elapsed(), kind, strategy_, std::string(subject), std::string(detail), std::move(split), ec};
    observers_->on_event(e);
    timeline_.push_back(std::move(e));
  }

  /// Fills `elapsed`, emits `run_finished` and moves the timeline into `out`.
  Outcome finish(Outcome out) {
    emit(EventKind::run_finished, out.active, detail::format("{}{}{}", out.status, out.reason.empty() ? "" : ": ", out.reason),
         std::nullopt, out.code);
    out.elapsed = elapsed();
    out.timeline = std::move(timeline_);
    timeline_.clear();
    return out;
  }

private:
  std::string strategy_;
  C clock_;
  const ObserverList* observers_;
  TimePoint start_{};
  Timeline timeline_;
};

/// Called inside a catch handler: the exception being handled, as an `Error`
/// whose message names the call (`what() threw: ...`); a `system_error` keeps
/// its code, anything else is `errc::policy_exception`.
template <std::invocable What>
Error thrown_error(const What& what) {
  try {
    throw;
  } catch (const boost::system::system_error& e) {
    return Error(e.code(), detail::format("{} threw: {}", what(), e.what()));
  } catch (const std::exception& e) {
    return Error(errc::policy_exception, detail::format("{} threw: {}", what(), e.what()));
  }
}

/// One policy call, bounded by `timeout`, named by `what()` in every error. A
/// timeout, a thrown exception or an error result all come back as an `Error`
/// whose message starts with the name, e.g. `lb.apply({green: 100%}): No such
/// server.`. The name is only built when an error needs it. Cancellation of the
/// caller is not an error: it propagates as `operation_aborted`.
template <Clock C, class T, std::invocable What>
boost::asio::awaitable<result<T>> call(const C& clock, Duration timeout, What what, boost::asio::awaitable<result<T>> aw) {
  std::exception_ptr thrown;
  Error err;
  try {
    // `with_timeout`'s body, inline: one coroutine frame fewer on every policy call.
    auto ex = co_await boost::asio::this_coro::executor;
    auto timer = clock.make_timer(ex);
    timer.expires_at(add_saturating(clock.now(), timeout));
    std::optional<result<T>> r;
    auto [order, e, ec] = co_await race_with_timer(ex, timer, r, std::move(aw));
    if (!timer_race_won(order, e, ec))
      co_return Error(errc::timeout, detail::format("{} timed out after {}", what(), format_duration(timeout)));
    if (!*r) co_return Error(r->error().code, detail::format("{}: {}", what(), r->error().message));
    co_return std::move(*r);
  } catch (const std::exception&) {
    thrown = std::current_exception();
    err = thrown_error(what);
  }
  // (co_await is not allowed inside a handler, hence the detour.)
  auto cs = co_await boost::asio::this_coro::cancellation_state;
  if (cs.cancelled() != boost::asio::cancellation_type::none) std::rethrow_exception(thrown);
  co_return err;
}

/// `call_attempts`' failed attempt: leaves its named `Error` in `r` (a timeout if
/// `expired`, the exception if `thrown`, else the policy's error under `what()`),
/// and returns the wait before the next attempt, or nothing if it was the last.
template <class T, std::invocable What>
std::optional<Duration> attempt_failed(const What& what, Duration timeout, bool expired, const std::exception_ptr& thrown,
                                       std::optional<result<T>>& r, int attempt, const Backoff* backoff, JitterEngine* rng) {
  Error err;
  if (expired) {
    err = Error(errc::timeout, detail::format("{} timed out after {}", what(), format_duration(timeout)));
  } else if (thrown) {
    try {
      std::rethrow_exception(thrown);
    } catch (const std::exception&) {
      err = thrown_error(what);
    }
  } else {
    err = Error(r->error().code, detail::format("{}: {}", what(), r->error().message));
  }
  const bool last = !backoff || attempt >= backoff->max_attempts || !is_transient(err);
  r.emplace(std::move(err));
  if (last) return std::nullopt;
  return backoff->delay(attempt, *rng);
}

/// `call(scope, ...)` with retries, in one coroutine frame (a replacement in a
/// large rolling update holds one per create in flight): makes an attempt with
/// `make()` (returning `awaitable<result<T>>`) until one returns a value, fails
/// with an error that is not transient, or `backoff->max_attempts` attempts
/// have been made (one without a `backoff`), sleeping `backoff->delay` on
/// `clock` in between. Returns the last attempt's result, named as `call`
/// names it. Each attempt is bounded as `scoped_attempts` describes, which also
/// says what a stop does. Not a coroutine itself; co_await it at once.
template <class T, Clock C, std::invocable What, class Make>
boost::asio::awaitable<result<T>> call_attempts(TaskScope scope, const C& clock, Duration timeout, What what, Make make,
                                                const Backoff* backoff, JitterEngine* rng) {
  return scoped_attempts<result<T>>(
      std::move(scope), clock, timeout, std::move(make), [](const result<T>& r) { return r.has_value(); },
      [what = std::move(what), timeout, backoff, rng](std::optional<result<T>>& r, bool expired, const std::exception_ptr& thrown,
                                                      int attempt) {
        return attempt_failed(what, timeout, expired, thrown, r, attempt, backoff, rng);
      });
}

/// `call` for a coroutine running in a `Task`: the same errors and names, but
/// the deadline cancels the task's own thread (through `scope`) instead of a
/// child coroutine spawned for the call (see `scoped_attempts`). A value that
/// arrives is used even if the deadline fired at the same moment; an error or
/// exception after the deadline fired is a timeout. If the task was stopped (its
/// owner's cancellation), an error or exception propagates as
/// `operation_aborted` (or the policy's own exception), as a cancelled `call`
/// would. Not a coroutine itself: it is `call_attempts` with one attempt.
template <Clock C, class T, std::invocable What>
boost::asio::awaitable<result<T>> call(TaskScope scope, const C& clock, Duration timeout, What what,
                                       boost::asio::awaitable<result<T>> aw) {
  return call_attempts<T>(
      std::move(scope), clock, timeout, std::move(what), [aw = std::move(aw)]() mutable { return std::move(aw); }, nullptr,
      nullptr);
}

/// Runs `make(scope)` to completion in a coroutine of its own, detached from the
/// caller's cancellation: an abort or a cancelled caller cannot cut it short
/// (rollbacks and traffic switches must finish once started, or the load
/// balancer is left half-switched). Its cancellation slot belongs to `scope`, so
/// only its own deadlines (`call(scope, ...)`) cancel anything in it. Returns its
/// value; its exceptions propagate to the caller.
template <class T, class F>
boost::asio::awaitable<T> shielded_scope(F make) {
  auto ex = co_await boost::asio::this_coro::executor;
  auto st = std::make_shared<TaskState>(ex);
  co_return co_await boost::asio::co_spawn(ex, make(TaskScope(st)),
                                           boost::asio::bind_cancellation_slot(st->signal.slot(), boost::asio::use_awaitable));
}

/// The retried switch `apply_verified` runs shielded: every attempt of
/// `lb.apply(split)` bounded by `timeout` through `scope` (the switch's own
/// coroutine), the attempts and their backoff in one frame (`scoped_attempts`).
template <LoadBalancer LB, Clock C>
boost::asio::awaitable<result<void>> apply_verified_body(LB& lb, RunContext<C>& ctx, const TrafficSplit& split, Duration timeout,
                                                         const Backoff& backoff, JitterEngine& rng, TaskScope scope) {
  const auto what = [&split] { return detail::format("lb.apply({})", split); };
  auto r = co_await scoped_attempts<result<void>>(
      std::move(scope), ctx.clock(), timeout, [&] { return lb.apply(split); }, [](const result<void>& v) { return v.has_value(); },
      [&](std::optional<result<void>>& v, bool expired, const std::exception_ptr& thrown, int attempt) {
        const auto wait = attempt_failed(what, timeout, expired, thrown, v, attempt, &backoff, &rng);
        const Error& e = v->error();
        ctx.emit(EventKind::lb_error, split.sole_group().value_or(""),
                 wait ? detail::format("attempt {} failed: {}; retrying in {}", attempt, e.message, format_duration(*wait))
                      : detail::format("attempt {} failed: {}; giving up", attempt, e.message),
                 split, e.code);
        return wait;
      });
  if (r) ctx.emit(EventKind::traffic_applied, split.sole_group().value_or(""), "verified by read-back", split);
  co_return r;
}

/// Applies `split` through `lb` with retries under `backoff`, shielded from the
/// caller's cancellation: once a switch starts, it finishes (succeeds or gives
/// up), so the load balancer is never left in a state nobody knows. Emits
/// `lb_error` for each failed attempt and `traffic_applied` on success.
/// The switch runs in a coroutine of its own whose cancellation slot only its
/// attempts' deadlines use (`shielded_scope`), so a timed-out attempt cancels
/// that coroutine's thread instead of a child spawned per attempt.
/// (`lb`, `ctx`, `backoff` and `rng` are the strategy's, which outlive the call;
/// `split` is the caller's, which co_awaits the call at once, so the switch reads
/// it in place instead of copying it.)
template <LoadBalancer LB, Clock C>
boost::asio::awaitable<result<void>> apply_verified(LB& lb, RunContext<C>& ctx, const TrafficSplit& split, Duration timeout,
                                                    const Backoff& backoff, JitterEngine& rng) {
  return shielded_scope<result<void>>([&lb, &ctx, &split, timeout, &backoff, &rng](TaskScope scope) {
    return apply_verified_body(lb, ctx, split, timeout, backoff, rng, std::move(scope));
  });
}

}  // namespace rollout::detail
