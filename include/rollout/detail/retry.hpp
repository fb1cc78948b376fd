#pragma once

/// @file
/// `detail::retry`: call an awaitable-returning function until it succeeds, fails
/// permanently, or runs out of attempts, waiting with `Backoff` in between.

#include <rollout/core/backoff.hpp>
#include <rollout/core/error.hpp>
#include <rollout/detail/race.hpp>

#include <boost/asio/awaitable.hpp>

#include <optional>
#include <type_traits>

namespace rollout::detail {

/// Calls `attempt()` (which returns `awaitable<result<T>>`) until it returns a
/// value, returns an error that is not transient, or `backoff.max_attempts`
/// attempts have been made. Before each retry it calls
/// `on_error(attempt_number, error, std::optional<Duration> next_wait)` (no wait on
/// the last failure) and sleeps on `clock`. Returns the last result.
///
/// Cancellation: a cancelled sleep throws `operation_aborted` out of `retry`.
template <Clock C, class Attempt, class OnError>
auto retry(const C& clock, const Backoff& backoff, JitterEngine& rng, Attempt attempt, OnError on_error)
    -> boost::asio::awaitable<typename std::invoke_result_t<Attempt&>::value_type> {
  for (int k = 1;; ++k) {
    auto r = co_await attempt();
    if (r) co_return r;
    const bool last = k >= backoff.max_attempts || !is_transient(r.error());
    if (last) {
      on_error(k, r.error(), std::optional<Duration>{});
      co_return r;
    }
    const Duration wait = backoff.delay(k, rng);
    on_error(k, r.error(), std::optional<Duration>{wait});
    co_await sleep_for(clock, wait);
  }
}

}  // namespace rollout::detail
