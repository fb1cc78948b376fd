#pragma once

/// @file
/// `detail::scoped_for_each`: run a coroutine per element with at most N in
/// flight, each in a worker `Task`.

#include <rollout/detail/notifier.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <iterator>
#include <vector>

namespace rollout::detail {

template <class It, class F>
boost::asio::awaitable<void> scoped_worker(TaskScope scope, It first, std::size_t n, std::size_t& next, F& fn) {
  // A stopped worker starts nothing more, even if the call it was in returned a
  // value despite the stop.
  while (next < n && !scope.stopping()) {
    const std::size_t i = next++;
    co_await fn(*std::next(first, static_cast<std::ptrdiff_t>(i)), scope);
  }
}

/// Calls `fn(element, scope)` (returning `awaitable<void>`) for every element of
/// `[first, last)`, at most `limit` at once, on the caller's executor, where
/// `scope` is the `TaskScope` of the worker task running the call. A deadline
/// inside (`call(scope, ...)`, `probe_once(scope, ...)`) then cancels that
/// worker's own thread, instead of spawning a child coroutine and a parallel
/// group per bounded call (which was most of the cost of a health probe against
/// a fast instance).
/// Elements are started in order. Returns once every call has finished.
///
/// Errors: the first exception (in completion order) stops the other workers (a
/// call in flight is cancelled, no new one starts) and is rethrown once they are
/// joined. Cancellation: cancelling the caller stops every worker the same way,
/// joins them, and throws `operation_aborted`.
template <class It, class F>
boost::asio::awaitable<void> scoped_for_each(It first, It last, std::size_t limit, F fn) {
  namespace asio = boost::asio;
  const auto n = static_cast<std::size_t>(std::distance(first, last));
  if (n == 0) co_return;
  limit = std::clamp<std::size_t>(limit, 1, n);
  auto ex = co_await asio::this_coro::executor;
  // Every worker is joined before this returns (they use `next` and `fn` in this
  // frame), so no await here may throw for the caller's cancellation: it is
  // checked and handled instead, and the caller's setting restored at the end.
  const bool throws_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  Notifier changed(ex);
  std::size_t next = 0;
  std::vector<Task> workers(limit);
  std::vector<std::size_t> finished;  // worker indices, in completion order
  finished.reserve(limit);
  for (std::size_t w = 0; w < limit; ++w) {
    workers[w].start(
        ex, [&](TaskScope scope) { return scoped_worker(std::move(scope), first, n, next, fn); }, &changed,
        [&finished, w] { finished.push_back(w); });
  }
  const auto failed = [&] {
    for (std::size_t w : finished) {
      if (workers[w].error()) return true;
    }
    return false;
  };
  bool cancelled = false;
  while (finished.size() < limit && !failed()) {
    auto cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) {
      cancelled = true;
      break;
    }
    auto [ec] = co_await changed.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      cancelled = true;
      break;
    }
  }
  for (auto& w : workers) co_await w.stop();  // cancels those still running and waits for them
  co_await asio::this_coro::throw_if_cancelled(throws_if_cancelled);
  for (std::size_t w : finished) {
    if (auto e = workers[w].error(); e && !cancelled) std::rethrow_exception(e);
  }
  if (cancelled) throw boost::system::system_error(asio::error::operation_aborted);
}

}  // namespace rollout::detail
