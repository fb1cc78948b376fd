// Must NOT compile: check() returning bool instead of HealthResult is rejected,
// and the diagnostic names rollout::HealthProbe.
#include <rollout/strategy/blue_green.hpp>
#include <rollout/testing/scripted_load_balancer.hpp>

struct BoolReturningCheck {
  boost::asio::awaitable<bool> check(const rollout::Instance&);
};

int main() {
  rollout::testing::SimClock clock;
  rollout::testing::ScriptedLoadBalancer<> lb(clock, rollout::TrafficSplit::all_to("blue"));
  BoolReturningCheck probe;
  rollout::BlueGreen<rollout::testing::ScriptedLoadBalancer<>, BoolReturningCheck> bg(lb, probe, {}, {});
}
