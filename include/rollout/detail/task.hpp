#pragma once

/// @file
/// `detail::Task`: a child coroutine that a strategy starts, can stop, and always
/// joins, so no coroutine outlives the `run()` that started it.

#include <rollout/detail/notifier.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace rollout::detail {

/// The number of `Task` coroutines started and not yet finished, process-wide.
/// Tests assert it returns to zero: a leaked coroutine is a bug.
inline std::atomic<std::int64_t>& live_tasks() noexcept {
  static std::atomic<std::int64_t> n{0};
  return n;
}

/// What a `Task` and the coroutine it runs share. The coroutine reaches it
/// through a `TaskScope`; the task's completion handler and any deadline
/// handler keep it alive until the last of them has run.
struct TaskState {
  explicit TaskState(const boost::asio::any_io_executor& e) : ex(e) {}
  boost::asio::any_io_executor ex;
  boost::asio::cancellation_signal signal;  // the task's thread's only cancellation slot
  bool done = false;
  bool stopping = false;  // stop() or the destructor cancelled it: cancellation from outside
  bool expired = false;   // the armed deadline fired and cancelled the thread
  std::uint64_t deadline = 0;  // generation of the armed deadline; a stale timer handler sees another
  std::exception_ptr error;
  Notifier* wake = nullptr;
  std::function<void()> on_done;
  std::unique_ptr<Notifier> joined;  // created only when someone waits for a running task (a pointer: 128 bytes less per task)
};

/// The handle a coroutine started by `Task::start(ex, factory)` gets to its own
/// task. It lets `call(scope, ...)` bound an await by a deadline that cancels
/// this task's thread, instead of spawning a child coroutine per bounded call
/// (whose frames, thread and parallel group were most of the memory of a
/// replacement in flight in a large rolling update). Cheap to copy.
class TaskScope {
public:
  explicit TaskScope(std::shared_ptr<TaskState> st) noexcept : st_(std::move(st)) {}

  /// True once `stop()` (or the task's destructor) has cancelled the task.
  bool stopping() const noexcept { return st_->stopping; }
  /// The executor the task runs on.
  const boost::asio::any_io_executor& executor() const noexcept { return st_->ex; }

  /// An armed deadline. `disarm()` (or the destructor) makes its pending handlers
  /// no-ops; declare it after the timer, so that it is disarmed first.
  class Deadline {
  public:
    explicit Deadline(std::shared_ptr<TaskState> st) noexcept : st_(std::move(st)) {}
    Deadline(const Deadline&) = delete;
    Deadline& operator=(const Deadline&) = delete;
    ~Deadline() { disarm(); }
    /// Disarms it and says whether it fired. The caller then cancels the timer
    /// and, unless `stopping()`, resets the thread's cancellation state (which
    /// the deadline may have cancelled).
    bool disarm() noexcept {
      if (!st_) return false;
      ++st_->deadline;
      const bool fired = std::exchange(st_->expired, false);
      st_ = nullptr;
      return fired;
    }

  private:
    std::shared_ptr<TaskState> st_;
  };

  /// Arms a deadline: `timer` (already set to expire) cancels this task's thread
  /// (terminal) when it fires, unless the returned `Deadline` is disarmed first.
  /// One at a time. The wait is registered on the executor's next turn, after the
  /// awaited call has started: under the simulated clock, where timers due at one
  /// instant fire in the order they were armed, a call that ends at the very
  /// instant of its deadline wins the tie (real timers seldom share an instant).
  /// The handlers touch `timer` only while the deadline is armed, so `timer` must
  /// outlive the `Deadline`.
  template <class Timer>
  [[nodiscard]] Deadline arm(Timer& timer) {
    const auto gen = ++st_->deadline;
    st_->expired = false;
    boost::asio::post(st_->ex, [st = st_, gen, &timer] {
      if (st->deadline != gen || st->done) return;  // the call already ended
      timer.async_wait([st, gen](const boost::system::error_code& ec) {
        if (ec || st->deadline != gen || st->done) return;
        st->expired = true;
        st->signal.emit(boost::asio::cancellation_type::terminal);
      });
    });
    return Deadline(st_);
  }

private:
  std::shared_ptr<TaskState> st_;
};

/// A background coroutine. `start()` spawns it; when it finishes, `wake` (if any)
/// is notified. `stop()` requests terminal cancellation and waits for it to end;
/// the wait itself ignores the caller's cancellation, so a cancelled strategy
/// still joins its children.
class Task {
public:
  Task() = default;
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  /// A task dropped without `stop()` is cancelled; it can no longer wake anyone.
  ~Task() {
    if (st_ && !st_->done) {
      st_->wake = nullptr;
      st_->on_done = {};
      st_->stopping = true;
      st_->signal.emit(boost::asio::cancellation_type::terminal);
    }
  }

  /// Spawns `aw` on `ex`. Its completion calls `on_done` (if any), then notifies `wake`.
  /// (A template for the same reason as `stop()`: `co_spawn` instantiates a coroutine.)
  template <int = 0>
  void start(const boost::asio::any_io_executor& ex, boost::asio::awaitable<void> aw, Notifier* wake = nullptr,
             std::function<void()> on_done = {}) {
    start(ex, [&aw](const TaskScope&) { return std::move(aw); }, wake, std::move(on_done));
  }

  /// Spawns `make(scope)` on `ex`, where `scope` is this task's `TaskScope`.
  /// `make` is called once, before `start` returns, and destroyed then: the
  /// coroutine it returns must hold copies of what it uses (call a coroutine
  /// function; a lambda coroutine's captures would die with `make`).
  template <class F>
    requires std::is_invocable_r_v<boost::asio::awaitable<void>, F&, TaskScope>
  void start(const boost::asio::any_io_executor& ex, F make, Notifier* wake = nullptr, std::function<void()> on_done = {}) {
    st_ = std::make_shared<TaskState>(ex);
    st_->wake = wake;
    st_->on_done = std::move(on_done);
    ++live_tasks();
    boost::asio::co_spawn(ex, make(TaskScope(st_)),
                          boost::asio::bind_cancellation_slot(st_->signal.slot(), [st = st_](std::exception_ptr e) {
                            st->done = true;
                            st->error = e;
                            --live_tasks();
                            if (st->on_done) std::exchange(st->on_done, {})();
                            if (st->wake) st->wake->notify_all();
                            if (st->joined) st->joined->notify_all();
                          }));
  }

  bool started() const noexcept { return st_ != nullptr; }
  /// True once the coroutine has finished (normally, by exception, or cancelled).
  bool done() const noexcept { return st_ && st_->done; }
  /// The exception it ended with, if any (including `operation_aborted` after `stop()`).
  std::exception_ptr error() const noexcept { return st_ ? st_->error : nullptr; }

  /// Requests terminal cancellation (if still running) and waits until it has ended.
  /// (A template only for compile time: g++ 12 emits every non-template inline
  /// coroutine, used or not, into each TU that includes it, together with the
  /// Asio machinery it instantiates.)
  template <int = 0>
  boost::asio::awaitable<void> stop() {
    if (!st_) co_return;
    auto st = st_;
    st->wake = nullptr;
    st->on_done = {};
    st->stopping = true;
    if (!st->done) st->signal.emit(boost::asio::cancellation_type::terminal);
    if (!st->done && !st->joined) st->joined = std::make_unique<Notifier>(st->ex);
    while (!st->done) {
      // Re-arm until done: a cancelled caller's wait completes early, the task's does not.
      co_await st->joined->async_wait(
          boost::asio::bind_cancellation_slot(boost::asio::cancellation_slot(), boost::asio::as_tuple(boost::asio::use_awaitable)));
    }
  }

private:
  std::shared_ptr<TaskState> st_;
};

}  // namespace rollout::detail
