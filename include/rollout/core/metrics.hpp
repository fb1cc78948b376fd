#pragma once

/// @file
/// Metrics vocabulary: `MetricQuery`, `Scope`, and `MetricValue`, whose `NoData`
/// alternative keeps "no data" distinct from a value of 0.

#include <rollout/core/clock.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <string>
#include <variant>
#include <vector>

namespace rollout {

/// Which side of a comparison a query is about. Kayenta compares the canary with
/// a baseline started at the same time, not with the long-running stable fleet.
enum class ScopeRole { stable, canary, baseline };

/// The population a metric query is evaluated over: a role and the revision it runs.
/// A templated query such as `{version="$revision"}` receives `revision.id`.
struct Scope {
  ScopeRole role = ScopeRole::canary;
  Revision revision;

  Scope() = default;  // not an aggregate: see the note in core/types.hpp
  Scope(ScopeRole role, Revision revision) : role(role), revision(std::move(revision)) {}
};

/// What to ask a `MetricsSource` for.
struct MetricQuery {
  /// Shape of the answer the caller wants.
  enum class Want { value, samples };

  std::string name;        ///< A short name for events and reasons, e.g. `error-rate`.
  std::string expr;        ///< The source-specific query, e.g. PromQL; may contain `$revision`.
  Duration window{std::chrono::minutes(1)};  ///< How far back to look.
  Want want = Want::value; ///< A single value, or raw samples for a statistical judge.
};

/// "There is no data", with the reason (empty result, NaN, no requests...).
/// It is never treated as a pass, and it is never the same as 0.
struct NoData {
  std::string why;

  NoData() = default;  // not an aggregate: see the note in core/types.hpp
  explicit NoData(std::string why) : why(std::move(why)) {}
  friend bool operator==(const NoData&, const NoData&) = default;
};

/// Raw observations, for the Mann-Whitney judge.
using Samples = std::vector<double>;

/// The answer to a metric query: no data, one value, or samples.
using MetricValue = std::variant<NoData, double, Samples>;

}  // namespace rollout

/// Formats as `stable`, `canary` or `baseline`.
template <>
struct fmt::formatter<rollout::ScopeRole> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::ScopeRole r, FormatContext& ctx) const {
    const char* s = r == rollout::ScopeRole::stable ? "stable" : r == rollout::ScopeRole::canary ? "canary" : "baseline";
    return fmt::formatter<std::string_view>::format(s, ctx);
  }
};

/// Formats as `canary(v2)`.
template <>
struct fmt::formatter<rollout::Scope> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Scope& s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::detail::format("{}({})", s.role, s.revision), ctx);
  }
};

/// Formats as `error-rate[1m]: <expr>`.
template <>
struct fmt::formatter<rollout::MetricQuery> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::MetricQuery& q, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("{}[{}]{}: {}", q.name, rollout::format_duration(q.window),
                                q.want == rollout::MetricQuery::Want::samples ? " samples" : "", q.expr),
        ctx);
  }
};

/// Formats as `no data (why)`, the number, or `N samples`.
template <>
struct fmt::formatter<rollout::MetricValue> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::MetricValue& v, FormatContext& ctx) const {
    std::string text;
    if (auto* nd = std::get_if<rollout::NoData>(&v)) {
      text = rollout::detail::format("no data ({})", nd->why);
    } else if (auto* d = std::get_if<double>(&v)) {
      text = rollout::detail::format("{}", *d);
    } else {
      text = rollout::detail::format("{} samples", std::get<rollout::Samples>(v).size());
    }
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
