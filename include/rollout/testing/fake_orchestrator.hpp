#pragma once

/// @file
/// `rollout::testing::FakeOrchestrator`: an in-memory `Orchestrator` with
/// per-instance start latency and failure scripts.

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/testing/fault.hpp>
#include <rollout/testing/sim_clock.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
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
/// (`orchestrator.create`, `.wait_ready`, `.retire`, `.list`).
template <Clock C = SimClock>
class FakeOrchestrator {
public:
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

  boost::asio::awaitable<result<void>> retire(const Instance& i) {
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

private:
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
  Duration create_latency_{std::chrono::milliseconds(50)};
  Duration retire_latency_{std::chrono::milliseconds(50)};
  FaultPlan* plan_ = nullptr;
};

static_assert(Orchestrator<FakeOrchestrator<>>);

}  // namespace rollout::testing
