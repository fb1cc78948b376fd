#pragma once

/// @file
/// `rollout::Control`: the live control handle of a running strategy.

#include <rollout/core/event.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <functional>
#include <string>
#include <utility>

namespace rollout {

/// The buttons of a running rollout: promote, promote fully, abort, pause and
/// resume. Every strategy exposes one through `control()`.
///
/// Requests are sticky: a `promote()` made before the run reaches its gate is
/// kept and consumed at the gate, and an `abort()` stays in force. The strategy
/// reacts at once, whatever it is waiting for: an abort preempts probes, checks,
/// analyses, pauses and gates (the rollback that follows is shielded from it),
/// and an abort always wins over a full promotion still in flight.
///
/// Thread safety: call it from the strategy's executor (strand), for example from
/// another coroutine on it or through `asio::post`. It is not thread-safe.
///
/// | call | meaning |
/// |---|---|
/// | `promote()` | Pass the current gate or indefinite pause; one call passes one gate. |
/// | `promote_full()` | Skip every remaining step, pause and analysis, then promote. |
/// | `abort(reason)` | Stop now and go back to the previous version. |
/// | `pause()` / `resume()` | Hold the run at its next wait (timers stop counting toward auto-promotion). |
class Control {
public:
  /// Which request arrived; passed to the strategy's listener.
  enum class Request { promote, promote_full, abort, pause, resume };

  void promote() {
    ++pending_promotions_;
    signal(Request::promote, "promote requested");
  }
  void promote_full() {
    full_ = true;
    signal(Request::promote_full, "full promotion requested");
  }
  void abort(std::string reason = "aborted by operator") {
    if (aborted_) return;
    aborted_ = true;
    abort_reason_ = std::move(reason);
    signal(Request::abort, abort_reason_);
  }
  void pause(std::string reason = "paused by operator") {
    if (paused_) return;
    paused_ = true;
    signal(Request::pause, reason);
  }
  void resume() {
    if (!paused_) return;
    paused_ = false;
    signal(Request::resume, "resumed by operator");
  }

  bool abort_requested() const noexcept { return aborted_; }
  const std::string& abort_reason() const noexcept { return abort_reason_; }
  bool paused() const noexcept { return paused_; }
  bool full_promotion_requested() const noexcept { return full_; }
  std::size_t pending_promotions() const noexcept { return pending_promotions_; }

  /// Consumes one pending `promote()`; false if there was none.
  bool take_promotion() noexcept {
    if (pending_promotions_ == 0) return false;
    --pending_promotions_;
    return true;
  }

  /// For strategies: called synchronously on every request. One listener at a time;
  /// pass an empty function to detach.
  void set_listener(std::function<void(Request, const std::string&)> listener) { listener_ = std::move(listener); }

private:
  void signal(Request r, const std::string& detail) {
    if (listener_) listener_(r, detail);
  }

  std::size_t pending_promotions_ = 0;
  bool full_ = false;
  bool aborted_ = false;
  bool paused_ = false;
  std::string abort_reason_;
  std::function<void(Request, const std::string&)> listener_;
};

/// `promote`, `promote_full`, `abort`, `pause` or `resume`.
inline const char* to_string(Control::Request r) noexcept {
  switch (r) {
    case Control::Request::promote: return "promote";
    case Control::Request::promote_full: return "promote_full";
    case Control::Request::abort: return "abort";
    case Control::Request::pause: return "pause";
    case Control::Request::resume: return "resume";
  }
  return "unknown";
}

}  // namespace rollout

/// Formats as `promote`.
template <>
struct fmt::formatter<rollout::Control::Request> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::Control::Request r, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(r), ctx);
  }
};
