// Vocabulary: Percent, TrafficSplit, errors, events, outcomes, backoff, formatting.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <rollout/core/backoff.hpp>
#include <rollout/core/control.hpp>
#include <rollout/core/error.hpp>
#include <rollout/core/event.hpp>
#include <rollout/core/metrics.hpp>
#include <rollout/core/outcome.hpp>
#include <rollout/core/percent.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/core/types.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <vector>
#include <string>

using namespace rollout;
using namespace rollout::literals;
using namespace std::chrono_literals;

namespace {
// The message of the invalid_option thrown by f, or "" if none was thrown.
template <class F>
std::string rejection(F f) {
  try {
    f();
  } catch (const invalid_option& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("Percent stores exact basis points and validates its range") {
  static_assert((25_pct).basis_points() == 2500);
  static_assert((0.5_pct).basis_points() == 50);
  static_assert((0.01_pct).basis_points() == 1);
  static_assert((100_pct).is_full());
  static_assert((12.5_pct).complement() == 87.5_pct);
  CHECK(Percent::from_percent(7).basis_points() == 700);
  CHECK(Percent::from_basis_points(10000) == Percent::full());
  CHECK(fmt::format("{}", 0.5_pct) == "0.5%");
  CHECK(fmt::format("{}", 12.34_pct) == "12.34%");
  CHECK(fmt::format("{}", 100_pct) == "100%");
  CHECK(fmt::format("{}", 0.05_pct) == "0.05%");
  CHECK(fmt::format("{}", Percent{}) == "0%");
  CHECK((12.5_pct).text() == "12.5%");
  CHECK((10.01_pct).text() == "10.01%");
  CHECK((99.9_pct).text() == "99.9%");
  CHECK((0.01_pct).text() == "0.01%");
  CHECK((7_pct).text() == "7%");

  CHECK(rejection([] { (void)Percent::from_basis_points(10001, "max_weight"); }) ==
        "invalid option max_weight = 10001 basis points: must be within 0%..100% (0..10000 basis points)");
  CHECK(rejection([] { (void)Percent::from_percent(-1, "step_weight"); }) ==
        "invalid option step_weight = -1%: must be within 0%..100%");
  CHECK(rejection([] { (void)Percent::from_basis_points(INT64_MAX); }).find("9223372036854775807") != std::string::npos);

  auto bad = Percent::parse_basis_points(-5);
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::invalid_option);
  CHECK(bad.error().message.find("-5") != std::string::npos);
  CHECK(Percent::parse_basis_points(5).value().basis_points() == 5);
}

TEST_CASE("Percent rounding follows Kubernetes: surge up, unavailable down") {
  CHECK((25_pct).of_rounded_up(10) == 3);
  CHECK((25_pct).of_rounded_down(10) == 2);
  CHECK((25_pct).of_rounded_up(1) == 1);
  CHECK((25_pct).of_rounded_down(1) == 0);
  CHECK((100_pct).of_rounded_up(7) == 7);
  CHECK((0_pct).of_rounded_up(7) == 0);
  CHECK((33_pct).of_rounded_down(3) == 0);
  CHECK((34_pct).of_rounded_up(3) == 2);
}

TEST_CASE("TrafficSplit sums to exactly 100% or is rejected") {
  auto s = TrafficSplit::of({{"stable", 99.5_pct}, {"canary", 0.5_pct}});
  CHECK(s.weight_of("canary") == 0.5_pct);
  CHECK(s.weight_of("nope") == Percent{});
  CHECK(fmt::format("{}", s) == "{canary: 0.5%, stable: 99.5%}");  // sorted by group
  CHECK(s == TrafficSplit::between("canary", 0.5_pct, "stable"));
  CHECK_FALSE(s.sole_group());
  CHECK(TrafficSplit::all_to("green").sole_group() == "green");
  CHECK(TrafficSplit::of({{"a", 100_pct}, {"b", 0_pct}}).sole_group() == "a");

  CHECK(rejection([] { (void)TrafficSplit::of({{"blue", 60_pct}, {"green", 30_pct}}); }) ==
        "invalid option split = {blue: 60%, green: 30%}: weights must sum to 100%, they sum to 90.00%");
  CHECK(rejection([] { (void)TrafficSplit::of({{"blue", 60_pct}, {"green", 40.01_pct}}); }) ==
        "invalid option split = {blue: 60%, green: 40.01%}: weights must sum to 100%, they sum to 100.01%");
  CHECK(rejection([] { (void)TrafficSplit::of({}); }) == "invalid option split = {}: a split needs at least one group");
  CHECK(rejection([] { (void)TrafficSplit::of({{"a", 50_pct}, {"a", 50_pct}}); }).find("group 'a' appears twice") !=
        std::string::npos);
  CHECK(rejection([] { (void)TrafficSplit::of({{"", 100_pct}}); }).find("a group name is empty") != std::string::npos);
}

TEST_CASE("errc has a named category, messages, and transient classification") {
  error_code ec = errc::lb_unavailable;
  CHECK(ec.category().name() == std::string("rollout"));
  CHECK(ec.message() == "load balancer unavailable");
  CHECK(&ec.category() == &rollout::category());
  CHECK(is_transient(ec));
  CHECK(is_transient(make_error_code(errc::timeout)));
  CHECK(is_transient(make_error_code(errc::lb_verify_mismatch)));
  CHECK(is_transient(boost::asio::error::connection_refused));
  CHECK_FALSE(is_transient(make_error_code(errc::unknown_server)));
  CHECK_FALSE(is_transient(make_error_code(errc::lb_rejected)));
  CHECK_FALSE(is_transient(make_error_code(errc::permission_denied)));
  CHECK_FALSE(is_transient(make_error_code(errc::protocol_error)));
  for (int i = 1; i <= static_cast<int>(errc::rollback_failed); ++i) {
    CHECK(make_error_code(static_cast<errc>(i)).message() != "unknown rollout error");
  }
  CHECK(fmt::format("{}", errc::no_data) == "no data");
}

TEST_CASE("Error carries the backend's words and converts into result") {
  Error plain = errc::timeout;
  CHECK(plain.message == "timed out");
  Error specific(errc::unknown_server, "No such server.");
  CHECK(specific == errc::unknown_server);
  CHECK(fmt::format("{}", specific) == "No such server.");
  CHECK(Error(errc::lb_rejected, "").message == "load balancer rejected the command");

  result<int> r = Error(errc::query_failed, "parse error at char 5");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == make_error_code(errc::query_failed));
  try {
    (void)r.value();
    FAIL("value() must throw");
  } catch (const rollout::system_error& e) {
    CHECK(e.code() == make_error_code(errc::query_failed));
    CHECK(e.message() == "parse error at char 5");
  }
  result<void> ok;
  CHECK(ok);
}

TEST_CASE("format_duration reads like a human wrote it") {
  CHECK(format_duration(0s) == "0s");
  CHECK(format_duration(250ms) == "250ms");
  CHECK(format_duration(1500ms) == "1.5s");
  CHECK(format_duration(10min) == "10m");
  CHECK(format_duration(150min) == "2h30m");
  CHECK(format_duration(90s) == "1m30s");
  CHECK(format_duration(5min + 10ms) == "5m0.01s");
  CHECK(format_duration(2h + 40s + 7ms) == "2h0m40.007s");
  CHECK(format_duration(1h + 1min + 1s) == "1h1m1s");
  CHECK(format_duration(2h) == "2h");
  CHECK(format_duration(-3s) == "-3s");
  CHECK(format_duration(1us) == "1us");
  CHECK(format_duration(7ns) == "7ns");
  CHECK(format_duration(Duration::max()) == "forever");
}

TEST_CASE("Backoff validates each field by name and grows with a cap") {
  Backoff b;
  CHECK_NOTHROW(b.validate("lb_retry"));
  auto with = [](auto mutate) {
    Backoff x;
    mutate(x);
    return rejection([&] { x.validate("lb_retry"); });
  };
  CHECK(with([](Backoff& x) { x.max_attempts = 0; }) == "invalid option lb_retry.max_attempts = 0: must be at least 1");
  CHECK(with([](Backoff& x) { x.initial = -1s; }) == "invalid option lb_retry.initial = -1s: must be greater than 0");
  CHECK(with([](Backoff& x) { x.max_delay = 1ms; }) ==
        "invalid option lb_retry.max_delay = 1ms: must be at least initial (200ms)");
  CHECK(with([](Backoff& x) { x.multiplier = 0.5; }) == "invalid option lb_retry.multiplier = 0.5: must be within 1..1e6");
  CHECK(with([](Backoff& x) { x.jitter = 1.5; }) == "invalid option lb_retry.jitter = 1.5: must be within 0..1");

  Backoff exact;
  exact.jitter = 0;
  std::mt19937_64 rng(1);
  CHECK(exact.delay(1, rng) == 200ms);
  CHECK(exact.delay(2, rng) == 400ms);
  CHECK(exact.delay(3, rng) == 800ms);
  CHECK(exact.delay(6, rng) == 5s);  // 6.4 s capped
  CHECK(exact.delay(60, rng) == 5s);

  // Jitter only ever shortens a wait, by at most the fraction, and is reproducible by seed.
  // JitterEngine is the strategies' source: the standard's MMIX LCG, 8 bytes of state.
  static_assert(sizeof(JitterEngine) == 8);
  JitterEngine a(42), b2(42);
  int shortened = 0;
  for (int k = 1; k < 10; ++k) {
    const auto d1 = b.delay(k, a);
    CHECK(d1 == b.delay(k, b2));
    exact.jitter = 0;
    JitterEngine dummy;
    const auto full = exact.delay(k, dummy);
    CHECK(d1 <= full);
    CHECK(d1 >= full * 8 / 10 - 1ns);
    if (d1 < full * 99 / 100) ++shortened;
  }
  CHECK(shortened >= 5);  // the jitter is random, not a constant
  // The same numbers on every standard library: x' = 6364136223846793005 x + 1442695040888963407 mod 2^64.
  JitterEngine known(42);
  CHECK(known() == 0x91778aed87ee5eb1ULL);
  // Written out so the umbrella need not include <random>: the same numbers as the
  // standard's engine with these parameters, from any seed, including the default.
  for (const std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{42}, ~std::uint64_t{0}}) {
    JitterEngine ours(seed);
    std::linear_congruential_engine<std::uint64_t, 6364136223846793005ULL, 1442695040888963407ULL, 0> standard(seed);
    for (int i = 0; i < 1000; ++i) REQUIRE(ours() == standard());
  }
  JitterEngine ours_default;
  std::linear_congruential_engine<std::uint64_t, 6364136223846793005ULL, 1442695040888963407ULL, 0> standard_default;
  for (int i = 0; i < 100; ++i) REQUIRE(ours_default() == standard_default());
  static_assert(std::uniform_random_bit_generator<JitterEngine>);
  static_assert(JitterEngine::min() == 0 && JitterEngine::max() == ~std::uint64_t{0});
}

TEST_CASE("Control requests are sticky and reported to the listener") {
  Control c;
  std::vector<Control::Request> seen;
  c.promote();  // before any listener: kept
  c.set_listener([&](Control::Request r, const std::string&) { seen.push_back(r); });
  c.pause();
  c.pause();  // idempotent
  c.resume();
  c.abort("bad metrics");
  c.abort("second abort is ignored");
  CHECK(c.abort_requested());
  CHECK(c.abort_reason() == "bad metrics");
  CHECK(c.take_promotion());
  CHECK_FALSE(c.take_promotion());
  CHECK(seen == std::vector{Control::Request::pause, Control::Request::resume, Control::Request::abort});
}

TEST_CASE("every public type formats with fmt") {
  Instance i{"g-1", {"v2"}, {"127.0.0.1", 8080}};
  CHECK(fmt::format("{}", i) == "g-1(v2@127.0.0.1:8080)");
  CHECK(fmt::format("{}", Environment{"green", {"v2"}, {i}}) == "green(v2, 1 instances)");
  CHECK(fmt::format("{}", HealthResult::down("HTTP 503", 2ms)) == "unhealthy (HTTP 503, 2ms)");
  CHECK(fmt::format("{}", Verdict::unsure("no data")) == "inconclusive: no data");
  CHECK(fmt::format("{}", Scope{ScopeRole::baseline, {"v1"}}) == "baseline(v1)");
  CHECK(fmt::format("{}", MetricValue{NoData{"empty result"}}) == "no data (empty result)");
  CHECK(fmt::format("{}", MetricValue{0.25}) == "0.25");
  CHECK(fmt::format("{}", MetricValue{Samples{1, 2, 3}}) == "3 samples");
  MetricQuery q{"error-rate", "sum(rate(x[1m]))", 1min, MetricQuery::Want::value};
  CHECK(fmt::format("{}", q) == "error-rate[1m]: sum(rate(x[1m]))");

  Event e{90s, EventKind::traffic_applied, "blue_green", "green", "verified", TrafficSplit::all_to("green"), {}};
  CHECK(fmt::format("{}", e) == "+1m30s blue_green traffic_applied green: verified {green: 100%}");
  Event err{2s, EventKind::lb_error, "canary", "", "attempt 1 failed", std::nullopt, make_error_code(errc::timeout)};
  CHECK(fmt::format("{}", err) == "+2s canary lb_error: attempt 1 failed [timed out]");

  Outcome o;
  o.status = Status::rolled_back;
  o.code = make_error_code(errc::unhealthy);
  o.reason = "g-2 failed";
  o.active = "blue";
  o.elapsed = 2min;
  o.timeline = {e};
  CHECK(fmt::format("{}", o) == "RolledBack after 2m: g-2 failed [instances became unhealthy]; 100% on blue");
  CHECK(format_timeline(o) == "+1m30s blue_green traffic_applied green: verified {green: 100%}\n");
  CHECK(fmt::format("{}", Status::promoted) == "Promoted");
  CHECK(fmt::format("{}", Backoff{}) == "5 attempts, 200ms x2 up to 5s, jitter 0.2");
  CHECK(fmt::format("{}", Control::Request::promote_full) == "promote_full");
  CHECK(fmt::format("{}", Error(errc::unknown_server, "No such server.")) == "No such server.");
}

TEST_CASE("Timeline gives back every field of every event, in order, compactly") {
  const std::string long_detail(300, 'd');
  std::vector<Event> in{
      Event{0s, EventKind::run_started, "rolling", "v2", "v1 -> v2", std::nullopt, {}},
      Event{1s, EventKind::instance_created, "rolling", "v2-00001", "v2 at 10.0.0.1:9000", std::nullopt, {}},
      Event{2s, EventKind::traffic_applied, "canary", "", "verified by read-back", TrafficSplit::between("canary", 10_pct, "stable"), {}},
      Event{3s, EventKind::lb_error, "canary", "canary", long_detail, TrafficSplit::all_to("stable"), make_error_code(errc::timeout)},
      Event{4s, EventKind::instance_failed, "rolling", "", "", std::nullopt, make_error_code(errc::not_ready)},
      Event{5s, EventKind::run_finished, "blue_green", "blue", "Promoted", std::nullopt, {}},
  };
  Timeline t;
  CHECK(t.empty());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (i % 2 == 0) t.push_back(in[i]);
    else t.push_back(Event(in[i]));  // the moving overload
  }
  REQUIRE(t.size() == in.size());
  const auto same = [](const Event& a, const Event& b) {
    return a.at == b.at && a.kind == b.kind && a.strategy == b.strategy && a.subject == b.subject && a.detail == b.detail &&
           a.split == b.split && a.error == b.error;
  };
  for (std::size_t i = 0; i < in.size(); ++i) CHECK_MESSAGE(same(t[i], in[i]), i);
  CHECK(same(t.front(), in.front()));
  CHECK(same(t.back(), in.back()));
  CHECK(t[3].detail == long_detail);
  CHECK(t[3].split == TrafficSplit::all_to("stable"));

  // The iterators: random access, by value, for range-for and std::ranges.
  static_assert(std::random_access_iterator<Timeline::const_iterator>);
  std::size_t i = 0;
  for (const auto& e : t) CHECK(same(e, in[i++]));
  CHECK(i == in.size());
  CHECK(std::ranges::count_if(t, [](const Event& e) { return e.strategy == "canary"; }) == 2);
  CHECK(std::count_if(t.begin(), t.end(), [](const Event& e) { return static_cast<bool>(e.error); }) == 2);
  auto it = std::ranges::find_if(t, [](const Event& e) { return e.kind == EventKind::lb_error; });
  REQUIRE(it != t.end());
  CHECK(it - t.begin() == 3);
  CHECK(it->subject == "canary");
  CHECK((it + 2)->kind == EventKind::run_finished);
  CHECK(it[-1].kind == EventKind::traffic_applied);
  CHECK(t.end() - t.begin() == static_cast<std::ptrdiff_t>(t.size()));
  CHECK((t.begin() < t.end()));

  // A copy is independent; a braced list builds one; clear() forgets all.
  Timeline copy = t;
  t.clear();
  CHECK(t.empty());
  CHECK(copy.size() == in.size());
  CHECK(same(copy[2], in[2]));
  t.push_back(in[5]);
  CHECK(same(t[0], in[5]));
  const Timeline braced{in[0], in[1]};
  CHECK(braced.size() == 2);
  CHECK(same(braced[1], in[1]));
  Outcome o;
  o.timeline = braced;
  CHECK(format_timeline(o) ==
        "+0s rolling run_started v2: v1 -> v2\n+1s rolling instance_created v2-00001: v2 at 10.0.0.1:9000\n");

  // What it costs: a rolling update's four events of one replacement, reserved
  // exactly, hold under 64 bytes each; a std::vector<Event> held 168 each, plus
  // a heap block for each detail of 16 characters or more.
  Timeline big;
  constexpr std::size_t n = 1000;
  big.reserve(4 * n, 4 * n * 24);
  for (std::size_t k = 0; k < n; ++k) {
    const auto id = fmt::format("v2-{:05}", k);
    const auto old = fmt::format("v1-{:05}", k);
    big.push_back(Event{1s, EventKind::instance_created, "rolling", id, "v2 at 10.0.0.1:9000", std::nullopt, {}});
    big.push_back(Event{2s, EventKind::instance_ready, "rolling", id, "available", std::nullopt, {}});
    big.push_back(Event{3s, EventKind::instance_retiring, "rolling", old, "old instance (v1)", std::nullopt, {}});
    big.push_back(Event{4s, EventKind::instance_retired, "rolling", old, "", std::nullopt, {}});
  }
  CHECK(big.capacity() == 4 * n);
  CHECK(big.memory_bytes() < 4 * n * 64);
  CHECK(big[4 * 517 + 2].subject == "v1-00517");
  CHECK(big[4 * 517 + 2].detail == "old instance (v1)");
}

TEST_CASE("Timeline refuses a 65,536th strategy name and is left as it was") {
  Timeline t;
  for (int i = 0; i < 0xFFFF; ++i) t.push_back(Event{1s, EventKind::run_started, fmt::format("s{}", i), "x", "", std::nullopt, {}});
  REQUIRE(t.size() == 0xFFFF);
  const auto before = t.memory_bytes();
  CHECK_THROWS_WITH_AS(t.push_back(Event{2s, EventKind::run_finished, "one-too-many", "y", "detail", std::nullopt, {}}),
                       "rollout::Timeline: strategy name \"one-too-many\" would be the 65,536th; a timeline holds 65,535",
                       std::length_error);
  CHECK(t.size() == 0xFFFF);
  CHECK(t.memory_bytes() == before);
  CHECK(t.back().strategy == "s65534");
  CHECK(t.back().subject == "x");
  // A name it already holds is still accepted.
  t.push_back(Event{3s, EventKind::run_finished, "s7", "z", "", std::nullopt, {}});
  CHECK(t.size() == 0x10000);
  CHECK(t.back().strategy == "s7");
}

TEST_CASE("ObserverList delivers to observers and callables in order") {
  struct Counter {
    int n = 0;
    void on_event(const Event&) { ++n; }
  } counter;
  std::vector<EventKind> kinds;
  ObserverList list;
  list.add(counter);
  list.add([&](const Event& e) { kinds.push_back(e.kind); });
  list.on_event(Event{0s, EventKind::run_started, "x", "", "", std::nullopt, {}});
  list.on_event(Event{1s, EventKind::run_finished, "x", "", "", std::nullopt, {}});
  CHECK(counter.n == 2);
  CHECK(kinds == std::vector{EventKind::run_started, EventKind::run_finished});
}
