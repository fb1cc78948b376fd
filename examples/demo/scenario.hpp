#pragma once

// The demo's moving parts, shared with the end-to-end tests:
//
// - `Traffic`: the LoadBalancer the strategies drive, either the in-process
//   WeightedRouter (the embedded default) or a real HAProxy; it also registers
//   instances as they become ready and deregisters them before they stop.
// - `Fleet`: sample-service instances as real processes (ProcessOrchestrator).
// - `Scenario`: one phase at a time (blue-green, canary, rolling) under the
//   load generator's live traffic, each reported with its request counts.
//
// Groups are named after revisions ("v1", "v2", ...): the blue-green
// environments, the canary's stable and canary groups, and during a rolling
// update both revisions, weighted by how many ready instances each has.
#include "load_generator.hpp"

#include <rollout/counter_source.hpp>
#include <rollout/haproxy.hpp>
#include <rollout/http_probe.hpp>
#include <rollout/process_orchestrator.hpp>
#include <rollout/rollout.hpp>
#include <rollout/tcp_probe.hpp>
#include <rollout/weighted_router.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace demo {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// Runs `aw`, giving up (and cancelling it) after `limit`: nullopt on timeout.
template <class T>
asio::awaitable<std::optional<T>> within(std::chrono::milliseconds limit, asio::awaitable<T> aw) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, limit);
  auto r = co_await (std::move(aw) || timer.async_wait(asio::use_awaitable));
  if (r.index() == 1) co_return std::nullopt;
  co_return std::get<0>(std::move(r));
}

/// Which load balancer carries the traffic.
enum class LbKind { router, haproxy };

/// A private temporary directory, removed with everything in it.
class TempDir {
public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rollout-demo-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // best effort: a leftover temp dir is harmless
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

/// A real HAProxy 2.6, started as a process through ProcessOrchestrator: its
/// frontend listens on the port the orchestrator picks (passed in the
/// environment), its runtime API on a unix socket in a temp dir, and its one
/// backend, `app`, starts empty: instances join it as dynamic servers.
class HaproxyServerProcess {
public:
  explicit HaproxyServerProcess(std::filesystem::path haproxy = "/usr/sbin/haproxy") : probe_(500ms) {
    std::ofstream cfg(dir_.path() / "haproxy.cfg");
    cfg << "global\n"
           "  stats socket \"${ROLLOUT_DEMO_DIR}/admin.sock\" mode 600 level admin\n"
           "defaults\n"
           "  mode http\n"
           "  timeout connect 2s\n"
           "  timeout client 30s\n"
           "  timeout server 30s\n"
           "frontend fe\n"
           "  bind \"127.0.0.1:${ROLLOUT_DEMO_PORT}\"\n"
           "  default_backend app\n"
           "backend app\n"
           "  balance roundrobin\n"
           // A request sent to an instance that has just died (before its probes
           // fail and a strategy takes it out) is retried on another server at
           // once, rather than on the dead one a second apart and then failed with
           // a 503. The demo's requests are GETs, so retrying one whose server
           // closed without answering is safe.
           "  retries 3\n"
           "  option redispatch 1\n"
           "  retry-on conn-failure empty-response\n";
    cfg.close();
    rollout::ProcessOrchestratorOptions o;
    o.executable = std::move(haproxy);
    o.args = {"-db", "-q", "-f", (dir_.path() / "haproxy.cfg").string()};  // -q: no notices on stderr for each change
    o.env = {{"ROLLOUT_DEMO_DIR", dir_.path().string()}, {"ROLLOUT_DEMO_PORT", "{port}"}};
    o.ready_poll = 20ms;
    o.grace = 5s;
    orch_ = std::make_unique<rollout::ProcessOrchestrator<rollout::TcpProbe>>(probe_, std::move(o));
  }

  /// Starts it and waits until its frontend accepts connections.
  asio::awaitable<void> start() {
    auto i = co_await orch_->create(rollout::Revision{"haproxy"});
    if (!i) throw std::runtime_error("haproxy: " + i.error().message);
    auto ready = co_await within(10s, orch_->wait_ready(*i));
    if (!ready || !*ready) throw std::runtime_error("haproxy did not start listening within 10 s");
    instance_ = *i;
    // The frontend is up; the runtime API socket is opened before it, at startup.
  }
  asio::awaitable<void> stop() { co_await orch_->shutdown(); }

  std::string admin_socket() const { return (dir_.path() / "admin.sock").string(); }
  const rollout::Endpoint& frontend() const { return instance_.endpoint; }

private:
  TempDir dir_;
  rollout::TcpProbe probe_;
  std::unique_ptr<rollout::ProcessOrchestrator<rollout::TcpProbe>> orch_;
  rollout::Instance instance_;
};

/// The LoadBalancer every strategy of the demo drives (models rollout::LoadBalancer).
class Traffic {
public:
  explicit Traffic(rollout::WeightedRouter& router) : router_(&router) {}
  Traffic(rollout::HaproxyLoadBalancer& haproxy, rollout::Endpoint frontend)
      : haproxy_(&haproxy), frontend_(std::move(frontend)) {}

  /// Applies and verifies `split` (the LoadBalancer contract), and remembers it.
  asio::awaitable<rollout::result<void>> apply(const rollout::TrafficSplit& split) {
    rollout::result<void> r;
    if (router_) {
      r = router_->apply_now(split);
    } else {
      r = co_await haproxy_->apply(split);
    }
    if (r) {
      for (const auto& s : split.shares()) weights_[s.group] = s.weight;
      changes_.emplace_back(std::chrono::steady_clock::now(), split);
    }
    co_return r;
  }

  /// How long `unreachable()` takes an instance out of WeightedRouter's picks.
  static constexpr std::chrono::seconds ejection{10};

  /// A request to `p` failed at the connection level: through WeightedRouter,
  /// its instance is passed over for `ejection` (passive health checking, as a
  /// client-side load balancer does), until the strategy's probes catch up.
  /// HAProxy retries such requests itself (see its config above).
  void unreachable(const Pick& p) {
    if (router_) router_->eject(p.key, ejection);
  }

  /// Where the load generator sends the next request.
  std::optional<Pick> pick() const {
    if (haproxy_) return Pick{frontend_, "haproxy", ""};
    const rollout::Instance* i = router_->pick();
    if (!i) return std::nullopt;
    return Pick{i->endpoint, i->id, i->revision.id};
  }

  /// While set, these groups' weights follow their number of ready instances
  /// (a rolling update: every instance gets the same share).
  void follow_instance_counts(std::string a, std::string b) {
    proportional_.clear();
    proportional_.push_back(std::move(a));
    proportional_.push_back(std::move(b));
  }
  void stop_following() { proportional_.clear(); }

  /// The hooks that register an instance when it is ready (in the group of its
  /// revision), and deregister it before it is stopped.
  rollout::InstanceRegistration registration() {
    rollout::InstanceRegistration reg;
    reg.on_ready = [this](const rollout::Instance& i) { return join(i); };
    reg.on_drain = [this](const rollout::Instance& i) { return leave(i); };
    reg.on_gone = [this](const rollout::Instance& i) { return gone(i); };
    return reg;
  }

  /// The weights last verified on the load balancer.
  const std::map<std::string, rollout::Percent>& weights() const { return weights_; }
  /// Every verified change, with when it was confirmed.
  const std::vector<std::pair<SteadyTime, rollout::TrafficSplit>>& changes() const { return changes_; }
  std::size_t members(const std::string& group) const {
    auto it = members_.find(group);
    return it == members_.end() ? 0 : it->second.size();
  }
  bool through_haproxy() const { return haproxy_ != nullptr; }

private:
  asio::awaitable<rollout::result<void>> join(const rollout::Instance& i) {
    const auto& group = i.revision.id;
    if (router_) {
      router_->add(group, i);
    } else {
      auto r = co_await haproxy_->register_instance(i, "app", 0, group);  // weight 0 until a split gives it traffic
      if (!r) co_return r;
    }
    members_[group].insert(i.id);
    co_return co_await rebalance();
  }

  asio::awaitable<rollout::result<void>> leave(const rollout::Instance& i) {
    members_[i.revision.id].erase(i.id);
    if (router_) {
      router_->remove(i.id);
    } else {
      auto r = co_await haproxy_->drain_instance(i);
      if (!r) co_return r;
    }
    co_return co_await rebalance();
  }

  asio::awaitable<rollout::result<void>> gone(const rollout::Instance& i) {
    if (haproxy_) co_return co_await haproxy_->deregister_instance(i);
    co_return rollout::result<void>{};
  }

  asio::awaitable<rollout::result<void>> rebalance() {
    if (proportional_.empty()) co_return rollout::result<void>{};
    std::size_t total = 0;
    for (const auto& g : proportional_) total += members(g);
    if (total == 0) co_return rollout::result<void>{};
    std::vector<rollout::TrafficSplit::Share> shares;
    std::int64_t given = 0;
    for (std::size_t k = 0; k < proportional_.size(); ++k) {
      const auto n = static_cast<std::int64_t>(members(proportional_[k]));
      std::int64_t bp = k + 1 == proportional_.size() ? rollout::Percent::full_scale - given
                                                       : rollout::Percent::full_scale * n / static_cast<std::int64_t>(total);
      given += bp;
      shares.push_back(rollout::TrafficSplit::Share{proportional_[k], rollout::Percent::from_basis_points(bp)});
    }
    co_return co_await apply(rollout::TrafficSplit::of(std::move(shares)));
  }

  rollout::WeightedRouter* router_ = nullptr;
  rollout::HaproxyLoadBalancer* haproxy_ = nullptr;
  rollout::Endpoint frontend_;
  std::vector<std::string> proportional_;
  std::map<std::string, std::set<std::string>> members_;
  std::map<std::string, rollout::Percent> weights_;
  std::vector<std::pair<SteadyTime, rollout::TrafficSplit>> changes_;
};

using Orchestrator = rollout::ProcessOrchestrator<rollout::HttpProbe>;

inline rollout::HttpProbe health_probe() {
  rollout::HttpProbeOptions o;
  o.path = "/health";
  o.timeout = 500ms;
  return rollout::HttpProbe(o);
}

/// Instances of the sample service as real processes.
class Fleet {
public:
  /// `bad` revisions start with a 30% error rate.
  Fleet(Traffic& traffic, std::filesystem::path sample_service, std::vector<std::string> bad)
      : probe_(health_probe()), orch_(probe_, options(std::move(sample_service), bad), traffic.registration()) {}

  Orchestrator& orchestrator() { return orch_; }

  /// Starts `n` instances of `r` and waits until each is ready (and registered).
  asio::awaitable<std::vector<rollout::Instance>> start(const rollout::Revision& r, int n) {
    std::vector<rollout::Instance> out;
    for (int k = 0; k < n; ++k) {
      auto i = co_await orch_.create(r);
      if (!i) throw std::runtime_error(fmt::format("starting {}: {}", r.id, i.error().message));
      auto ready = co_await within(10s, orch_.wait_ready(*i));
      if (!ready) throw std::runtime_error(fmt::format("{} was not ready within 10 s", i->id));
      if (!*ready) throw std::runtime_error(fmt::format("{}: {}", i->id, ready->error().message));
      out.push_back(*i);
    }
    co_return out;
  }

  /// The running instances of `r`.
  asio::awaitable<std::vector<rollout::Instance>> of(const rollout::Revision& r) {
    std::vector<rollout::Instance> out;
    auto all = co_await orch_.list();
    if (all) {
      for (auto& i : *all) {
        if (i.revision == r) out.push_back(std::move(i));
      }
    }
    co_return out;
  }

  /// Retires every instance of `r`: deregister, drain, SIGTERM.
  asio::awaitable<void> retire(const rollout::Revision& r) {
    for (const auto& i : co_await of(r)) {
      auto done = co_await orch_.retire(i);
      if (!done) throw std::runtime_error(fmt::format("retiring {}: {}", i.id, done.error().message));
    }
  }

  /// Kills an instance at once (SIGKILL), as a crash would.
  bool kill(const std::string& id) {
    const auto pid = orch_.pid(id);
    return pid && ::kill(*pid, SIGKILL) == 0;
  }

  asio::awaitable<void> shutdown() { co_await orch_.shutdown(); }

private:
  static rollout::ProcessOrchestratorOptions options(std::filesystem::path exe, const std::vector<std::string>& bad) {
    rollout::ProcessOrchestratorOptions o;
    o.executable = std::move(exe);
    o.args = {"--port", "{port}", "--version", "{revision}", "--quiet"};
    for (const auto& b : bad) o.revision_args[b] = {"--error-rate", "0.3"};
    o.ready_poll = 50ms;
    o.drain = 300ms;  // requests already routed to it arrive and finish before SIGTERM
    o.grace = 5s;
    return o;
  }

  rollout::HttpProbe probe_;
  Orchestrator orch_;
};

/// How one phase went.
struct PhaseReport {
  std::string name;      ///< e.g. "blue-green v1 -> v2"
  std::string strategy;  ///< blue_green, canary, rolling
  rollout::Status expected = rollout::Status::promoted;
  rollout::Outcome outcome;
  SteadyTime began{}, ended{};
  Counts counts;                    ///< Every request that ended during the phase (a late one is counted where it ends).
  Counts bad_build;                 ///< Requests answered by the bad revision (bad canary only).
  std::uint64_t unsent = 0;
  std::uint64_t allowed_failures = 0;  ///< Failures the phase may have (the bad build's own 500s).
  std::optional<double> detection_ms;  ///< Bad canary: first bad response -> 100% stable, verified.
  std::optional<double> exposure_ms;   ///< Bad canary: canary weight applied -> 100% stable, verified.

  double seconds() const { return std::chrono::duration<double>(ended - began).count(); }
  std::uint64_t lost() const {
    const auto f = counts.failed();
    return (f > allowed_failures ? f - allowed_failures : 0) + unsent;
  }
  bool as_expected() const { return outcome.status == expected && lost() == 0; }
};

/// Settings of the phases; the defaults are the demo's.
struct ScenarioOptions {
  int instances = 3;
  std::chrono::milliseconds probe_period{200};
  int failure_threshold = 2;
  std::chrono::milliseconds verify_for{2000};
  std::chrono::milliseconds canary_interval{1000};  ///< Background analysis interval (and initial delay).
  int canary_failure_limit = 1;
  std::chrono::milliseconds canary_step{2000};      ///< Pause between canary weights.
};

/// The blue-green options of the phases.
inline rollout::BlueGreenOptions blue_green_options(const ScenarioOptions& so) {
  rollout::BlueGreenOptions o;
  o.probe.period = so.probe_period;
  o.probe.timeout = 500ms;
  o.probe.failure_threshold = so.failure_threshold;
  o.verify_for = so.verify_for;
  o.scale_down_delay = 500ms;
  o.ready_deadline = 10s;
  o.lb_timeout = 2s;
  return o;
}

/// Runs phases under live load and reports each one.
class Scenario {
public:
  Scenario(Traffic& traffic, Fleet& fleet, LoadGenerator& load, rollout::CounterSource<>& metrics, ScenarioOptions options = {})
      : traffic_(traffic), fleet_(fleet), load_(load), metrics_(metrics), opts_(options) {}

  /// Every strategy event of every phase (for the live status, and for tests).
  std::function<void(const rollout::Event&)> on_event;

  /// The current phase and step, for the status line.
  const std::string& phase() const { return phase_; }
  const std::string& step() const { return step_; }

  /// Starts `n` instances of `r` and gives them all traffic: the starting point.
  asio::awaitable<void> bootstrap(const rollout::Revision& r) {
    phase_ = fmt::format("start {}", r.id);
    co_await fleet_.start(r, opts_.instances);
    auto applied = co_await traffic_.apply(rollout::TrafficSplit::all_to(r.id));
    if (!applied) throw std::runtime_error("initial split: " + applied.error().message);
  }

  /// Blue-green from `from` to `to` (n -> n). Promoted: `from` is released and
  /// retired. Rolled back: `to` is retired.
  asio::awaitable<PhaseReport> blue_green(rollout::Revision from, rollout::Revision to,
                                          std::function<void(const rollout::Event&)> inject = {}) {
    PhaseReport rep = begin(fmt::format("blue-green {} -> {}", from.id, to.id), "blue_green");
    const auto target = co_await fleet_.start(to, opts_.instances);
    const auto active = co_await fleet_.of(from);
    rollout::HttpProbe probe = health_probe();
    rollout::BlueGreen<Traffic, rollout::HttpProbe> bg(traffic_, probe, rollout::Environment(from.id, from, active),
                                                       rollout::Environment(to.id, to, target), blue_green_options(opts_));
    watch(bg.observers(), rep, inject);
    rep.outcome = co_await bg.run();
    co_await fleet_.retire(rep.outcome.ok() ? from : to);
    co_return end(std::move(rep));
  }

  /// Canary of `canary` against `stable`, judged by CounterSource. Promoted: the
  /// stable instances are retired. Rolled back: the canary's are.
  asio::awaitable<PhaseReport> canary(rollout::Revision stable, rollout::Revision canary, bool bad) {
    PhaseReport rep = begin(fmt::format("canary {} -> {}{}", stable.id, canary.id, bad ? " (bad: 30% errors)" : ""), "canary");
    if (bad) rep.expected = rollout::Status::rolled_back;
    co_await fleet_.start(canary, opts_.instances);
    rollout::Canary<Traffic, rollout::CounterSource<>> run(traffic_, metrics_, stable, canary, canary_plan(), canary_options(stable, canary));
    std::optional<SteadyTime> exposed, restored;
    bool rolling_back = false;
    run.observers().add([&](const rollout::Event& e) {
      if (e.kind == rollout::EventKind::traffic_applied && e.split && !e.split->weight_of(canary.id).is_zero() && !exposed) {
        exposed = std::chrono::steady_clock::now();
      }
      if (e.kind == rollout::EventKind::rollback_started) rolling_back = true;
      if (rolling_back && !restored && e.kind == rollout::EventKind::traffic_applied && e.split &&
          e.split->weight_of(stable.id).is_full()) {
        restored = std::chrono::steady_clock::now();
      }
    });
    watch(run.observers(), rep, {});
    const auto before = load_.snapshot();
    rep.outcome = co_await run.run();
    const auto after = load_.snapshot();
    if (bad) {
      rep.bad_build = after.revision(canary.id).minus(before.revision(canary.id));
      rep.allowed_failures = rep.bad_build.http_errors;  // the bad build's own 500s; a connection error is never allowed
      std::optional<SteadyTime> first_bad;
      for (const auto& f : after.failures) {
        if (f.revision == canary.id && f.at >= rep.began && (!first_bad || f.at < *first_bad)) first_bad = f.at;
      }
      if (first_bad && restored) rep.detection_ms = std::chrono::duration<double, std::milli>(*restored - *first_bad).count();
      if (exposed && restored) rep.exposure_ms = std::chrono::duration<double, std::milli>(*restored - *exposed).count();
    }
    co_await fleet_.retire(rep.outcome.ok() ? stable : canary);
    co_return end(std::move(rep));
  }

  /// Rolling update of the fleet from `from` to `to`, surge 1, unavailable 0.
  asio::awaitable<PhaseReport> rolling(rollout::Revision from, rollout::Revision to) {
    PhaseReport rep = begin(fmt::format("rolling {} -> {}", from.id, to.id), "rolling");
    traffic_.follow_instance_counts(from.id, to.id);
    rollout::RollingOptions o;
    o.desired = opts_.instances;
    o.max_surge = 1;
    o.max_unavailable = 0;
    o.min_ready = 500ms;  // Kubernetes' minReadySeconds: ready this long before it counts as available
    o.ready_deadline = 10s;
    o.call_timeout = 15s;
    o.progress_deadline = 60s;
    rollout::Rolling<Orchestrator> roll(fleet_.orchestrator(), from, to, o);
    watch(roll.observers(), rep, {});
    rep.outcome = co_await roll.run();
    traffic_.stop_following();
    co_return end(std::move(rep));
  }

  rollout::CanaryPlan canary_plan() const {
    using rollout::Percent;
    return rollout::CanaryPlan::of({rollout::steps::set_weight(Percent::from_basis_points(1000)),
                                    rollout::steps::pause(opts_.canary_step),
                                    rollout::steps::set_weight(Percent::from_basis_points(2500)),
                                    rollout::steps::pause(opts_.canary_step),
                                    rollout::steps::set_weight(Percent::from_basis_points(5000)),
                                    rollout::steps::pause(opts_.canary_step)});
  }

  rollout::CanaryOptions canary_options(const rollout::Revision& stable, const rollout::Revision& canary) const {
    rollout::MetricCheck errors;
    errors.name = "error-rate";
    errors.query = rollout::MetricQuery{"error-rate", "error_rate", 2s, rollout::MetricQuery::Want::value};
    errors.interval = opts_.canary_interval;
    errors.initial_delay = opts_.canary_interval;  // a first window with traffic in it
    errors.failure_limit = opts_.canary_failure_limit;
    errors.inconclusive_limit = 3;
    errors.failure_condition = rollout::Condition::above(0.05);
    rollout::CanaryOptions o;
    o.stable_group = stable.id;
    o.canary_group = canary.id;
    o.background = rollout::BackgroundAnalysis{rollout::AnalysisSpec{"slo", {errors}}, 0};
    o.lb_timeout = 2s;
    return o;
  }

  const ScenarioOptions& options() const { return opts_; }

private:
  PhaseReport begin(std::string name, std::string strategy) {
    phase_ = name;
    step_.clear();
    PhaseReport rep;
    rep.name = std::move(name);
    rep.strategy = std::move(strategy);
    rep.began = std::chrono::steady_clock::now();
    start_ = load_.snapshot();
    return rep;
  }

  PhaseReport end(PhaseReport rep) {
    const auto now = load_.snapshot();
    rep.ended = std::chrono::steady_clock::now();
    rep.counts = now.total.minus(start_.total);
    rep.unsent = now.unsent - start_.unsent;
    step_ = fmt::format("{}", rep.outcome.status);
    return rep;
  }

  void watch(rollout::ObserverList& list, PhaseReport&, std::function<void(const rollout::Event&)> inject) {
    list.add([this, inject = std::move(inject)](const rollout::Event& e) {
      if (e.kind == rollout::EventKind::step_started || e.kind == rollout::EventKind::phase_changed) step_ = e.subject;
      if (inject) inject(e);
      if (on_event) on_event(e);
    });
  }

  Traffic& traffic_;
  Fleet& fleet_;
  LoadGenerator& load_;
  rollout::CounterSource<>& metrics_;
  ScenarioOptions opts_;
  Snapshot start_;
  std::string phase_;
  std::string step_;
};

}  // namespace demo
