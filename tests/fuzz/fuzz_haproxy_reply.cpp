// libFuzzer target: HAProxy runtime API replies, as HaproxyLoadBalancer reads
// them: `show servers state` parsing and error-reply mapping. Neither may crash,
// read out of bounds or hang; a parsed state names only servers that appeared
// in the input; an error keeps HAProxy's words but stays one bounded line.
#include <rollout/haproxy.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto state = rollout::detail::parse_servers_state(text)) {
    for (const auto& [server, st] : *state) {
      if (text.find(server.backend) == std::string_view::npos || text.find(server.server) == std::string_view::npos) std::abort();
      (void)st;
    }
  }
  const auto err = rollout::detail::haproxy_error("set server app/s1 weight 1", std::string(text));
  if (err.message.rfind("haproxy: ", 0) != 0) std::abort();
  if (err.message.find('\n') != std::string::npos) std::abort();  // one line: the first line of the reply
  return 0;
}
