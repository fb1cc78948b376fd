// Must NOT compile: query() without the Scope parameter is rejected, and the
// diagnostic names rollout::MetricsSource.
#include <rollout/concepts.hpp>

struct NoScope {
  boost::asio::awaitable<rollout::result<rollout::MetricValue>> query(const rollout::MetricQuery&);
};

template <rollout::MetricsSource M>
void use(M&) {}

int main() {
  NoScope m;
  use(m);
}
