#pragma once

/// @file
/// `rollout::CounterSource`: in-process request metrics per revision, recorded
/// lock-free by the service and queried by the canary analysis (opt-in header).

#include <rollout/concepts.hpp>
#include <rollout/core/clock.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/core/types.hpp>
#include <rollout/detail/format.hpp>

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace rollout {

/// Options of a `CounterSource`.
struct CounterSourceOptions {
  Duration bucket{std::chrono::seconds(1)};  ///< Resolution of the request and error counts (> 0).
  std::size_t buckets = 600;                 ///< Buckets kept per revision: the longest window (10 min at 1 s).
  std::size_t latency_samples = 8192;        ///< Latencies kept per revision (a ring; the newest win).

  void validate() const {
    require_duration("bucket", bucket, DurationRule::positive);
    // The upper bounds keep a mistyped value from reserving gigabytes per revision.
    if (buckets < 2 || buckets > 1'000'000) throw invalid_option("buckets", detail::format("{}", buckets), "must be within 2..1000000");
    if (latency_samples < 1 || latency_samples > 10'000'000) {
      throw invalid_option("latency_samples", detail::format("{}", latency_samples), "must be within 1..10000000");
    }
  }
};

/// Request outcomes and latencies recorded by the embedding service, per
/// revision, in memory; a `MetricsSource` over a sliding window. It lets a canary
/// react in well under a second without any external system.
///
/// `record(revision, ok, latency)` is lock-free and safe from any thread: counts
/// live in per-revision rings of time buckets, each bucket one 64-bit word
/// (epoch | requests | errors) updated with one compare-and-swap, and latencies in
/// a ring of 64-bit words (time | microseconds). The first record of a new
/// revision takes a mutex once to create its series (or call `track()` first).
///
/// Queries (`MetricQuery::expr`), over `MetricQuery::window` ending now:
/// | expr | value | samples (`Want::samples`) |
/// |---|---|---|
/// | `error_rate` | errors / requests | the error rate of each bucket that saw requests |
/// | `request_rate` | requests per second | requests of each bucket |
/// | `requests` | request count | - |
/// | `latency_p<q>`, e.g. `latency_p99`, `latency_p50` | that quantile, in ms | every latency, in ms |
/// A window without requests (or latencies) is `NoData`, never 0. An unknown
/// expression is `errc::invalid_option`; a window longer than the buckets kept is
/// `errc::invalid_option` too. A bucket is up to 16.7 million requests.
///
/// `C` is the clock used to stamp records and windows: `SteadyClock` in a
/// service; `testing::SimClock` in single-threaded tests.
template <Clock C = SteadyClock>
class CounterSource {
public:
  explicit CounterSource(CounterSourceOptions options = {}, C clock = C{}) : opts_(options), clock_(std::move(clock)) {
    opts_.validate();
    index_.store(new Index{}, std::memory_order_release);
  }
  ~CounterSource() { delete index_.load(); }
  CounterSource(const CounterSource&) = delete;
  CounterSource& operator=(const CounterSource&) = delete;

  /// Creates the series of `revision` now, so that `record` never takes the mutex.
  void track(const Revision& revision) { series(revision.id); }

  /// Records one request of `revision`. Lock-free once the revision is tracked.
  void record(const Revision& revision, bool ok, Duration latency) noexcept {
    Series& s = series(revision.id);
    const std::uint64_t epoch = epoch_now();
    auto& word = s.buckets[static_cast<std::size_t>(epoch % opts_.buckets)];
    std::uint64_t old = word.load(std::memory_order_relaxed);
    for (;;) {
      std::uint64_t requests = 0, errors = 0;
      if ((old >> 48) == (epoch & 0xffff)) {
        requests = (old >> 24) & 0xffffff;
        errors = old & 0xffffff;
      }
      requests = std::min<std::uint64_t>(requests + 1, 0xffffff);
      errors = std::min<std::uint64_t>(errors + (ok ? 0 : 1), 0xffffff);
      const std::uint64_t next = ((epoch & 0xffff) << 48) | (requests << 24) | errors;
      if (word.compare_exchange_weak(old, next, std::memory_order_relaxed)) break;
    }
    const auto slot = s.next_latency.fetch_add(1, std::memory_order_relaxed) % s.latencies.size();
    const auto us = static_cast<std::uint64_t>(std::clamp<std::int64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(latency).count(), 0, 0xffffffff));
    s.latencies[slot].store((stamp_now() << 32) | us, std::memory_order_relaxed);
  }

  boost::asio::awaitable<result<MetricValue>> query(const MetricQuery& q, const Scope& scope) {
    co_return evaluate(q, scope);
  }

  /// The synchronous core of `query`.
  result<MetricValue> evaluate(const MetricQuery& q, const Scope& scope) const {
    const auto span = static_cast<std::size_t>((q.window + opts_.bucket - Duration(1)) / opts_.bucket);
    if (q.window <= Duration::zero() || span >= opts_.buckets) {
      return Error(errc::invalid_option, detail::format("CounterSource: window {} for {} must be within 0..{}", format_duration(q.window),
                                                        q.name, format_duration(opts_.bucket * static_cast<long>(opts_.buckets - 1))));
    }
    const Series* s = find(scope.revision.id);
    const bool samples = q.want == MetricQuery::Want::samples;
    const std::string_view expr = q.expr;
    if (expr == "error_rate" || expr == "request_rate" || expr == "requests") {
      std::uint64_t requests = 0, errors = 0;
      Samples per_bucket;
      if (s) {
        const std::uint64_t now = epoch_now();
        for (std::size_t k = 0; k < span && k <= now; ++k) {  // the current bucket and the ones before it
          const std::uint64_t epoch = now - k;
          const auto word = s->buckets[static_cast<std::size_t>(epoch % opts_.buckets)].load(std::memory_order_relaxed);
          if ((word >> 48) != (epoch & 0xffff)) continue;
          const auto r = (word >> 24) & 0xffffff, e = word & 0xffffff;
          requests += r;
          errors += e;
          if (r > 0) per_bucket.push_back(expr == "error_rate" ? static_cast<double>(e) / static_cast<double>(r) : static_cast<double>(r));
        }
      }
      if (requests == 0) return MetricValue{NoData{detail::format("no requests of {} in the last {}", scope.revision, format_duration(q.window))}};
      if (samples && expr != "requests") return MetricValue{std::move(per_bucket)};
      if (expr == "error_rate") return MetricValue{static_cast<double>(errors) / static_cast<double>(requests)};
      if (expr == "requests") return MetricValue{static_cast<double>(requests)};
      return MetricValue{static_cast<double>(requests) / std::chrono::duration<double>(q.window).count()};
    }
    if (expr.rfind("latency_p", 0) == 0) {
      double quantile = 0;
      const auto digits = expr.substr(9);
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), quantile);
      // p99 is the 0.99 quantile, p999 the 0.999 one, p50 the median, p100 the maximum.
      const double fraction = digits == "100" ? 1.0 : quantile / std::pow(10.0, static_cast<double>(digits.size()));
      if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty() || !(fraction > 0 && fraction <= 1)) {
        return Error(errc::invalid_option, detail::format("CounterSource: {:?} is not latency_p<quantile>, e.g. latency_p99", q.expr));
      }
      Samples ms;
      if (s) {
        const auto now = stamp_now();
        const auto window_ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(q.window).count());
        const auto cutoff = now > window_ms ? now - window_ms : 0;
        for (const auto& slot : s->latencies) {
          const auto v = slot.load(std::memory_order_relaxed);
          if (v == 0 || (v >> 32) < cutoff) continue;
          ms.push_back(static_cast<double>(v & 0xffffffff) / 1000.0);
        }
      }
      if (ms.empty()) return MetricValue{NoData{detail::format("no latencies of {} in the last {}", scope.revision, format_duration(q.window))}};
      if (samples) return MetricValue{std::move(ms)};
      const auto at = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(ms.size()))) - 1;
      std::nth_element(ms.begin(), ms.begin() + static_cast<std::ptrdiff_t>(std::min(at, ms.size() - 1)), ms.end());
      return MetricValue{ms[std::min(at, ms.size() - 1)]};
    }
    return Error(errc::invalid_option,
                 detail::format("CounterSource: unknown query {:?} (error_rate, request_rate, requests, latency_p<q>)", q.expr));
  }

private:
  struct Series {
    explicit Series(const CounterSourceOptions& o) : buckets(o.buckets), latencies(o.latency_samples) {}
    std::vector<std::atomic<std::uint64_t>> buckets;
    std::vector<std::atomic<std::uint64_t>> latencies;  // (ms since start + 1) << 32 | microseconds; 0 is empty
    std::atomic<std::uint64_t> next_latency{0};
  };
  using Index = std::map<std::string, Series*>;

  std::uint64_t epoch_now() const noexcept {
    return static_cast<std::uint64_t>((clock_.now() - TimePoint{}) / opts_.bucket);
  }
  std::uint64_t stamp_now() const noexcept {  // milliseconds since the clock's epoch, plus one so that 0 means empty
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - TimePoint{}).count()) + 1;
  }

  const Series* find(const std::string& id) const noexcept {
    const Index* idx = index_.load(std::memory_order_acquire);
    auto it = idx->find(id);
    return it == idx->end() ? nullptr : it->second;
  }

  Series& series(const std::string& id) {
    if (const Series* s = find(id)) return *const_cast<Series*>(s);
    std::lock_guard lock(mutex_);
    if (const Series* s = find(id)) return *const_cast<Series*>(s);
    owned_.push_back(std::make_unique<Series>(opts_));
    // Publish a new index; old ones are kept until destruction, so a reader never
    // sees freed memory (one index per revision ever tracked).
    auto next = std::make_unique<Index>(*index_.load(std::memory_order_acquire));
    (*next)[id] = owned_.back().get();
    retired_.emplace_back(index_.exchange(next.release(), std::memory_order_acq_rel));
    return *owned_.back();
  }

  CounterSourceOptions opts_;
  C clock_;
  std::mutex mutex_;
  std::atomic<Index*> index_{nullptr};
  std::vector<std::unique_ptr<Series>> owned_;
  std::vector<std::unique_ptr<Index>> retired_;
};

static_assert(MetricsSource<CounterSource<>>);

}  // namespace rollout
