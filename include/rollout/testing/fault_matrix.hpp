#pragma once

/// @file
/// `testing::fault_matrix`: record the policy calls of a clean run, then replay
/// the run once per call and fault mode with that one call failing, and check
/// how every replay ends. One harness for every strategy and policy.

#include <rollout/core/clock.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/task.hpp>
#include <rollout/testing/fault.hpp>
#include <rollout/testing/sim_clock.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rollout::testing {

/// The five ways a call fails, in the order a matrix tries them: an error result,
/// an exception, a hang that only cancellation ends, a success that comes `late_by`
/// after the call (choose more than the strategy's timeout for that call), and
/// for `lb.apply` a success whose read-back disagrees.
inline std::vector<Fault> fault_modes(Duration late_by) {
  return {Fault::fail(Error(errc::lb_rejected, "injected error")), Fault::raise(), Fault::hang_forever(), Fault::slow(late_by),
          Fault::read_back_disagrees()};
}

/// One cell of the matrix: which call failed, how, and how the run ended.
struct FaultCase {
  FaultPlan::Call call;  ///< The call that failed, as the clean run recorded it.
  Fault fault;           ///< How it failed.
  Status status{};       ///< How the run ended.
  std::string reason;    ///< The outcome's reason.
};

/// What `fault_matrix` saw.
struct FaultMatrixReport {
  std::vector<FaultPlan::Call> calls;  ///< The calls of the clean run, in order.
  std::vector<FaultCase> cases;        ///< Every replay, in order.
  std::vector<std::string> problems;   ///< Every broken expectation, one line each, naming its case.

  /// Replays run: calls x modes, less the read-back mode for calls other than `lb.apply`.
  std::size_t runs() const noexcept { return cases.size(); }
  bool ok() const noexcept { return problems.empty(); }

  /// How many replays ended with `s`.
  std::size_t count(Status s) const {
    std::size_t n = 0;
    for (const auto& c : cases) n += c.status == s ? 1 : 0;
    return n;
  }

  /// One line: calls by policy, runs, and outcomes.
  std::string summary(std::string_view name) const {
    std::map<std::string, std::size_t> by_policy;
    for (const auto& c : calls) ++by_policy[c.policy];
    std::string policies;
    for (const auto& [p, n] : by_policy) policies += detail::format("{}{} {}", policies.empty() ? "" : ", ", p, n);
    return detail::format("{}: {} calls ({}) x modes = {} runs: {} promoted, {} rolled back, {} failed, {} aborted; {} problems", name,
                          calls.size(), policies, runs(), count(Status::promoted), count(Status::rolled_back), count(Status::failed),
                          count(Status::aborted), problems.size());
  }

  /// A Markdown table: one row per policy, one column per fault mode; each cell
  /// counts the outcomes of the replays where a call of that policy failed that
  /// way (P promoted, R rolled back, F failed).
  std::string table() const {
    std::map<std::string, std::map<Fault::Kind, std::map<Status, std::size_t>>> cells;
    std::vector<Fault::Kind> kinds;
    for (const auto& c : cases) {
      ++cells[c.call.policy][c.fault.kind][c.status];
      if (std::find(kinds.begin(), kinds.end(), c.fault.kind) == kinds.end()) kinds.push_back(c.fault.kind);
    }
    std::string out = "| call |";
    for (auto k : kinds) out += detail::format(" {} |", to_string(k));
    out += "\n|---|";
    for (std::size_t i = 0; i < kinds.size(); ++i) out += "---|";
    out += "\n";
    for (const auto& [policy, by_kind] : cells) {
      out += detail::format("| {} |", policy);
      for (auto k : kinds) {
        auto it = by_kind.find(k);
        if (it == by_kind.end()) {
          out += " - |";
          continue;
        }
        std::string cell;
        auto add = [&](Status s, char letter) {
          if (auto n = it->second.find(s); n != it->second.end()) cell += detail::format("{}{}{}", cell.empty() ? "" : " ", letter, n->second);
        };
        add(Status::promoted, 'P');
        add(Status::rolled_back, 'R');
        add(Status::failed, 'F');
        add(Status::aborted, 'A');
        out += detail::format(" {} |", cell);
      }
      out += "\n";
    }
    return out;
  }
};

/// Runs a fault matrix under the simulated clock.
///
/// `make(plan)` returns a fresh fixture (any pointer-like owner) whose fakes all
/// share `plan` (`set_plan(&plan)`), with members `boost::asio::io_context io`,
/// `SimClock clock`, and `strategy()` returning the strategy. Its observers
/// should check the strategy's traffic invariants after every event (see
/// `invariants.hpp`); `check` reads them at the end.
///
/// The matrix first runs a clean fixture to record its calls, which must end
/// `Promoted`. Then, for each recorded call k and each mode in `modes`, it runs a
/// fresh fixture with call k failing that way (`disagree` only for `lb.apply`)
/// and checks, recording any problem in the report:
/// - `run()` returns (no hang outlives the strategy's own timeouts) and does
///   not throw;
/// - nothing is left running: the `io_context` has no outstanding work (no
///   coroutine frame of the run is alive, even one waiting on something other
///   than a timer), no simulated timer is armed, and `detail::live_tasks()` is
///   back where it was;
/// - the replay made the same calls as the clean run up to k, and the fault hit;
/// - the run did not end `Aborted` (nobody aborted it);
/// - unless it was promoted (the fault was tolerated), the outcome carries an
///   error code and its reason names the failed call: its policy (`lb.apply`,
///   `metrics.query`) or its subject (the instance `g-1` whose probe failed);
/// - `check(fixture, outcome, case)` returns no problem (an empty string means
///   none); use it for the strategy's invariants and final traffic or fleet.
///
/// Exceptions from `make` or from the clean run propagate.
template <class Make, class Check>
FaultMatrixReport fault_matrix(Make make, Check check, const std::vector<Fault>& modes) {
  FaultMatrixReport rep;
  const auto tasks_before = detail::live_tasks().load();
  {
    FaultPlan clean;
    auto f = make(clean);
    auto out = run_sim(f->io, f->clock, f->strategy().run());
    if (out.status != Status::promoted) {
      throw std::logic_error(detail::format("fault_matrix: the clean run ended {}: {}", out.status, out.reason));
    }
    rep.calls = clean.calls();
  }
  for (const auto& call : rep.calls) {
    for (const auto& mode : modes) {
      if (mode.kind == Fault::disagree && call.policy != "lb.apply") continue;
      FaultCase fc{call, mode, {}, {}};
      const std::string label = detail::format("call {} {}({}) {}", call.index, call.policy, call.what, to_string(mode.kind));
      auto problem = [&](std::string what) { rep.problems.push_back(detail::format("{}: {}", label, what)); };
      FaultPlan plan;
      plan.inject(call.index, mode);
      auto f = make(plan);
      std::optional<Outcome> out;
      std::exception_ptr thrown;
      boost::asio::co_spawn(f->io, f->strategy().run(), [&](std::exception_ptr e, Outcome o) {
        thrown = e;
        if (!e) out = std::move(o);
      });
      try {
        f->clock.run(f->io);
      } catch (const std::exception& e) {
        problem(detail::format("the simulation failed: {}", e.what()));
        rep.cases.push_back(std::move(fc));
        continue;
      }
      f->io.poll();
      if (!f->io.stopped()) problem("coroutines are still alive after run() (the io_context has outstanding work)");
      if (f->clock.pending_timers() != 0) problem(detail::format("{} timers still armed after run()", f->clock.pending_timers()));
      if (detail::live_tasks().load() != tasks_before) {
        problem(detail::format("{} background tasks leaked", detail::live_tasks().load() - tasks_before));
      }
      const auto& made = plan.calls();
      if (made.size() < call.index || made[call.index - 1].policy != call.policy || made[call.index - 1].what != call.what) {
        problem("the replay diverged from the clean run before the injected call");
      } else if (plan.injected().size() != 1) {
        problem(detail::format("{} faults hit, expected 1", plan.injected().size()));
      }
      if (thrown) {
        try {
          std::rethrow_exception(thrown);
        } catch (const std::exception& e) {
          problem(detail::format("run() threw: {}", e.what()));
        } catch (...) {
          problem("run() threw a non-standard exception");
        }
      } else if (!out) {
        problem("run() never returned");
      } else {
        fc.status = out->status;
        fc.reason = out->reason;
        if (out->status == Status::aborted) problem("ended Aborted, but nobody aborted it");
        if (out->status != Status::promoted) {
          if (!out->code) problem(detail::format("ended {} without an error code", out->status));
          const bool names_policy = out->reason.find(call.policy) != std::string::npos;
          const bool names_subject = !call.what.empty() && out->reason.find(call.what) != std::string::npos;
          if (!names_policy && !names_subject) {
            problem(detail::format("ended {} with a reason that names neither {} nor {}: {}", out->status, call.policy, call.what,
                                   out->reason));
          }
        }
        std::string extra = check(*f, *out, fc);
        if (!extra.empty()) problem(extra);
      }
      rep.cases.push_back(std::move(fc));
    }
  }
  return rep;
}

}  // namespace rollout::testing
