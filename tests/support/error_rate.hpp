#pragma once

// The error-rate metric check the strategy tests share: fails above 5%, queried
// as one value per measurement.

#include <rollout/analysis/metric_analysis.hpp>

#include <chrono>
#include <optional>

namespace rollout::test_support {

inline rollout::MetricCheck error_rate(std::optional<rollout::Duration> interval = std::chrono::minutes(1),
                                       std::optional<int> count = 3, int failure_limit = 0) {
  using namespace std::chrono_literals;
  rollout::MetricCheck m;
  m.name = "error-rate";
  m.query = rollout::MetricQuery{"error-rate", "sum(rate(http_errors{version=\"$revision\"}[1m]))", 1min,
                                 rollout::MetricQuery::Want::value};
  m.interval = interval;
  m.count = count;
  m.failure_limit = failure_limit;
  m.failure_condition = rollout::Condition::above(0.05);
  return m;
}

}  // namespace rollout::test_support
