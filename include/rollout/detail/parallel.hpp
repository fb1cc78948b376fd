#pragma once

/// @file
/// `detail::parallel_for_each`: run a coroutine per element with at most N in flight.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <iterator>
#include <vector>

namespace rollout::detail {

template <class It, class F>
boost::asio::awaitable<void> parallel_worker(It first, std::size_t n, std::size_t& next, F& fn) {
  while (next < n) {
    const std::size_t i = next++;
    co_await fn(*std::next(first, static_cast<std::ptrdiff_t>(i)));
  }
}

/// Calls `fn(element)` (returning `awaitable<void>`) for every element of
/// `[first, last)`, with at most `limit` calls in flight, on the caller's executor.
/// Elements are started in order. Returns once every call has finished.
///
/// Errors: the first exception (in completion order) cancels the calls still in
/// flight, stops new ones from starting, and is rethrown once they are joined.
/// Cancellation: cancelling the caller cancels every call in flight.
template <class It, class F>
boost::asio::awaitable<void> parallel_for_each(It first, It last, std::size_t limit, F fn) {
  namespace asio = boost::asio;
  const auto n = static_cast<std::size_t>(std::distance(first, last));
  if (n == 0) co_return;
  limit = std::clamp<std::size_t>(limit, 1, n);
  if (limit == 1) {
    // One at a time needs no spawned workers and no group (an analysis with one
    // check is the common case): the caller's own cancellation reaches the call
    // in flight, and an exception stops the loop as it would stop the workers.
    for (; first != last; ++first) co_await fn(*first);
    co_return;
  }
  auto ex = co_await asio::this_coro::executor;
  std::size_t next = 0;
  using Op = decltype(asio::co_spawn(ex, parallel_worker(first, n, next, fn), asio::deferred));
  std::vector<Op> ops;
  ops.reserve(limit);
  for (std::size_t w = 0; w < limit; ++w) ops.push_back(asio::co_spawn(ex, parallel_worker(first, n, next, fn), asio::deferred));
  auto [order, errors] = co_await asio::experimental::make_parallel_group(std::move(ops))
                             .async_wait(asio::experimental::wait_for_one_error(), asio::use_awaitable);
  for (std::size_t i : order) {
    if (errors[i]) std::rethrow_exception(errors[i]);
  }
}

}  // namespace rollout::detail
