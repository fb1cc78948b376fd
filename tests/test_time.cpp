// Simulated time and the shared machinery: timeouts, retry, bounded parallelism,
// probe semantics, notifier and tasks. Everything runs under SimClock: no test
// here sleeps for real.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/analysis/health_monitor.hpp>
#include <rollout/analysis/probe_schedule.hpp>
#include <rollout/detail/notifier.hpp>
#include <rollout/detail/parallel.hpp>
#include <rollout/detail/race.hpp>
#include <rollout/detail/retry.hpp>
#include <rollout/detail/run_context.hpp>
#include <rollout/detail/task.hpp>
#include <rollout/strategy/blue_green.hpp>
#include <rollout/testing/testing.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <initializer_list>
#include <vector>

namespace asio = boost::asio;
using namespace rollout;
using namespace std::chrono_literals;
using testing::SimClock;

namespace {

Duration since_epoch(const SimClock& c) { return c.now() - TimePoint{}; }

// A completion handler that surfaces failures out of io_context::run (never `detached`).
void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

// An awaitable that takes `d` of simulated time and returns `v`.
asio::awaitable<int> slow_value(SimClock c, Duration d, int v) {
  co_await detail::sleep_for(c, d);
  co_return v;
}

// Runs `aw` with a cancellation signal that the test emits at simulated time `at`.
template <class T>
std::exception_ptr run_and_cancel_at(asio::io_context& io, SimClock& clock, asio::awaitable<T> aw, Duration at) {
  asio::cancellation_signal sig;
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(io, std::move(aw), asio::bind_cancellation_slot(sig.slot(), [&](std::exception_ptr e, auto&&...) {
                   error = e;
                   done = true;
                 }));
  clock.run_for(io, at);
  REQUIRE_FALSE(done);
  sig.emit(asio::cancellation_type::terminal);
  clock.run(io);
  REQUIRE(done);
  return error;
}

// A policy call that takes `d` of simulated time, then returns `v` (or throws
// `std::runtime_error` when `v` is the error "throw"); `*cancelled` is set if
// its wait was cancelled.
asio::awaitable<result<int>> slow_result(SimClock c, Duration d, result<int> v, bool* cancelled) {
  try {
    co_await detail::sleep_for(c, d);
  } catch (const boost::system::system_error&) {
    *cancelled = true;
    throw;
  }
  if (!v && v.error().message == "throw") throw std::runtime_error("policy bug");
  co_return v;
}

/// Stops `task` from a coroutine of its own, runs the clock until nothing is left,
/// and says whether the stop returned (it joins the task, whatever the task did).
bool stop_and_join(asio::io_context& io, SimClock& clock, detail::Task& task) {
  bool joined = false;
  asio::co_spawn(io, task.stop(), [&](std::exception_ptr e) {
    rethrow(e);
    joined = true;
  });
  clock.run(io);
  return joined;
}

bool is_aborted(std::exception_ptr e) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const boost::system::system_error& se) {
    return se.code() == asio::error::operation_aborted;
  } catch (...) {
    return false;
  }
}

}  // namespace

TEST_CASE("SimClock fires timers in time order, ties in arming order, and jumps instantly") {
  asio::io_context io;
  SimClock clock;
  std::vector<std::string> order;
  auto sleeper = [&](Duration d, std::string name) -> asio::awaitable<void> {
    co_await detail::sleep_for(clock, d);
    order.push_back(fmt::format("{}@{}", name, format_duration(since_epoch(clock))));
  };
  asio::co_spawn(io, sleeper(5h, "c"), rethrow);
  asio::co_spawn(io, sleeper(1s, "a"), rethrow);
  asio::co_spawn(io, sleeper(1s, "b"), rethrow);
  asio::co_spawn(io, sleeper(0s, "now"), rethrow);
  const auto wall = std::chrono::steady_clock::now();
  clock.run(io);
  CHECK(std::chrono::steady_clock::now() - wall < 5s);  // five hours never take five hours
  CHECK(order == std::vector<std::string>{"now@0s", "a@1s", "b@1s", "c@5h"});
  CHECK(clock.pending_timers() == 0);
  CHECK(clock.fired() == 3);
}

TEST_CASE("SimClock timers honour per-operation cancellation and cancel()") {
  asio::io_context io;
  SimClock clock;
  auto e = run_and_cancel_at(io, clock, detail::sleep_for(clock, 1h), 10min);
  CHECK(is_aborted(e));
  CHECK(since_epoch(clock) == 10min);  // cancelled at 10 min, the hour never elapsed
  CHECK(clock.pending_timers() == 0);

  auto t = clock.make_timer(io.get_executor());
  t.expires_after(1min);
  error_code got;
  t.async_wait([&](error_code ec) { got = ec; });
  CHECK(t.cancel() == 1);
  clock.run(io);
  CHECK(got == asio::error::operation_aborted);
}

TEST_CASE("SimClock: several waits on one timer, each cancelled alone or all by cancel(), the rest fire in arming order") {
  asio::io_context io;
  SimClock clock;
  auto t = clock.make_timer(io.get_executor());
  std::vector<std::string> got;
  auto record = [&got](std::string name) {
    return [&got, name = std::move(name)](error_code ec) { got.push_back(fmt::format("{}:{}", name, ec ? "aborted" : "fired")); };
  };
  // The first wait armed is kept apart from the others: cancel it and one of
  // the others through their own slots, then cancel() must still find the two
  // left, in arming order.
  std::array<asio::cancellation_signal, 4> sig;
  t.expires_after(1min);
  for (std::size_t i = 0; i < sig.size(); ++i) {
    t.async_wait(asio::bind_cancellation_slot(sig[i].slot(), record(std::string(1, static_cast<char>('a' + i)))));
  }
  CHECK(clock.pending_timers() == 4);
  sig[0].emit(asio::cancellation_type::terminal);
  sig[2].emit(asio::cancellation_type::terminal);
  CHECK(clock.pending_timers() == 2);
  CHECK(t.cancel() == 2);
  clock.run(io);
  CHECK(got == std::vector<std::string>{"a:aborted", "c:aborted", "b:aborted", "d:aborted"});
  CHECK(since_epoch(clock) == Duration::zero());

  // With the first cancelled, the others fire at the expiry, in arming order.
  got.clear();
  std::array<asio::cancellation_signal, 3> more;
  t.expires_after(1min);
  for (std::size_t i = 0; i < more.size(); ++i) {
    t.async_wait(asio::bind_cancellation_slot(more[i].slot(), record(std::string(1, static_cast<char>('e' + i)))));
  }
  more[0].emit(asio::cancellation_type::terminal);
  clock.run(io);
  CHECK(got == std::vector<std::string>{"e:aborted", "f:fired", "g:fired"});
  CHECK(since_epoch(clock) == 1min);

  // cancel() and a new expiry say how many waits they aborted.
  got.clear();
  t.expires_after(1min);
  t.async_wait(record("h"));
  t.async_wait(record("i"));
  CHECK(t.cancel() == 2);
  CHECK(t.cancel() == 0);
  t.async_wait(record("j"));
  CHECK(t.expires_after(1min) == 1);
  clock.run(io);
  CHECK(got == std::vector<std::string>{"h:aborted", "i:aborted", "j:aborted"});
  CHECK(clock.pending_timers() == 0);
}

TEST_CASE("SimClock::run_for stops exactly at the requested time") {
  asio::io_context io;
  SimClock clock;
  int fired = 0;
  auto t1 = clock.make_timer(io.get_executor());
  auto t2 = clock.make_timer(io.get_executor());
  t1.expires_after(30s);
  t2.expires_after(90s);
  t1.async_wait([&](error_code) { ++fired; });
  t2.async_wait([&](error_code) { ++fired; });
  clock.run_for(io, 1min);
  CHECK(fired == 1);
  CHECK(since_epoch(clock) == 1min);
  clock.run_for(io, 1min);
  CHECK(fired == 2);
  CHECK(since_epoch(clock) == 2min);
}

TEST_CASE("with_timeout returns the value in time, nullopt late, and cancels the loser") {
  asio::io_context io;
  SimClock clock;
  auto fast = testing::run_sim(io, clock, detail::with_timeout(clock, 2s, slow_value(clock, 1s, 7)));
  CHECK(fast == 7);
  CHECK(since_epoch(clock) == 1s);
  auto late = testing::run_sim(io, clock, detail::with_timeout(clock, 2s, slow_value(clock, 1h, 7)));
  CHECK_FALSE(late);
  CHECK(since_epoch(clock) == 3s);      // gave up at the timeout...
  CHECK(clock.pending_timers() == 0);   // ...and the loser's timer was cancelled, not left behind

  // A hang that only ends by cancellation is ended by the timeout.
  auto hang = testing::run_sim(io, clock, detail::with_timeout(clock, 5s, detail::sleep_until(clock, TimePoint::max())));
  CHECK_FALSE(hang);

  // Exceptions of the wrapped awaitable propagate.
  auto thrower = [&]() -> asio::awaitable<int> {
    co_await detail::sleep_for(clock, 1s);
    throw std::runtime_error("boom");
  };
  CHECK_THROWS_WITH(testing::run_sim(io, clock, detail::with_timeout(clock, 5s, thrower())), "boom");
}

TEST_CASE("with_timeout cancelled mid-wait cancels the inner operation") {
  asio::io_context io;
  SimClock clock;
  auto e = run_and_cancel_at(io, clock, detail::with_timeout(clock, 1h, slow_value(clock, 2h, 1)), 1min);
  CHECK(is_aborted(e));
  CHECK(since_epoch(clock) == 1min);
  CHECK(clock.pending_timers() == 0);
}

TEST_CASE("race returns the first finisher and joins the loser") {
  asio::io_context io;
  SimClock clock;
  auto r = testing::run_sim(io, clock, detail::race(slow_value(clock, 3s, 1), slow_value(clock, 2s, 2)));
  CHECK(r.index() == 1);
  CHECK(std::get<1>(r) == 2);
  CHECK(since_epoch(clock) == 2s);
  CHECK(clock.pending_timers() == 0);
}

TEST_CASE("shielded_scope work finishes even when its caller is cancelled, and only its own deadlines cancel it") {
  asio::io_context io;
  SimClock clock;
  bool finished = false;
  bool late_cancelled = false;
  std::string late;
  auto work = [](detail::TaskScope scope, SimClock clock, bool* finished, bool* late_cancelled, std::string* late) -> asio::awaitable<void> {
    auto r = co_await detail::call(scope, clock, 2s, [] { return std::string("late()"); }, slow_result(clock, 5s, 1, late_cancelled));
    *late = r ? "value" : r.error().message;
    co_await detail::sleep_for(clock, 8s);
    *finished = true;
  };
  auto caller = [&]() -> asio::awaitable<void> {
    co_await detail::shielded_scope<void>(
        [&](detail::TaskScope scope) { return work(std::move(scope), clock, &finished, &late_cancelled, &late); });
  };
  auto e = run_and_cancel_at(io, clock, caller(), 1s);  // the caller is cancelled at 1 s
  CHECK(late == "late() timed out after 2s");           // at 2 s, by its own deadline
  CHECK(late_cancelled);
  CHECK(finished);                                      // and the work went on to its end
  CHECK(since_epoch(clock) == 10s);
  CHECK_FALSE(e);
}

TEST_CASE("retry backs off exponentially with jitter, stops on success or permanent errors") {
  asio::io_context io;
  SimClock clock;
  Backoff b;
  b.max_attempts = 4;
  b.initial = 1s;
  b.max_delay = 3s;
  b.jitter = 0;
  JitterEngine rng(b.seed);
  std::vector<Duration> attempts_at;
  int fail_first = 2;
  auto attempt = [&]() -> asio::awaitable<result<int>> {
    attempts_at.push_back(since_epoch(clock));
    if (static_cast<int>(attempts_at.size()) <= fail_first) co_return Error(errc::lb_unavailable, "refused");
    co_return 5;
  };
  std::vector<std::string> log;
  auto on_error = [&](int k, const Error& e, std::optional<Duration> wait) {
    log.push_back(fmt::format("{}:{}:{}", k, e.message, wait ? format_duration(*wait) : "stop"));
  };
  auto r = testing::run_sim(io, clock, detail::retry(clock, b, rng, attempt, on_error));
  REQUIRE(r);
  CHECK(*r == 5);
  CHECK(attempts_at == std::vector<Duration>{0s, 1s, 3s});
  CHECK(log == std::vector<std::string>{"1:refused:1s", "2:refused:2s"});

  // Exhausted: max_attempts in total, capped waits, the last error returned.
  attempts_at.clear();
  log.clear();
  fail_first = 100;
  const auto t0 = since_epoch(clock);
  r = testing::run_sim(io, clock, detail::retry(clock, b, rng, attempt, on_error));
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::lb_unavailable);
  CHECK(attempts_at == std::vector<Duration>{t0, t0 + 1s, t0 + 3s, t0 + 6s});  // 1s, 2s, then 4s capped to 3s
  CHECK(log.back() == "4:refused:stop");

  // A permanent error is not retried.
  int calls = 0;
  auto permanent = [&]() -> asio::awaitable<result<int>> {
    ++calls;
    co_return Error(errc::unknown_server, "No such server.");
  };
  r = testing::run_sim(io, clock, detail::retry(clock, b, rng, permanent, [](int, const Error&, std::optional<Duration>) {}));
  CHECK(calls == 1);
  CHECK(r.error().message == "No such server.");
}

TEST_CASE("retry cancelled while backing off stops at once") {
  asio::io_context io;
  SimClock clock;
  Backoff b;
  b.initial = 1min;
  b.max_delay = 1min;
  JitterEngine rng(1);
  int calls = 0;
  auto attempt = [&]() -> asio::awaitable<result<int>> {
    ++calls;
    co_return Error(errc::timeout);
  };
  auto e = run_and_cancel_at(io, clock, detail::retry(clock, b, rng, attempt, [](int, const Error&, std::optional<Duration>) {}), 10s);
  CHECK(is_aborted(e));
  CHECK(calls == 1);
  CHECK(since_epoch(clock) == 10s);
}

TEST_CASE("scoped_for_each: N workers in tasks, every element once, the worker's scope passed in") {
  asio::io_context io;
  SimClock clock;
  std::vector<int> items(10);
  for (int i = 0; i < 10; ++i) items[static_cast<std::size_t>(i)] = i;
  int in_flight = 0, peak = 0, done = 0, timeouts = 0;
  bool hung_cancelled = false;
  // Item 4 hangs: its bounded wait times out through the worker's scope, and the
  // worker goes on with its next element.
  auto fn = [&](int& i, const detail::TaskScope& scope) -> asio::awaitable<void> {
    peak = std::max(peak, ++in_flight);
    const auto d = i == 4 ? 1h : std::chrono::seconds(1 + i % 3);
    auto r = co_await detail::call(scope, clock, 10s, [] { return std::string("item"); }, slow_result(clock, d, i, &hung_cancelled));
    if (!r && r.error().code == errc::timeout) ++timeouts;
    --in_flight;
    ++done;
  };
  testing::run_sim(io, clock, detail::scoped_for_each(items.begin(), items.end(), 3, fn));
  CHECK(done == 10);
  CHECK(peak == 3);
  CHECK(timeouts == 1);
  CHECK(hung_cancelled);  // the deadline cancelled the call in the worker's thread
  // Durations 1,2,3,1,10(timeout),3,1,2,3,1 greedily on 3 workers: the worker
  // with item 4 (from 2 s to 12 s) ends last; the others finish by 9 s.
  CHECK(since_epoch(clock) == 12s);
  CHECK(clock.pending_timers() == 0);
  CHECK(detail::live_tasks() == 0);

  peak = 0;
  in_flight = 0;
  testing::run_sim(io, clock, detail::scoped_for_each(items.begin(), items.begin() + 2, 100, fn));
  CHECK(peak == 2);
  testing::run_sim(io, clock, detail::scoped_for_each(items.begin(), items.begin(), 4, fn));
  CHECK(detail::live_tasks() == 0);
}

TEST_CASE("scoped_for_each: the first error stops the other workers and is rethrown") {
  asio::io_context io;
  SimClock clock;
  std::vector<int> items{0, 1, 2, 3, 4, 5};
  int finished = 0;
  bool cancelled = false;
  auto fn = [&](int& i, const detail::TaskScope&) -> asio::awaitable<void> {
    if (i == 1) {
      co_await detail::sleep_for(clock, 1s);
      throw std::runtime_error("item 1 failed");
    }
    try {
      co_await detail::sleep_for(clock, 1h);
    } catch (const boost::system::system_error&) {
      cancelled = true;
      throw;
    }
    ++finished;
  };
  CHECK_THROWS_WITH(testing::run_sim(io, clock, detail::scoped_for_each(items.begin(), items.end(), 2, fn)), "item 1 failed");
  CHECK(finished == 0);  // item 0 was stopped, items 2..5 never started
  CHECK(cancelled);
  CHECK(since_epoch(clock) == 1s);
  CHECK(clock.pending_timers() == 0);
  CHECK(detail::live_tasks() == 0);

  // One worker: in order, and nothing after the failing element starts.
  std::vector<int> order;
  auto in_order = [&](int& i, const detail::TaskScope&) -> asio::awaitable<void> {
    order.push_back(i);
    co_await detail::sleep_for(clock, std::chrono::seconds(1 + i));
    if (i == 2) throw std::runtime_error("item 2 failed");
  };
  CHECK_THROWS_WITH(testing::run_sim(io, clock, detail::scoped_for_each(items.begin(), items.end(), 1, in_order)), "item 2 failed");
  CHECK(order == std::vector<int>{0, 1, 2});
  CHECK(since_epoch(clock) == 1s + 6s);
  CHECK(detail::live_tasks() == 0);
}

TEST_CASE("scoped_for_each cancelled mid-wait stops and joins every worker, and restores the caller's setting") {
  asio::io_context io;
  SimClock clock;
  std::vector<int> items{0, 1, 2, 3, 4};
  int started = 0, cancelled = 0;
  auto fn = [&](int&, const detail::TaskScope&) -> asio::awaitable<void> {
    ++started;
    try {
      co_await detail::sleep_for(clock, 1h);
    } catch (const boost::system::system_error&) {
      ++cancelled;
      throw;
    }
  };
  auto e = run_and_cancel_at(io, clock, detail::scoped_for_each(items.begin(), items.end(), 4, fn), 5s);
  CHECK(is_aborted(e));
  CHECK(started == 4);  // the fifth never starts
  CHECK(cancelled == 4);
  CHECK(clock.pending_timers() == 0);
  CHECK(detail::live_tasks() == 0);

  // The caller's throw_if_cancelled is its own again afterwards.
  auto caller = [&]() -> asio::awaitable<bool> {
    co_await detail::scoped_for_each(items.begin(), items.begin() + 1, 1,
                                     [&](int&, const detail::TaskScope&) -> asio::awaitable<void> { co_return; });
    co_return co_await asio::this_coro::throw_if_cancelled();
  };
  CHECK(testing::run_sim(io, clock, caller()));
}

TEST_CASE("ProbeSpec has Kubernetes defaults and names bad fields") {
  ProbeSpec p;
  CHECK(p.initial_delay == 0s);
  CHECK(p.period == 10s);
  CHECK(p.timeout == 1s);
  CHECK(p.success_threshold == 1);
  CHECK(p.failure_threshold == 3);
  auto reject = [](auto mutate) {
    ProbeSpec x;
    mutate(x);
    try {
      x.validate("probe");
    } catch (const invalid_option& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(reject([](ProbeSpec& x) { x.period = 0s; }) == "invalid option probe.period = 0s: must be greater than 0");
  CHECK(reject([](ProbeSpec& x) { x.timeout = -1s; }) == "invalid option probe.timeout = -1s: must be greater than 0");
  CHECK(reject([](ProbeSpec& x) { x.initial_delay = -5ms; }) == "invalid option probe.initial_delay = -5ms: must not be negative");
  CHECK(reject([](ProbeSpec& x) { x.success_threshold = 0; }) == "invalid option probe.success_threshold = 0: must be at least 1");
  CHECK(reject([](ProbeSpec& x) { x.failure_threshold = -2; }) == "invalid option probe.failure_threshold = -2: must be at least 1");
}

TEST_CASE("ProbeTracker: success and failure thresholds decide, as in Kubernetes") {
  ProbeSpec spec;
  spec.success_threshold = 2;
  spec.failure_threshold = 3;
  ProbeTracker t(spec);
  using C = ProbeTracker::Change;
  CHECK(t.state() == ProbeTracker::State::unknown);
  CHECK(t.record(true) == C::none);
  CHECK(t.record(true) == C::became_passing);
  CHECK(t.passing());
  CHECK(t.record(false) == C::none);  // one failure: still ready, no longer passing
  CHECK(t.state() == ProbeTracker::State::ready);
  CHECK_FALSE(t.passing());
  CHECK(t.record(true) == C::none);
  CHECK(t.record(true) == C::became_passing);  // recovered: two successes again
  CHECK(t.record(false) == C::none);
  CHECK(t.record(false) == C::none);
  CHECK(t.record(false) == C::became_unhealthy);
  CHECK(t.state() == ProbeTracker::State::unhealthy);
  CHECK(t.failed_after_ready());
  CHECK(t.record(false) == C::none);  // already unhealthy
  CHECK(t.probes() == 9);

  ProbeTracker never(spec);
  never.record(false);
  never.record(false);
  CHECK(never.record(false) == C::became_unhealthy);
  CHECK_FALSE(never.failed_after_ready());
}

TEST_CASE("probe_once bounds a probe by its timeout and absorbs exceptions") {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedProbe<> probe(clock);
  Instance i{"x", {"v1"}, {"127.0.0.1", 1}};
  probe.fail_probe("x", 0, testing::Fault::hang_forever());
  probe.fail_probe("x", 1, testing::Fault::raise());
  auto r = testing::run_sim(io, clock, probe_once(clock, probe, i, 1s));
  CHECK_FALSE(r.healthy);
  CHECK(r.detail == "probe.check timed out after 1s");
  CHECK(since_epoch(clock) == 1s);
  r = testing::run_sim(io, clock, probe_once(clock, probe, i, 1s));
  CHECK_FALSE(r.healthy);
  CHECK(r.detail == "probe.check threw: injected exception in probe.check(x)");
  r = testing::run_sim(io, clock, probe_once(clock, probe, i, 1s));
  CHECK(r.healthy);
}

TEST_CASE("probe_once cancelled mid-probe cancels the probe and propagates") {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedProbe<> probe(clock, 30s);  // a slow probe, within its timeout
  Instance i{"x", {"v1"}, {"127.0.0.1", 1}};
  auto e = run_and_cancel_at(io, clock, probe_once(clock, probe, i, 1min), 10s);
  CHECK(is_aborted(e));
  CHECK(since_epoch(clock) == 10s);
  CHECK(clock.pending_timers() == 0);  // the probe's own wait was cancelled, not abandoned
}

TEST_CASE("probe_once in a task: timeout through the task's scope, exceptions absorbed, stop propagates") {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedProbe<> probe(clock, 100ms);
  Instance i{"x", {"v1"}, {"127.0.0.1", 1}};
  probe.fail_probe("x", 0, testing::Fault::hang_forever());
  probe.fail_probe("x", 1, testing::Fault::raise());
  std::vector<std::string> seen;
  auto probes = [](detail::TaskScope scope, SimClock clock, testing::ScriptedProbe<>* probe, Instance i,
                   std::vector<std::string>* seen, Duration timeout) -> asio::awaitable<void> {
    for (int k = 0; k < 3; ++k) {
      auto r = co_await detail::probe_once(scope, clock, *probe, i, timeout);
      seen->push_back(fmt::format("{} {}@{}", r.healthy ? "up" : "down", r.detail, format_duration(since_epoch(clock))));
    }
    // The timeout cancelled the probe, not the task, and the setting is the task's.
    if (!co_await asio::this_coro::throw_if_cancelled()) seen->push_back("throw_if_cancelled leaked");
  };
  detail::Task task;
  task.start(io.get_executor(), [&](detail::TaskScope scope) { return probes(std::move(scope), clock, &probe, i, &seen, 1s); });
  clock.run(io);
  REQUIRE(task.done());
  CHECK_FALSE(task.error());
  CHECK(seen == std::vector<std::string>{"down probe.check timed out after 1s@1s",
                                         "down probe.check threw: injected exception in probe.check(x)@1.1s",
                                         "up ok@1.2s"});
  CHECK(clock.pending_timers() == 0);

  // A probe that answers at the very instant of its timeout has answered in time
  // (the deadline is armed behind the probe's own timer).
  testing::ScriptedProbe<> exact(clock, 1s);
  std::vector<std::string> on_time;
  detail::Task tie;
  tie.start(io.get_executor(), [&](detail::TaskScope scope) { return probes(std::move(scope), clock, &exact, i, &on_time, 1s); });
  clock.run(io);
  CHECK(on_time == std::vector<std::string>{"up ok@2.2s", "up ok@3.2s", "up ok@4.2s"});

  // Stopped 10 s into a 30 s probe (its timeout 1 min): the probe is cancelled and the stop propagates.
  testing::ScriptedProbe<> slow(clock, 30s);
  std::vector<std::string> none;
  detail::Task stopped;
  stopped.start(io.get_executor(), [&](detail::TaskScope scope) { return probes(std::move(scope), clock, &slow, i, &none, 1min); });
  clock.run_for(io, 10s);
  CHECK(stop_and_join(io, clock, stopped));
  CHECK(none.empty());
  CHECK(is_aborted(stopped.error()));
  CHECK(clock.pending_timers() == 0);
  CHECK(detail::live_tasks() == 0);
}

TEST_CASE("HealthMonitor probes in rounds on the schedule, bounded, and reports transitions") {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedProbe<> probe(clock, 100ms);
  std::vector<Instance> fleet;
  for (int i = 0; i < 4; ++i) fleet.push_back({fmt::format("i{}", i), {"v2"}, {"127.0.0.1", 1}});
  probe.sequence("i2", {false, true, true, false, false, false});
  ProbeSpec spec;
  spec.initial_delay = 5s;
  spec.period = 10s;
  std::vector<std::string> events;
  detail::Notifier wake(io.get_executor());
  HealthMonitor<testing::ScriptedProbe<>, SimClock> mon(probe, clock, fleet, spec, 2, &wake,
                                                        [&](EventKind k, const std::string& s, std::string) {
                                                          events.push_back(fmt::format("{}:{}@{}", k, s, format_duration(since_epoch(clock))));
                                                        });
  detail::Task task;
  task.start(io.get_executor(), mon.run());
  clock.run_for(io, 5s + 250ms);
  // First round at 5 s, two at a time: i0 and i1 at 5.1 s, then i2 and i3 at 5.2 s.
  CHECK(probe.total_probes() == 4);
  CHECK(events == std::vector<std::string>{"instance_ready:i0@5.1s", "instance_ready:i1@5.1s", "probe_failed:i2@5.2s",
                                           "instance_ready:i3@5.2s"});
  CHECK_FALSE(mon.all_passing());
  CHECK(mon.describe_not_passing() == "i2 (unknown after 1 probes: scripted failure (HTTP 503))");
  clock.run_for(io, 10s);
  CHECK(mon.all_passing());
  clock.run_for(io, 40s);  // rounds at 25 (passes), 35, 45 and 55 s (fails three times)
  CHECK(events.back() == "instance_unhealthy:i2@55.2s");
  CHECK(mon.rounds() == 6);
  CHECK(stop_and_join(io, clock, task));
  CHECK(task.done());
  CHECK(is_aborted(task.error()));
  CHECK(detail::live_tasks() == 0);
}

TEST_CASE("a bounded call in a Task: value in time, timeout that cancels only the call, named errors, stop") {
  asio::io_context io;
  SimClock clock;
  auto what = [] { return std::string("q(x)"); };
  std::vector<std::string> seen;
  auto note = [&](const result<int>& r) {
    seen.push_back(r ? fmt::format("{}@{}", *r, format_duration(since_epoch(clock)))
                     : fmt::format("{} [{}]@{}", r.error().message, r.error().code == errc::timeout ? "timeout" : "other",
                                   format_duration(since_epoch(clock))));
  };
  bool cancelled[4] = {false, false, false, false};
  // (The factory returns a coroutine that copies what it needs: a lambda
  // coroutine's captures would die with the factory when start() returns.)
  auto calls = [](detail::TaskScope scope, SimClock clock, std::function<std::string()> what, std::function<void(const result<int>&)> note,
                  bool* cancelled) -> asio::awaitable<void> {
    note(co_await detail::call(scope, clock, 1s, what, slow_result(clock, 500ms, 1, &cancelled[0])));
    note(co_await detail::call(scope, clock, 1s, what, slow_result(clock, 5s, 2, &cancelled[1])));
    // The timeout cancelled the call, not the task: its next waits go ahead.
    co_await detail::sleep_for(clock, 1s);
    note(co_await detail::call(scope, clock, 1s, what, slow_result(clock, 100ms, Error(errc::lb_unavailable, "503"), &cancelled[2])));
    note(co_await detail::call(scope, clock, 1s, what, slow_result(clock, 100ms, Error(errc::lb_unavailable, "throw"), &cancelled[3])));
    note(co_await detail::call(scope, clock, 1s, what, slow_result(clock, 200ms, 3, &cancelled[3])));
    // A policy that turns off throw-on-cancel for its thread does not turn it off for the task.
    note(co_await detail::call(scope, clock, 1s, what, []() -> asio::awaitable<result<int>> {
      co_await asio::this_coro::throw_if_cancelled(false);
      co_return 6;
    }()));
    if (!co_await asio::this_coro::throw_if_cancelled()) note(Error(errc::policy_exception, "the policy's setting leaked"));
  };
  detail::Task task;
  task.start(io.get_executor(), [&](detail::TaskScope scope) { return calls(std::move(scope), clock, what, note, cancelled); });
  clock.run(io);
  REQUIRE(task.done());
  CHECK_FALSE(task.error());
  CHECK(seen == std::vector<std::string>{"1@500ms", "q(x) timed out after 1s [timeout]@1.5s", "q(x): 503 [other]@2.6s",
                                         "q(x) threw: policy bug [other]@2.7s", "3@2.9s", "6@2.9s"});
  CHECK_FALSE(cancelled[0]);
  CHECK(cancelled[1]);  // the late call was cancelled at its deadline, and joined
  CHECK_FALSE(cancelled[2]);
  CHECK_FALSE(cancelled[3]);
  CHECK(clock.pending_timers() == 0);

  // Stopped during a bounded call: the call is cancelled and the cancellation
  // propagates (it is not turned into a timeout or an error result).
  bool stop_cancelled = false;
  bool after_call = false;
  auto one_call = [](detail::TaskScope scope, SimClock clock, std::function<std::string()> what,
                     std::function<void(const result<int>&)> note, bool* cancelled, bool* after) -> asio::awaitable<void> {
    note(co_await detail::call(scope, clock, 10s, what, slow_result(clock, 5s, 4, cancelled)));
    *after = true;
  };
  detail::Task stopped;
  stopped.start(io.get_executor(),
                [&](detail::TaskScope scope) { return one_call(std::move(scope), clock, what, note, &stop_cancelled, &after_call); });
  clock.run_for(io, 1s);
  CHECK(stop_and_join(io, clock, stopped));
  CHECK(stop_cancelled);
  CHECK_FALSE(after_call);
  CHECK(is_aborted(stopped.error()));
  CHECK(clock.pending_timers() == 0);
  CHECK(detail::live_tasks() == 0);
}

TEST_CASE("call_attempts in a Task: retries transient errors and timeouts with backoff, in one frame, and stops") {
  asio::io_context io;
  SimClock clock;
  Backoff b;
  b.max_attempts = 3;
  b.initial = 1s;
  b.multiplier = 2;
  b.jitter = 0;
  JitterEngine rng(b.seed);
  std::vector<std::string> seen;
  auto note = [&](const result<int>& r) {
    seen.push_back(r ? fmt::format("{}@{}", *r, format_duration(since_epoch(clock)))
                     : fmt::format("{}@{}", r.error().message, format_duration(since_epoch(clock))));
  };
  // Scripted answers, one per attempt: how long it takes and what it returns.
  struct Answer {
    Duration after;
    result<int> value;
  };
  std::vector<Answer> script{
      {100ms, Error(errc::lb_unavailable, "503")}, {10s, 0}, {100ms, 7},           // transient, timeout, value
      {100ms, Error(errc::lb_rejected, "no")},                                       // permanent: one attempt
      {100ms, Error(errc::timeout, "slow")}, {100ms, Error(errc::timeout, "slow")},  // three transient failures:
      {100ms, Error(errc::timeout, "slow")},                                         // the last one is returned
  };
  std::size_t next = 0;
  bool cancelled = false;
  auto attempt = [&]() {
    const auto& a = script.at(next++);
    return slow_result(clock, a.after, a.value, &cancelled);
  };
  auto what = [] { return std::string("op(x)"); };
  auto calls = [](detail::TaskScope scope, SimClock clock, std::function<std::string()> what,
                  std::function<asio::awaitable<result<int>>()> attempt, const Backoff* b, JitterEngine* rng,
                  std::function<void(const result<int>&)> note) -> asio::awaitable<void> {
    for (int k = 0; k < 3; ++k) note(co_await detail::call_attempts<int>(scope, clock, 2s, what, attempt, b, rng));
  };
  detail::Task task;
  task.start(io.get_executor(), [&](detail::TaskScope scope) { return calls(std::move(scope), clock, what, attempt, &b, &rng, note); });
  clock.run(io);
  REQUIRE(task.done());
  CHECK_FALSE(task.error());
  // 503 at 0.1 s, retry at 1.1 s times out at 3.1 s, retry at 5.1 s answers 7 at 5.2 s;
  // the rejection at 5.3 s is not retried; 5.4 s, 6.5 s and 8.6 s fail, the last is returned.
  CHECK(seen == std::vector<std::string>{"7@5.2s", "op(x): no@5.3s", "op(x): slow@8.6s"});
  CHECK(next == script.size());
  CHECK(cancelled);  // the attempt that timed out was cancelled
  CHECK(clock.pending_timers() == 0);

  // Stopped during the backoff sleep: the stop propagates, no further attempt.
  script = {{100ms, Error(errc::lb_unavailable, "503")}, {100ms, 1}};
  next = 0;
  seen.clear();
  detail::Task stopped;
  stopped.start(io.get_executor(), [&](detail::TaskScope scope) { return calls(std::move(scope), clock, what, attempt, &b, &rng, note); });
  clock.run_for(io, 500ms);
  CHECK(stop_and_join(io, clock, stopped));
  CHECK(seen.empty());
  CHECK(next == 1);
  CHECK(is_aborted(stopped.error()));
  CHECK(clock.pending_timers() == 0);
  CHECK(detail::live_tasks() == 0);
}

TEST_CASE("Notifier wakes every waiter and honours cancellation") {
  asio::io_context io;
  SimClock clock;
  detail::Notifier n(io.get_executor());
  int woke = 0;
  error_code last;
  n.async_wait([&](error_code ec) { ++woke, last = ec; });
  n.async_wait([&](error_code ec) { ++woke, last = ec; });
  CHECK(n.waiting() == 2);
  n.notify_all();
  clock.run(io);
  CHECK(woke == 2);
  CHECK_FALSE(last);
  n.notify_all();  // nobody waiting: not remembered
  auto e = run_and_cancel_at(io, clock, n.async_wait(asio::use_awaitable), 1s);
  CHECK(is_aborted(e));
  CHECK(n.waiting() == 0);
}

TEST_CASE("a run records the same timeline whether or not observers watch it") {
  SimClock clock;
  ObserverList none;
  ObserverList some;
  std::vector<Event> seen;
  some.add([&seen](const Event& e) { seen.push_back(e); });
  auto record = [&clock](const ObserverList& observers) {
    detail::RunContext<SimClock> ctx("canary", clock, observers);
    ctx.begin(4);
    ctx.emit(EventKind::traffic_applied, "canary", "verified by read-back", TrafficSplit::between("canary", Percent::from_percent(10), "stable"));
    ctx.emit(EventKind::lb_error, "", std::string(40, 'x'), std::nullopt, make_error_code(errc::timeout));
    ctx.emit(EventKind::phase_changed, "promoting");
    return ctx.finish(Outcome{});
  };
  const auto unwatched = record(none);  // the path that builds no Event
  const auto watched = record(some);
  REQUIRE(unwatched.timeline.size() == 4);
  REQUIRE(watched.timeline.size() == 4);
  REQUIRE(seen.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    const Event a = unwatched.timeline[i];
    const Event b = watched.timeline[i];
    for (const Event* e : std::initializer_list<const Event*>{&b, &seen[i]}) {
      CHECK(a.at == e->at);
      CHECK(a.kind == e->kind);
      CHECK(a.strategy == e->strategy);
      CHECK(a.subject == e->subject);
      CHECK(a.detail == e->detail);
      CHECK(a.split == e->split);
      CHECK(a.error == e->error);
    }
  }
  CHECK(unwatched.timeline[0].split == TrafficSplit::between("canary", Percent::from_percent(10), "stable"));
  CHECK(unwatched.timeline[1].detail == std::string(40, 'x'));
  CHECK(unwatched.timeline[1].error == make_error_code(errc::timeout));
  CHECK(unwatched.timeline[3].kind == EventKind::run_finished);
}

TEST_CASE("a run's timeline reservation is capped, whatever the options ask for") {
  SimClock clock;
  ObserverList observers;
  detail::RunContext<SimClock> ctx("canary", clock, observers);
  // A metric measured 2^40 times asks for that many events: nothing may be
  // allocated for them up front (uncapped, reserve() throws here).
  ctx.begin(std::size_t{1} << 40);
  ctx.emit(EventKind::run_started);
  const auto out = ctx.finish(Outcome{});
  CHECK(out.timeline.size() == 2);
  CHECK(out.timeline.capacity() == detail::RunContext<SimClock>::max_reserved_events);
}

namespace {

using Bg = BlueGreen<testing::ScriptedLoadBalancer<>, testing::ScriptedProbe<>, SimClock>;

// Two hours of pauses: one hour before auto-promotion, one hour of verification.
std::vector<std::string> two_hour_run(Duration& virtual_elapsed) {
  asio::io_context io;
  SimClock clock;
  testing::ScriptedLoadBalancer<> lb(clock, TrafficSplit::all_to("blue"));
  testing::ScriptedProbe<> probe(clock);
  Environment blue{"blue", {"v1"}, {{"b-0", {"v1"}, {"10.0.0.1", 80}}}};
  Environment green{"green", {"v2"}, {}};
  for (int i = 0; i < 3; ++i) green.instances.push_back({fmt::format("g-{}", i), {"v2"}, {"10.0.1.1", static_cast<std::uint16_t>(80 + i)}});
  probe.sequence("g-1", {false, true});  // one slow starter, for a non-trivial timeline
  BlueGreenOptions o;
  o.auto_promote_after = 1h;
  o.verify_for = 1h;
  Bg bg(lb, probe, blue, green, o, clock);
  auto out = testing::run_sim(io, clock, bg.run());
  REQUIRE(out.status == Status::promoted);
  virtual_elapsed = out.elapsed;
  std::vector<std::string> lines;
  for (const auto& e : out.timeline) lines.push_back(fmt::format("{}", e));
  return lines;
}

}  // namespace

TEST_CASE("two hours of pauses give the same events every run, in simulated time (wall time printed)") {
  Duration virtual_elapsed{};
  const auto reference = two_hour_run(virtual_elapsed);
  CHECK(virtual_elapsed >= 2h);
  std::chrono::nanoseconds fastest = std::chrono::hours(1);
  for (int run = 0; run < 3; ++run) {
    const auto wall = std::chrono::steady_clock::now();
    Duration again{};
    const auto lines = two_hour_run(again);
    fastest = std::min(fastest, std::chrono::steady_clock::now() - wall);
    CHECK(lines == reference);
    CHECK(again == virtual_elapsed);
  }
  MESSAGE(fmt::format("{} of simulated rollout ({} events) in {} of wall time (fastest of 3)", format_duration(virtual_elapsed),
                      reference.size(), format_duration(fastest)));
  // The wall time is printed, not asserted: timings belong in benchmarks/
  // (scale_bench and overhead_bench measure them), never in a test's verdict.
}
