#pragma once

/// @file
/// `rollout::testing::FakeOrchestrator`: an in-memory `Orchestrator` with
/// per-instance start latency and failure scripts.

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/testing/fault.hpp>
#include <rollout/testing/sim_clock.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rollout::testing {

/// How one created instance behaves.
struct StartScript {
  Duration start_latency{std::chrono::seconds(1)};  ///< Time from create to ready.
  bool never_ready = false;                         ///< `wait_ready` never returns (until cancelled).
  bool crashes = false;                             ///< `wait_ready` reports `errc::instance_failed` at start_latency.
};

/// A fleet in memory. `create(r)` adds an instance `r.id-NNNN` after
/// `create_latency`; `wait_ready` completes when its `StartScript` says; `retire`
/// removes it after `retire_latency` (and succeeds if it is already gone);
/// `list` returns the fleet. The script for the N-th created instance comes from
/// `on_create`; the default is ready after 1 s.
///
/// It counts what a rolling update cares about: created, retired, the fleet's
/// peak size, and readiness per instance. Faults come from a shared `FaultPlan`
/// (`orchestrator.create`, `.wait_ready`, `.retire`, `.list`, and
/// `.watch_readiness` for each `next()` of a watch).
///
/// With `Watch = true` it also `WatchesReadiness`: `watch_readiness()` returns a
/// `ReadinessWatch` that reports each instance added when its `StartScript`
/// says, as `wait_ready` would (`WatchingFakeOrchestrator` names that type).
template <Clock C = SimClock, bool Watch = false>
class FakeOrchestrator {
public:
  class ReadinessWatchImpl;
  FakeOrchestrator(C clock, std::vector<Instance> fleet = {}) : clock_(std::move(clock)) {
    for (auto& i : fleet) adopt(std::move(i));
  }

  /// Adds an instance that is already running and ready (the fleet before a rollout).
  void adopt(Instance i) {
    Entry e;
    e.instance = i;
    e.ready = true;
    e.script.start_latency = Duration::zero();
    fleet_.emplace(i.id, std::move(e));
    peak_ = std::max(peak_, fleet_.size());
  }

  boost::asio::awaitable<result<Instance>> create(const Revision& r) {
    const InFlight counted(creating_, peak_creating_);
    const auto n = created_++;
    if (!plan_) co_await detail::sleep_for(clock_, create_latency_);  // the common case: one frame fewer
    else if (auto err = co_await fault("orchestrator.create", r.id, create_latency_)) co_return *err;
    Instance inst{detail::format("{}-{:04}", r.id, n), r, {"127.0.0.1", static_cast<std::uint16_t>(20000 + (n % 40000))}};
    Entry e;
    e.instance = inst;
    e.created_at = clock_.now();
    e.script = on_create ? on_create(r, n) : StartScript{};
    fleet_.emplace(inst.id, std::move(e));
    peak_ = std::max(peak_, fleet_.size());
    co_return inst;
  }

  boost::asio::awaitable<result<void>> wait_ready(const Instance& i) {
    if (!plan_) co_await detail::sleep_for(clock_, Duration::zero());
    else if (auto err = co_await fault("orchestrator.wait_ready", i.id, Duration::zero())) co_return *err;
    auto it = fleet_.find(i.id);
    if (it == fleet_.end()) co_return Error(errc::instance_failed, detail::format("{} is not in the fleet", i.id));
    const StartScript script = it->second.script;
    const TimePoint ready_at = detail::add_saturating(it->second.created_at, script.start_latency);
    if (script.never_ready) co_await detail::sleep_until(clock_, TimePoint::max());
    if (clock_.now() < ready_at) co_await detail::sleep_until(clock_, ready_at);
    it = fleet_.find(i.id);
    if (it == fleet_.end()) co_return Error(errc::instance_failed, detail::format("{} was removed while starting", i.id));
    if (script.crashes) co_return Error(errc::instance_failed, detail::format("{} exited with code 1 while starting", i.id));
    it->second.ready = true;
    co_return result<void>{};
  }

  /// A new `ReadinessWatch` on this fleet (only with `Watch = true`).
  ReadinessWatchImpl watch_readiness()
    requires Watch
  {
    return ReadinessWatchImpl(*this);
  }

  boost::asio::awaitable<result<void>> retire(const Instance& i) {
    const InFlight counted(retiring_, peak_retiring_);
    if (!plan_) co_await detail::sleep_for(clock_, retire_latency_);
    else if (auto err = co_await fault("orchestrator.retire", i.id, retire_latency_)) co_return *err;
    if (fleet_.erase(i.id) > 0) ++retired_;
    co_return result<void>{};
  }

  boost::asio::awaitable<result<std::vector<Instance>>> list() {
    if (!plan_) co_await detail::sleep_for(clock_, Duration::zero());
    else if (auto err = co_await fault("orchestrator.list", "", Duration::zero())) co_return *err;
    co_return instances();
  }

  /// Script for the `n`-th created instance (0-based) of revision `r`.
  std::function<StartScript(const Revision& r, std::size_t n)> on_create;

  void set_plan(FaultPlan* plan) noexcept { plan_ = plan; }
  void set_create_latency(Duration d) noexcept { create_latency_ = d; }
  void set_retire_latency(Duration d) noexcept { retire_latency_ = d; }

  /// The fleet now, ordered by id.
  std::vector<Instance> instances() const {
    std::vector<const Instance*> by_id;  // sorted as pointers: an Instance is three strings to move
    by_id.reserve(fleet_.size());
    for (const auto& [id, e] : fleet_) by_id.push_back(&e.instance);
    std::sort(by_id.begin(), by_id.end(), [](const Instance* a, const Instance* b) { return a->id < b->id; });
    std::vector<Instance> out;
    out.reserve(by_id.size());
    for (const Instance* i : by_id) out.push_back(*i);
    return out;
  }
  /// Instances of `r` in the fleet now.
  std::size_t count(const Revision& r) const {
    return static_cast<std::size_t>(std::count_if(fleet_.begin(), fleet_.end(), [&](const auto& kv) { return kv.second.instance.revision == r; }));
  }
  /// Whether `id` has passed `wait_ready` (pre-existing instances count as ready).
  bool is_ready(const std::string& id) const {
    auto it = fleet_.find(id);
    return it != fleet_.end() && it->second.ready;
  }
  std::size_t created() const noexcept { return created_; }
  std::size_t retired() const noexcept { return retired_; }
  std::size_t size() const noexcept { return fleet_.size(); }
  std::size_t peak_size() const noexcept { return peak_; }
  /// The most `create` calls, and `retire` calls, that were in flight at once.
  std::size_t peak_creating() const noexcept { return peak_creating_; }
  std::size_t peak_retiring() const noexcept { return peak_retiring_; }

  /// The fake's `ReadinessWatch`: a heap of the watched instances by the time
  /// their start-up script reports them. Moveable; the orchestrator must outlive it.
  class ReadinessWatchImpl {
  public:
    explicit ReadinessWatchImpl(FakeOrchestrator& o) : o_(&o) {}

    /// Watches `i`: reported at its script's ready time (at once if ready), as
    /// failed at that time if it crashes or is gone by then; never if it is never ready.
    void add(const Instance& i) {
      const auto token = ++next_token_;
      watched_[i.id] = token;
      auto it = o_->fleet_.find(i.id);
      TimePoint at = o_->clock_.now();
      if (it != o_->fleet_.end() && !it->second.ready) {
        if (it->second.script.never_ready) return;  // watched, never reported
        at = std::max(at, detail::add_saturating(it->second.created_at, it->second.script.start_latency));
      }
      due_.push(Due{at, token, i.id});
      if (changed_) changed_->notify_all();
    }
    void remove(const std::string& id) { watched_.erase(id); }
    /// Instances watched and not yet reported.
    std::size_t watching() const noexcept { return watched_.size(); }

    boost::asio::awaitable<result<std::vector<ReadinessReport>>> next() {
      if (o_->plan_) {
        if (auto err = co_await o_->fault("orchestrator.watch_readiness", "", Duration::zero())) co_return *err;
      }
      auto ex = co_await boost::asio::this_coro::executor;
      if (!changed_) changed_ = std::make_unique<detail::Notifier>(ex);
      for (;;) {
        while (!due_.empty() && !is_current(due_.top())) due_.pop();  // removed, or added again since
        const auto now = o_->clock_.now();
        if (!due_.empty() && due_.top().at <= now) break;
        auto until = TimePoint::max();  // (g++ 12 miscompiles a ?: inside a co_await expression)
        if (!due_.empty()) until = due_.top().at;
        const auto why = co_await detail::wait_for_change(o_->clock_, *changed_, until);
        if (why == detail::Wake::cancelled) co_return Error(errc::aborted, "watch_readiness().next() was cancelled");
      }
      std::vector<ReadinessReport> out;
      const auto now = o_->clock_.now();
      while (!due_.empty() && due_.top().at <= now) {
        Due d = due_.top();
        due_.pop();
        if (!is_current(d)) continue;
        watched_.erase(d.id);
        out.emplace_back();  // (no aggregate temporaries in a coroutine body: g++ 12)
        out.back().id = d.id;
        out.back().ready = o_->become_ready(d.id);
      }
      co_return out;
    }

  private:
    struct Due {
      TimePoint at;
      std::uint64_t token;
      std::string id;
      bool operator>(const Due& o) const { return at != o.at ? at > o.at : token > o.token; }
    };
    bool is_current(const Due& d) const {
      auto it = watched_.find(d.id);
      return it != watched_.end() && it->second == d.token;
    }

    FakeOrchestrator* o_;
    std::priority_queue<Due, std::vector<Due>, std::greater<>> due_;
    std::unordered_map<std::string, std::uint64_t> watched_;  // id -> token of its entry in due_
    std::uint64_t next_token_ = 0;
    std::unique_ptr<detail::Notifier> changed_;  // made by the first next(), which knows the executor
  };

private:
  /// Counts a call in flight for as long as its frame lives (cancelled calls too).
  struct InFlight {
    InFlight(std::size_t& n, std::size_t& peak) : n_(n) { peak = std::max(peak, ++n_); }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    ~InFlight() { --n_; }
    std::size_t& n_;
  };

  /// `wait_ready`'s verdict once the script's time has come: ready (and marked
  /// so), crashed, or gone.
  result<void> become_ready(const std::string& id) {
    auto it = fleet_.find(id);
    if (it == fleet_.end()) return Error(errc::instance_failed, detail::format("{} is not in the fleet", id));
    if (it->second.script.crashes) return Error(errc::instance_failed, detail::format("{} exited with code 1 while starting", id));
    it->second.ready = true;
    return {};
  }

  struct Entry {
    Instance instance;
    TimePoint created_at{};
    StartScript script{};
    bool ready = false;
  };

  /// The fault the plan has for this call, enacted. Only called with a plan: without
  /// one, each call sleeps its latency itself (one coroutine frame fewer per call).
  boost::asio::awaitable<std::optional<Error>> fault(const char* call, const std::string& what, Duration latency) {
    Fault f = plan_->on_call(call, what);
    if (f.kind == Fault::none) {  // the common case: no fault, no names formatted
      co_await detail::sleep_for(clock_, latency);
      co_return std::nullopt;
    }
    co_return co_await enact(clock_, f, latency, detail::format("{}({})", call, what));
  }

  C clock_;
  std::unordered_map<std::string, Entry> fleet_;  // hashed: looked up at every call; instances() sorts
  std::size_t created_ = 0;
  std::size_t retired_ = 0;
  std::size_t peak_ = 0;
  std::size_t creating_ = 0;
  std::size_t peak_creating_ = 0;
  std::size_t retiring_ = 0;
  std::size_t peak_retiring_ = 0;
  Duration create_latency_{std::chrono::milliseconds(50)};
  Duration retire_latency_{std::chrono::milliseconds(50)};
  FaultPlan* plan_ = nullptr;
};

/// A `FakeOrchestrator` that also `WatchesReadiness`.
template <Clock C = SimClock>
using WatchingFakeOrchestrator = FakeOrchestrator<C, true>;

static_assert(Orchestrator<FakeOrchestrator<>>);
static_assert(!WatchesReadiness<FakeOrchestrator<>>);
static_assert(WatchesReadiness<WatchingFakeOrchestrator<>>);

}  // namespace rollout::testing
