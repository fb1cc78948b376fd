#pragma once

/// @file
/// Racing awaitables: `race` (first of two wins, the loser is cancelled and
/// joined), `with_timeout` (an awaitable against the clock), and clock sleeps.
/// (A switch that must run to its end whatever the caller's cancellation is
/// `shielded_scope`, in run_context.hpp.)

#include <rollout/core/clock.hpp>
#include <rollout/detail/notifier.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <array>
#include <cstddef>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace rollout::detail {

namespace asio = boost::asio;

/// `T`, or `std::monostate` for `void`, so results of any awaitable can be stored.
template <class T>
using value_or_monostate = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

/// Runs `aw` and stores its value in `out`.
template <class T>
asio::awaitable<void> store_into(std::optional<value_or_monostate<T>>& out, asio::awaitable<T> aw) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(aw);
    out.emplace();
  } else {
    out.emplace(co_await std::move(aw));
  }
}

/// Runs `a` and `b` concurrently. The first to finish wins; the other is cancelled
/// (terminal) and joined before `race` returns, so nothing outlives the call.
/// Returns the winner's value, index 0 for `a`, 1 for `b`. If the winner threw,
/// its exception is rethrown. Cancelling the caller cancels both.
template <class A, class B>
asio::awaitable<std::variant<value_or_monostate<A>, value_or_monostate<B>>> race(asio::awaitable<A> a,
                                                                                  asio::awaitable<B> b) {
  auto ex = co_await asio::this_coro::executor;
  std::optional<value_or_monostate<A>> ra;
  std::optional<value_or_monostate<B>> rb;
  auto [order, ea, eb] =
      co_await asio::experimental::make_parallel_group(asio::co_spawn(ex, store_into(ra, std::move(a)), asio::deferred),
                                                       asio::co_spawn(ex, store_into(rb, std::move(b)), asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  using R = std::variant<value_or_monostate<A>, value_or_monostate<B>>;
  if (order[0] == 0) {
    if (ea) std::rethrow_exception(ea);
    co_return R(std::in_place_index<0>, std::move(*ra));
  }
  if (eb) std::rethrow_exception(eb);
  co_return R(std::in_place_index<1>, std::move(*rb));
}

/// Starts `aw` as a child coroutine on `ex` (its value goes to `out`) and `timer`'s
/// wait, and completes with the parallel group's `(order, exception, timer error)`
/// once the first has finished and the other has been cancelled and joined.
/// `with_timeout` and `call` await it and read the result with `timer_race_won`.
template <class T, class Timer>
auto race_with_timer(const asio::any_io_executor& ex, Timer& timer, std::optional<value_or_monostate<T>>& out,
                     asio::awaitable<T> aw) {
  return asio::experimental::make_parallel_group(asio::co_spawn(ex, store_into(out, std::move(aw)), asio::deferred),
                                                 timer.async_wait(asio::deferred))
      .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
}

/// Reads `race_with_timer`'s result: `true` if the child finished first (its
/// value is in `out`), `false` if the timer expired first. Rethrows the child's
/// exception; throws `operation_aborted` (or the child's exception) if the timer
/// was cancelled rather than expired, which means the caller was cancelled.
inline bool timer_race_won(const std::array<std::size_t, 2>& order, const std::exception_ptr& e,
                           const boost::system::error_code& ec) {
  if (order[0] == 0) {
    if (e) std::rethrow_exception(e);
    return true;
  }
  if (ec) {
    if (e) std::rethrow_exception(e);
    throw boost::system::system_error(ec);
  }
  return false;
}

/// Runs `aw` for at most `d` on `clock`. Returns its value, or `std::nullopt` if
/// the time ran out first, in which case `aw` has been cancelled and joined.
/// Exceptions from `aw` propagate. Cancelling the caller cancels `aw` and throws
/// `operation_aborted` (or `aw`'s own exception).
template <Clock C, class T>
asio::awaitable<std::optional<value_or_monostate<T>>> with_timeout(const C& clock, Duration d, asio::awaitable<T> aw) {
  auto ex = co_await asio::this_coro::executor;
  auto timer = clock.make_timer(ex);
  timer.expires_at(add_saturating(clock.now(), d));
  std::optional<value_or_monostate<T>> r;
  auto [order, e, ec] = co_await race_with_timer(ex, timer, r, std::move(aw));
  if (!timer_race_won(order, e, ec)) co_return std::nullopt;
  co_return r;
}

/// Sleeps until `tp` on `clock`. Throws `operation_aborted` when cancelled.
template <Clock C>
asio::awaitable<void> sleep_until(const C& clock, TimePoint tp) {
  auto timer = clock.make_timer(co_await asio::this_coro::executor);
  timer.expires_at(tp);
  co_await timer.async_wait(asio::use_awaitable);
}

/// Sleeps for `d` on `clock`, from the moment of the call (co_await it at once).
/// Throws `operation_aborted` when cancelled. Not a coroutine itself: one
/// coroutine frame per sleep instead of two.
template <Clock C>
asio::awaitable<void> sleep_for(const C& clock, Duration d) {
  return sleep_until(clock, add_saturating(clock.now(), d));
}

/// Why `wait_for_change` returned.
enum class Wake { notified, deadline, cancelled };

/// Waits until `n` is notified, `deadline` passes on `clock`, or the caller is
/// cancelled, whichever comes first. It never throws for cancellation: it returns
/// `Wake::cancelled`, so a strategy can turn a cancelled `run()` into an abort.
/// A deadline of `TimePoint::max()` means no deadline.
template <Clock C>
asio::awaitable<Wake> wait_for_change(const C& clock, Notifier& n, TimePoint deadline) {
  auto ex = co_await asio::this_coro::executor;
  if (deadline != TimePoint::max() && clock.now() >= deadline) co_return Wake::deadline;
  if (deadline == TimePoint::max()) {
    auto [ec] = co_await n.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return ec ? Wake::cancelled : Wake::notified;
  }
  auto timer = clock.make_timer(ex);
  timer.expires_at(deadline);
  auto [ec] = co_await n.async_wait_until(timer, asio::as_tuple(asio::use_awaitable));
  if (!ec) co_return Wake::notified;
  co_return ec == asio::error::timed_out ? Wake::deadline : Wake::cancelled;
}

}  // namespace rollout::detail
