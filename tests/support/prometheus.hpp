#pragma once

// A real Prometheus (Debian's 2.42) for tests: a temp TSDB, a 1 s scrape of one
// target on 127.0.0.1, the web API on a free 127.0.0.1 port. Stopped by PID.

#include "support/temp_dir.hpp"

#include <rollout/detail/child_process.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace rollout::test_support {

class PrometheusProcess {
public:
  PrometheusProcess(boost::asio::io_context& io, std::uint16_t target_port) : port_(free_port()) {
    std::ofstream cfg(dir_.path() / "prometheus.yml");
    cfg << fmt::format(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: test\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:{}']\n",
        target_port);
    cfg.close();
    proc_.emplace(io.get_executor(), "/usr/bin/prometheus",
                  std::vector<std::string>{fmt::format("--config.file={}", (dir_.path() / "prometheus.yml").string()),
                                           fmt::format("--storage.tsdb.path={}", (dir_.path() / "data").string()),
                                           fmt::format("--web.listen-address=127.0.0.1:{}", port_), "--log.level=warn"});
  }
  ~PrometheusProcess() {
    if (proc_ && !proc_->exited()) proc_->signal(SIGTERM);
  }

  std::uint16_t port() const { return port_; }

  /// Blocks until `query` returns a non-empty result (Prometheus' first scrape
  /// lands about 5 s after start). Throws after `limit`.
  void wait_for(const std::string& query, std::chrono::seconds limit = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (auto body = get(fmt::format("/api/v1/query?query={}", query)); body && body->find("\"value\"") != std::string::npos) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    throw std::runtime_error("prometheus never answered " + query);
  }

  /// A blocking GET against the API; nullopt if it does not answer.
  std::optional<std::string> get(const std::string& target) const {
    namespace beast = boost::beast;
    namespace http = beast::http;
    try {
      boost::asio::io_context io;
      beast::tcp_stream s(io);
      s.expires_after(std::chrono::seconds(2));
      s.connect({boost::asio::ip::make_address("127.0.0.1"), port_});
      http::request<http::empty_body> req{http::verb::get, target, 11};
      req.set(http::field::host, "127.0.0.1");
      http::write(s, req);
      beast::flat_buffer b;
      http::response<http::string_body> res;
      http::read(s, b, res);
      return res.body();
    } catch (const std::exception&) {
      return std::nullopt;  // not up yet
    }
  }

private:
  TempDir dir_;
  std::uint16_t port_;
  std::optional<detail::ChildProcess> proc_;
};

}  // namespace rollout::test_support
