#pragma once

/// @file
/// `rollout::testing::SimClock`: simulated time for deterministic, instant tests.

#include <rollout/core/clock.hpp>
#include <rollout/detail/pending_wait.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace rollout::testing {

/// A `Clock` whose time moves only when the test drives it. Under it, a rollout
/// with hours of pauses runs in milliseconds, and the same inputs always give the
/// same event sequence.
///
/// Time starts at `TimePoint{}` (the clock's epoch) and advances only inside
/// `run()`, `run_for()` and `step()`: when the `io_context` has no ready handler,
/// the clock jumps to the earliest pending timer and fires it. Timers that expire
/// at the same instant fire in the order they were armed. A timer armed at
/// `TimePoint::max()` never fires (it is a wait for cancellation).
///
/// `SimClock` is a handle; copies share one timeline. Use it from one thread.
/// Timer waits honour per-operation cancellation and complete with
/// `operation_aborted`; destroying a timer cancels its waits, as Asio's do.
class SimClock {
  struct TimerImpl;
  using Key = std::pair<TimePoint, std::uint64_t>;
  struct Entry {
    std::unique_ptr<detail::PendingWait> wait;
    TimerImpl* owner;
  };
  struct State {
    TimePoint now{};
    std::uint64_t seq = 0;
    std::map<Key, Entry> queue;
    std::uint64_t fired = 0;
  };
  struct TimerImpl {
    std::shared_ptr<State> state;
    boost::asio::any_io_executor ex;
    TimePoint expiry{};
    // This timer's pending waits, in the order they were armed: nearly always
    // one, kept inline in `first` (a timer armed per bounded call would
    // otherwise allocate a list once per call); any others in `more`.
    std::optional<Key> first;
    std::vector<Key> more;

    void add(const Key& k) {
      if (!first) first = k;
      else more.push_back(k);
    }
    void forget(const Key& k) {
      if (first != k) {
        std::erase(more, k);
      } else if (more.empty()) {
        first.reset();
      } else {
        first = more.front();
        more.erase(more.begin());
      }
    }
    std::size_t cancel() {
      if (!first) return 0;
      const Key one = *first;
      auto others = std::move(more);
      first.reset();
      more.clear();
      cancel_wait(one);
      for (const auto& k : others) cancel_wait(k);
      return 1 + others.size();
    }
    void cancel_wait(const Key& k) {
      auto it = state->queue.find(k);
      if (it == state->queue.end()) return;
      auto w = std::move(it->second.wait);
      state->queue.erase(it);
      detail::complete(std::move(w), boost::asio::error::operation_aborted);
    }
  };

public:
  /// A waitable timer on simulated time, modelling `rollout::Timer`.
  class timer {
  public:
    using clock_type = SimClock;
    using executor_type = boost::asio::any_io_executor;

    timer(std::shared_ptr<State> st, boost::asio::any_io_executor ex)
        : impl_(std::make_unique<TimerImpl>(TimerImpl{std::move(st), std::move(ex), {}, {}, {}})) {}
    timer(timer&&) noexcept = default;
    timer& operator=(timer&& other) noexcept {
      if (impl_) impl_->cancel();
      impl_ = std::move(other.impl_);
      return *this;
    }
    ~timer() {
      if (impl_) impl_->cancel();
    }

    executor_type get_executor() const noexcept { return impl_->ex; }
    TimePoint expiry() const noexcept { return impl_->expiry; }
    /// Sets the expiry; pending waits complete with `operation_aborted`. Returns how many.
    std::size_t expires_at(TimePoint tp) {
      const auto n = impl_->cancel();
      impl_->expiry = tp;
      return n;
    }
    std::size_t expires_after(Duration d) {
      const auto now = impl_->state->now;
      return expires_at(d >= TimePoint::max() - now ? TimePoint::max() : now + d);
    }
    /// Completes pending waits with `operation_aborted`. Returns how many.
    std::size_t cancel() { return impl_->cancel(); }

    /// Waits until the expiry. Signature `void(error_code)`.
    template <class Token>
    auto async_wait(Token&& token) {
      return boost::asio::async_initiate<Token, void(error_code)>(
          [impl = impl_.get()](auto handler) {
            auto w = detail::make_pending_wait(std::move(handler), impl->ex);
            auto& st = *impl->state;
            if (impl->expiry <= st.now) {  // already expired: complete at once, like Asio (posted)
              detail::complete(std::move(w), {});
              return;
            }
            const Key key{impl->expiry, st.seq++};
            if (w->slot.is_connected()) {
              // (`impl` outlives the handler: completing a wait, which destroying
              // the timer does, clears its slot first.)
              w->slot.assign([impl, key](boost::asio::cancellation_type_t type) {
                if (type == boost::asio::cancellation_type::none) return;
                auto& queue = impl->state->queue;
                auto it = queue.find(key);
                if (it == queue.end()) return;
                auto pending = std::move(it->second.wait);
                queue.erase(it);
                impl->forget(key);
                detail::complete(std::move(pending), boost::asio::error::operation_aborted, /*from_slot=*/true);
              });
            }
            impl->add(key);
            st.queue.emplace(key, Entry{std::move(w), impl});
          },
          token);
    }

  private:
    std::unique_ptr<TimerImpl> impl_;
  };

  SimClock() : st_(std::make_shared<State>()) {}

  /// The simulated time now.
  TimePoint now() const noexcept { return st_->now; }
  /// Simulated time elapsed since the epoch.
  Duration elapsed() const noexcept { return st_->now - TimePoint{}; }
  /// A timer on this clock, bound to `ex`.
  timer make_timer(const boost::asio::any_io_executor& ex) const { return timer(st_, ex); }

  /// Timers armed and not yet fired or cancelled (including ones at `TimePoint::max()`).
  std::size_t pending_timers() const noexcept { return st_->queue.size(); }
  /// Timers fired so far.
  std::uint64_t fired() const noexcept { return st_->fired; }

  /// Does one unit of work: runs one ready handler if there is one; otherwise
  /// advances time to the earliest pending timer and fires it. Returns false when
  /// there is nothing left to do (only waits that no timer will end).
  bool step(boost::asio::io_context& io) {
    if (io.stopped()) io.restart();
    if (io.poll_one() > 0) return true;
    return fire_next(TimePoint::max());
  }

  /// Runs until nothing is left to do. Returns the number of steps taken. Throws
  /// `std::runtime_error` if more than `max_steps` steps run (a livelock).
  std::size_t run(boost::asio::io_context& io, std::size_t max_steps = 100'000'000) {
    std::size_t steps = 0;
    for (;;) {
      if (io.stopped()) io.restart();
      std::size_t n = io.poll();  // every ready handler, then time moves
      if (n == 0) n = fire_next(TimePoint::max()) ? 1 : 0;
      if (n == 0) return steps;
      steps += n;
      if (steps > max_steps) throw std::runtime_error("SimClock::run: step limit exceeded (livelock?)");
    }
  }

  /// Runs until simulated time reaches `now() + d` (firing every timer due by
  /// then) and the `io_context` is idle. Time ends exactly at `now() + d`.
  void run_for(boost::asio::io_context& io, Duration d) {
    const auto until = st_->now + d;
    for (;;) {
      if (io.stopped()) io.restart();
      if (io.poll_one() > 0) continue;
      if (!fire_next(until)) break;
    }
    st_->now = std::max(st_->now, until);
  }

private:
  // Fires the earliest timer if it expires no later than `limit` (and is not a
  // wait-forever timer). Returns whether one fired.
  bool fire_next(TimePoint limit) {
    if (st_->queue.empty()) return false;
    auto it = st_->queue.begin();
    if (it->first.first == TimePoint::max() || it->first.first > limit) return false;
    st_->now = std::max(st_->now, it->first.first);
    auto w = std::move(it->second.wait);
    auto* owner = it->second.owner;
    const auto key = it->first;
    st_->queue.erase(it);
    owner->forget(key);
    ++st_->fired;
    detail::complete(std::move(w), {});
    return true;
  }

  std::shared_ptr<State> st_;
};

/// Spawns `aw` on `io`, runs the simulated clock until everything is done, and
/// returns the awaitable's value. Exceptions thrown by `aw` are rethrown here (no
/// `detached`: failures surface). Throws `std::runtime_error` if `aw` never
/// completes, which means it waits for something no timer will bring, such as a
/// `promote()` nobody calls.
template <class T>
T run_sim(boost::asio::io_context& io, SimClock& clock, boost::asio::awaitable<T> aw) {
  std::optional<T> value;
  std::exception_ptr error;
  bool done = false;
  boost::asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T v) {
    done = true;
    error = e;
    if (!e) value.emplace(std::move(v));
  });
  clock.run(io);
  if (error) std::rethrow_exception(error);
  if (!done) throw std::runtime_error("run_sim: the coroutine never completed (it waits for something that never comes)");
  return std::move(*value);
}

/// `run_sim` for `awaitable<void>`.
inline void run_sim(boost::asio::io_context& io, SimClock& clock, boost::asio::awaitable<void> aw) {
  std::exception_ptr error;
  bool done = false;
  boost::asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  clock.run(io);
  if (error) std::rethrow_exception(error);
  if (!done) throw std::runtime_error("run_sim: the coroutine never completed (it waits for something that never comes)");
}

}  // namespace rollout::testing
