#pragma once

// A real HAProxy 2.6 for tests: `haproxy -db -f <generated cfg>` in a temp dir,
// with an admin and a user-level runtime API socket, one HTTP frontend on a free
// 127.0.0.1 port, and backend `app` (roundrobin) whose servers are given by the
// test. Stopped (SIGTERM, then SIGKILL) by PID when the fixture goes away.

#include "support/temp_dir.hpp"

#include <rollout/detail/child_process.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

namespace rollout::test_support {

class HaproxyProcess {
public:
  struct Server {
    std::string name;
    std::uint16_t port;
    int weight;
  };

  HaproxyProcess(boost::asio::io_context& io, const std::vector<Server>& servers)
      : frontend_port_(free_port()), api_port_(free_port()) {
    std::ofstream cfg(dir_.path() / "haproxy.cfg");
    cfg << fmt::format(
        "global\n"
        "  stats socket {0}/admin.sock mode 600 level admin\n"
        "  stats socket {0}/user.sock mode 600 level user\n"
        "  stats socket ipv4@127.0.0.1:{2} level admin\n"
        "defaults\n"
        "  mode http\n"
        "  timeout connect 2s\n"
        "  timeout client 30s\n"
        "  timeout server 30s\n"
        "frontend fe\n"
        "  bind 127.0.0.1:{1}\n"
        "  default_backend app\n"
        "backend app\n"
        "  balance roundrobin\n",
        dir_.path().string(), frontend_port_, api_port_);
    for (const auto& s : servers) cfg << fmt::format("  server {} 127.0.0.1:{} weight {}\n", s.name, s.port, s.weight);
    cfg.close();
    proc_.emplace(io.get_executor(), "/usr/sbin/haproxy", std::vector<std::string>{"-db", "-f", (dir_.path() / "haproxy.cfg").string()});
    wait_ready();
  }

  ~HaproxyProcess() {
    if (proc_ && !proc_->exited()) proc_->signal(SIGTERM);
    // ChildProcess's destructor SIGKILLs and reaps it if SIGTERM was not enough.
  }

  std::string admin_socket() const { return (dir_.path() / "admin.sock").string(); }
  std::string user_socket() const { return (dir_.path() / "user.sock").string(); }
  std::uint16_t frontend_port() const { return frontend_port_; }
  /// The runtime API on TCP (admin level), 127.0.0.1 only.
  std::uint16_t api_port() const { return api_port_; }
  int pid() const { return proc_->pid(); }
  void signal(int sig) { proc_->signal(sig); }

private:
  void wait_ready() {
    namespace asio = boost::asio;
    for (int i = 0; i < 250; ++i) {  // up to 5 s
      asio::io_context io;
      asio::local::stream_protocol::socket s(io);
      boost::system::error_code ec;
      s.connect(asio::local::stream_protocol::endpoint(admin_socket()), ec);
      if (!ec) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("haproxy did not open its runtime API socket within 5 s");
  }

  TempDir dir_;
  std::uint16_t frontend_port_;
  std::uint16_t api_port_;
  std::optional<detail::ChildProcess> proc_;
};

}  // namespace rollout::test_support
