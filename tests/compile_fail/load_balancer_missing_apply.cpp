// Must NOT compile: a load balancer policy without apply() is rejected, and the
// diagnostic names the concept it fails (rollout::LoadBalancer).
#include <rollout/strategy/blue_green.hpp>
#include <rollout/testing/scripted_probe.hpp>

struct WeightsOnlyPolicy {
  boost::asio::awaitable<rollout::result<void>> set_weights(const rollout::TrafficSplit&);
};

int main() {
  WeightsOnlyPolicy lb;
  rollout::testing::SimClock clock;
  rollout::testing::ScriptedProbe<> probe(clock);
  rollout::BlueGreen<WeightsOnlyPolicy, rollout::testing::ScriptedProbe<>> bg(lb, probe, {}, {});
}
