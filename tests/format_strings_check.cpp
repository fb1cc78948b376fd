// Part of the header check (cmake/RolloutHeaderCheck.cmake), built with
// ROLLOUT_CHECK_FORMAT_STRINGS like every rollout target. The headers format
// text with rollout::detail::format, whose format string is checked at compile
// time only in that build, and only in code the build compiles. A member of a
// class template is compiled only where something instantiates it, so a member
// no test calls would go unchecked. Explicit instantiation definitions compile
// every member of these class templates, so every format string in them is
// checked here, whether a test calls the member or not.
#include <rollout/counter_source.hpp>
#include <rollout/process_orchestrator.hpp>
#include <rollout/rollout.hpp>
#include <rollout/tcp_probe.hpp>
#include <rollout/testing/testing.hpp>

namespace rt = rollout::testing;

template class rollout::BlueGreen<rt::ScriptedLoadBalancer<>, rt::ScriptedProbe<>, rt::SimClock>;
template class rollout::Canary<rt::ScriptedLoadBalancer<>, rt::ScriptedMetrics<>, rt::SimClock>;
template class rollout::Rolling<rt::FakeOrchestrator<>, rt::SimClock>;
template class rollout::AnalysisRun<rt::ScriptedMetrics<>, rt::SimClock>;
template class rollout::HealthMonitor<rt::ScriptedProbe<>, rt::SimClock>;
template class rollout::detail::RunContext<rt::SimClock>;
template class rollout::CounterSource<rt::SimClock>;
template class rollout::ProcessOrchestrator<rollout::TcpProbe>;
template class rt::ScriptedLoadBalancer<rt::SimClock>;
template class rt::ScriptedMetrics<rt::SimClock>;
template class rt::ScriptedProbe<rt::SimClock>;
template class rt::FakeOrchestrator<rt::SimClock>;
