#pragma once

/// @file
/// `rollout::WeightedRouter`: an in-process, client-side load balancer that
/// models `LoadBalancer` (opt-in header).

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

namespace rollout {

/// A load balancer that lives inside the service that sends the traffic: the
/// service asks `pick()` for a backend before each outbound request, and a
/// strategy moves traffic with `apply()`.
///
/// - `apply(split)` atomically publishes a new routing table; the next `pick()`
///   anywhere sees it. It fails with `errc::unknown_server` (and publishes
///   nothing) if the split gives weight to a group that has no instances.
///   Groups the split does not name get nothing. After publishing it reads the
///   live table back and compares.
/// - `pick()` chooses a group by smooth weighted round robin (nginx's algorithm,
///   precomputed as an exact schedule: over each cycle every group gets exactly
///   its weight) or by a seeded weighted random draw, then an instance of that
///   group in round robin. It is lock-free and safe from any thread: it reads an
///   immutable table through one atomic pointer and bumps atomic counters.
/// - `add()` and `remove()` change membership (for rolling updates), publishing too.
/// - `eject(id, duration)` is passive health checking, as in Envoy's outlier
///   detection or gRPC's: a caller whose request to an instance failed at the
///   connection level reports it, and `pick()` passes that instance over for
///   `duration`, until the strategy's probes catch up. Weights do not change.
///
/// Published tables are kept until the router is destroyed, so a reader never
/// sees freed memory and `pick()` can return a stable pointer; a table is a few
/// hundred bytes plus at most 10,000 schedule entries, and a rollout publishes
/// a few dozen. Writers (apply, add, remove) are serialised by a mutex and may be
/// called from any thread. `apply` does not suspend, so cancellation never
/// interrupts it half-way.
class WeightedRouter {
public:
  enum class Mode { smooth_round_robin, random };

  explicit WeightedRouter(Mode mode = Mode::smooth_round_robin, std::uint64_t seed = 0x9e3779b97f4a7c15ULL)
      : mode_(mode), seed_(seed) {
    publish(std::make_unique<Table>());
  }
  WeightedRouter(const WeightedRouter&) = delete;
  WeightedRouter& operator=(const WeightedRouter&) = delete;

  /// Adds `instance` to `group` (created if new). Throws `invalid_option` for an
  /// empty group name or an instance id already present.
  void add(const std::string& group, Instance instance) {
    if (group.empty()) throw invalid_option("group", "\"\"", "must not be empty");
    std::lock_guard lock(write_);
    for (const auto& [g, members] : members_) {
      for (const auto& i : members) {
        if (i.id == instance.id) {
          throw invalid_option("instance.id", detail::format("\"{}\"", instance.id), detail::format("is already in group {}", g));
        }
      }
    }
    ejections_.emplace(instance.id, std::make_shared<std::atomic<std::int64_t>>(0));
    members_[group].push_back(std::move(instance));
    publish(build(weights_));
  }

  /// Removes the instance `id` from whichever group has it; false if none does.
  bool remove(const std::string& id) {
    std::lock_guard lock(write_);
    for (auto& [g, members] : members_) {
      auto it = std::find_if(members.begin(), members.end(), [&](const Instance& i) { return i.id == id; });
      if (it != members.end()) {
        members.erase(it);
        publish(build(weights_));
        ejections_.erase(id);  // the tables that still list it keep its state alive
        return true;
      }
    }
    return false;
  }

  /// Passes the instance `id` over in `pick()` until `until` (a request to it
  /// failed: connection refused or reset, no response). Its group's other
  /// instances share its turns evenly; a group whose instances are all ejected is picked
  /// from as if none were (Envoy's panic routing: some instance beats none).
  /// Group weights, `weight_of()` and `apply()`'s read-back are unchanged. A
  /// later call replaces the time, so `eject(id, now)` readmits it at once. The
  /// ejection ends if the instance is removed. Returns false if no group has
  /// `id`. Thread-safe; it does not block `pick()`.
  bool eject(const std::string& id, std::chrono::steady_clock::time_point until) {
    std::lock_guard lock(write_);
    auto it = ejections_.find(id);
    if (it == ejections_.end()) return false;
    const auto t = until.time_since_epoch().count();
    it->second->store(t, std::memory_order_relaxed);
    if (t > horizon_.load(std::memory_order_relaxed)) horizon_.store(t, std::memory_order_relaxed);
    return true;
  }
  /// `eject(id, now + duration)`; a zero `duration` readmits it. Throws
  /// `invalid_option` for a negative `duration` or one beyond the bound of every
  /// duration option.
  bool eject(const std::string& id, Duration duration) {
    require_duration("duration", duration, DurationRule::non_negative);
    return eject(id, detail::add_saturating(std::chrono::steady_clock::now(), duration));
  }
  /// Whether `pick_at(now)` passes `id` over (false if no group has it).
  bool ejected(const std::string& id, std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) const {
    std::lock_guard lock(write_);
    auto it = ejections_.find(id);
    return it != ejections_.end() && it->second->load(std::memory_order_relaxed) > now.time_since_epoch().count();
  }

  /// Publishes `split` (see the class comment).
  boost::asio::awaitable<result<void>> apply(const TrafficSplit& split) {
    co_return apply_now(split);
  }

  /// The synchronous core of `apply`.
  result<void> apply_now(const TrafficSplit& split) {
    std::lock_guard lock(write_);
    std::map<std::string, std::int32_t> weights;
    for (const auto& share : split.shares()) {
      if (!share.weight.is_zero()) {
        auto it = members_.find(share.group);
        if (it == members_.end() || it->second.empty()) {
          return Error(errc::unknown_server,
                       detail::format("group {} gets {} but has no instances", share.group, share.weight));
        }
      }
      weights[share.group] = share.weight.basis_points();
    }
    publish(build(weights));
    weights_ = std::move(weights);
    // Read back what readers now see.
    const Table* live = current_.load(std::memory_order_acquire);
    for (const auto& share : split.shares()) {
      if (live->weight_of(share.group) != share.weight.basis_points()) {
        return Error(errc::lb_verify_mismatch, detail::format("router holds {} for {} instead of {}", live->weight_of(share.group),
                                                            share.group, share.weight));
      }
    }
    return result<void>{};
  }

  /// A backend for the next request, or nullptr when no group has weight.
  /// Lock-free; the pointer stays valid for the router's lifetime. It reads the
  /// clock only while some ejection lasts.
  const Instance* pick() const noexcept {
    auto horizon = horizon_.load(std::memory_order_relaxed);
    if (horizon == 0) return pick_at({});
    const auto now = std::chrono::steady_clock::now();
    // Every ejection is over: back to the clock-free path (unless one was just made).
    if (now.time_since_epoch().count() >= horizon) horizon_.compare_exchange_strong(horizon, 0, std::memory_order_relaxed);
    return pick_at(now);
  }
  /// `pick()` as at `now`, which decides what `eject()` passes over (for tests
  /// and simulations; `pick()` uses the steady clock).
  const Instance* pick_at(std::chrono::steady_clock::time_point now) const noexcept {
    const Table* t = current_.load(std::memory_order_acquire);
    if (t->total == 0) return nullptr;
    std::size_t g;
    if (mode_ == Mode::smooth_round_robin) {
      const auto n = t->cursor.fetch_add(1, std::memory_order_relaxed);
      g = t->schedule[static_cast<std::size_t>(n % t->schedule.size())];
    } else {
      // splitmix64 over a shared counter: seeded, reproducible for a given call
      // order, and lock-free (a thread_local engine would not be reproducible).
      std::uint64_t x = seed_ + t->cursor.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ULL;
      x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
      x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
      x ^= x >> 31;
      const auto r = static_cast<std::uint32_t>(x % t->total);
      g = static_cast<std::size_t>(std::upper_bound(t->cumulative.begin(), t->cumulative.end(), r) - t->cumulative.begin());
    }
    const auto& group = t->groups[g];
    const std::size_t n = group.instances.size();
    const auto turn = group.next->fetch_add(1, std::memory_order_relaxed);
    const auto k = static_cast<std::size_t>(turn % n);
    const auto at = now.time_since_epoch().count();
    if (at >= horizon_.load(std::memory_order_relaxed)) return &group.instances[k];  // no ejection lasts
    const auto out = [&](std::size_t i) { return group.ejected_until[i]->load(std::memory_order_relaxed) > at; };
    if (!out(k)) return &group.instances[k];
    // k is ejected: its turn goes to the group's m live instances in rotation
    // (its next turn, a cycle later, to the next of them), so they share its
    // traffic evenly. None live: panic routing, k after all.
    std::size_t m = 0;
    for (std::size_t i = 0; i < n; ++i) m += out(i) ? 0 : 1;
    if (m == 0) return &group.instances[k];
    auto r = static_cast<std::size_t>((turn / n) % m);
    for (std::size_t i = 0; i < n; ++i) {
      if (!out(i) && r-- == 0) return &group.instances[i];
    }
    return &group.instances[k];  // an ejection ended between the two scans
  }

  /// The weight each group has now (basis points), as readers see it.
  std::int32_t weight_of(const std::string& group) const noexcept {
    return current_.load(std::memory_order_acquire)->weight_of(group);
  }
  /// Tables published so far (including the initial empty one).
  std::size_t generation() const noexcept { return generation_.load(std::memory_order_acquire); }

private:
  /// Until when an instance is ejected: steady-clock ticks, 0 if never.
  using Ejection = std::shared_ptr<std::atomic<std::int64_t>>;
  struct Group {
    std::string name;
    std::int32_t weight = 0;  // basis points
    std::vector<Instance> instances;
    std::vector<Ejection> ejected_until;  // one per instance, shared with `ejections_` and later tables
    std::unique_ptr<std::atomic<std::uint64_t>> next = std::make_unique<std::atomic<std::uint64_t>>(0);
  };
  struct Table {
    std::vector<Group> groups;            // groups with weight > 0 and instances
    std::vector<std::uint16_t> schedule;  // SWRR order of group indexes over one cycle
    std::vector<std::uint32_t> cumulative;  // cumulative weights, for random picks
    std::uint32_t total = 0;
    std::map<std::string, std::int32_t> weights;  // every named group, including 0%
    mutable std::atomic<std::uint64_t> cursor{0};

    std::int32_t weight_of(const std::string& g) const {
      auto it = weights.find(g);
      return it == weights.end() ? 0 : it->second;
    }
  };

  std::unique_ptr<Table> build(const std::map<std::string, std::int32_t>& weights) const {
    auto t = std::make_unique<Table>();
    t->weights = weights;
    for (const auto& [name, w] : weights) {
      auto it = members_.find(name);
      if (w <= 0 || it == members_.end() || it->second.empty()) continue;
      Group g;
      g.name = name;
      g.weight = w;
      g.instances = it->second;
      for (const auto& i : g.instances) g.ejected_until.push_back(ejections_.at(i.id));
      t->groups.push_back(std::move(g));
    }
    std::int32_t gcd = 0;
    for (const auto& g : t->groups) gcd = std::gcd(gcd, g.weight);
    std::vector<std::int64_t> w;
    for (const auto& g : t->groups) {
      w.push_back(g.weight / gcd);
      t->total += static_cast<std::uint32_t>(g.weight);
      t->cumulative.push_back(t->total);
    }
    // nginx's smooth weighted round robin, unrolled over one cycle: each turn every
    // group gains its weight, the richest is picked and pays the total.
    const std::int64_t cycle = std::accumulate(w.begin(), w.end(), std::int64_t{0});
    std::vector<std::int64_t> current(w.size(), 0);
    for (std::int64_t step = 0; step < cycle; ++step) {
      std::size_t best = 0;
      for (std::size_t i = 0; i < w.size(); ++i) {
        current[i] += w[i];
        if (current[i] > current[best]) best = i;
      }
      current[best] -= cycle;
      t->schedule.push_back(static_cast<std::uint16_t>(best));
    }
    return t;
  }

  void publish(std::unique_ptr<Table> t) {
    current_.store(t.get(), std::memory_order_release);
    tables_.push_back(std::move(t));
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }

  Mode mode_;
  std::uint64_t seed_;
  mutable std::mutex write_;
  std::map<std::string, std::vector<Instance>> members_;
  std::map<std::string, Ejection> ejections_;   // by instance id, for every member
  mutable std::atomic<std::int64_t> horizon_{0};  // the latest time an ejection lasts until (0: none lasts; pick() resets it)
  std::map<std::string, std::int32_t> weights_;
  std::vector<std::unique_ptr<Table>> tables_;  // every table ever published; see the class comment
  std::atomic<const Table*> current_{nullptr};
  std::atomic<std::size_t> generation_{0};
};

static_assert(LoadBalancer<WeightedRouter>);

}  // namespace rollout
