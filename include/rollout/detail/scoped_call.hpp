#pragma once

/// @file
/// `detail::scoped_attempts`: awaits a policy call in the current `Task`'s own
/// thread, bounded by a deadline that cancels that thread, with optional retries.
/// `call(scope, ...)`, `call_attempts` and `probe_once(scope, ...)` are made of it.

#include <rollout/core/clock.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <exception>
#include <optional>
#include <utility>

namespace rollout::detail {

/// Awaits `make()` (an `awaitable<V>`) in the calling task's thread, bounded by
/// `timeout` on `clock`: the deadline cancels the task's own thread through
/// `scope` (see `TaskScope::arm`) instead of a child coroutine spawned per call,
/// so a bounded call holds one timer and no second thread, frame chain or
/// parallel group. Then:
/// - a value for which `ok(value)` holds is returned, even if the deadline fired
///   at the same moment (it is armed behind the call's own timers);
/// - otherwise `failed(r, expired, thrown, attempt)` is called with the value (or
///   nothing, if the call threw `thrown`), whether the deadline fired, and the
///   attempt's number (from 1). It leaves the final value in `r` and returns
///   nothing, or returns the wait before the next attempt (a new `make()`).
///
/// Cancellation: if the task was stopped (its owner's cancellation), an `ok`
/// value that arrived is returned and anything else propagates as
/// `operation_aborted` (or the call's own exception). The deadline's
/// cancellation is this call's alone: afterwards the thread's cancellation state
/// is reset, and `throw_if_cancelled` restored, so that the task's next await
/// (a retry, a sleep, its next call) goes ahead, and cancellation settings the
/// policy changed in the thread end with the call, as they would in a child.
/// A stop during the wait between attempts propagates as `operation_aborted`.
///
/// (Every local and temporary of a coroutine takes room in its frame for as
/// long as the frame lives, so `failed` builds the result in a plain function.)
template <class V, Clock C, class Make, class Ok, class Failed>
boost::asio::awaitable<V> scoped_attempts(TaskScope scope, C clock, Duration timeout, Make make, Ok ok, Failed failed) {
  const bool throws_if_cancelled = co_await boost::asio::this_coro::throw_if_cancelled();
  for (int attempt = 1;; ++attempt) {
    std::optional<V> r;
    std::exception_ptr thrown;
    bool expired = false;
    {
      auto timer = clock.make_timer(scope.executor());
      timer.expires_at(add_saturating(clock.now(), timeout));
      auto deadline = scope.arm(timer);
      try {
        r.emplace(co_await make());
      } catch (const std::exception&) {
        thrown = std::current_exception();
      }
      expired = deadline.disarm();
      timer.cancel();
    }
    if (scope.stopping()) {
      if (r && ok(*r)) co_return std::move(*r);
      if (thrown) std::rethrow_exception(thrown);
      throw boost::system::system_error(boost::asio::error::operation_aborted);
    }
    co_await boost::asio::this_coro::reset_cancellation_state();
    co_await boost::asio::this_coro::throw_if_cancelled(throws_if_cancelled);
    if (r && ok(*r)) co_return std::move(*r);
    if (auto wait = failed(r, expired, thrown, attempt)) {
      co_await sleep_for(clock, *wait);
      continue;
    }
    co_return std::move(*r);
  }
}

}  // namespace rollout::detail
