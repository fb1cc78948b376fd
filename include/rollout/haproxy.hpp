#pragma once

/// @file
/// `rollout::HaproxyLoadBalancer`: moves traffic by driving a real HAProxy through
/// its runtime API (opt-in header). Written for HAProxy 2.6.

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/race.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rollout {

/// One HAProxy server: `backend/server`.
struct HaproxyServer {
  std::string backend;
  std::string server;
  friend auto operator<=>(const HaproxyServer&, const HaproxyServer&) = default;
};

/// Where HAProxy's runtime API listens: a unix socket path, or a TCP endpoint.
struct HaproxyAddress {
  std::string unix_socket;            ///< e.g. /run/haproxy/admin.sock
  std::optional<Endpoint> tcp;        ///< used when `unix_socket` is empty
};

/// Options of an `HaproxyLoadBalancer`.
struct HaproxyOptions {
  HaproxyAddress address;
  /// Each group of a split, mapped to the HAProxy servers that carry it.
  std::map<std::string, std::vector<HaproxyServer>> groups;
  Duration command_timeout{std::chrono::seconds(2)};  ///< Bound on each runtime API exchange.
};

namespace detail {

/// HAProxy accepts ASCII letters, digits, '.', '-', '_' and ':' in proxy and
/// server names (checked against `haproxy -c` 2.6). Anything else (space,
/// newline, ';', '#', '/', non-ASCII) could end or extend a runtime API command,
/// so it is refused before anything is sent.
inline bool valid_haproxy_name(std::string_view name) {
  return !name.empty() && name.size() <= 256 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
                  c == '_' || c == ':';
         });
}

inline void require_haproxy_name(std::string_view field, std::string_view name) {
  if (!valid_haproxy_name(name)) {
    throw invalid_option(field, detail::format("{:?}", name), "must be 1-256 characters of A-Z a-z 0-9 . - _ :");
  }
}

/// Text from HAProxy made safe for a message: at most `limit` bytes, with control
/// characters and bytes that are not valid UTF-8 escaped (`\xff`), so a reply
/// can never corrupt a log line, an event or a webhook's JSON. (fmt's debug
/// format does the escaping; the surrounding quotes are dropped.)
inline std::string printable(std::string_view text, std::size_t limit = 200) {
  const bool cut = text.size() > limit;
  const auto quoted = detail::format("{:?}", text.substr(0, limit));
  return quoted.substr(1, quoted.size() - 2) + (cut ? "..." : "");
}

/// Maps a runtime API error reply to an errc, keeping HAProxy's own words (the
/// first line, escaped by `printable`).
inline Error haproxy_error(std::string_view command, std::string reply) {
  while (!reply.empty() && (reply.back() == '\n' || reply.back() == '\r')) reply.pop_back();
  const auto first_line = printable(std::string_view(reply).substr(0, reply.find('\n')));
  errc code = errc::lb_rejected;
  if (reply.find("No such server") != std::string::npos || reply.find("No such backend") != std::string::npos ||
      reply.find("Can't find backend") != std::string::npos) {
    code = errc::unknown_server;
  } else if (reply.find("Permission denied") != std::string::npos) {
    code = errc::permission_denied;
  }
  return Error(code, detail::format("haproxy: {} (for: {})", first_line, command.substr(0, 120)));
}

/// One data line of `show servers state`.
struct HaproxyServerState {
  int admin_state = 0;  ///< bits: 0x01 forced maint, 0x08 forced drain, ...
  int weight = -1;      ///< user weight
};

/// Parses `show servers state` output (one or several, concatenated). Returns
/// nullopt on anything that does not look like it: a data line before the
/// version line, fewer than 8 fields, a state or weight that is not wholly a
/// number, or one server listed twice (replies interleaved or repeated).
inline std::optional<std::map<HaproxyServer, HaproxyServerState>> parse_servers_state(std::string_view text) {
  std::map<HaproxyServer, HaproxyServerState> out;
  std::istringstream in{std::string(text)};
  std::string line;
  bool saw_version = false;
  auto number = [](const std::string& f) -> std::optional<int> {
    int v = 0;
    const auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
    if (ec != std::errc() || end != f.data() + f.size()) return std::nullopt;
    return v;
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "1") {
      saw_version = true;
      continue;
    }
    if (line.front() == '#') continue;
    if (!saw_version) return std::nullopt;
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.size() < 8) return std::nullopt;
    const auto admin = number(f[6]);
    const auto weight = number(f[7]);
    if (!admin || !weight) return std::nullopt;
    if (!out.emplace(HaproxyServer{f[1], f[3]}, HaproxyServerState{*admin, *weight}).second) return std::nullopt;
  }
  if (!saw_version) return std::nullopt;
  return out;
}

/// Integer HAProxy weights (0..256) for the servers of one backend so that each
/// group's share of the backend stays within one weight step of its target:
/// group totals are rounded once, then spread evenly over the group's servers.
inline std::map<HaproxyServer, int> haproxy_weights(const std::map<std::string, std::vector<HaproxyServer>>& servers_by_group,
                                                   const std::map<std::string, std::int32_t>& bp_by_group) {
  std::map<HaproxyServer, int> out;
  double max_per_server = 0;
  for (const auto& [g, servers] : servers_by_group) {
    auto it = bp_by_group.find(g);
    const double bp = it == bp_by_group.end() ? 0.0 : it->second;
    if (!servers.empty()) max_per_server = std::max(max_per_server, bp / static_cast<double>(servers.size()));
  }
  for (const auto& [g, servers] : servers_by_group) {
    auto it = bp_by_group.find(g);
    const double bp = it == bp_by_group.end() ? 0.0 : it->second;
    const int group_total = max_per_server > 0 ? static_cast<int>(std::lround(256.0 * bp / max_per_server)) : 0;
    const int n = static_cast<int>(servers.size());
    for (int i = 0; i < n; ++i) {
      out[servers[static_cast<std::size_t>(i)]] = std::min(256, group_total / n + (i < group_total % n ? 1 : 0));
    }
  }
  return out;
}

}  // namespace detail

/// A `LoadBalancer` that drives HAProxy 2.6 through its runtime API (unix socket
/// or TCP, one connection per exchange, replies read to EOF).
///
/// `apply(split)` computes integer weights (0..256) so that each group's share of
/// each backend stays within one weight step of its target, sends every
/// `set server <backend>/<server> weight N` and `state ready|drain` in one batch
/// (the servers that keep or gain traffic first, those drained last, so that a
/// backend never has no usable server between two commands),
/// then reads `show servers state` back and returns success only if every managed
/// server shows the intended weight and drain flag. Servers of groups with 0%
/// go to drain, so connections in flight finish.
///
/// Replies: a successful `set` is an empty line; anything else is an error that
/// keeps HAProxy's words. Unknown backends or servers map to
/// `errc::unknown_server`, "Permission denied" to `errc::permission_denied`, a
/// refused or dropped connection to `errc::lb_unavailable`, other refusals to
/// `errc::lb_rejected`, a read-back that disagrees to `errc::lb_verify_mismatch`.
/// Every exchange is bounded by `command_timeout`, so a stopped or dead HAProxy
/// gives `errc::timeout` or `errc::lb_unavailable`, never a hang.
///
/// Every backend and server name is validated against HAProxy's name charset at
/// construction and before `register_instance`; a name with a space, newline, ';'
/// or '#' can never reach the socket.
///
/// Cancellation: an exchange in flight is cancelled with its socket; `apply` may
/// then have set some weights, which the strategy repairs by applying again.
///
/// HAProxy's own configuration decides what happens to requests sent to an
/// instance that dies before its health probes fail and the strategy moves
/// traffic away. With HAProxy's defaults they are retried on the dead server a
/// second apart and then answered 503. Give each managed backend `retries 3`,
/// `option redispatch 1` and, for idempotent traffic, `retry-on conn-failure
/// empty-response`: they then go to another server at once. The demo's backend
/// does, and its end-to-end test kills a target instance under load through
/// HAProxy and loses no request.
class HaproxyLoadBalancer {
public:
  /// Throws `invalid_option` (field and value) for an invalid name or address.
  explicit HaproxyLoadBalancer(HaproxyOptions options) : opts_(std::move(options)) {
    if (opts_.address.unix_socket.empty() && !opts_.address.tcp) {
      throw invalid_option("address", "{}", "needs a unix socket path or a TCP endpoint");
    }
    require_duration("command_timeout", opts_.command_timeout, DurationRule::positive);
    for (const auto& [group, servers] : opts_.groups) {
      if (group.empty()) throw invalid_option("groups", "\"\"", "a group name is empty");
      for (std::size_t i = 0; i < servers.size(); ++i) {
        detail::require_haproxy_name(detail::format("groups[{}][{}].backend", group, i), servers[i].backend);
        detail::require_haproxy_name(detail::format("groups[{}][{}].server", group, i), servers[i].server);
      }
    }
  }

  boost::asio::awaitable<result<void>> apply(const TrafficSplit& split) {
    std::map<std::string, std::int32_t> bp;
    for (const auto& share : split.shares()) {
      if (!opts_.groups.contains(share.group)) {
        co_return Error(errc::unknown_server, detail::format("group {} is not mapped to any HAProxy server", share.group));
      }
      bp[share.group] = share.weight.basis_points();
    }
    // Weights per backend: a backend's groups share it.
    std::map<std::string, std::map<std::string, std::vector<HaproxyServer>>> by_backend;
    for (const auto& [group, servers] : opts_.groups) {
      for (const auto& s : servers) by_backend[s.backend][group].push_back(s);
    }
    std::map<HaproxyServer, int> want;
    for (const auto& [backend, groups] : by_backend) want.merge(detail::haproxy_weights(groups, bp));
    // Make before break: HAProxy runs a batch's commands one at a time while its
    // threads keep routing, so the servers that carry traffic afterwards are
    // readied first and the others drained last. In the other order a backend
    // can have no usable server between two commands, and a request arriving
    // then gets HAProxy's own 503 (a rare failure of the end-to-end tests).
    std::string batch;
    for (const bool raising : {true, false}) {
      for (const auto& [s, w] : want) {
        if ((w > 0) != raising) continue;
        batch += detail::format("{}set server {}/{} weight {}; set server {}/{} state {}", batch.empty() ? "" : "; ", s.backend,
                                s.server, w, s.backend, s.server, w > 0 ? "ready" : "drain");
      }
    }
    auto r = co_await command(batch);
    if (!r) co_return r.error();
    // Each command answers an empty line; anything else is HAProxy's error or a broken reply.
    if (*r != std::string(want.size() * 2, '\n')) {
      if (r->find_first_not_of('\n') == std::string::npos) {
        co_return Error(errc::protocol_error, detail::format("haproxy: {} answers to {} commands (for: {})", r->size(), want.size() * 2,
                                                             batch.substr(0, 120)));
      }
      co_return detail::haproxy_error(batch, first_error(*r));
    }
    co_return co_await verify(want);
  }

  /// Adds `instance` to `backend` as a dynamic server named after its id, with
  /// `weight`, and enables it (`add server` starts servers in maintenance);
  /// with weight 0 it is put in drain instead, which is how `apply` leaves a
  /// server at 0%.
  /// With a `group`, the server also joins that group of the split, so later
  /// `apply` calls set its weight with the group's (a group that does not exist
  /// yet is created). Register with weight 0 and then `apply` to bring an
  /// instance in without a moment of unplanned traffic.
  boost::asio::awaitable<result<void>> register_instance(const Instance& instance, const std::string& backend, int weight = 1,
                                                         std::string group = {}) {
    detail::require_haproxy_name("backend", backend);
    detail::require_haproxy_name("instance.id", instance.id);
    if (weight < 0 || weight > 256) throw invalid_option("weight", detail::format("{}", weight), "must be within 0..256");
    const auto addr = detail::format("{}:{}", instance.endpoint.host, instance.endpoint.port);
    if (!detail::valid_haproxy_name(instance.endpoint.host)) {
      throw invalid_option("instance.endpoint.host", detail::format("{:?}", instance.endpoint.host), "must be an address or host name");
    }
    // Weight 0 goes to drain rather than ready, as `apply` does for a group at 0%.
    auto r = co_await command(detail::format("add server {0}/{1} {2} weight {3}; {4} server {0}/{1}{5}", backend, instance.id, addr, weight,
                                             weight > 0 ? "enable" : "set", weight > 0 ? "" : " state drain"));
    if (!r) co_return r.error();
    if (r->rfind("New server registered.", 0) != 0 || r->find("\n\n\n") == std::string::npos) {
      co_return detail::haproxy_error("add server", *r);
    }
    registered_[instance.id] = backend;
    if (!group.empty()) opts_.groups[group].push_back(HaproxyServer{backend, instance.id});
    std::map<HaproxyServer, int> want;  // (no braced list: g++ 12 rejects them in coroutines)
    want[HaproxyServer{backend, instance.id}] = weight;
    co_return co_await verify(want);
  }

  /// Stops new traffic to a registered instance (`state drain`); requests in
  /// flight continue. The server leaves its group first, so no later `apply`
  /// makes it ready again.
  boost::asio::awaitable<result<void>> drain_instance(const Instance& instance) {
    const auto backend = registered_backend(instance);
    if (!backend) co_return Error(errc::unknown_server, detail::format("{} was not registered", instance.id));
    leave_groups(HaproxyServer{*backend, instance.id});
    auto r = co_await command(detail::format("set server {}/{} state drain", *backend, instance.id));
    if (!r) co_return r.error();
    if (*r != "\n") co_return detail::haproxy_error("set server state drain", *r);
    co_return result<void>{};
  }

  /// Removes a registered instance: `state maint`, then `del server`. If sessions
  /// are still attached, they are shut down first (call `drain_instance` and wait
  /// before this to let them finish).
  boost::asio::awaitable<result<void>> deregister_instance(const Instance& instance) {
    const auto backend = registered_backend(instance);
    if (!backend) co_return Error(errc::unknown_server, detail::format("{} was not registered", instance.id));
    const auto name = detail::format("{}/{}", *backend, instance.id);
    auto r = co_await command(detail::format("set server {} state maint; del server {}", name, name));
    if (!r) co_return r.error();
    if (r->find("still has connections") != std::string::npos) {
      r = co_await command(detail::format("shutdown sessions server {}; del server {}", name, name));
      if (!r) co_return r.error();
    }
    if (r->find("Server deleted.") == std::string::npos) co_return detail::haproxy_error("del server", *r);
    leave_groups(HaproxyServer{*backend, instance.id});
    registered_.erase(instance.id);
    co_return result<void>{};
  }

  /// One raw runtime API exchange, read to EOF. Public for diagnostics and
  /// benchmarks; `line` must not contain a newline.
  boost::asio::awaitable<result<std::string>> command(std::string line) {
    if (line.find('\n') != std::string::npos || line.find('\r') != std::string::npos) {
      co_return Error(errc::invalid_option, "a runtime API command must be a single line");
    }
    if (line.size() > 15000) co_return Error(errc::invalid_option, "runtime API line too long (HAProxy's limit is about 15 KB)");
    line += '\n';
    auto r = co_await detail::with_timeout(SteadyClock{}, opts_.command_timeout, exchange(std::move(line)));
    if (!r) co_return Error(errc::timeout, detail::format("haproxy runtime API did not answer within {}", format_duration(opts_.command_timeout)));
    co_return std::move(*r);
  }

  const HaproxyOptions& options() const noexcept { return opts_; }

private:
  void leave_groups(const HaproxyServer& server) {
    for (auto& [group, servers] : opts_.groups) std::erase(servers, server);
  }

  std::optional<std::string> registered_backend(const Instance& instance) const {
    auto it = registered_.find(instance.id);
    if (it == registered_.end()) return std::nullopt;
    return it->second;
  }

  static std::string first_error(const std::string& reply) {
    std::string s = reply;
    s.erase(0, s.find_first_not_of('\n'));
    return s;
  }

  boost::asio::awaitable<result<void>> verify(const std::map<HaproxyServer, int>& want) {
    std::set<std::string> backends;
    for (const auto& [s, w] : want) backends.insert(s.backend);
    std::string batch;
    for (const auto& b : backends) batch += detail::format("{}show servers state {}", batch.empty() ? "" : "; ", b);
    auto r = co_await command(batch);
    if (!r) co_return r.error();
    auto state = detail::parse_servers_state(*r);
    if (!state) {
      if (r->rfind("1\n", 0) != 0) co_return detail::haproxy_error(batch, *r);  // an error message instead of a state dump
      co_return Error(errc::protocol_error, detail::format("haproxy: malformed reply to {}: {}", batch.substr(0, 120), detail::printable(*r)));
    }
    std::string mismatches;
    for (const auto& [s, w] : want) {
      auto it = state->find(s);
      if (it == state->end()) {
        mismatches += detail::format("{}{}/{} missing", mismatches.empty() ? "" : ", ", s.backend, s.server);
        continue;
      }
      const bool drain = (it->second.admin_state & 0x08) != 0;
      const bool maint = (it->second.admin_state & 0x01) != 0;
      if (it->second.weight != w || drain != (w == 0) || maint) {
        mismatches += detail::format("{}{}/{} weight {} admin {:#x} (wanted weight {}{})", mismatches.empty() ? "" : ", ", s.backend,
                                     s.server, it->second.weight, it->second.admin_state, w, w == 0 ? ", drain" : "");
      }
    }
    if (!mismatches.empty()) co_return Error(errc::lb_verify_mismatch, detail::format("haproxy read-back: {}", mismatches));
    co_return result<void>{};
  }

  template <class Socket>
  static boost::asio::awaitable<result<std::string>> talk(Socket& socket, std::string line) {
    namespace asio = boost::asio;
    auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(line), asio::as_tuple(asio::use_awaitable));
    if (wec) co_return Error(errc::lb_unavailable, detail::format("haproxy: write: {}", wec.message()));
    std::string reply;
    constexpr std::size_t limit = std::size_t{1} << 20;  // far above any reply we ask for
    auto [rec, rn] = co_await asio::async_read(socket, asio::dynamic_buffer(reply, limit), asio::as_tuple(asio::use_awaitable));
    if (reply.size() >= limit) co_return Error(errc::protocol_error, "haproxy: reply larger than 1 MiB");
    if (rec && rec != asio::error::eof) {
      co_return Error(errc::lb_unavailable, detail::format("haproxy: read: {}", rec.message()));
    }
    if (reply.empty()) co_return Error(errc::lb_unavailable, "haproxy closed the connection without a reply");
    co_return reply;
  }

  boost::asio::awaitable<result<std::string>> exchange(std::string line) {
    namespace asio = boost::asio;
    auto ex = co_await asio::this_coro::executor;
    if (!opts_.address.unix_socket.empty()) {
      asio::local::stream_protocol::socket socket(ex);
      auto [ec] = co_await socket.async_connect(asio::local::stream_protocol::endpoint(opts_.address.unix_socket),
                                                asio::as_tuple(asio::use_awaitable));
      if (ec) co_return Error(errc::lb_unavailable, detail::format("haproxy: connect {}: {}", opts_.address.unix_socket, ec.message()));
      co_return co_await talk(socket, std::move(line));
    }
    asio::ip::tcp::socket socket(ex);
    boost::system::error_code aec;
    const auto addr = asio::ip::make_address(opts_.address.tcp->host, aec);
    if (aec) co_return Error(errc::invalid_option, detail::format("haproxy address {:?} is not an IP address", opts_.address.tcp->host));
    auto [ec] = co_await socket.async_connect(asio::ip::tcp::endpoint(addr, opts_.address.tcp->port), asio::as_tuple(asio::use_awaitable));
    if (ec) co_return Error(errc::lb_unavailable, detail::format("haproxy: connect {}: {}", *opts_.address.tcp, ec.message()));
    co_return co_await talk(socket, std::move(line));
  }

  HaproxyOptions opts_;
  std::map<std::string, std::string> registered_;  // instance id -> backend
};

static_assert(LoadBalancer<HaproxyLoadBalancer>);

}  // namespace rollout
