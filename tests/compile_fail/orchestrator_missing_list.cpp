// Must NOT compile: an orchestrator without list() is rejected, and the
// diagnostic names rollout::Orchestrator.
#include <rollout/concepts.hpp>

#include <vector>

struct NoList {
  boost::asio::awaitable<rollout::result<rollout::Instance>> create(const rollout::Revision&);
  boost::asio::awaitable<rollout::result<void>> wait_ready(const rollout::Instance&);
  boost::asio::awaitable<rollout::result<void>> retire(const rollout::Instance&);
};

template <rollout::Orchestrator O>
void use(O&) {}

int main() {
  NoList o;
  use(o);
}
