#pragma once

/// @file
/// The umbrella header: the vocabulary, the policy concepts and the strategies.
/// The real policies (HAProxy, HTTP probes, Prometheus, processes) have their own
/// opt-in headers so that this one stays cheap to compile.

#include <rollout/analysis/health_monitor.hpp>
#include <rollout/analysis/mann_whitney.hpp>
#include <rollout/analysis/metric_analysis.hpp>
#include <rollout/analysis/probe_schedule.hpp>
#include <rollout/concepts.hpp>
#include <rollout/core/backoff.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/control.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/core/percent.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/core/types.hpp>
#include <rollout/strategy/blue_green.hpp>
#include <rollout/strategy/canary.hpp>
#include <rollout/strategy/rolling.hpp>
