#pragma once

/// @file
/// `rollout::TrafficSplit`: how traffic is shared between named groups.

#include <rollout/core/error.hpp>
#include <rollout/core/percent.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <compare>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rollout {

/// The share of traffic each group (an environment name, or `stable`/`canary`)
/// should receive. This is what a strategy hands to `LoadBalancer::apply`.
///
/// A split is always valid: its weights sum to exactly 100%, every group name is
/// non-empty and appears once. Construction rejects anything else with
/// `invalid_option`, naming the split and the sum. Groups are kept sorted by name,
/// so two splits with the same shares compare equal. A group with 0% is kept: it
/// tells the load balancer to send that group nothing.
class TrafficSplit {
public:
  /// One group's share.
  struct Share {
    std::string group;
    Percent weight;

    friend auto operator<=>(const Share&, const Share&) = default;
  };

  /// Everything to `group`.
  static TrafficSplit all_to(std::string group) { return of({Share{std::move(group), Percent::full()}}); }

  /// `weight` to `to`, the rest to `rest`: e.g. `between("canary", 5_pct, "stable")`.
  static TrafficSplit between(std::string to, Percent weight, std::string rest) {
    return of({Share{std::move(to), weight}, Share{std::move(rest), weight.complement()}});
  }

  /// Builds a split from shares. Throws `invalid_option` (field `split`) unless the
  /// weights sum to 100%, names are non-empty and no group appears twice.
  static TrafficSplit of(std::vector<Share> shares) {
    std::sort(shares.begin(), shares.end(), [](const Share& a, const Share& b) { return a.group < b.group; });
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < shares.size(); ++i) {
      if (shares[i].group.empty()) throw invalid_option("split", describe(shares), "a group name is empty");
      if (i > 0 && shares[i].group == shares[i - 1].group) {
        throw invalid_option("split", describe(shares), detail::format("group '{}' appears twice", shares[i].group));
      }
      sum += shares[i].weight.basis_points();
    }
    if (shares.empty()) throw invalid_option("split", "{}", "a split needs at least one group");
    if (sum != Percent::full_scale) {
      throw invalid_option("split", describe(shares),
                           detail::format("weights must sum to 100%, they sum to {}.{:02}%", sum / 100, sum % 100));
    }
    TrafficSplit s;
    s.shares_ = std::move(shares);
    return s;
  }

  /// The shares, sorted by group name.
  const std::vector<Share>& shares() const noexcept { return shares_; }

  /// The weight of `group`, or 0% if the split does not name it.
  Percent weight_of(std::string_view group) const noexcept {
    for (const auto& s : shares_) {
      if (s.group == group) return s.weight;
    }
    return Percent{};
  }

  /// The group that holds 100%, if one does.
  std::optional<std::string> sole_group() const {
    for (const auto& s : shares_) {
      if (s.weight.is_full()) return s.group;
    }
    return std::nullopt;
  }

  friend bool operator==(const TrafficSplit&, const TrafficSplit&) = default;

  /// `{blue: 0%, green: 100%}`.
  static std::string describe(const std::vector<Share>& shares) {
    std::string out = "{";
    for (std::size_t i = 0; i < shares.size(); ++i) {
      out += detail::format("{}{}: {}", i ? ", " : "", shares[i].group, shares[i].weight);
    }
    return out + "}";
  }

private:
  TrafficSplit() = default;
  std::vector<Share> shares_;
};

}  // namespace rollout

/// Formats as `{blue: 0%, green: 100%}`.
template <>
struct fmt::formatter<rollout::TrafficSplit> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::TrafficSplit& s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::TrafficSplit::describe(s.shares()), ctx);
  }
};
