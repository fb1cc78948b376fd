#pragma once

// A real HAProxy 2.6 for tests: `haproxy -db -f <generated cfg>` in a temp dir,
// with an admin and a user-level runtime API socket, one HTTP frontend on a free
// 127.0.0.1 port, and backend `app` (roundrobin) whose servers are given by the
// test. Stopped (SIGTERM, then SIGKILL) by PID when the fixture goes away.

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

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to use).
inline std::uint16_t free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

/// A fresh directory under /tmp, removed with the fixture.
class TempDir {
public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rollout-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

class HaproxyProcess {
public:
  struct Server {
    std::string name;
    std::uint16_t port;
    int weight;
  };

  HaproxyProcess(boost::asio::io_context& io, const std::vector<Server>& servers) : frontend_port_(free_port()) {
    std::ofstream cfg(dir_.path() / "haproxy.cfg");
    cfg << fmt::format(
        "global\n"
        "  stats socket {0}/admin.sock mode 600 level admin\n"
        "  stats socket {0}/user.sock mode 600 level user\n"
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
        dir_.path().string(), frontend_port_);
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
  std::optional<detail::ChildProcess> proc_;
};

}  // namespace rollout::test_support
