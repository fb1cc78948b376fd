#pragma once

/// @file
/// Fault injection shared by the scripted fakes: `Fault`, `FaultPlan` (the call
/// log with faults by call index) and `enact` (how a fake plays a fault).

#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/race.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace rollout::testing {

/// How one policy call misbehaves.
struct Fault {
  enum Kind {
    none,       ///< Behave normally.
    error,      ///< Return `error` after the usual latency.
    exception,  ///< Throw `std::runtime_error` after the usual latency.
    hang,       ///< Never complete; ends only when cancelled.
    late,       ///< Succeed, but only after `delay` (longer than the caller's timeout).
    disagree,   ///< Load balancers: the read-back disagrees (`errc::lb_verify_mismatch`), state unchanged.
  };
  Kind kind = none;
  Error err{};
  Duration delay{};

  static Fault ok() { return {}; }
  static Fault fail(Error e) { return {error, std::move(e), {}}; }
  static Fault raise() { return {exception, {}, {}}; }
  static Fault hang_forever() { return {hang, {}, {}}; }
  static Fault slow(Duration d) { return {late, {}, d}; }
  static Fault read_back_disagrees() { return {disagree, {}, {}}; }
};

/// The name of a fault kind, e.g. `hang`.
inline const char* to_string(Fault::Kind k) noexcept {
  switch (k) {
    case Fault::none: return "none";
    case Fault::error: return "error";
    case Fault::exception: return "exception";
    case Fault::hang: return "hang";
    case Fault::late: return "late";
    case Fault::disagree: return "disagree";
  }
  return "unknown";
}

/// The log of every policy call made through the fakes that share this plan, in
/// order, and the faults to inject by global call index (1-based). Record a clean
/// run, then replay it failing call k in each mode: that is a fault matrix
/// (`fault_matrix` in fault_matrix.hpp does exactly that).
class FaultPlan {
public:
  struct Call {
    std::size_t index;   ///< 1-based position among all calls of the run.
    std::string policy;  ///< `lb.apply`, `probe.check`, `metrics.query`, `orchestrator.create`, ...
    std::string what;    ///< The argument, e.g. the split or the instance id.
  };

  /// Records a call and returns the fault to inject for it.
  Fault on_call(std::string policy, std::string what) {
    calls_.push_back(Call{calls_.size() + 1, std::move(policy), std::move(what)});
    const auto& c = calls_.back();
    if (auto it = by_index_.find(c.index); it != by_index_.end()) {
      injected_.push_back(c);
      return it->second;
    }
    if (rule_) {
      if (auto f = rule_(c)) {
        injected_.push_back(c);
        return *f;
      }
    }
    return Fault::ok();
  }

  /// Injects `f` at global call `index` (1-based).
  void inject(std::size_t index, Fault f) { by_index_[index] = std::move(f); }
  /// Injects whatever `rule` returns for each call (checked after `inject`).
  void inject_where(std::function<std::optional<Fault>(const Call&)> rule) { rule_ = std::move(rule); }

  const std::vector<Call>& calls() const noexcept { return calls_; }
  /// The calls that received a fault.
  const std::vector<Call>& injected() const noexcept { return injected_; }

private:
  std::vector<Call> calls_;
  std::vector<Call> injected_;
  std::map<std::size_t, Fault> by_index_;
  std::function<std::optional<Fault>(const Call&)> rule_;
};

/// Plays `f` for a call named `call` whose normal latency is `latency`: waits on
/// `clock`, then returns the error to report (if any). `exception` throws, `hang`
/// waits until cancelled (and throws `operation_aborted`). `disagree` is returned
/// as `errc::lb_verify_mismatch`.
template <Clock C>
boost::asio::awaitable<std::optional<Error>> enact(const C& clock, const Fault& f, Duration latency, const std::string& call) {
  switch (f.kind) {
    case Fault::none:
      co_await detail::sleep_for(clock, latency);
      co_return std::nullopt;
    case Fault::error:
      co_await detail::sleep_for(clock, latency);
      co_return f.err ? f.err : Error(errc::lb_rejected, detail::format("injected error in {}", call));
    case Fault::exception:
      co_await detail::sleep_for(clock, latency);
      throw std::runtime_error(detail::format("injected exception in {}", call));
    case Fault::hang:
      co_await detail::sleep_until(clock, TimePoint::max());
      co_return Error(errc::timeout, "unreachable: a hang ended without cancellation");
    case Fault::late:
      co_await detail::sleep_for(clock, f.delay);
      co_return std::nullopt;
    case Fault::disagree:
      co_await detail::sleep_for(clock, latency);
      co_return Error(errc::lb_verify_mismatch, detail::format("injected read-back mismatch in {}", call));
  }
  co_return std::nullopt;
}

}  // namespace rollout::testing
