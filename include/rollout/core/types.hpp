#pragma once

/// @file
/// Plain vocabulary: `Revision`, `Endpoint`, `Instance`, `Environment`,
/// `HealthResult` and `Verdict`, each with an fmt formatter.

#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

namespace rollout {

// Note on constructors: the small vocabulary types below have constructors
// rather than being aggregates on purpose. g++ 12 destroys an aggregate
// temporary twice when it is created inside a `co_await` expression (for example
// `co_await orchestrator.create(Revision{"v2"})`); a class with a constructor is
// not affected. Brace initialisation reads the same either way.

/// The version of a service that a rollout moves traffic to or from, e.g. `v2`
/// or an image digest. Compared by its id.
struct Revision {
  std::string id;

  Revision() = default;
  Revision(std::string id) : id(std::move(id)) {}  // NOLINT: implicit, so `{"v2"}` works
  Revision(const char* id) : id(id) {}             // NOLINT

  friend auto operator<=>(const Revision&, const Revision&) = default;
};

/// Where an instance listens: a host (name or address) and a TCP port. An IPv6
/// address is written bare (`::1`), without the brackets a URL puts around it;
/// formatting adds them (`[::1]:8080`), as the `Host` header and URLs need.
struct Endpoint {
  std::string host;
  std::uint16_t port = 0;

  Endpoint() = default;
  Endpoint(std::string host, std::uint16_t port) : host(std::move(host)), port(port) {}

  friend auto operator<=>(const Endpoint&, const Endpoint&) = default;
};

/// One running copy of a service: a unique id, the revision it runs and where it
/// listens. Instances are what probes check and what orchestrators create and retire.
struct Instance {
  std::string id;
  Revision revision;
  Endpoint endpoint;

  Instance() = default;
  Instance(std::string id, Revision revision, Endpoint endpoint)
      : id(std::move(id)), revision(std::move(revision)), endpoint(std::move(endpoint)) {}

  friend auto operator<=>(const Instance&, const Instance&) = default;
};

/// A named group of instances that a load balancer can send traffic to as one
/// unit, such as `blue` and `green`. The name is the key used in a `TrafficSplit`.
struct Environment {
  std::string name;
  Revision revision;
  std::vector<Instance> instances;

  Environment() = default;
  Environment(std::string name, Revision revision, std::vector<Instance> instances = {})
      : name(std::move(name)), revision(std::move(revision)), instances(std::move(instances)) {}
};

/// The result of one health probe. A probe never throws for an unhealthy target:
/// it returns `healthy = false` with a `detail` that says why (status code,
/// refused connection, timeout...).
struct HealthResult {
  bool healthy = false;
  Duration latency{};
  std::string detail;

  HealthResult() = default;
  HealthResult(bool healthy, Duration latency, std::string detail)
      : healthy(healthy), latency(latency), detail(std::move(detail)) {}

  static HealthResult up(std::string detail = "ok", Duration latency = {}) { return {true, latency, std::move(detail)}; }
  static HealthResult down(std::string detail, Duration latency = {}) { return {false, latency, std::move(detail)}; }
};

/// The verdict of a user-supplied check (pre- or post-promotion) or of an analysis.
/// Meanings follow Argo Rollouts: `fail` rolls back, `inconclusive` pauses the
/// rollout until a human promotes or aborts it.
struct Verdict {
  enum Kind { pass, fail, inconclusive };
  Kind kind = pass;
  std::string detail;

  Verdict() = default;
  Verdict(Kind kind, std::string detail) : kind(kind), detail(std::move(detail)) {}

  static Verdict passed(std::string detail = "passed") { return {pass, std::move(detail)}; }
  static Verdict failed(std::string detail) { return {fail, std::move(detail)}; }
  static Verdict unsure(std::string detail) { return {inconclusive, std::move(detail)}; }
};

}  // namespace rollout

/// Formats as the revision id.
template <>
struct fmt::formatter<rollout::Revision> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Revision& r, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(r.id, ctx);
  }
};

/// Formats as `host:port`, or `[address]:port` for an IPv6 address: RFC 3986's
/// authority, which is also what an HTTP `Host` header carries. (A host with a
/// colon can only be an IPv6 address; a name or an IPv4 address has none. This
/// one rule is all Boost.URL's authority formatting would add here.)
template <>
struct fmt::formatter<rollout::Endpoint> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Endpoint& e, FormatContext& ctx) const {
    const bool v6 = e.host.find(':') != std::string::npos;
    return fmt::formatter<std::string_view>::format(
        v6 ? rollout::detail::format("[{}]:{}", e.host, e.port) : rollout::detail::format("{}:{}", e.host, e.port), ctx);
  }
};

/// Formats as `id(revision@host:port)`.
template <>
struct fmt::formatter<rollout::Instance> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Instance& i, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::detail::format("{}({}@{})", i.id, i.revision, i.endpoint), ctx);
  }
};

/// Formats as `name(revision, N instances)`.
template <>
struct fmt::formatter<rollout::Environment> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Environment& e, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("{}({}, {} instances)", e.name, e.revision, e.instances.size()), ctx);
  }
};

/// Formats as `healthy (detail)` or `unhealthy (detail)`.
template <>
struct fmt::formatter<rollout::HealthResult> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::HealthResult& h, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("{} ({}, {})", h.healthy ? "healthy" : "unhealthy", h.detail, rollout::format_duration(h.latency)),
        ctx);
  }
};

/// Formats as `pass: detail`, `fail: detail` or `inconclusive: detail`.
template <>
struct fmt::formatter<rollout::Verdict> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Verdict& v, FormatContext& ctx) const {
    const char* k = v.kind == rollout::Verdict::pass ? "pass" : v.kind == rollout::Verdict::fail ? "fail" : "inconclusive";
    return fmt::formatter<std::string_view>::format(rollout::detail::format("{}: {}", k, v.detail), ctx);
  }
};
