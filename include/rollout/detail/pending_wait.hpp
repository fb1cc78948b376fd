#pragma once

/// @file
/// The building block of rollout's own asynchronous waits (the simulated timer and
/// the notifier): a type-erased completion handler with its executor's work kept
/// alive and its per-operation cancellation slot.

#include <rollout/core/error.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

#include <memory>
#include <utility>

namespace rollout::detail {

/// One pending wait. Owned by the container that completes it.
struct PendingWait {
  boost::asio::any_completion_handler<void(error_code)> handler;
  boost::asio::any_io_executor work;  // the handler's executor, with outstanding work tracked
  boost::asio::cancellation_slot slot;
};

/// Wraps `handler` into a `PendingWait`. `fallback` is the executor used when the
/// handler has none of its own (the I/O object's executor, as Asio does).
template <class Handler>
std::unique_ptr<PendingWait> make_pending_wait(Handler&& handler, const boost::asio::any_io_executor& fallback) {
  auto slot = boost::asio::get_associated_cancellation_slot(handler);
  auto work = boost::asio::prefer(boost::asio::any_io_executor(boost::asio::get_associated_executor(handler, fallback)),
                                  boost::asio::execution::outstanding_work.tracked);
  // Constructed in place on purpose: in Asio 1.81, any_completion_handler's move
  // assignment recurses forever (it re-wraps its argument through the converting
  // constructor), so a PendingWait's handler must never be assigned.
  return std::unique_ptr<PendingWait>(new PendingWait{
      boost::asio::any_completion_handler<void(error_code)>(std::forward<Handler>(handler)), std::move(work), slot});
}

/// Completes `w` with `ec`: the handler is posted (never invoked inline), and the
/// cancellation slot is cleared first unless we are running inside it
/// (`from_slot`), where clearing would destroy the running slot handler.
inline void complete(std::unique_ptr<PendingWait> w, error_code ec, bool from_slot = false) {
  if (!from_slot && w->slot.is_connected()) w->slot.clear();
  auto work = std::move(w->work);
  boost::asio::post(work, [h = std::move(w->handler), ec]() mutable { std::move(h)(ec); });
}

}  // namespace rollout::detail
