#pragma once

/// @file
/// `rollout::Event`, the `Observer` hook and `ObserverList`.

#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rollout {

/// What happened. Every strategy reports the same kinds, so one observer (a log,
/// a webhook, an invariant checker) understands all of them.
enum class EventKind {
  run_started,          ///< `run()` began; `detail` names the from/to revisions.
  phase_changed,        ///< The strategy entered a new phase; `subject` is the phase.
  instance_ready,       ///< An instance passed `success_threshold` consecutive probes (again).
  probe_failed,         ///< One probe of `subject` failed; `detail` says why.
  instance_unhealthy,   ///< `subject` crossed `failure_threshold` consecutive failed probes.
  check_started,        ///< A user check or an analysis began; `subject` names it.
  check_passed,         ///< ... and passed.
  check_failed,         ///< ... and failed.
  check_inconclusive,   ///< ... and was inconclusive.
  awaiting_promotion,   ///< The run waits for `control().promote()` (or the auto-promote timer).
  promote_requested,    ///< `promote()` or `promote_full()` was called.
  abort_requested,      ///< `abort()` was called, or the caller cancelled `run()`.
  paused,               ///< The run paused (by request or because analysis was inconclusive).
  resumed,              ///< The run resumed.
  traffic_applied,      ///< The load balancer confirmed `split` (read back and verified).
  lb_error,             ///< A load balancer call failed; `error` says how. It may be retried.
  step_started,         ///< A plan step began; `subject` is the step.
  step_completed,       ///< A plan step finished.
  metric_result,        ///< One metric measurement; `subject` is the metric, `detail` the value and verdict.
  instance_created,     ///< An orchestrator created `subject`.
  instance_retiring,    ///< Retirement of `subject` began: it no longer counts as available.
  instance_retired,     ///< An orchestrator retired `subject`.
  instance_failed,      ///< `subject` failed to start or crashed.
  rollback_started,     ///< The run decided to go back to the previous state; `detail` says why.
  releasable,           ///< `subject` (an environment) gets no traffic and may now be scaled down.
  run_finished,         ///< `run()` is about to return; `detail` is the outcome.
};

/// One entry of a rollout's timeline.
///
/// `at` is measured from the start of the run on the strategy's clock, so it is
/// virtual time under the simulated clock and identical on every run.
struct Event {
  Duration at{};                      ///< Time since `run()` started.
  EventKind kind = EventKind::run_started;
  std::string strategy;               ///< `blue_green`, `canary` or `rolling`.
  std::string subject;                ///< Instance id, environment, metric or phase; may be empty.
  std::string detail;                 ///< A human sentence.
  std::optional<TrafficSplit> split;  ///< For traffic events: the split concerned.
  error_code error;                   ///< For failures: the error.
};

namespace detail {

template <Clock C>
class RunContext;

/// `Timeline`'s class. A template only for compile time: g++ instantiates what
/// the inline members of a plain class use in every TU that includes it, used
/// or not, and this one's took the umbrella header past a front-end garbage
/// collection (issue 9: 8.14 G -> 9.04 G instructions).
template <class>
class BasicTimeline {
public:
  class const_iterator;
  using iterator = const_iterator;
  using value_type = Event;
  using size_type = std::size_t;

  BasicTimeline() = default;
  /// The events `events`, in order.
  BasicTimeline(std::initializer_list<Event> events) {
    reserve(events.size());
    for (const auto& e : events) push_back(e);
  }

  /// Appends a copy of `e`.
  void push_back(const Event& e) { append(e, std::optional<TrafficSplit>(e.split)); }
  /// Appends `e`, taking its split.
  void push_back(Event&& e) { append(e, std::move(e.split)); }

  /// Reserves room for `events` events and `text_bytes` bytes of subject and
  /// detail text, so that a run that knows its size fills one buffer of each.
  void reserve(std::size_t events, std::size_t text_bytes = 0) {
    records_.reserve(events);
    text_.reserve(text_bytes);
  }
  /// Forgets every event; keeps the buffers.
  void clear() noexcept {
    records_.clear();
    text_.clear();
    extras_.clear();
    strategies_.clear();
    last_strategy_ = 0;
  }

  std::size_t size() const noexcept { return records_.size(); }
  bool empty() const noexcept { return records_.empty(); }
  /// How many events fit before the record buffer grows.
  std::size_t capacity() const noexcept { return records_.capacity(); }
  /// The heap bytes this timeline holds: its buffers' capacity, strategy names,
  /// and the splits' shares (what a run's explanation of itself costs).
  std::size_t memory_bytes() const noexcept {
    const auto heap = [](const std::string& s) { return s.capacity() > 15 ? s.capacity() + 1 : 0; };
    std::size_t n = records_.capacity() * sizeof(Record) + text_.capacity() + extras_.capacity() * sizeof(Extra) +
                    strategies_.capacity() * sizeof(std::string);
    for (const auto& s : strategies_) n += heap(s);
    for (const auto& x : extras_) {
      if (!x.split) continue;
      n += x.split->shares().capacity() * sizeof(TrafficSplit::Share);
      for (const auto& sh : x.split->shares()) n += heap(sh.group);
    }
    return n;
  }

  /// The `i`-th event (`i < size()`), rebuilt from its record.
  Event operator[](std::size_t i) const {
    const Record& r = records_[i];
    Event e;
    e.at = r.at;
    e.kind = static_cast<EventKind>(r.kind);
    e.strategy = strategies_[r.strategy];
    e.subject.assign(text_.data() + r.text, r.subject_size);
    e.detail.assign(text_.data() + r.text + r.subject_size, r.detail_size);
    if (r.extra != no_extra) {
      e.split = extras_[r.extra].split;
      e.error = extras_[r.extra].error;
    }
    return e;
  }
  Event front() const { return (*this)[0]; }
  Event back() const { return (*this)[size() - 1]; }

  const_iterator begin() const noexcept { return const_iterator(this, 0); }
  const_iterator end() const noexcept { return const_iterator(this, size()); }

private:
  template <Clock C>
  friend class RunContext;
  static constexpr std::uint32_t no_extra = ~std::uint32_t{0};

  /// One event; its subject and then its detail start at `text` in `text_`.
  struct Record {
    Duration at{};
    std::size_t text = 0;
    std::uint32_t subject_size = 0;
    std::uint32_t detail_size = 0;
    std::uint32_t extra = no_extra;  ///< Index into `extras_`, if the event has a split or an error.
    std::uint16_t strategy = 0;      ///< Index into `strategies_`.
    std::uint8_t kind = 0;           ///< The `EventKind` (26 of them).
  };
  static_assert(sizeof(Record) <= 32);
  static_assert(static_cast<int>(EventKind::run_finished) < 256, "an EventKind must fit Record::kind");
  struct Extra {
    std::optional<TrafficSplit> split;
    error_code error;
  };

  // Every check comes before the first change, so a throw leaves the timeline as it was.
  void append(const Event& e, std::optional<TrafficSplit>&& split) {
    append(e.at, e.kind, e.strategy, e.subject, e.detail, std::move(split), e.error);
  }
  // For `RunContext::emit` with no observer: the event's parts, no `Event` built.
  void append(Duration at, EventKind kind, const std::string& strategy_name, std::string_view subject, std::string_view detail,
              std::optional<TrafficSplit>&& split, error_code error) {
    constexpr std::size_t max32 = ~std::uint32_t{0};
    if (subject.size() > max32 || detail.size() > max32) {
      throw std::length_error(rollout::detail::format(
          "rollout::Timeline: an event's subject ({} bytes) or detail ({} bytes) is over {} bytes", subject.size(), detail.size(), max32));
    }
    std::size_t strategy = strategies_.size();
    if (last_strategy_ < strategies_.size() && strategies_[last_strategy_] == strategy_name) {
      strategy = last_strategy_;
    } else {
      strategy = static_cast<std::size_t>(std::find(strategies_.begin(), strategies_.end(), strategy_name) - strategies_.begin());
      if (strategy == strategies_.size() && strategy > 0xFFFE) {
        throw std::length_error(rollout::detail::format(
            "rollout::Timeline: strategy name \"{}\" would be the 65,536th; a timeline holds 65,535", strategy_name.substr(0, 64)));
      }
    }
    const bool extra = split.has_value() || error;
    if (extra && extras_.size() >= max32) {
      throw std::length_error(rollout::detail::format("rollout::Timeline: {} events with a split or an error is the most it holds", max32));
    }
    // Reserve everything first: the appends below cannot throw, so a failed
    // allocation adds nothing.
    if (records_.size() == records_.capacity()) records_.reserve(std::max<std::size_t>(8, 2 * records_.size()));
    const std::size_t text_size = text_.size() + subject.size() + detail.size();
    if (text_size > text_.capacity()) text_.reserve(std::max({std::size_t{256}, 2 * text_.capacity(), text_size}));
    if (extra && extras_.size() == extras_.capacity()) extras_.reserve(std::max<std::size_t>(4, 2 * extras_.size()));
    if (strategy == strategies_.size()) strategies_.push_back(strategy_name);  // the only step left that may throw
    last_strategy_ = strategy;
    Record r;
    r.at = at;
    r.kind = static_cast<std::uint8_t>(kind);
    r.strategy = static_cast<std::uint16_t>(strategy);
    r.text = text_.size();
    r.subject_size = static_cast<std::uint32_t>(subject.size());
    r.detail_size = static_cast<std::uint32_t>(detail.size());
    text_.insert(text_.end(), subject.begin(), subject.end());  // within the capacity reserved above
    text_.insert(text_.end(), detail.begin(), detail.end());
    if (extra) {
      r.extra = static_cast<std::uint32_t>(extras_.size());
      extras_.push_back(Extra{std::move(split), error});
    }
    records_.push_back(r);
  }

  std::vector<Record> records_;
  std::vector<char> text_;  // every event's subject, then detail, back to back
  std::vector<Extra> extras_;
  std::vector<std::string> strategies_;
  std::size_t last_strategy_ = 0;
};

/// `Timeline`'s iterator: random access, by value (see `Timeline`). Written
/// here rather than with Boost.STLInterfaces' `proxy_iterator_interface` to keep
/// that library out of every TU of the umbrella header (compile time, issue 9).
template <class T>
class BasicTimeline<T>::const_iterator {
public:
  using iterator_concept = std::random_access_iterator_tag;
  using iterator_category = std::input_iterator_tag;
  using value_type = Event;
  using difference_type = std::ptrdiff_t;
  using reference = Event;
  using pointer = void;

  /// What `it->member` reads: the event, held for the expression.
  struct arrow {
    Event e;
    const Event* operator->() const noexcept { return &e; }
  };

  const_iterator() = default;
  Event operator*() const { return (*t_)[i_]; }
  arrow operator->() const { return arrow{**this}; }
  Event operator[](difference_type n) const { return (*t_)[static_cast<std::size_t>(static_cast<difference_type>(i_) + n)]; }
  const_iterator& operator++() noexcept { ++i_; return *this; }
  const_iterator operator++(int) noexcept { auto c = *this; ++i_; return c; }
  const_iterator& operator--() noexcept { --i_; return *this; }
  const_iterator operator--(int) noexcept { auto c = *this; --i_; return c; }
  const_iterator& operator+=(difference_type n) noexcept { i_ = static_cast<std::size_t>(static_cast<difference_type>(i_) + n); return *this; }
  const_iterator& operator-=(difference_type n) noexcept { return *this += -n; }
  friend const_iterator operator+(const_iterator it, difference_type n) noexcept { return it += n; }
  friend const_iterator operator+(difference_type n, const_iterator it) noexcept { return it += n; }
  friend const_iterator operator-(const_iterator it, difference_type n) noexcept { return it -= n; }
  friend difference_type operator-(const const_iterator& a, const const_iterator& b) noexcept {
    return static_cast<difference_type>(a.i_) - static_cast<difference_type>(b.i_);
  }
  friend bool operator==(const const_iterator& a, const const_iterator& b) noexcept { return a.i_ == b.i_; }
  friend auto operator<=>(const const_iterator& a, const const_iterator& b) noexcept { return a.i_ <=> b.i_; }

private:
  friend class BasicTimeline;
  const_iterator(const BasicTimeline* t, std::size_t i) noexcept : t_(t), i_(i) {}
  const BasicTimeline* t_ = nullptr;
  std::size_t i_ = 0;
};

}  // namespace detail

/// A run's events, in order (`Outcome::timeline`), stored compactly: one 32-byte
/// record per event, the events' subject and detail text in one buffer, each
/// strategy name once, and a split or error code only for the events that
/// carry one. A `std::vector<Event>` took 168 bytes per event plus a heap block
/// for each detail longer than 15 characters; a 10,000-instance rolling update
/// keeps 40,000 events, and each of 1,000 concurrent canaries about 22.
///
/// Reading gives `Event` values: `t[i]`, `front()`, `back()` and iteration
/// rebuild each event from its record (a copy; keep it if it is read twice).
/// The iterators are C++20 random-access iterators whose reference is that
/// value (`std::ranges` algorithms take them; the classic ones see input
/// iterators). Appending never invalidates an event already read, and throws
/// `std::length_error` only past 4 GiB of one subject or detail, 65,535
/// distinct strategy names, or 4 G events that carry a split or an error; the
/// message gives the sizes or the name refused. That and a failed allocation
/// leave the timeline as it was. It has no asynchronous operation, so cancellation does not apply;
/// like a `std::vector`, one thread at a time may change it.
using Timeline = detail::BasicTimeline<void>;

/// The name of an event kind, e.g. `traffic_applied`.
inline const char* to_string(EventKind k) noexcept {
  switch (k) {
    case EventKind::run_started: return "run_started";
    case EventKind::phase_changed: return "phase_changed";
    case EventKind::instance_ready: return "instance_ready";
    case EventKind::probe_failed: return "probe_failed";
    case EventKind::instance_unhealthy: return "instance_unhealthy";
    case EventKind::check_started: return "check_started";
    case EventKind::check_passed: return "check_passed";
    case EventKind::check_failed: return "check_failed";
    case EventKind::check_inconclusive: return "check_inconclusive";
    case EventKind::awaiting_promotion: return "awaiting_promotion";
    case EventKind::promote_requested: return "promote_requested";
    case EventKind::abort_requested: return "abort_requested";
    case EventKind::paused: return "paused";
    case EventKind::resumed: return "resumed";
    case EventKind::traffic_applied: return "traffic_applied";
    case EventKind::lb_error: return "lb_error";
    case EventKind::step_started: return "step_started";
    case EventKind::step_completed: return "step_completed";
    case EventKind::metric_result: return "metric_result";
    case EventKind::instance_created: return "instance_created";
    case EventKind::instance_retiring: return "instance_retiring";
    case EventKind::instance_retired: return "instance_retired";
    case EventKind::instance_failed: return "instance_failed";
    case EventKind::rollback_started: return "rollback_started";
    case EventKind::releasable: return "releasable";
    case EventKind::run_finished: return "run_finished";
  }
  return "unknown";
}

/// A hook that sees every event of a run as it happens.
///
/// | expression | type | semantics |
/// |---|---|---|
/// | `o.on_event(e)` | any | Called synchronously on the strategy's executor for each event `e` (`const Event&`). |
///
/// `on_event` runs inside the strategy, so it must be quick and must not block:
/// hand slow work (HTTP, disk) to a queue. It must not throw; an exception thrown
/// from it propagates out of `run()`. Cancellation does not apply: events are
/// delivered even while a run is being aborted.
///
/// @code
/// struct PrintObserver {
///   void on_event(const rollout::Event& e) { fmt::print("{}\n", e); }
/// };
/// @endcode
template <class O>
concept Observer = requires(O& o, const Event& e) { o.on_event(e); };

/// The observers attached to one strategy. It stores references: each observer
/// must outlive the runs it watches.
class ObserverList {
public:
  /// Attaches `o` by reference.
  template <Observer O>
  void add(O& o) {
    sinks_.emplace_back([&o](const Event& e) { o.on_event(e); });
  }
  /// Attaches a callable taking `const Event&`.
  template <class F>
    requires std::invocable<F&, const Event&> && (!Observer<F>)
  void add(F f) {
    sinks_.emplace_back(std::move(f));
  }
  /// Delivers `e` to every observer, in the order they were added.
  void on_event(const Event& e) const {
    for (const auto& s : sinks_) s(e);
  }
  bool empty() const noexcept { return sinks_.empty(); }

private:
  std::vector<std::function<void(const Event&)>> sinks_;
};

static_assert(Observer<ObserverList>);

}  // namespace rollout

/// Formats as `traffic_applied`.
template <>
struct fmt::formatter<rollout::EventKind> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::EventKind k, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::to_string(k), ctx);
  }
};

/// Formats as `+1m blue_green traffic_applied green: detail {blue: 0%, green: 100%} [error]`.
template <>
struct fmt::formatter<rollout::Event> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Event& e, FormatContext& ctx) const {
    std::string text = rollout::detail::format("+{} {} {}", rollout::format_duration(e.at), e.strategy, e.kind);
    if (!e.subject.empty()) text += rollout::detail::format(" {}", e.subject);
    if (!e.detail.empty()) text += rollout::detail::format(": {}", e.detail);
    if (e.split) text += rollout::detail::format(" {}", *e.split);
    if (e.error) text += rollout::detail::format(" [{}]", e.error.message());
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
