// A user's program: a blue-green run with the testing policies and simulated time.
#include <rollout/rollout.hpp>
#include <rollout/testing/testing.hpp>

#include <fmt/core.h>

int main() {
  using namespace rollout;
  boost::asio::io_context io;
  testing::SimClock clock;
  testing::ScriptedLoadBalancer<> lb(clock, TrafficSplit::all_to("blue"));
  testing::ScriptedProbe<> probe(clock);
  Environment blue{"blue", {"v1"}, {{"b-0", {"v1"}, {"127.0.0.1", 8001}}}};
  Environment green{"green", {"v2"}, {{"g-0", {"v2"}, {"127.0.0.1", 8002}}}};
  BlueGreen<testing::ScriptedLoadBalancer<>, testing::ScriptedProbe<>, testing::SimClock> bg(lb, probe, blue, green, {}, clock);
  const Outcome out = testing::run_sim(io, clock, bg.run());
  fmt::print("consumer: {}\n", out);
  return out.status == Status::promoted && lb.state().sole_group() == "green" ? 0 : 1;
}
