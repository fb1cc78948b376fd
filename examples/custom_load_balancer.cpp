// Write your own LoadBalancer policy: a blue-green release through an "in-house"
// load balancer that is driven by a small HTTP admin API.
//
// - The in-house load balancer is served by this program with Beast, on
//   127.0.0.1 and a port the kernel picks. Its admin API:
//     GET /weights          -> 200, one "group bp" line per group (basis points, 10000 = 100%)
//     PUT /weights/<group>  (body: 0..10000) -> 200; 400 for a bad value, 404 for an unknown group
//   Like many real load balancers it applies changes on its next reload (100 ms
//   after the last change), so a read-back right after a PUT still shows the old
//   weights. The policy's verification catches that and the strategy retries.
// - AdminApiLoadBalancer, the policy, is what you would write for your own load
//   balancer: one coroutine, apply(split), using only public rollout headers.
// - The instances are tiny HTTP servers probed by rollout::HttpProbe.
//
// Run: ./custom_load_balancer      (about two seconds; exits 0 when green holds 10000 bp)
#include <rollout/http_probe.hpp>
#include <rollout/rollout.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <fmt/format.h>

#include <charconv>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// The policy. Contract (rollout/concepts.hpp, LoadBalancer):
// - idempotent: it PUTs every weight, every time, so applying twice is harmless;
// - complete: a group the load balancer knows but the split does not name gets 0;
// - verified: success only once GET /weights reads back exactly what was asked;
// - errors are values: unreachable or a broken connection is errc::lb_unavailable
//   (the strategy retries it), 404 is errc::unknown_server, any other non-2xx is
//   errc::lb_rejected, with the request, group and value in the message.
// - cancellation: the strategy bounds each apply() with BlueGreenOptions::lb_timeout
//   and cancels it then. Each socket operation below then completes at once with
//   operation_aborted and apply() returns (the strategy reports the timeout, not
//   this error). A cancelled apply() may have PUT some weights and not others: the
//   strategy treats the state as unknown and applies the whole split again.
//   There is no timeout in here: deadlines and retries belong to the strategy.
struct AdminApiLoadBalancer {
  using Table = std::map<std::string, std::int64_t>;  // group -> basis points
  rollout::Endpoint admin;                            // where the admin API listens

  explicit AdminApiLoadBalancer(rollout::Endpoint admin_api) : admin(std::move(admin_api)) {}

  asio::awaitable<rollout::result<void>> apply(const rollout::TrafficSplit& split) {
    for (const auto& share : split.shares()) {  // a group name goes into a URL: refuse anything odd
      if (share.group.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos) {
        co_return rollout::Error(rollout::errc::invalid_option, fmt::format("group name {:?} is not [A-Za-z0-9._-]+", share.group));
      }
    }
    auto before = co_await read();
    if (!before) co_return before.error();
    Table want;
    for (const auto& row : *before) want[row.first] = 0;  // complete: unnamed groups get nothing
    for (const auto& share : split.shares()) want[share.group] = share.weight.basis_points();
    for (const auto& [group, bp] : want) {
      auto put = co_await send(http::verb::put, "/weights/" + group, std::to_string(bp));
      if (!put) co_return put.error();
    }
    auto after = co_await read();
    if (!after) co_return after.error();
    for (const auto& [group, bp] : want) {
      const auto it = after->find(group);
      if (it == after->end() || it->second != bp) {
        co_return rollout::Error(rollout::errc::lb_verify_mismatch,
                                 fmt::format("GET /weights: {} reads {}, expected {} bp", group,
                                             it == after->end() ? std::string("nothing") : fmt::format("{} bp", it->second), bp));
      }
    }
    co_return rollout::result<void>{};
  }

  // GET /weights, parsed. Public: handy for dashboards and for this example's final check.
  asio::awaitable<rollout::result<Table>> read() const {
    auto body = co_await send(http::verb::get, "/weights", "");
    if (!body) co_return body.error();
    Table table;
    std::istringstream lines(*body);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      std::string group, extra;
      std::int64_t bp = -1;
      if (!(fields >> group >> bp) || (fields >> extra) || bp < 0 || bp > 10000) {
        co_return rollout::Error(rollout::errc::protocol_error, fmt::format("GET /weights: malformed line {:?}", line));
      }
      table[group] = bp;
    }
    co_return table;
  }

private:
  // One request on its own connection; the body of a 2xx reply, or an Error.
  asio::awaitable<rollout::result<std::string>> send(http::verb verb, std::string target, std::string body) const {
    const auto what = fmt::format("{} http://{}{}{}{}", std::string_view(http::to_string(verb)), admin, target,
                                  body.empty() ? "" : " = ", body);
    beast::tcp_stream stream(co_await asio::this_coro::executor);
    const asio::ip::tcp::endpoint to(asio::ip::make_address(admin.host), admin.port);
    auto [cec] = co_await stream.async_connect(to, asio::as_tuple(asio::use_awaitable));
    if (cec) co_return rollout::Error(rollout::errc::lb_unavailable, fmt::format("{}: {}", what, cec.message()));
    http::request<http::string_body> req(verb, target, 11);
    req.set(http::field::host, fmt::format("{}", admin));
    req.body() = std::move(body);
    req.prepare_payload();
    auto [wec, wn] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    if (wec) co_return rollout::Error(rollout::errc::lb_unavailable, fmt::format("{}: {}", what, wec.message()));
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    auto [rec, rn] = co_await http::async_read(stream, buffer, res, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return rollout::Error(rollout::errc::lb_unavailable, fmt::format("{}: {}", what, rec.message()));
    const unsigned status = res.result_int();
    if (status / 100 == 2) co_return std::move(res.body());
    const auto code = status == 404 ? rollout::errc::unknown_server : rollout::errc::lb_rejected;
    co_return rollout::Error(code, fmt::format("{}: HTTP {}: {}", what, status, res.body()));
  }
};

static_assert(rollout::LoadBalancer<AdminApiLoadBalancer>);

// ---------------------------------------------------------------------------
// Everything below is the pretend world the policy talks to.

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

Response reply(http::status status, std::string body) {
  Response res(status, 11);
  res.set(http::field::content_type, "text/plain");
  res.body() = std::move(body);
  return res;
}

// A tiny HTTP/1.1 server on 127.0.0.1, on a port the kernel picks (bind port 0).
class HttpServer {
public:
  using Handler = std::function<Response(const Request&)>;

  HttpServer(asio::io_context& io, Handler handler)
      : acceptor_(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), handler_(std::move(handler)) {
    asio::co_spawn(io, accept(), asio::detached);
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  void stop() { acceptor_.close(); }

private:
  asio::awaitable<void> accept() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;  // stopped
      asio::co_spawn(acceptor_.get_executor(), serve(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }
  asio::awaitable<void> serve(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    for (;;) {
      Request req;
      auto [rec, rn] = co_await http::async_read(stream, buffer, req, asio::as_tuple(asio::use_awaitable));
      if (rec) co_return;  // the client hung up
      Response res = handler_(req);
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !res.keep_alive()) co_return;
    }
  }

  asio::ip::tcp::acceptor acceptor_;
  Handler handler_;
};

// The in-house load balancer: a weights table behind the admin API (see the top
// of the file). PUTs change the pending table; a reload 100 ms after the last
// change makes it live; GET shows the live table.
class InHouseLoadBalancer {
public:
  InHouseLoadBalancer(asio::io_context& io, std::map<std::string, int> groups)
      : live_(groups), pending_(std::move(groups)), reload_(io), server_(io, [this](const Request& r) { return handle(r); }) {}
  std::uint16_t port() const { return server_.port(); }
  void stop() { server_.stop(); }

private:
  Response handle(const Request& req) {
    const std::string_view target = req.target();
    const std::string_view prefix = "/weights/";
    if (req.method() == http::verb::get && target == "/weights") {
      std::string body;
      for (const auto& [group, bp] : live_) body += fmt::format("{} {}\n", group, bp);
      return reply(http::status::ok, std::move(body));
    }
    if (req.method() != http::verb::put || !target.starts_with(prefix)) return reply(http::status::not_found, "no such endpoint\n");
    const std::string group(target.substr(prefix.size()));
    if (!pending_.contains(group)) return reply(http::status::not_found, fmt::format("no such group: {}\n", group));
    const std::string& text = req.body();
    int bp = -1;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), bp);
    if (ec != std::errc() || end != text.data() + text.size() || bp < 0 || bp > 10000) {
      return reply(http::status::bad_request, fmt::format("weight of {} must be 0..10000 basis points, got {:?}\n", group, text));
    }
    pending_[group] = bp;
    reload_.expires_after(100ms);  // restarting it cancels the previous wait
    reload_.async_wait([this](boost::system::error_code wait_ec) {
      if (!wait_ec) live_ = pending_;
    });
    return reply(http::status::ok, fmt::format("{} {}\n", group, bp));
  }

  std::map<std::string, int> live_;
  std::map<std::string, int> pending_;
  asio::steady_timer reload_;
  HttpServer server_;
};

// A service instance: answers GET /health with 200.
std::unique_ptr<HttpServer> start_instance(asio::io_context& io, const std::string& revision) {
  return std::make_unique<HttpServer>(io, [revision](const Request& req) {
    if (req.target() == "/health") return reply(http::status::ok, fmt::format("ok {}\n", revision));
    return reply(http::status::not_found, "not found\n");
  });
}

rollout::Environment environment(const std::string& name, const std::string& revision,
                                 const std::vector<std::unique_ptr<HttpServer>>& fleet) {
  rollout::Environment env(name, revision);
  for (std::size_t i = 0; i < fleet.size(); ++i) {
    env.instances.emplace_back(fmt::format("{}-{}", name, i), revision, rollout::Endpoint("127.0.0.1", fleet[i]->port()));
  }
  return env;
}

asio::awaitable<int> release(std::uint16_t admin_port, rollout::Environment blue, rollout::Environment green) {
  AdminApiLoadBalancer lb(rollout::Endpoint("127.0.0.1", admin_port));
  rollout::HttpProbeOptions probe_opts;
  probe_opts.path = "/health";
  probe_opts.timeout = 200ms;
  rollout::HttpProbe probe(std::move(probe_opts));

  rollout::BlueGreenOptions opts;
  opts.probe.period = 200ms;
  opts.probe.timeout = 250ms;
  opts.verify_for = 1s;
  opts.scale_down_delay = 500ms;
  opts.lb_timeout = 2s;  // bounds each apply(), all its round trips together

  fmt::print("blue-green through the admin API at 127.0.0.1:{}: blue (v1) -> green (v2)\n", admin_port);
  rollout::BlueGreen<AdminApiLoadBalancer, rollout::HttpProbe> bg(lb, probe, std::move(blue), std::move(green), opts);
  bg.observers().add([](const rollout::Event& e) { fmt::print("  {}\n", e); });
  const rollout::Outcome out = co_await bg.run();
  fmt::print("=> {}\n\n", out);

  auto table = co_await lb.read();
  if (!table) {
    fmt::print("GET /weights failed: {}\n", table.error());
    co_return 1;
  }
  fmt::print("admin API, GET /weights:\n");
  for (const auto& [group, bp] : *table) fmt::print("  {} {}\n", group, bp);
  const bool ok = out.status == rollout::Status::promoted && (*table)["green"] == 10000 && (*table)["blue"] == 0;
  co_return ok ? 0 : 1;
}

int main() {
  asio::io_context io;
  InHouseLoadBalancer inhouse(io, {{"blue", 10000}, {"green", 0}});
  std::vector<std::unique_ptr<HttpServer>> blue, green;
  for (int i = 0; i < 2; ++i) blue.push_back(start_instance(io, "v1"));
  for (int i = 0; i < 2; ++i) green.push_back(start_instance(io, "v2"));

  int rc = 1;
  asio::co_spawn(io, release(inhouse.port(), environment("blue", "v1", blue), environment("green", "v2", green)),
                 [&](std::exception_ptr e, int r) {
                   inhouse.stop();  // close every listener, so that io.run() returns
                   for (auto* fleet : {&blue, &green}) {
                     for (auto& server : *fleet) server->stop();
                   }
                   if (e) std::rethrow_exception(e);
                   rc = r;
                 });
  io.run();
  return rc;
}
