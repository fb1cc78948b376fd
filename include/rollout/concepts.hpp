#pragma once

/// @file
/// The four policy concepts, documented as named requirements: `LoadBalancer`,
/// `HealthProbe`, `MetricsSource` and `Orchestrator` (and `Observer`, from
/// `core/event.hpp`); and one optional capability of an orchestrator,
/// `WatchesReadiness`, with its `ReadinessWatch`.
///
/// A strategy owns every decision about when, how often, how many and what next:
/// thresholds, retries, schedules, timeouts and rollback. A policy owns exactly one
/// fact about the outside world. A policy never re-implements a retry loop or a
/// deadline; it reports what happened, once, and returns.
///
/// Common rules for every policy call:
/// - It returns an `asio::awaitable` and runs on the strategy's executor. It never
///   blocks the thread.
/// - Expected failures are returned as `rollout::Error` in a `rollout::result`,
///   with the backend's own words in `Error::message` (secrets redacted).
///   Exceptions are for bugs; the strategy still survives them, treating the call
///   as failed with `errc::policy_exception`.
/// - **Cancellation.** Each call honours the per-operation cancellation of the
///   coroutine it runs in: when cancelled it finishes promptly, either by returning
///   an error or by letting `operation_aborted` propagate. A strategy cancels a
///   call on timeout and on abort, and waits for it to finish, so a call that
///   ignored cancellation would stall the strategy.

#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/core/types.hpp>

#include <boost/asio/awaitable.hpp>

#include <concepts>
#include <string>
#include <vector>

namespace rollout {

/// **LoadBalancer**: moves traffic between named groups.
///
/// Given `lb`, an lvalue of type `LB`, and `s`, a `const TrafficSplit&`:
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `lb.apply(s)` | `asio::awaitable<result<void>>` | Makes the load balancer route by `s`, then reads its own state back and returns success only once that state confirms `s`. |
///
/// Contract:
/// - **Complete.** After success, each group receives exactly its share, and a
///   group the load balancer knows but `s` does not name receives nothing.
///   (rollout's strategies always name every group they manage, with 0% where
///   traffic must stop.)
/// - **Idempotent.** Applying the same split twice is harmless, so a strategy may
///   retry after a timeout without knowing whether the first call landed.
/// - **Verified.** Success means the load balancer's read-back state matches `s`
///   (within the load balancer's own weight granularity). A read-back that
///   disagrees is `errc::lb_verify_mismatch`, which the strategy retries.
/// - **Errors.** Unreachable: `errc::lb_unavailable`; refused command:
///   `errc::lb_rejected`; unknown group or server: `errc::unknown_server`.
/// - **Cancellation.** A cancelled `apply` may have changed some weights. The
///   strategy treats the state as unknown and applies again.
///
/// Minimal conforming policy:
/// @code
/// struct MapLoadBalancer {
///   std::map<std::string, rollout::Percent> weights;
///   boost::asio::awaitable<rollout::result<void>> apply(const rollout::TrafficSplit& s) {
///     for (const auto& share : s.shares()) weights[share.group] = share.weight;
///     co_return rollout::result<void>{};
///   }
/// };
/// static_assert(rollout::LoadBalancer<MapLoadBalancer>);
/// @endcode
template <class LB>
concept LoadBalancer = requires(LB& lb, const TrafficSplit& s) {
  { lb.apply(s) } -> std::same_as<boost::asio::awaitable<result<void>>>;
};

/// **HealthProbe**: one health check of one instance.
///
/// Given `p`, an lvalue of type `P`, and `i`, a `const Instance&`:
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `p.check(i)` | `asio::awaitable<HealthResult>` | Probes `i` once and reports healthy or not, the latency and a detail. |
///
/// Contract:
/// - **One probe.** The strategy owns the schedule (initial delay, period,
///   thresholds); the probe does one attempt, bounded by its own timeout.
/// - **Never throws for an unhealthy target.** A refused connection, a timeout, a
///   bad status or a malformed reply is `HealthResult{healthy = false}` with a
///   `detail` that says which.
/// - **Cancellation.** The strategy also bounds each probe by `ProbeSpec::timeout`
///   and cancels it then; the probe must stop promptly.
///
/// Minimal conforming policy:
/// @code
/// struct AlwaysUp {
///   boost::asio::awaitable<rollout::HealthResult> check(const rollout::Instance&) {
///     co_return rollout::HealthResult::up();
///   }
/// };
/// static_assert(rollout::HealthProbe<AlwaysUp>);
/// @endcode
template <class P>
concept HealthProbe = requires(P& p, const Instance& i) {
  { p.check(i) } -> std::same_as<boost::asio::awaitable<HealthResult>>;
};

/// **MetricsSource**: measures one metric for one population.
///
/// Given `m`, an lvalue of type `M`, `q`, a `const MetricQuery&`, and `s`, a
/// `const Scope&`:
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `m.query(q, s)` | `asio::awaitable<result<MetricValue>>` | Evaluates `q` over `q.window` for the instances of `s`: one value, or samples when `q.want` is `samples`. |
///
/// Contract:
/// - **No data is not zero.** An empty result, NaN or no requests is
///   `MetricValue{NoData{why}}`. The analysis never counts it as a pass.
/// - **Errors.** A backend error is `errc::query_failed` with the backend's own
///   message; an unparseable reply is `errc::protocol_error`.
/// - **Cancellation.** The analysis bounds each query with a timeout and cancels it then.
///
/// Minimal conforming policy:
/// @code
/// struct ConstantErrors {
///   boost::asio::awaitable<rollout::result<rollout::MetricValue>> query(const rollout::MetricQuery&, const rollout::Scope&) {
///     co_return rollout::MetricValue{0.001};
///   }
/// };
/// static_assert(rollout::MetricsSource<ConstantErrors>);
/// @endcode
template <class M>
concept MetricsSource = requires(M& m, const MetricQuery& q, const Scope& s) {
  { m.query(q, s) } -> std::same_as<boost::asio::awaitable<result<MetricValue>>>;
};

/// **Orchestrator**: creates, readies, retires and lists instances.
///
/// Given `o`, an lvalue of type `O`, `r`, a `const Revision&`, and `i`, a
/// `const Instance&`:
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `o.create(r)` | `asio::awaitable<result<Instance>>` | Starts one new instance of `r` and returns it (not necessarily ready yet). |
/// | `o.wait_ready(i)` | `asio::awaitable<result<void>>` | Returns once `i` is ready to serve, or an error if it crashed. May wait indefinitely: the strategy bounds it with its ready deadline. |
/// | `o.retire(i)` | `asio::awaitable<result<void>>` | Gracefully removes `i`: deregister or drain first, stop after. |
/// | `o.list()` | `asio::awaitable<result<std::vector<Instance>>>` | The fleet as it is now, so a resumed rollout rebuilds its state. |
///
/// Contract:
/// - `retire` is graceful and idempotent: retiring an instance that is already
///   gone succeeds.
/// - `list` reports reality, including instances a previous, crashed run created.
/// - **Cancellation.** `wait_ready` is cancelled at the ready deadline and on
///   abort. A cancelled `create` may have started an instance; the strategy finds
///   it through `list`.
/// - An orchestrator whose backend can report readiness for the whole fleet may
///   also model `WatchesReadiness` (below); `Rolling` then uses it instead of
///   `wait_ready`.
///
/// Minimal conforming policy:
/// @code
/// struct NoopFleet {
///   std::vector<rollout::Instance> fleet;
///   boost::asio::awaitable<rollout::result<rollout::Instance>> create(const rollout::Revision& r) {
///     fleet.push_back({"i" + std::to_string(fleet.size()), r, {"127.0.0.1", 0}});
///     co_return fleet.back();
///   }
///   boost::asio::awaitable<rollout::result<void>> wait_ready(const rollout::Instance&) { co_return rollout::result<void>{}; }
///   boost::asio::awaitable<rollout::result<void>> retire(const rollout::Instance& i) {
///     std::erase(fleet, i);
///     co_return rollout::result<void>{};
///   }
///   boost::asio::awaitable<rollout::result<std::vector<rollout::Instance>>> list() { co_return fleet; }
/// };
/// static_assert(rollout::Orchestrator<NoopFleet>);
/// @endcode
template <class O>
concept Orchestrator = requires(O& o, const Revision& r, const Instance& i) {
  { o.create(r) } -> std::same_as<boost::asio::awaitable<result<Instance>>>;
  { o.wait_ready(i) } -> std::same_as<boost::asio::awaitable<result<void>>>;
  { o.retire(i) } -> std::same_as<boost::asio::awaitable<result<void>>>;
  { o.list() } -> std::same_as<boost::asio::awaitable<result<std::vector<Instance>>>>;
};

/// One instance's readiness as a `ReadinessWatch` reports it: `ready` holds
/// success once the instance is ready to serve, or the error that means it never
/// will be (crashed, removed: `errc::instance_failed`, with the orchestrator's words).
struct ReadinessReport {
  std::string id;      ///< The instance's `Instance::id`.
  result<void> ready;  ///< Success, or why the instance will not become ready.
};

/// **ReadinessWatch**: the readiness of many instances through one stream, the
/// way a Kubernetes controller watches its pods through one informer instead of
/// waiting on each pod. Obtained from an orchestrator that models
/// `WatchesReadiness`.
///
/// Given `w`, an lvalue of type `W`, `i`, a `const Instance&`, and `id`, a
/// `const std::string&`:
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `w.add(i)` | `void` | Starts watching `i`. It is reported once by `next()`: when it is ready (at once, if it already is), or when it can no longer become ready. |
/// | `w.remove(id)` | `void` | Stops watching `id`: nothing about it is reported afterwards, even if a report was already due. |
/// | `w.next()` | `asio::awaitable<result<std::vector<ReadinessReport>>>` | Waits until at least one watched instance has a report, then returns every report due (each instance once) and stops watching those instances. |
///
/// Contract:
/// - **Level, not edge.** `add` of an instance that is already ready reports it;
///   nothing that happened before `add` is lost. An instance the orchestrator
///   does not know is reported as failed, not dropped.
/// - `add` and `remove` never block and never fail; they take effect before the
///   next `next()` returns, including a `next()` already waiting.
/// - **No deadline of its own.** `next()` may wait indefinitely; the strategy
///   owns each instance's ready deadline and calls `remove` when it passes.
/// - **Errors.** A broken stream (its backend unreachable, say) is an error from
///   `next()`; the instances watched stay watched, and the strategy calls `next()`
///   again after its backoff.
/// - **Cancellation.** A cancelled `next()` finishes promptly (an error or
///   `operation_aborted`) and loses no report: the instances watched stay watched.
///   Destroying the watch stops watching everything.
template <class W>
concept ReadinessWatch = requires(W& w, const Instance& i, const std::string& id) {
  { w.add(i) } -> std::same_as<void>;
  { w.remove(id) } -> std::same_as<void>;
  { w.next() } -> std::same_as<boost::asio::awaitable<result<std::vector<ReadinessReport>>>>;
};

/// **WatchesReadiness**: an optional capability of an `Orchestrator` whose backend
/// reports readiness for the whole fleet (an informer, a watch API, one poll of
/// every starting instance).
///
/// Given `o`, an lvalue of type `O`: `o.watch_readiness()` returns a new
/// `ReadinessWatch`, for one consumer, valid while `o` lives.
///
/// `Rolling` uses it when it is there: a start-up waiting is then an entry in the
/// watch and a 40-byte entry in the strategy's deadline queue, not a `wait_ready`
/// call with its coroutine frames, thread and timers, which are most of a large
/// update's memory (measured with the fake orchestrator: 3.4 KB less heap per
/// start-up waiting). Without it, `Rolling` calls `wait_ready` per instance.
/// Either way the semantics are the same: the ready deadline, crashes and `min_ready`.
template <class O>
concept WatchesReadiness = Orchestrator<O> && requires(O& o) {
  { o.watch_readiness() } -> ReadinessWatch;
};

}  // namespace rollout
