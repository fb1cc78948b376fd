#pragma once

/// @file
/// `testing::abort_sweep`: abort a run at every suspension point, under the
/// simulated clock, and check how each one ends.

#include <rollout/core/clock.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/testing/sim_clock.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace rollout::testing {

/// What `abort_sweep` saw.
struct AbortSweepReport {
  std::size_t completions = 0;     ///< Completions of the clean run: the abort points tried are 0..completions-1.
  std::size_t aborted = 0;         ///< Runs that ended `Aborted`.
  std::size_t other = 0;           ///< Runs that ended otherwise after the abort (e.g. already promoted and draining).
  Duration worst_to_effect{};      ///< Longest simulated time from `abort()` to the run acting on it.
  Duration worst_to_end{};         ///< Longest simulated time from `abort()` to `run()` returning.
  std::size_t worst_point = 0;     ///< The abort point of `worst_to_effect`.
};

/// Aborts a run at every suspension point and checks each ending.
///
/// `make()` returns a fresh fixture (any pointer-like owner) with members
/// `boost::asio::io_context io`, `SimClock clock`, and `strategy()` returning the
/// strategy (anything with `run()`, `control()` and `observers()`). The sweep
/// first runs one fixture to the end, one completion (`SimClock::step`) at a
/// time, to count its completions. Then, for each k below that count, it runs a
/// fresh fixture for k completions, calls `control().abort()`, runs it to the
/// end, and calls `check(fixture, outcome, k)`.
///
/// The run "acts on" the abort at its first `abort_requested` follow-up event:
/// `rollback_started`, `run_finished`, or a `phase_changed` to `rolling_back`.
/// The simulated time until then is the abort's latency; an abort that had to
/// wait for a pending timer (a pause, a probe period, a verification window)
/// shows up there.
///
/// Throws `std::logic_error` if the clean run never finishes, or if a run does
/// not finish after an abort (it waits for something no timer will end).
/// Exceptions from `run()` propagate.
template <class Make, class Check>
AbortSweepReport abort_sweep(Make make, Check check) {
  AbortSweepReport rep;
  {
    auto f = make();
    std::optional<Outcome> out;
    boost::asio::co_spawn(f->io, f->strategy().run(), [&](std::exception_ptr e, Outcome o) {
      if (e) std::rethrow_exception(e);
      out = std::move(o);
    });
    while (!out && f->clock.step(f->io)) ++rep.completions;
    if (!out) throw std::logic_error("abort_sweep: the clean run never finished");
  }
  for (std::size_t k = 0; k < rep.completions; ++k) {
    auto f = make();
    std::optional<Outcome> out;
    std::optional<TimePoint> aborted_at, effect_at;
    f->strategy().observers().add([&](const Event& e) {
      if (!aborted_at || effect_at) return;
      if (e.kind == EventKind::rollback_started || e.kind == EventKind::run_finished ||
          (e.kind == EventKind::phase_changed && e.subject == "rolling_back")) {
        effect_at = f->clock.now();
      }
    });
    boost::asio::co_spawn(f->io, f->strategy().run(), [&](std::exception_ptr e, Outcome o) {
      if (e) std::rethrow_exception(e);
      out = std::move(o);
    });
    for (std::size_t i = 0; i < k && !out; ++i) f->clock.step(f->io);
    if (out) throw std::logic_error(detail::format("abort_sweep: the run finished after {} of {} completions", k, rep.completions));
    aborted_at = f->clock.now();
    f->strategy().control().abort("abort_sweep");
    f->clock.run(f->io);
    if (!out) throw std::logic_error(detail::format("abort_sweep: after an abort at completion {}, run() never returned", k));
    if (out->status == Status::aborted) {
      ++rep.aborted;
    } else {
      ++rep.other;
    }
    const Duration to_effect = (effect_at ? *effect_at : f->clock.now()) - *aborted_at;
    if (to_effect > rep.worst_to_effect) {
      rep.worst_to_effect = to_effect;
      rep.worst_point = k;
    }
    rep.worst_to_end = std::max(rep.worst_to_end, f->clock.now() - *aborted_at);
    check(*f, *out, k);
  }
  return rep;
}

}  // namespace rollout::testing
