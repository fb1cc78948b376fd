#pragma once

/// @file
/// `rollout::ProcessOrchestrator<Probe>`: instances as local processes (opt-in
/// header; link `rollout::process`).

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/child_process.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/parallel.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/task.hpp>
#include <rollout/tcp_probe.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>

#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rollout {

/// Options of a `ProcessOrchestrator`.
///
/// `args` and `env` values may contain placeholders, replaced per instance:
/// `{port}` (a free port chosen by binding port 0), `{revision}`, `{id}`, `{host}`.
struct ProcessOrchestratorOptions {
  std::filesystem::path executable;                          ///< Absolute path of the program.
  std::vector<std::string> args;                             ///< e.g. {"--port", "{port}", "--version", "{revision}"}.
  std::vector<std::pair<std::string, std::string>> env;      ///< Added to the parent's environment.
  std::map<std::string, std::vector<std::string>> revision_args;  ///< Extra args for one revision (e.g. a bad build's flags).
  std::string host = "127.0.0.1";                            ///< Where instances listen.
  Duration ready_poll{std::chrono::milliseconds(100)};       ///< How often `wait_ready`, and a readiness watch's round, probe.
  std::size_t watch_probes = 16;                             ///< Probes in flight at once in a readiness watch's round (>= 1).
  Duration drain{0};                                         ///< Between deregistration and SIGTERM.
  Duration grace{std::chrono::seconds(10)};                  ///< Between SIGTERM and SIGKILL.

  void validate() const {
    if (executable.empty() || !executable.is_absolute()) {
      throw invalid_option("executable", detail::format("{:?}", executable.string()), "must be an absolute path");
    }
    require_duration("ready_poll", ready_poll, DurationRule::positive);
    if (watch_probes < 1) throw invalid_option("watch_probes", "0", "must be at least 1");
    require_duration("drain", drain, DurationRule::non_negative);
    require_duration("grace", grace, DurationRule::positive);
  }
};

/// How an orchestrator tells a load balancer about instances. Each hook is
/// optional. `on_ready` runs when `wait_ready` succeeds (register), `on_drain`
/// first thing in `retire` (stop new traffic), `on_gone` after the process has
/// exited (forget it). A failing `on_ready` fails `wait_ready`; failures of the
/// others are reported through `on_exit`'s detail but do not stop the retirement.
///
/// An `on_ready` cut short by cancellation (the strategy's ready deadline, say)
/// may have registered the instance already, so it counts as registered:
/// `retire` runs `on_drain` and `on_gone` for it, and hooks must accept an
/// instance they never finished adding. `retire` waits for an `on_ready` still
/// running (a readiness watch's round) before `on_drain`, and runs each of the
/// other hooks once per instance.
struct InstanceRegistration {
  std::function<boost::asio::awaitable<result<void>>(const Instance&)> on_ready;
  std::function<boost::asio::awaitable<result<void>>(const Instance&)> on_drain;
  std::function<boost::asio::awaitable<result<void>>(const Instance&)> on_gone;
};

/// An `Orchestrator` whose instances are local processes started from one
/// command line.
///
/// - `create(r)` starts the program with a free port, and returns the instance
///   (`<revision>-<n>`, at `host:port`). A program that cannot be started is
///   `errc::instance_failed` with the reason.
/// - `wait_ready(i)` probes `i` every `ready_poll` with the `HealthProbe` until it
///   is healthy, then runs `on_ready`. If the process exits first, it returns
///   `errc::instance_failed` saying how it ended. It does not time out by itself:
///   the strategy bounds it (its ready deadline) and cancels it.
/// - `retire(i)` is graceful: `on_drain`, wait `drain`, SIGTERM, wait up to
///   `grace`, SIGKILL if still running, then `on_gone`. Retiring an instance that
///   is already gone succeeds. `last_exit(id)` and `on_exit` report how it ended,
///   telling a signal apart from an exit code.
/// - `list()` returns the instances whose process is running.
/// - `watch_readiness()` (it `WatchesReadiness`): one watch for many start-ups.
///   Every `ready_poll`, one round probes each watched instance (up to
///   `watch_probes` at once), then runs `on_ready` for the healthy ones, one at a
///   time, and reports them, with the ones whose process has exited (a child's
///   exit starts a round at once). A hook that hangs holds up the round, so give hooks
///   timeouts of their own, as the load balancer policies have. An instance
///   removed from the watch while `on_ready` ran is unregistered again (`on_gone`);
///   one retired meanwhile is left to `retire`, which waits for the hook to end.
///   `Rolling` then holds no coroutine per start-up.
/// - A process that exits on its own (a crash) is detected at once: it leaves
///   `list()`, and `on_exit` reports it with `crashed = true`.
///
/// Destroying the orchestrator kills (SIGKILL) and reaps every child it still
/// has; call `shutdown()` first for a graceful stop. Use one strand; the probe is
/// held by reference. Cancellation: `wait_ready` and `retire` honour terminal
/// cancellation (a cancelled retire leaves the child to the destructor).
template <HealthProbe P>
class ProcessOrchestrator {
public:
  /// Called when a child exits: the instance, how it ended, and whether it was a crash.
  using ExitHandler = std::function<void(const Instance&, const detail::ExitStatus&, bool crashed)>;

  ProcessOrchestrator(P& probe, ProcessOrchestratorOptions options, InstanceRegistration registration = {})
      : probe_(probe), opts_(std::move(options)), reg_(std::move(registration)) {
    opts_.validate();
  }
  ProcessOrchestrator(const ProcessOrchestrator&) = delete;
  ProcessOrchestrator& operator=(const ProcessOrchestrator&) = delete;

  boost::asio::awaitable<result<Instance>> create(const Revision& r) {
    auto ex = co_await boost::asio::this_coro::executor;
    const auto port = free_port(ex);
    if (!port) co_return Error(errc::instance_failed, "no free port on " + opts_.host);
    Instance inst{detail::format("{}-{}", r.id, next_++), r, Endpoint{opts_.host, *port}};
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env;
    command_line(inst, args, env);
    auto child = std::make_unique<Child>(ex, inst);
    try {
      child->process.emplace(ex, opts_.executable, args, env);
    } catch (const invalid_option& e) {
      co_return Error(errc::instance_failed, detail::format("{}: {}", inst.id, e.what()));
    }
    Child& c = *child;
    children_[inst.id] = std::move(child);
    c.monitor.start(ex, watch(c), nullptr);
    co_return inst;
  }

  boost::asio::awaitable<result<void>> wait_ready(const Instance& i) {
    auto it = children_.find(i.id);
    if (it == children_.end()) co_return Error(errc::instance_failed, detail::format("{} is not one of our processes", i.id));
    Child& c = *it->second;
    SteadyClock clock;
    for (;;) {
      if (c.status) co_return Error(errc::instance_failed, detail::format("{} {} while starting", i.id, c.status->text()));
      const auto health = co_await probe_.check(i);
      if (c.status) continue;
      if (health.healthy) break;
      const auto why = co_await detail::wait_for_change(clock, c.changed, detail::add_saturating(clock.now(), opts_.ready_poll));
      if (why == detail::Wake::cancelled) throw boost::system::system_error(boost::asio::error::operation_aborted);
    }
    co_return co_await register_ready(i);
  }

  /// This orchestrator's `ReadinessWatch` (see the class comment). An instance
  /// that is not one of this orchestrator's processes is reported as failed at
  /// the next round; one whose process exits is reported with how it ended.
  /// Cancellation: `next()` lets `operation_aborted` propagate and loses nothing.
  /// The orchestrator must outlive the watch.
  class ReadinessWatchImpl {
  public:
    explicit ReadinessWatchImpl(ProcessOrchestrator& o) : o_(&o) {}
    void add(const Instance& i) { watched_.insert_or_assign(i.id, i); }
    void remove(const std::string& id) {
      watched_.erase(id);
      std::erase_if(due_, [&](const ReadinessReport& r) { return r.id == id; });
    }

    boost::asio::awaitable<result<std::vector<ReadinessReport>>> next() {
      SteadyClock clock;
      auto ex = co_await boost::asio::this_coro::executor;
      if (!o_->exited_) o_->exited_ = std::make_unique<detail::Notifier>(ex);
      for (;;) {
        // Reports settled by a round whose next() was cancelled come first: none is lost.
        if (!due_.empty()) co_return std::exchange(due_, {});
        std::vector<Instance> round;
        round.reserve(watched_.size());
        for (const auto& kv : watched_) round.push_back(kv.second);
        // Probes run side by side; they only read. Registration (on_ready) does
        // not: a load balancer's hooks are called one at a time, as wait_ready does.
        std::vector<char> healthy(round.size(), 0);
        co_await detail::scoped_for_each(round.begin(), round.end(), o_->opts_.watch_probes,
                                         [this, &round, &healthy](const Instance& i, detail::TaskScope) { return probe_into(i, round, healthy); });
        for (std::size_t k = 0; k < round.size(); ++k) {
          if (!watched_.contains(round[k].id)) continue;  // removed during the round
          auto verdict = co_await o_->settle(round[k], healthy[k] != 0);
          if (!verdict) continue;
          if (watched_.erase(round[k].id) == 0) {
            // Removed while on_ready ran (its ready deadline passed, say): the
            // strategy has given up on it and may already have retired it, so the
            // registration just made is undone rather than left pointing at it.
            if (*verdict) co_await o_->unregister(round[k]);
            continue;
          }
          due_.emplace_back();
          due_.back().id = round[k].id;
          due_.back().ready = std::move(*verdict);
        }
        if (!due_.empty()) co_return std::exchange(due_, {});
        // The next round: after ready_poll, or at once when a child exits.
        const auto why = co_await detail::wait_for_change(clock, *o_->exited_, detail::add_saturating(clock.now(), o_->opts_.ready_poll));
        if (why == detail::Wake::cancelled) throw boost::system::system_error(boost::asio::error::operation_aborted);
      }
    }

  private:
    boost::asio::awaitable<void> probe_into(const Instance& i, const std::vector<Instance>& round, std::vector<char>& healthy) {
      const auto k = static_cast<std::size_t>(&i - round.data());
      if (!o_->running(i.id)) co_return;  // settled below without a probe
      const auto health = co_await o_->probe_.check(i);
      healthy[k] = health.healthy ? 1 : 0;
    }

    ProcessOrchestrator* o_;
    std::map<std::string, Instance> watched_;
    std::vector<ReadinessReport> due_;  // settled, not yet returned
  };

  /// A new `ReadinessWatch` on this orchestrator's processes.
  ReadinessWatchImpl watch_readiness() { return ReadinessWatchImpl(*this); }

  boost::asio::awaitable<result<void>> retire(const Instance& i) {
    auto it = children_.find(i.id);
    if (it == children_.end()) co_return result<void>{};  // already gone: idempotent
    Child& c = *it->second;
    c.retiring = true;
    SteadyClock clock;
    // A registration in flight (a readiness watch's round) ends first, so that
    // on_drain cannot run before on_ready has finished adding the instance.
    while (c.registering) {
      if (co_await detail::wait_for_change(clock, c.changed, TimePoint::max()) == detail::Wake::cancelled) {
        throw boost::system::system_error(boost::asio::error::operation_aborted);
      }
    }
    std::string notes;
    if (reg_.on_drain && c.registered) {
      auto r = co_await reg_.on_drain(i);
      if (!r) notes += detail::format("; deregistering failed: {}", r.error().message);
    }
    if (opts_.drain > Duration::zero() && !c.status) co_await detail::sleep_for(clock, opts_.drain);
    if (!c.status) {
      c.process->signal(SIGTERM);
      const auto until = detail::add_saturating(clock.now(), opts_.grace);
      while (!c.status && clock.now() < until) co_await detail::wait_for_change(clock, c.changed, until);
    }
    if (!c.status) {
      c.process->signal(SIGKILL);
      while (!c.status) co_await detail::wait_for_change(clock, c.changed, TimePoint::max());
    }
    if (reg_.on_gone && c.registered) {
      auto r = co_await reg_.on_gone(i);
      if (!r) notes += detail::format("; removing it from the load balancer failed: {}", r.error().message);
    }
    last_exit_[i.id] = *c.status;
    last_exit_note_[i.id] = notes;
    co_await c.monitor.stop();
    children_.erase(i.id);
    co_return result<void>{};
  }

  boost::asio::awaitable<result<std::vector<Instance>>> list() {
    std::vector<Instance> out;
    for (const auto& [id, c] : children_) {
      if (!c->status) out.push_back(c->instance);
    }
    co_return out;
  }

  /// Retires every instance, gracefully. Call before destroying the orchestrator.
  boost::asio::awaitable<void> shutdown() {
    std::vector<Instance> all;
    for (const auto& [id, c] : children_) all.push_back(c->instance);
    for (const auto& i : all) co_await retire(i);
  }

  /// How a retired or crashed instance ended.
  std::optional<detail::ExitStatus> last_exit(const std::string& id) const {
    if (auto it = last_exit_.find(id); it != last_exit_.end()) return it->second;
    if (auto it = children_.find(id); it != children_.end() && it->second->status) return it->second->status;
    return std::nullopt;
  }
  /// What went wrong with the load balancer while retiring `id` ("" if nothing).
  std::string retire_notes(const std::string& id) const {
    auto it = last_exit_note_.find(id);
    return it == last_exit_note_.end() ? std::string() : it->second;
  }

  /// The operating-system pid of a running instance (for diagnostics and tests).
  std::optional<int> pid(const std::string& id) const {
    auto it = children_.find(id);
    if (it == children_.end() || it->second->status) return std::nullopt;
    return it->second->process->pid();
  }

  /// Called on every exit; `crashed` when the process ended without being retired.
  ExitHandler on_exit;

private:
  struct Child {
    Child(const boost::asio::any_io_executor& ex, Instance i) : instance(std::move(i)), changed(ex) {}
    Instance instance;
    std::optional<detail::ChildProcess> process;
    std::optional<detail::ExitStatus> status;
    detail::Notifier changed;
    detail::Task monitor;
    bool retiring = false;
    bool registering = false;  // on_ready is running
    bool registered = false;   // on_ready ran or is running: retire undoes it
  };

  bool running(const std::string& id) const {
    auto it = children_.find(id);
    return it != children_.end() && !it->second->status;
  }

  /// A readiness watch's verdict on `i` after a round: nothing yet (still
  /// starting), failed (exited, unknown, or its registration failed), or ready
  /// (registered with `on_ready`, as `wait_ready` does).
  boost::asio::awaitable<std::optional<result<void>>> settle(const Instance& i, bool healthy) {
    auto it = children_.find(i.id);
    if (it == children_.end()) co_return result<void>(Error(errc::instance_failed, detail::format("{} is not one of our processes", i.id)));
    if (it->second->status) {
      co_return result<void>(Error(errc::instance_failed, detail::format("{} {} while starting", i.id, it->second->status->text())));
    }
    if (!healthy) co_return std::nullopt;
    co_return co_await register_ready(i);
  }

  /// Registers `i`, a running child found healthy, with `on_ready`. The child
  /// counts as registered from before the hook runs: if the caller is cancelled
  /// while the hook runs, the hook may have registered it already, so `retire`
  /// still runs `on_drain` and `on_gone` for it rather than leave a load
  /// balancer pointing at a process that is gone. Only a hook that returns an
  /// error counts as not having registered it.
  boost::asio::awaitable<result<void>> register_ready(const Instance& i) {
    auto it = children_.find(i.id);
    if (it == children_.end()) co_return Error(errc::instance_failed, detail::format("{} is not one of our processes", i.id));
    it->second->registered = true;
    if (!reg_.on_ready) co_return result<void>{};
    it->second->registering = true;
    result<void> r;
    try {
      r = co_await reg_.on_ready(i);
    } catch (...) {
      registration_ended(i.id, true);  // cut short (cancelled): it may be registered
      throw;
    }
    registration_ended(i.id, r.has_value());
    if (r) co_return result<void>{};
    co_return Error(r.error().code, detail::format("{} is ready but registering it failed: {}", i.id, r.error().message));
  }

  /// `on_ready` for `id` has returned or was cut short; wakes a `retire` that
  /// waits for it. The child is looked up again: the hook may have taken a while.
  void registration_ended(const std::string& id, bool maybe_registered) {
    auto it = children_.find(id);
    if (it == children_.end()) return;
    it->second->registering = false;
    it->second->registered = maybe_registered;
    it->second->changed.notify_all();
  }

  /// Undoes `settle`'s registration of `i` (`on_gone`), for an instance the
  /// strategy stopped waiting for while it was being registered.
  boost::asio::awaitable<void> unregister(const Instance& i) {
    auto it = children_.find(i.id);
    // Retired, or being retired: retire runs on_drain and on_gone itself, once.
    if (it == children_.end() || it->second->retiring) co_return;
    it->second->registered = false;
    if (reg_.on_gone) {
      auto r = co_await reg_.on_gone(i);
      if (!r) last_exit_note_[i.id] += detail::format("; removing it from the load balancer after its start-up was abandoned failed: {}", r.error().message);
    }
  }

  /// The command line of `inst`: placeholders replaced, revision extras appended.
  /// (Not in the coroutine: g++ 12 rejects braced lists inside coroutine bodies.)
  void command_line(const Instance& inst, std::vector<std::string>& args, std::vector<std::pair<std::string, std::string>>& env) const {
    const std::vector<std::pair<std::string, std::string>> values{
        {"{port}", std::to_string(inst.endpoint.port)}, {"{revision}", inst.revision.id}, {"{id}", inst.id}, {"{host}", opts_.host}};
    auto expand = [&](std::string s) {
      for (const auto& [key, value] : values) {
        for (auto at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size())) s.replace(at, key.size(), value);
      }
      return s;
    };
    for (const auto& a : opts_.args) args.push_back(expand(a));
    if (auto it = opts_.revision_args.find(inst.revision.id); it != opts_.revision_args.end()) {
      for (const auto& a : it->second) args.push_back(expand(a));
    }
    for (const auto& [k, v] : opts_.env) env.emplace_back(k, expand(v));
  }

  boost::asio::awaitable<void> watch(Child& c) {
    auto r = co_await c.process->wait();
    if (!r) co_return;  // cancelled
    c.status = *r;
    if (on_exit) on_exit(c.instance, *r, !c.retiring);
    c.changed.notify_all();
    if (exited_) exited_->notify_all();  // a readiness watch's round reports it at once
  }

  std::optional<std::uint16_t> free_port(const boost::asio::any_io_executor& ex) const {
    boost::system::error_code ec;
    boost::asio::ip::tcp::acceptor a(ex);
    const auto addr = boost::asio::ip::make_address(opts_.host, ec);
    if (ec) return std::nullopt;
    a.open(addr.is_v6() ? boost::asio::ip::tcp::v6() : boost::asio::ip::tcp::v4(), ec);
    if (!ec) a.bind({addr, 0}, ec);
    if (ec) return std::nullopt;
    return a.local_endpoint().port();
  }

  P& probe_;
  // Wakes readiness watches when a child exits. Made by the first next(), which
  // knows the executor; declared before children_, so that it outlives them.
  std::unique_ptr<detail::Notifier> exited_;
  ProcessOrchestratorOptions opts_;
  InstanceRegistration reg_;
  std::map<std::string, std::unique_ptr<Child>> children_;
  std::map<std::string, detail::ExitStatus> last_exit_;
  std::map<std::string, std::string> last_exit_note_;
  std::size_t next_ = 0;
};

static_assert(Orchestrator<ProcessOrchestrator<TcpProbe>>);
static_assert(WatchesReadiness<ProcessOrchestrator<TcpProbe>>);

}  // namespace rollout
