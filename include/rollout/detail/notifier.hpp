#pragma once

/// @file
/// `detail::Notifier`: an asynchronous "something changed" signal, the condition
/// variable of rollout's strategies. Not thread-safe: use it on one strand.

#include <rollout/detail/pending_wait.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <utility>

namespace rollout::detail {

/// Waiters call `async_wait`; `notify_all()` completes every current waiter with
/// success. A notification with no waiter is not remembered, so a caller checks
/// its condition, then waits, with no suspension in between (one strand).
///
/// Cancellation: each wait honours its handler's cancellation slot (any type) and
/// completes with `operation_aborted`. Destroying the notifier completes pending
/// waits with `operation_aborted`.
class Notifier {
  struct InitiateWait {  // async_wait's initiation, named so that its return type can be spelled out
    Notifier* self;
    template <class Handler>
    void operator()(Handler handler) const {
      self->enqueue(make_pending_wait(std::move(handler), self->ex_));
    }
  };

public:
  /// `ex` runs completions of waits whose handler has no executor of its own
  /// (Asio 1.81's parallel-group operation handlers have none), like an I/O object's executor.
  explicit Notifier(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;
  ~Notifier() { cancel_all(); }

  /// Waits for the next `notify_all()`. Signature `void(error_code)`.
  ///
  /// The return type is spelled out, not deduced, so that naming a call in a
  /// non-template context does not instantiate its body: with `use_awaitable`
  /// that body is a coroutine, which g++ 12 would then compile into every TU.
  template <class Token>
  auto async_wait(Token&& token)
      -> decltype(boost::asio::async_initiate<Token, void(error_code)>(std::declval<InitiateWait>(), token)) {
    return boost::asio::async_initiate<Token, void(error_code)>(InitiateWait{this}, token);
  }

  /// Waits for the next `notify_all()` or for `timer` to expire, whichever comes
  /// first, without a parallel group (this is the strategies' hottest wait).
  /// Completes with success when notified, `error::timed_out` when the timer
  /// expired first, and `operation_aborted` when cancelled (the handler's slot, or
  /// the notifier's destruction). The caller arms `timer` before and destroys or
  /// cancels it after; its late completion finds nothing left to do. Signature
  /// `void(error_code)`.
  template <class Timer, class Token>
  auto async_wait_until(Timer& timer, Token&& token) {
    return boost::asio::async_initiate<Token, void(error_code)>(
        [this, &timer](auto handler) {
          const auto id = enqueue(make_pending_wait(std::move(handler), ex_));
          timer.async_wait([this, id, alive = std::weak_ptr<int>(alive_)](error_code ec) {
            if (ec || alive.expired()) return;  // cancelled, or the notifier is gone
            auto it = waiters_.find(id);
            if (it == waiters_.end()) return;  // notified or cancelled first
            auto pending = std::move(it->second);
            waiters_.erase(it);
            complete(std::move(pending), boost::asio::error::timed_out);
          });
        },
        token);
  }

  /// Completes every pending wait with success.
  void notify_all() {
    auto waiters = std::move(waiters_);
    waiters_.clear();
    for (auto& [id, w] : waiters) complete(std::move(w), {});
  }

  /// Completes every pending wait with `operation_aborted`.
  void cancel_all() {
    auto waiters = std::move(waiters_);
    waiters_.clear();
    for (auto& [id, w] : waiters) complete(std::move(w), boost::asio::error::operation_aborted);
  }

  std::size_t waiting() const noexcept { return waiters_.size(); }

  const boost::asio::any_io_executor& get_executor() const noexcept { return ex_; }

private:
  /// Registers `w` (and its cancellation) and returns its id.
  std::uint64_t enqueue(std::unique_ptr<PendingWait> w) {
    const auto id = next_id_++;
    if (w->slot.is_connected()) {
      w->slot.assign([this, id](boost::asio::cancellation_type_t type) {
        if (type == boost::asio::cancellation_type::none) return;
        auto it = waiters_.find(id);
        if (it == waiters_.end()) return;
        auto pending = std::move(it->second);
        waiters_.erase(it);
        complete(std::move(pending), boost::asio::error::operation_aborted, /*from_slot=*/true);
      });
    }
    waiters_.emplace(id, std::move(w));
    return id;
  }

  boost::asio::any_io_executor ex_;
  std::uint64_t next_id_ = 0;
  std::map<std::uint64_t, std::unique_ptr<PendingWait>> waiters_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // timer callbacks check it: the notifier may be gone
};

}  // namespace rollout::detail
