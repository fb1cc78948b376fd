#pragma once

/// @file
/// `rollout::Outcome`: how a run ended, why, where traffic is, and what happened.

#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace rollout {

/// How a run ended.
enum class Status {
  promoted,     ///< The new version took all traffic and passed verification.
  rolled_back,  ///< A check, probe or analysis failed after traffic moved; traffic is back on the old version.
  aborted,      ///< `control().abort()` or the caller's cancellation ended the run; traffic is on the old version.
  failed,       ///< The run could not proceed (not ready, check failed before the switch, LB errors);
                ///< traffic is on the old version unless `reason` says restoring it failed too.
};

/// What a fleet-changing run did (rolling updates): counts and the fleet it left.
struct FleetReport {
  std::size_t created = 0;         ///< Instances created by this run.
  std::size_t retired = 0;         ///< Instances retired by this run (old ones and failed new ones).
  std::size_t failed = 0;          ///< New instances that failed to start or become ready, and failed calls.
  std::vector<Instance> fleet;     ///< The fleet as `list()` reported it at the end.
};

/// The result of `run()`. A failed rollout is an outcome, not an exception.
struct Outcome {
  Status status = Status::failed;
  error_code code;          ///< Why, as an `errc` (empty when promoted).
  std::string reason;       ///< Why, as a sentence naming the failed call, metric, value and limit.
  std::string active;       ///< The group that holds 100% of traffic now.
  std::string releasable;   ///< The group that no longer gets traffic and may be scaled down, if any.
  Duration elapsed{};       ///< Run time on the strategy's clock.
  Timeline timeline;        ///< Every event of the run, in order (see `Timeline`).
  std::optional<FleetReport> fleet;  ///< Rolling updates: what was created, retired and left.

  /// True when promoted.
  bool ok() const noexcept { return status == Status::promoted; }
};

/// `Promoted`, `RolledBack`, `Aborted` or `Failed`.
inline const char* to_string(Status s) noexcept {
  switch (s) {
    case Status::promoted: return "Promoted";
    case Status::rolled_back: return "RolledBack";
    case Status::aborted: return "Aborted";
    case Status::failed: return "Failed";
  }
  return "Unknown";
}

/// The timeline, one formatted event per line, for logs and closing notes.
/// (A template only for compile time, as `Timeline`'s class is: as a plain
/// inline function it instantiated the timeline's reading in every TU.)
template <int = 0>
std::string format_timeline(const Outcome& o) {
  std::string out;
  for (const auto& e : o.timeline) out += detail::format("{}\n", e);
  return out;
}

}  // namespace rollout

/// Formats as `Promoted`.
template <>
struct fmt::formatter<rollout::Status> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::Status s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(s), ctx);
  }
};

/// Formats as `RolledBack after 2m: <reason> [<code>]; 100% on blue`.
template <>
struct fmt::formatter<rollout::Outcome> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Outcome& o, FormatContext& ctx) const {
    std::string text = rollout::detail::format("{} after {}", o.status, rollout::format_duration(o.elapsed));
    if (!o.reason.empty()) text += rollout::detail::format(": {}", o.reason);
    if (o.code) text += rollout::detail::format(" [{}]", o.code.message());
    if (!o.active.empty()) text += rollout::detail::format("; 100% on {}", o.active);
    if (o.fleet) {
      text += rollout::detail::format("; created {}, retired {}, failed {}, fleet of {}", o.fleet->created, o.fleet->retired,
                                      o.fleet->failed, o.fleet->fleet.size());
    }
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
