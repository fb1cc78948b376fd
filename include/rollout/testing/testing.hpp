#pragma once

/// @file
/// Everything in `rollout::testing`: the simulated clock, the scripted policies,
/// the fake orchestrator, fault plans, invariant checkers, the fault matrix and the abort sweep. Users include it to
/// test their own policies and rollout configurations.

#include <rollout/testing/abort_sweep.hpp>
#include <rollout/testing/fake_orchestrator.hpp>
#include <rollout/testing/fault.hpp>
#include <rollout/testing/fault_matrix.hpp>
#include <rollout/testing/invariants.hpp>
#include <rollout/testing/scripted_load_balancer.hpp>
#include <rollout/testing/scripted_metrics.hpp>
#include <rollout/testing/scripted_probe.hpp>
#include <rollout/testing/sim_clock.hpp>
