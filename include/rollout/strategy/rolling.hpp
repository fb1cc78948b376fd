#pragma once

/// @file
/// `rollout::Rolling<Orchestrator, Clock>`: a rolling update with Kubernetes
/// surge/unavailable semantics, pipelined replacement, deadlines, rollback and partition.

#include <rollout/concepts.hpp>
#include <rollout/core/backoff.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/control.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/core/percent.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/retry.hpp>
#include <rollout/detail/run_context.hpp>
#include <rollout/detail/task.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace rollout {

namespace detail {
/// The `ReadinessWatch` type of an orchestrator that `WatchesReadiness`, else `std::monostate`.
template <class O>
struct readiness_watch_of {
  using type = std::monostate;
};
template <WatchesReadiness O>
struct readiness_watch_of<O> {
  using type = decltype(std::declval<O&>().watch_readiness());
};
}  // namespace detail

/// A `max_surge` or `max_unavailable` budget: an absolute number of instances or
/// a percentage of `desired`. Converts implicitly from either, so
/// `opts.max_surge = 1;` and `opts.max_surge = 25_pct;` both read naturally.
class Budget {
public:
  constexpr Budget(std::int64_t count) noexcept : value_(count) {}  // NOLINT: implicit on purpose
  constexpr Budget(int count) noexcept : value_(static_cast<std::int64_t>(count)) {}  // NOLINT
  constexpr Budget(Percent p) noexcept : value_(p) {}  // NOLINT

  bool is_percent() const noexcept { return std::holds_alternative<Percent>(value_); }
  /// The absolute value, or -1 for a percentage.
  std::int64_t count() const noexcept { return is_percent() ? -1 : std::get<std::int64_t>(value_); }
  /// True for an explicit 0 or 0%.
  bool is_zero() const noexcept { return is_percent() ? std::get<Percent>(value_).is_zero() : count() == 0; }
  /// The number of instances for `desired`: percentages round up (surge) or down (unavailable).
  std::int64_t resolve(std::int64_t desired, bool round_up) const noexcept {
    if (!is_percent()) return count();
    const auto p = std::get<Percent>(value_);
    return round_up ? p.of_rounded_up(desired) : p.of_rounded_down(desired);
  }
  /// `25%` or `3`.
  std::string text() const { return is_percent() ? std::get<Percent>(value_).text() : detail::format("{}", count()); }

private:
  std::variant<std::int64_t, Percent> value_;
};

/// `max_surge` and `max_unavailable` resolved to instance counts.
struct ResolvedBudgets {
  std::int64_t surge = 0;
  std::int64_t unavailable = 0;
  friend bool operator==(const ResolvedBudgets&, const ResolvedBudgets&) = default;
};

/// Kubernetes' rule (`ResolveFenceposts` in the Deployment controller): a percent
/// surge rounds up, a percent unavailable rounds down, and if both come to 0,
/// unavailable becomes 1 so that the update can make progress.
inline ResolvedBudgets resolve_budgets(std::int64_t desired, const Budget& max_surge, const Budget& max_unavailable) {
  ResolvedBudgets r{max_surge.resolve(desired, true), max_unavailable.resolve(desired, false)};
  if (r.surge == 0 && r.unavailable == 0) r.unavailable = 1;
  return r;
}

/// What a rolling update does when it fails (instances never ready, too many
/// failures, no progress): go back to the old revision (the default), or hold
/// where it is until `control().resume()` (try again) or `control().abort()` (roll back).
enum class OnFailure { rollback, pause };

/// Options of a rolling update. Defaults follow the Kubernetes Deployment
/// controller (25%/25%, `minReadySeconds` 0, `progressDeadlineSeconds` 600) and
/// Nomad (`healthy_deadline` 5 min).
struct RollingOptions {
  std::int64_t desired = 1;                                 ///< Instances the fleet should run (>= 1).
  Budget max_surge = Percent::from_basis_points(2500);      ///< Instances above `desired` allowed during the update.
  Budget max_unavailable = Percent::from_basis_points(2500);  ///< Instances below `desired` allowed to be unavailable.
  Duration min_ready{0};                                    ///< A ready instance counts as available after this long (>= 0).
  Duration ready_deadline{std::chrono::minutes(5)};         ///< Time for one new instance to become ready (> 0).
  std::int64_t max_failed_instances = 3;                    ///< Failures (never ready, crashed, failed calls) before failing (>= 1).
  Duration progress_deadline{std::chrono::minutes(10)};     ///< Fail after this long without an instance becoming available or retired (> 0).
  OnFailure on_failure = OnFailure::rollback;               ///< What to do on failure.
  std::int64_t partition = 0;                               ///< Leave this many instances on the old revision (0..desired).
  Duration call_timeout{std::chrono::minutes(1)};           ///< Bound on each create, retire and list call (> 0).
  Backoff retry{};                                          ///< Retries of transient orchestrator errors.
  /// Creates in flight at once, and retirements the update starts in flight at
  /// once (within 1..max_fleet): Kubernetes' ReplicaSet controller creates or
  /// deletes at most 500 pods per sync (`burstReplicas`). The budgets still bound
  /// the fleet; this bounds the load on the orchestrator, so a 25% surge of
  /// 10,000 instances is not 2,500 simultaneous creates. Failed instances are
  /// retired at once, outside it.
  std::int64_t burst = 500;

  /// The largest `desired` (and count budget) accepted: one million instances.
  static constexpr std::int64_t max_fleet = 1'000'000;

  /// Throws `invalid_option` naming the field and the value for any option out of range.
  void validate() const {
    // The upper bounds keep desired + surge and the budget arithmetic far from overflow.
    if (desired < 1 || desired > max_fleet) {
      throw invalid_option("desired", detail::format("{}", desired), detail::format("must be within 1..{}", max_fleet));
    }
    if (!max_surge.is_percent() && (max_surge.count() < 0 || max_surge.count() > max_fleet)) {
      throw invalid_option("max_surge", max_surge.text(), detail::format("must be within 0..{}", max_fleet));
    }
    if (!max_unavailable.is_percent() && (max_unavailable.count() < 0 || max_unavailable.count() > max_fleet)) {
      throw invalid_option("max_unavailable", max_unavailable.text(), detail::format("must be within 0..{}", max_fleet));
    }
    if (max_surge.is_zero() && max_unavailable.is_zero()) {
      throw invalid_option("max_surge", detail::format("{} (max_unavailable {})", max_surge.text(), max_unavailable.text()),
                           "max_surge and max_unavailable are both 0: the update could never make progress");
    }
    require_duration("min_ready", min_ready, DurationRule::non_negative);
    require_duration("ready_deadline", ready_deadline, DurationRule::positive);
    if (max_failed_instances < 1) {
      throw invalid_option("max_failed_instances", detail::format("{}", max_failed_instances), "must be at least 1");
    }
    require_duration("progress_deadline", progress_deadline, DurationRule::positive);
    if (partition < 0 || partition > desired) {
      throw invalid_option("partition", detail::format("{}", partition), detail::format("must be within 0..desired ({})", desired));
    }
    require_duration("call_timeout", call_timeout, DurationRule::positive);
    retry.validate("retry");
    if (burst < 1 || burst > max_fleet) {
      throw invalid_option("burst", detail::format("{}", burst), detail::format("must be within 1..{}", max_fleet));
    }
  }
};

/// The phases of a rolling update.
enum class RollingPhase { pending, rolling_forward, paused, rolling_back, done };

/// Name of a phase, e.g. `rolling_forward`.
inline const char* to_string(RollingPhase p) noexcept {
  switch (p) {
    case RollingPhase::pending: return "pending";
    case RollingPhase::rolling_forward: return "rolling_forward";
    case RollingPhase::paused: return "paused";
    case RollingPhase::rolling_back: return "rolling_back";
    case RollingPhase::done: return "done";
  }
  return "unknown";
}

/// The observable state of a rolling update: plain data, printable with fmt.
struct RollingState {
  RollingPhase phase = RollingPhase::pending;
  std::int64_t total = 0;       ///< Instances that exist (including starting and retiring ones, and creates in flight).
  std::int64_t available = 0;   ///< Instances serving: ready for `min_ready`, not retiring.
  std::int64_t updated = 0;     ///< Instances on the target revision of the current pass, not retiring.
  /// Instances created, retired and failed so far, counted as they happen. Its
  /// `fleet` stays empty: the fleet at the end is in `Outcome::fleet` only, so a
  /// copy of the state (for a status page, say) stays small, and a
  /// 10,000-instance update does not hold its last `list()` twice.
  FleetReport report;
};

/// A rolling update: replaces the `desired` instances of revision `from` with
/// instances of revision `to` through an `Orchestrator`, keeping the fleet's
/// capacity guarantees at every moment and finishing as fast as the budgets allow.
///
/// Semantics (Kubernetes Deployment, with StatefulSet's partition):
/// - **Budgets.** `max_surge` and `max_unavailable` resolve with `resolve_budgets`.
/// - **Pipelined.** A new instance starts whenever `total < desired + surge`; an
///   old instance is retired whenever `available - 1 >= desired - unavailable`.
///   Each replacement starts as soon as the budget allows; nothing waits for a batch.
///   At most `burst` creates, and `burst` retirements, are in flight at once.
///   An instance is *available* once `wait_ready` succeeded and `min_ready` has passed.
/// - **Readiness.** With an orchestrator that `WatchesReadiness`, every start-up
///   waits through one `ReadinessWatch` (and one queue of deadlines in the
///   strategy) instead of a `wait_ready` call each; the semantics are the same,
///   and a start-up waiting costs about 3.4 KB less (no coroutine frames,
///   thread or timers of its own). A failed
///   `next()` is retried with `retry`'s backoff, without limit: the ready
///   deadline of each start-up still bounds it, and its error is quoted in the
///   failures it causes.
/// - **Failures.** A new instance not ready within `ready_deadline`, or one that
///   crashes, is retired and counted. After `max_failed_instances` failures, or no
///   progress (an instance becoming available or retired) for `progress_deadline`,
///   the update fails. It then rolls back, by the same algorithm and budgets, to
///   `from` (or pauses, with `on_failure = pause`). The rollback replaces failed
///   start-ups without a limit and gives up only at the progress deadline.
/// - **Failed retirements.** An instance whose `retire` fails (after retries) is
///   counted as a failure and no longer as serving, since it was drained; it still
///   holds its place in the fleet (and the surge budget) until the next pass
///   (the rollback, or the next `run()`) lists it and retires it again, or, if it
///   runs that pass's revision, re-checks it with `wait_ready`.
/// - **Partition.** With `partition = k`, the update stops with `k` instances
///   still on `from`. A later run continues it.
/// - **Resume.** `run()` starts from `list()`: instances of `to` are adopted (and
///   re-checked with `wait_ready`), others are treated as old. Running again after
///   a crash or a partitioned run continues without creating extras.
///
/// Invariants (checked by `testing::RollingInvariants`): available never drops
/// below `desired - unavailable` (or below what it was, if the fleet started
/// lower); total never exceeds `desired + surge`; everything created is serving
/// or retired at the end.
///
/// **Cancellation and abort.** `control().abort()` or cancelling the caller stops
/// new work, cancels instance start-ups in flight, lets retirements in flight
/// finish, then rolls back to `from`; the rollback is not cancellable. An abort
/// that arrives after the update has converged (every old instance retired, every
/// new one available) has nothing left to stop: the run is `Promoted`. `pause()`
/// holds new work (and the progress clock) until `resume()`. **Errors** become the
/// `Outcome`, which carries a `FleetReport`.
///
/// `run()` may be called once. The orchestrator and observers are held by
/// reference and must outlive the run. Use one strand.
template <Orchestrator O, Clock C = SteadyClock>
class Rolling {
public:
  /// Validates everything and throws `invalid_option` (naming field and value) on bad input.
  Rolling(O& orchestrator, Revision from, Revision to, RollingOptions options, C clock = C{})
      : orch_(orchestrator),
        from_(std::move(from)),
        to_(std::move(to)),
        options_(std::move(options)),
        clock_(std::move(clock)),
        ctx_("rolling", clock_, observers_),
        rng_(options_.retry.seed) {
    if (from_.id.empty()) throw invalid_option("from", "\"\"", "must not be empty");
    if (to_.id.empty()) throw invalid_option("to", "\"\"", "must not be empty");
    if (from_ == to_) throw invalid_option("to", detail::format("\"{}\"", to_.id), "must differ from the old revision");
    options_.validate();
    budgets_ = resolve_budgets(options_.desired, options_.max_surge, options_.max_unavailable);
  }

  Rolling(const Rolling&) = delete;
  Rolling& operator=(const Rolling&) = delete;

  /// Runs the update to its end and returns how it went. See the class comment.
  boost::asio::awaitable<Outcome> run() {
    if (started_) throw std::logic_error("Rolling::run() may be called only once");
    started_ = true;
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    ex_ = co_await boost::asio::this_coro::executor;
    detail::Notifier wake(ex_);
    wake_ = &wake;
    ctx_.begin(expected_events());
    ctx_.emit(EventKind::run_started, to_.id,
              detail::format("rolling update {} -> {}: desired {}, surge {} ({}), unavailable {} ({}), partition {}", from_,
                             to_, options_.desired, budgets_.surge, options_.max_surge.text(), budgets_.unavailable,
                             options_.max_unavailable.text(), options_.partition));
    control_.set_listener([this](Control::Request r, const std::string& detail) { on_request(r, detail); });

    Outcome out = co_await body();

    control_.set_listener({});
    state_.phase = RollingPhase::done;
    ctx_.emit(EventKind::phase_changed, to_string(RollingPhase::done));
    wake_ = nullptr;
    co_return ctx_.finish(std::move(out));
  }

  Control& control() noexcept { return control_; }
  ObserverList& observers() noexcept { return observers_; }
  const RollingState& state() const noexcept { return state_; }
  const RollingOptions& options() const noexcept { return options_; }
  /// `max_surge` and `max_unavailable` as instance counts for `desired`.
  const ResolvedBudgets& budgets() const noexcept { return budgets_; }

private:
  /// The events of an update that replaces `desired - partition` instances and
  /// nothing goes wrong: four per replacement (created, ready, and the old one's
  /// retiring and retired) and four for the run. The timeline is reserved for
  /// them (up to `RunContext::max_reserved_events`): doubling a 10,000-instance
  /// update's timeline held its old and new buffers at once, 16.5 of the
  /// update's 40.5 MB heap peak.
  std::size_t expected_events() const {
    const auto replaced = static_cast<std::size_t>(std::max<std::int64_t>(0, options_.desired - options_.partition));
    return 4 + 4 * replaced;
  }

  enum class MemberState { starting, warming, available, retiring, failed };
  struct Member {
    Instance instance;
    MemberState state = MemberState::starting;
  };
  /// A deadline in `ready_due_` or `warm_due_`.
  struct Due {
    TimePoint at;
    std::string id;
  };
  static constexpr bool watching = WatchesReadiness<O>;
  using Watch = typename detail::readiness_watch_of<O>::type;
  /// Makes the watch in place (a watch need not be movable).
  struct MakeWatch {
    O& o;
    operator Watch() const  // NOLINT: the conversion is the point
      requires WatchesReadiness<O>
    {
      return o.watch_readiness();
    }
  };
  /// Why a pass ended.
  struct PassResult {
    enum Kind { done, failed, aborted } kind = done;
    Error error{};
  };

  void on_request(Control::Request r, const std::string& detail) {
    switch (r) {
      case Control::Request::promote:
      case Control::Request::promote_full: ctx_.emit(EventKind::promote_requested, to_.id, detail); break;
      case Control::Request::abort: ctx_.emit(EventKind::abort_requested, to_.id, detail); break;
      case Control::Request::pause: ctx_.emit(EventKind::paused, to_.id, detail); break;
      case Control::Request::resume: ctx_.emit(EventKind::resumed, to_.id, detail); break;
    }
    if (wake_) wake_->notify_all();
  }

  void set_phase(RollingPhase p) {
    if (state_.phase == p) return;
    state_.phase = p;
    ctx_.emit(EventKind::phase_changed, to_string(p));
  }

  void progress() { last_progress_ = clock_.now(); }

  // ---- bookkeeping: counts are maintained incrementally, so each event costs
  // O(log n), not a scan of the fleet (10,000-instance updates stay cheap).

  bool is_target(const Member& m) const { return m.instance.revision == *target_; }

  void account(const std::string& id, const Member& m, int sign) {
    const bool target = is_target(m);
    switch (m.state) {
      case MemberState::available:
        available_ += sign;
        (target ? target_alive_ : others_alive_) += sign;
        if (sign > 0) (target ? retirable_targets_ : retirable_others_).insert(id);
        else (target ? retirable_targets_ : retirable_others_).erase(id);
        break;
      case MemberState::starting:
      case MemberState::warming:
        busy_ += sign;
        (target ? target_alive_ : others_alive_) += sign;
        break;
      case MemberState::retiring:
        busy_ += sign;
        retiring_ += sign;
        break;
      case MemberState::failed:
        busy_ += sign;
        break;
    }
  }
  void add_member(const Instance& inst, MemberState st) {
    auto [it, inserted] = members_.emplace(inst.id, Member{inst, st});
    if (!inserted) return;
    account(it->first, it->second, +1);
    queue_if_dead_weight(it->first, it->second);
  }
  void set_state(const std::string& id, MemberState st) {
    auto it = members_.find(id);
    if (it == members_.end()) return;
    account(id, it->second, -1);
    it->second.state = st;
    account(id, it->second, +1);
    queue_if_dead_weight(id, it->second);
  }
  void remove_member(const std::string& id) {
    auto it = members_.find(id);
    if (it == members_.end()) return;
    account(id, it->second, -1);
    members_.erase(it);
  }
  /// Failed instances, and others that never served, hold no capacity: they are retired at once.
  void queue_if_dead_weight(const std::string& id, const Member& m) {
    if ((m.state == MemberState::failed && !stuck_.contains(id)) || (!is_target(m) && m.state == MemberState::starting)) {
      dead_weight_.push_back(id);
    }
  }
  void clear_members() {
    members_.clear();
    retirable_others_.clear();
    retirable_targets_.clear();
    dead_weight_.clear();
    available_ = target_alive_ = others_alive_ = busy_ = retiring_ = 0;
  }

  /// The members in id order. `members_` is hashed for the lookups of every
  /// transition; the few walks whose order shows (which start-ups are re-checked
  /// first, which leftovers retire first, the fleet report) sort, once per pass.
  std::vector<const Member*> members_by_id() const {
    std::vector<const Member*> out;
    out.reserve(members_.size());
    for (const auto& kv : members_) out.push_back(&kv.second);
    std::sort(out.begin(), out.end(), [](const Member* a, const Member* b) { return a->instance.id < b->instance.id; });
    return out;
  }

  std::int64_t total() const { return static_cast<std::int64_t>(members_.size()) + pending_creates_; }
  std::int64_t available() const { return available_; }
  /// Target instances that exist or are being created, and are not going away.
  std::int64_t target_alive() const { return target_alive_ + pending_creates_; }
  std::int64_t others_alive() const { return others_alive_; }
  bool busy() const { return pending_creates_ > 0 || busy_ > 0; }
  void refresh_state() {
    state_.total = total();
    state_.available = available();
    state_.updated = target_ ? target_alive_ : 0;
  }

  // ---- orchestrator calls -------------------------------------------------------

  /// A call with `call_timeout` and `retry`; `what()` names it in errors. Not a
  /// coroutine itself (one frame fewer per orchestrator call); co_await the
  /// result at once. With a `scope` (a call made from one of this run's tasks),
  /// the attempts and their backoff run in one frame, and each attempt's timeout
  /// cancels the task's own thread instead of a child coroutine (see
  /// `detail::call_attempts`).
  template <class T, class What, class F>
  boost::asio::awaitable<result<T>> with_retry(What what, F make_call, const detail::TaskScope* scope = nullptr) {
    if (scope) {
      return detail::call_attempts<T>(*scope, clock_, options_.call_timeout, std::move(what), std::move(make_call), &options_.retry,
                                      &rng_);
    }
    return detail::retry(
        clock_, options_.retry, rng_,
        [this, what = std::move(what), make_call = std::move(make_call)] {
          return detail::call(clock_, options_.call_timeout, what, make_call());
        },
        [](int, const Error&, std::optional<Duration>) {});
  }

  /// Brings one instance of the target revision to available: creates it (unless
  /// `adopted`, an instance `list()` found that has not been seen serving), waits
  /// for it to be ready (within `ready_deadline`), then `min_ready`. One coroutine
  /// in its own task: a 10,000-instance update at 25% surge has 2,500 of them in
  /// flight, so every frame and thread per replacement shows in its peak memory.
  /// (Its bookkeeping is in plain functions: every local and temporary of a
  /// coroutine takes room in its frame for as long as the frame lives.)
  boost::asio::awaitable<void> bring_up(detail::TaskScope scope, Revision rev, std::optional<Instance> adopted) {
    if (!adopted) {
      auto created = co_await with_retry<Instance>([&] { return detail::format("orchestrator.create({})", rev); },
                                                   [&] { return orch_.create(rev); }, &scope);
      if (!record_create(rev, created)) co_return;
      if constexpr (watching) {
        start_watching(*created);  // the watch takes it from here: this coroutine ends
        co_return;
      }
      adopted.emplace(std::move(*created));
    }
    const Instance& inst = *adopted;
    if (wake_) wake_->notify_all();
    auto ready = co_await detail::call(
        scope, clock_, options_.ready_deadline, [&] { return detail::format("orchestrator.wait_ready({})", inst.id); },
        orch_.wait_ready(inst));
    if (!record_ready(inst, ready)) co_return;
    if (options_.min_ready > Duration::zero()) {
      co_await detail::sleep_for(clock_, options_.min_ready);
      if (!members_.contains(inst.id)) co_return;
    }
    record_available(inst);
  }

  /// `bring_up`'s create has returned: records the new instance, or the failure.
  /// Returns whether there is an instance to wait for.
  bool record_create(const Revision& rev, const result<Instance>& created) {
    --pending_creates_;
    if (!created) {
      note_failure(detail::format("create({})", rev), created.error());
      if (wake_) wake_->notify_all();
      return false;
    }
    ++state_.report.created;
    add_member(*created, MemberState::starting);
    ctx_.emit(EventKind::instance_created, created->id, detail::format("{} at {}", created->revision, created->endpoint));
    return true;
  }

  /// `bring_up`'s wait_ready has returned: false if the instance is gone or
  /// failed (recorded), true if it is ready (then warming, with a `min_ready`).
  bool record_ready(const Instance& inst, const result<void>& ready) {
    if (!members_.contains(inst.id)) return false;
    if (!ready) {
      set_state(inst.id, MemberState::failed);
      note_failure(inst.id, ready.error());  // names the call: "orchestrator.wait_ready(v2-0001) timed out after 5m"
      if (wake_) wake_->notify_all();
      return false;
    }
    if (options_.min_ready > Duration::zero()) set_state(inst.id, MemberState::warming);
    return true;
  }

  /// `bring_up`'s instance counts as available from now on.
  void record_available(const Instance& inst) {
    set_state(inst.id, MemberState::available);
    known_available_.insert(inst.id);
    progress();
    ctx_.emit(EventKind::instance_ready, inst.id,
              options_.min_ready > Duration::zero() ? detail::format("available (ready for {})", format_duration(options_.min_ready))
                                                    : std::string("available"));
    if (wake_) wake_->notify_all();
  }

  /// Starts retiring `id` (the orchestrator drains it first): it stops counting as
  /// available now, synchronously, so the budget arithmetic stays exact.
  void begin_retire(std::string id) {  // by value: the caller may pass an element of a set that set_state() erases
    const auto& m = members_.at(id);
    const bool was_failed = m.state == MemberState::failed;
    const bool was_old = !is_target(m);
    set_state(id, MemberState::retiring);
    ctx_.emit(EventKind::instance_retiring, id,
              was_failed ? std::string("failed instance")
              : was_old  ? detail::format("old instance ({})", m.instance.revision)
                         : std::string("surplus instance"));
    spawn([this, inst = m.instance, was_old](detail::TaskScope scope) { return retire_one(std::move(scope), inst, was_old); },
          false);
  }

  boost::asio::awaitable<void> retire_one(detail::TaskScope scope, Instance inst, bool was_old) {
    auto r = co_await with_retry<void>([&] { return detail::format("orchestrator.retire({})", inst.id); },
                                       [&] { return orch_.retire(inst); }, &scope);
    record_retire(inst, was_old, r);
  }

  /// `retire_one`'s retire has returned: records the retirement, or the failure.
  void record_retire(const Instance& inst, bool was_old, const result<void>& r) {
    if (!r) {
      // Still there, drained, in an unknown state: it no longer counts as serving.
      // It holds a place in the fleet until the next pass's list() shows it again;
      // then it is re-checked (the pass's revision) or retired again (any other).
      stuck_.insert(inst.id);
      known_available_.erase(inst.id);
      set_state(inst.id, MemberState::failed);
      note_failure(inst.id, r.error());
    } else {
      remove_member(inst.id);
      known_available_.erase(inst.id);
      ++state_.report.retired;
      if (was_old) progress();
      ctx_.emit(EventKind::instance_retired, inst.id, "");
    }
    if (wake_) wake_->notify_all();
  }

  void note_failure(const std::string& subject, const Error& e, std::string detail = {}) {
    ++failures_;
    ++state_.report.failed;
    last_failure_ = detail::format("{}: {}", subject, detail.empty() ? e.message : detail);
    ctx_.emit(EventKind::instance_failed, subject, detail.empty() ? e.message : std::move(detail), std::nullopt, e.code);
  }

  // ---- readiness through a ReadinessWatch (orchestrators that WatchesReadiness) --
  // (Constrained, so that an explicit instantiation for an orchestrator without
  // the capability leaves them out.)

  /// Waits for `inst` through the watch, with its ready deadline in `ready_due_`.
  /// The watch, its feed and the deadline task start with the first start-up of
  /// a pass (the tasks are started again, once stopped, by a later pass).
  void start_watching(const Instance& inst)
    requires watching
  {
    if (stopping_) return;
    if (!watch_) {
      watch_.emplace(MakeWatch{orch_});
      due_changed_.emplace(ex_);
      // With the run's notifier: if either ends other than by being stopped (a
      // bug), the main loop wakes and reap() rethrows it.
      feed_task_.start(ex_, feed_readiness(), wake_);
      due_task_.start(ex_, watch_due(), wake_);
    }
    watch_->add(inst);
    push_due(ready_due_, detail::add_saturating(clock_.now(), options_.ready_deadline), inst.id);
    if (wake_) wake_->notify_all();
  }

  /// Deadlines are pushed in the order they fall due (each is now plus the same
  /// duration), so a queue is a priority queue here; the deadline task sleeps
  /// until the earliest front and is woken only when a queue stops being empty.
  void push_due(std::deque<Due>& q, TimePoint at, const std::string& id)
    requires watching
  {
    const bool was_empty = q.empty();
    q.push_back(Due{at, id});
    if (was_empty) due_changed_->notify_all();
  }

  /// Takes the watch's reports as they come, for as long as the pass runs.
  boost::asio::awaitable<void> feed_readiness()
    requires watching
  {
    int failed_in_a_row = 0;
    for (;;) {
      std::optional<result<std::vector<ReadinessReport>>> got;
      try {
        auto reports = co_await watch_->next();
        got.emplace(std::move(reports));
      } catch (const std::exception&) {
        got.emplace(detail::thrown_error([] { return std::string("orchestrator.watch_readiness().next()"); }));
      }
      auto cs = co_await boost::asio::this_coro::cancellation_state;
      if (cs.cancelled() != boost::asio::cancellation_type::none) co_return;  // stopped with the pass
      if (*got) {
        failed_in_a_row = 0;
        watch_error_.clear();  // quoted only while the stream is broken
        for (const auto& r : **got) on_readiness(r);
        continue;
      }
      // The stream broke: the instances stay watched, their deadlines still run,
      // and a start-up that misses its deadline names this error.
      watch_error_ = got->error().message;
      co_await detail::sleep_for(clock_, options_.retry.delay(++failed_in_a_row, rng_));
    }
  }

  /// One report from the watch: the start-up it ends is recorded as `wait_ready`'s result would be.
  void on_readiness(const ReadinessReport& r)
    requires watching
  {
    auto it = members_.find(r.id);
    if (it == members_.end() || it->second.state != MemberState::starting || !is_target(it->second)) return;
    const Instance& inst = it->second.instance;  // stays valid: recording changes states, not the map
    if (!r.ready) {
      record_ready(inst, Error(r.ready.error().code, detail::format("orchestrator.watch_readiness({}): {}", r.id, r.ready.error().message)));
      return;
    }
    if (!record_ready(inst, result<void>{})) return;
    if (options_.min_ready > Duration::zero()) {
      push_due(warm_due_, detail::add_saturating(clock_.now(), options_.min_ready), r.id);
    } else {
      record_available(inst);
    }
  }

  /// Ends the start-ups whose ready deadline passed and the `min_ready` waits that are over.
  boost::asio::awaitable<void> watch_due()
    requires watching
  {
    for (;;) {
      const auto now = clock_.now();
      while (!ready_due_.empty() && ready_due_.front().at <= now) {
        const auto id = std::move(ready_due_.front().id);
        ready_due_.pop_front();
        ready_deadline_passed(id);
      }
      while (!warm_due_.empty() && warm_due_.front().at <= now) {
        const auto id = std::move(warm_due_.front().id);
        warm_due_.pop_front();
        auto it = members_.find(id);
        if (it != members_.end() && it->second.state == MemberState::warming) record_available(it->second.instance);
      }
      auto next = TimePoint::max();
      if (!ready_due_.empty()) next = ready_due_.front().at;
      if (!warm_due_.empty()) next = std::min(next, warm_due_.front().at);
      const auto why = co_await detail::wait_for_change(clock_, *due_changed_, next);
      if (why == detail::Wake::cancelled) co_return;
    }
  }

  void ready_deadline_passed(const std::string& id)
    requires watching
  {
    auto it = members_.find(id);
    if (it == members_.end() || it->second.state != MemberState::starting) return;  // reported in time
    watch_->remove(id);
    record_ready(it->second.instance,
                 Error(errc::timeout, detail::format("{} was not ready within {} (readiness watch){}", id,
                                                     format_duration(options_.ready_deadline),
                                                     watch_error_.empty() ? std::string()
                                                                          : "; the watch's last error: " + watch_error_)));
  }

  /// Stops the feed and the deadline task and drops the watch: the start-ups
  /// still waiting stay `starting`, for the caller to retire or re-check.
  boost::asio::awaitable<void> stop_watching()
    requires watching
  {
    if (!watch_) co_return;
    co_await feed_task_.stop();
    co_await due_task_.stop();
    rethrow_unless_aborted(feed_task_.error());  // a bug in the feed or the deadline task, not a stop
    rethrow_unless_aborted(due_task_.error());
    watch_.reset();
    due_changed_.reset();
    ready_due_.clear();
    warm_due_.clear();
    watch_error_.clear();
  }

  static void rethrow_unless_aborted(const std::exception_ptr& e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const boost::system::system_error& se) {
      if (se.code() != boost::asio::error::operation_aborted) throw;
    }
  }

  /// Starts `make(scope)` as one of this run's tasks.
  template <class F>
  void spawn(F make, bool cancel_on_abort) {
    auto it = tasks_.emplace(tasks_.end());
    it->cancel_on_abort = cancel_on_abort;
    it->task.start(ex_, std::move(make), wake_, [this, it] { finished_.push_back(it); });
  }

  /// Forgets finished tasks (only those: the fleet may have thousands in flight);
  /// rethrows a task's unexpected exception, which would be a bug.
  void reap() {
    auto done = std::move(finished_);
    finished_.clear();
    for (auto it : done) {
      auto e = it->task.error();
      tasks_.erase(it);
      if (e) std::rethrow_exception(e);
    }
    if constexpr (watching) {
      // The watch's tasks end only when stopped; anything else is a bug.
      if (watch_ && (feed_task_.done() || due_task_.done())) {
        rethrow_unless_aborted(feed_task_.error());
        rethrow_unless_aborted(due_task_.error());
        throw std::logic_error("Rolling: the readiness watch's feed or deadline task ended while the pass ran");
      }
    }
  }

  /// Stops every task: start-ups are cancelled, retirements run to their end.
  boost::asio::awaitable<void> stop_tasks() {
    // A create that completes while its task is being stopped does not start a
    // watch again: its instance stays `starting`, for the caller to retire or re-check.
    stopping_ = true;
    if constexpr (watching) co_await stop_watching();
    for (auto& t : tasks_) {
      if (t.cancel_on_abort) co_await t.task.stop();
    }
    for (auto& t : tasks_) {
      while (!t.task.done()) co_await detail::wait_for_change(clock_, *wake_, TimePoint::max());
    }
    tasks_.clear();
    finished_.clear();
    pending_creates_ = 0;
    stopping_ = false;
  }

  /// Retires every instance that is not serving (failed, or whose start-up was
  /// cancelled) and waits for all retirements: nothing created is left behind.
  boost::asio::awaitable<void> retire_leftovers() {
    co_await stop_tasks();
    std::vector<std::string> leftovers;
    for (const Member* m : members_by_id()) {
      const auto& id = m->instance.id;
      if (m->state != MemberState::available && m->state != MemberState::retiring && !stuck_.contains(id)) leftovers.push_back(id);
    }
    dead_weight_.clear();
    for (const auto& id : leftovers) begin_retire(id);
    co_await stop_tasks();
  }

  // ---- one pass of the algorithm ---------------------------------------------

  /// Reconciles with `list()`: target instances we have not seen serving are
  /// re-checked, other instances we have not seen serving are retired first.
  boost::asio::awaitable<std::optional<Error>> reconcile() {
    auto listed = co_await with_retry<std::vector<Instance>>([] { return std::string("orchestrator.list"); }, [&] { return orch_.list(); });
    if (!listed) co_return listed.error();
    clear_members();
    stuck_.clear();  // a new pass tries again what an earlier one could not retire
    for (const auto& inst : *listed) {
      auto st = MemberState::available;
      if (!known_available_.contains(inst.id)) {
        if (first_list_ && !(inst.revision == to_)) {
          known_available_.insert(inst.id);  // the fleet we were handed is serving
        } else {
          st = MemberState::starting;
        }
      }
      add_member(inst, st);
    }
    first_list_ = false;
    for (const Member* m : members_by_id()) {
      if (m->state == MemberState::starting && is_target(*m)) {
        if constexpr (watching) {
          start_watching(m->instance);
        } else {
          spawn([this, inst = m->instance](detail::TaskScope scope) { return bring_up(std::move(scope), Revision{}, inst); }, true);
        }
      }
    }
    co_return std::nullopt;
  }

  /// Drives the fleet to `desired` instances: `keep_others` (at most) stay on other
  /// revisions, the rest run `*target_`. `abortable` passes stop on abort;
  /// rollback passes do not.
  boost::asio::awaitable<PassResult> pass(std::int64_t keep_others, bool abortable) {
    failures_ = 0;
    last_failure_.clear();
    progress();
    if (auto err = co_await reconcile()) co_return PassResult{PassResult::failed, *err};
    detail::Task deadline_watch;
    deadline_watch.start(ex_, watch_progress());
    auto r = co_await drive(keep_others, abortable);
    co_await deadline_watch.stop();
    co_return r;
  }

  boost::asio::awaitable<PassResult> drive(std::int64_t keep_others, bool abortable) {
    keep_others = std::min(keep_others, others_alive());  // a partition cannot keep what is not there
    kept_ = keep_others;
    const std::int64_t want_target = options_.desired - keep_others;
    const std::int64_t floor = options_.desired - budgets_.unavailable;
    const std::int64_t ceiling = options_.desired + budgets_.surge;
    bool was_held = false;
    auto converged = [&] { return others_alive() <= keep_others && target_alive() == want_target && !busy(); };
    for (;;) {
      reap();
      refresh_state();
      // Converged first: an abort that arrives once the pass has nothing left to do
      // (found by the abort sweep test) must not undo a finished update.
      if (converged()) co_return PassResult{PassResult::done, {}};
      if (abortable && control_.abort_requested()) co_return PassResult{PassResult::aborted, {}};
      // A rollback pass goes back to a revision that was serving, and stopping it
      // half-way is the worst place to stop: it keeps replacing failed start-ups
      // and gives up only at the progress deadline.
      if (abortable && failures_ >= options_.max_failed_instances) {
        co_return PassResult{PassResult::failed,
                             Error(errc::too_many_failures, detail::format("{} instances of {} failed (max_failed_instances {}): {}",
                                                                           failures_, *target_, options_.max_failed_instances,
                                                                           last_failure_))};
      }
      const bool held = abortable && control_.paused();
      if (held || was_held) {
        progress();  // a paused update makes no progress on purpose; the clock restarts on resume
      } else if (clock_.now() - last_progress_ >= options_.progress_deadline) {
        co_return PassResult{PassResult::failed,
                             Error(errc::progress_deadline,
                                   detail::format("no instance became available or was retired for {} (total {}, available {}, "
                                                  "{} of {} on {}){}",
                                                  format_duration(options_.progress_deadline), total(), available(),
                                                  target_alive(), want_target, *target_,
                                                  last_failure_.empty() ? std::string() : "; last failure: " + last_failure_))};
      }
      was_held = held;
      if (!held) {
        // Failed instances, and others that never served, hold no capacity: retire them at once.
        auto dead = std::move(dead_weight_);
        dead_weight_.clear();
        for (const auto& id : dead) {
          auto it = members_.find(id);
          if (it == members_.end()) continue;
          const auto& m = it->second;
          if ((m.state == MemberState::failed && !stuck_.contains(id)) || (!is_target(m) && m.state == MemberState::starting)) {
            begin_retire(id);
          }
        }
        // Scale up: start a replacement whenever the surge budget allows, `burst` at a time.
        while (target_alive() < want_target && total() < ceiling && pending_creates_ < options_.burst) {
          ++pending_creates_;
          spawn([this, rev = *target_](detail::TaskScope scope) { return bring_up(std::move(scope), rev, std::nullopt); }, true);
        }
        // Scale down: retire an old instance whenever availability allows, highest id
        // first (StatefulSet keeps the lowest ordinals when partitioned).
        while (others_alive() > keep_others && !retirable_others_.empty() && available() - 1 >= floor && retiring_ < options_.burst) {
          begin_retire(*retirable_others_.rbegin());
        }
        // Surplus target instances (found by list) go too, under the same rule.
        while (target_alive() > want_target && !retirable_targets_.empty() && available() - 1 >= floor && retiring_ < options_.burst) {
          begin_retire(*retirable_targets_.rbegin());
        }
      }
      refresh_state();
      if (converged()) co_return PassResult{PassResult::done, {}};
      // Wait for the next change. The progress deadline is watched by a separate
      // task (see watch_progress), so this wait is a plain notifier wait.
      auto [ec] = co_await wake_->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) control_.abort("run() was cancelled by its caller");
    }
  }

  /// Sleeps until the progress deadline and wakes the main loop then. Progress
  /// moves the deadline later; the task notices when it wakes and sleeps again,
  /// so progress costs no timer operations.
  boost::asio::awaitable<void> watch_progress() {
    for (;;) {
      const auto deadline = detail::add_saturating(last_progress_, options_.progress_deadline);
      if (clock_.now() < deadline) {
        co_await detail::sleep_until(clock_, deadline);
        continue;
      }
      if (wake_) wake_->notify_all();
      co_await detail::sleep_until(clock_, detail::add_saturating(clock_.now(), options_.progress_deadline));
    }
  }

  boost::asio::awaitable<Outcome> finish(Status status, Error why, const Revision& active) {
    Outcome o;
    o.status = status;
    o.code = why.code;
    o.reason = why.message;
    o.active = active.id;
    auto listed = co_await with_retry<std::vector<Instance>>([] { return std::string("orchestrator.list"); }, [&] { return orch_.list(); });
    // The counts, and one copy of the fleet: at 10,000 instances it is about a
    // megabyte, and the copies made here set the run's peak memory.
    o.fleet.emplace();
    o.fleet->created = state_.report.created;
    o.fleet->retired = state_.report.retired;
    o.fleet->failed = state_.report.failed;
    if (listed) {
      o.fleet->fleet = std::move(*listed);
    } else {
      // The fleet as this run last knew it (every create and retire since the last list).
      for (const Member* m : members_by_id()) o.fleet->fleet.push_back(m->instance);
      o.reason += detail::format("; the fleet shown is this run's own record, because the final {}", listed.error().message);
    }
    co_return o;
  }

  boost::asio::awaitable<Outcome> body() {
    // Forward.
    target_ = &to_;
    set_phase(RollingPhase::rolling_forward);
    PassResult fwd;
    for (;;) {
      fwd = co_await pass(options_.partition, true);
      if (fwd.kind != PassResult::failed || options_.on_failure == OnFailure::rollback) break;
      // on_failure = pause: hold until resume (try again) or abort (roll back).
      co_await retire_leftovers();
      set_phase(RollingPhase::paused);
      control_.pause(detail::format("update failed, holding until resume() or abort(): {}", fwd.error.message));
      while (control_.paused() && !control_.abort_requested()) {
        const auto why = co_await detail::wait_for_change(clock_, *wake_, TimePoint::max());
        if (why == detail::Wake::cancelled) control_.abort("run() was cancelled by its caller");
      }
      if (control_.abort_requested()) {
        fwd = PassResult{PassResult::aborted, {}};
        break;
      }
      set_phase(RollingPhase::rolling_forward);
    }
    co_await stop_tasks();
    if (fwd.kind == PassResult::done) {
      const auto reason = kept_ > 0 ? detail::format("{} of {} instances on {}, {} left on {} (partition)",
                                                     options_.desired - kept_, options_.desired, to_, kept_, from_)
                                    : detail::format("all {} instances on {}", options_.desired, to_);
      co_return co_await finish(Status::promoted, Error(error_code{}, reason), to_);
    }

    // Back to the old revision, under the same budgets; not cancellable.
    const Error why = fwd.kind == PassResult::aborted
                          ? Error(errc::aborted, detail::format("aborted: {}", control_.abort_reason()))
                          : fwd.error;
    set_phase(RollingPhase::rolling_back);
    ctx_.emit(EventKind::rollback_started, from_.id, why.message, std::nullopt, why.code);
    target_ = &from_;
    const auto back = co_await pass(0, false);
    co_await stop_tasks();
    if (back.kind == PassResult::done) {
      co_return co_await finish(fwd.kind == PassResult::aborted ? Status::aborted : Status::rolled_back,
                                Error(why.code, detail::format("{}; rolled back to {}", why.message, from_)), from_);
    }
    co_await retire_leftovers();
    co_return co_await finish(Status::failed,
                              Error(errc::rollback_failed, detail::format("{}; rolling back to {} failed too: {}", why.message,
                                                                          from_, back.error.message)),
                              Revision{});
  }

  struct TaskEntry {
    detail::Task task;
    bool cancel_on_abort = true;
  };

  O& orch_;
  Revision from_;
  Revision to_;
  RollingOptions options_;
  C clock_;
  ObserverList observers_;
  detail::RunContext<C> ctx_;
  Control control_;
  JitterEngine rng_;
  ResolvedBudgets budgets_;
  RollingState state_;
  boost::asio::any_io_executor ex_;
  detail::Notifier* wake_ = nullptr;
  const Revision* target_ = nullptr;
  std::unordered_map<std::string, Member> members_;  // by id; hashed: looked up at every transition
  std::set<std::string> retirable_others_;   // available, other revision: scale-down candidates
  std::set<std::string> retirable_targets_;  // available, target revision: surplus candidates
  std::vector<std::string> dead_weight_;     // to retire at once
  std::int64_t available_ = 0;
  std::int64_t target_alive_ = 0;
  std::int64_t others_alive_ = 0;
  std::int64_t busy_ = 0;
  std::int64_t retiring_ = 0;  // members being retired
  // Membership tests only, never iterated: hashed, so the 10,000-instance
  // fleet's lookups are not a tree walk of string compares each.
  std::unordered_set<std::string> known_available_;
  std::unordered_set<std::string> stuck_;
  std::list<TaskEntry> tasks_;
  std::vector<typename std::list<TaskEntry>::iterator> finished_;
  std::string last_failure_;
  // With a ReadinessWatch (empty otherwise): the watch, its feed, the deadline task and its queues.
  std::optional<Watch> watch_;
  std::optional<detail::Notifier> due_changed_;
  detail::Task feed_task_;
  detail::Task due_task_;
  std::deque<Due> ready_due_;  // ready deadlines of the start-ups being watched
  std::deque<Due> warm_due_;   // ends of `min_ready` for the ready ones
  std::string watch_error_;    // the watch's last error, quoted when a start-up misses its deadline
  std::int64_t pending_creates_ = 0;
  std::int64_t failures_ = 0;
  std::int64_t kept_ = 0;
  TimePoint last_progress_{};
  bool first_list_ = true;
  bool started_ = false;
  bool stopping_ = false;  // stop_tasks() is running
};

}  // namespace rollout

/// Formats as `25%` or `3`.
template <>
struct fmt::formatter<rollout::Budget> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Budget& b, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(b.text(), ctx);
  }
};

/// Formats as `rolling_forward`.
template <>
struct fmt::formatter<rollout::RollingPhase> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::RollingPhase p, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(p), ctx);
  }
};

/// Formats as `rolling_forward: total 11, available 9, updated 4`.
template <>
struct fmt::formatter<rollout::RollingState> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::RollingState& s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(
        rollout::detail::format("{}: total {}, available {}, updated {}", rollout::to_string(s.phase), s.total, s.available, s.updated), ctx);
  }
};
