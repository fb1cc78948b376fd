// ProcessOrchestrator with real processes of examples/sample_service: start,
// readiness through a real HTTP probe, graceful retirement that finishes a
// request in flight, crash detection, signal vs exit code, SIGKILL after the
// grace period, load balancer hooks, and a rolling update of real processes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "support/run.hpp"
#include <rollout/http_probe.hpp>
#include <rollout/process_orchestrator.hpp>
#include <rollout/strategy/rolling.hpp>
#include <rollout/weighted_router.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <future>
#include <map>
#include <thread>
#include <optional>
#include <string>
#include <vector>

#ifndef ROLLOUT_SAMPLE_SERVICE
#error "ROLLOUT_SAMPLE_SERVICE must name the sample_service executable"
#endif

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace rollout;
using namespace std::chrono_literals;
using Orch = ProcessOrchestrator<HttpProbe>;

using test_support::run;

namespace {

HttpProbe health_probe() {
  HttpProbeOptions o;
  o.path = "/health";
  o.timeout = 500ms;
  return HttpProbe(o);
}

ProcessOrchestratorOptions sample(Duration grace = 5s) {
  ProcessOrchestratorOptions o;
  o.executable = ROLLOUT_SAMPLE_SERVICE;
  o.args = {"--port", "{port}", "--version", "{revision}"};
  o.ready_poll = 50ms;
  o.grace = grace;
  return o;
}

/// Hooks that record "drain <id>" and "gone <id>" in `calls`; a test adds its own on_ready.
InstanceRegistration recording_drain_and_gone(std::vector<std::string>& calls) {
  InstanceRegistration reg;
  reg.on_drain = [&calls](const Instance& i) -> asio::awaitable<result<void>> {
    calls.push_back("drain " + i.id);
    co_return result<void>{};
  };
  reg.on_gone = [&calls](const Instance& i) -> asio::awaitable<result<void>> {
    calls.push_back("gone " + i.id);
    co_return result<void>{};
  };
  return reg;
}

/// A blocking GET; returns status and body.
std::pair<unsigned, std::string> get(const Endpoint& ep, const std::string& target) {
  asio::io_context io;
  beast::tcp_stream s(io);
  s.expires_after(10s);
  s.connect(asio::ip::tcp::endpoint(asio::ip::make_address(ep.host), ep.port));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, ep.host);
  http::write(s, req);
  beast::flat_buffer b;
  http::response<http::string_body> res;
  http::read(s, b, res);
  return {res.result_int(), res.body()};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("create, wait_ready, serve, retire with SIGTERM: exit code 0") {
  asio::io_context io;
  auto probe = health_probe();
  Orch orch(probe, sample());
  auto inst = run(io, orch.create(Revision{"v2"}));
  REQUIRE(inst.has_value());
  CHECK(inst->id == "v2-0");
  REQUIRE(run(io, orch.wait_ready(*inst)).has_value());
  CHECK(get(inst->endpoint, "/version").second == "v2\n");
  CHECK(run(io, orch.list())->size() == 1);
  REQUIRE(run(io, orch.retire(*inst)).has_value());
  REQUIRE(orch.last_exit(inst->id));
  CHECK(orch.last_exit(inst->id)->text() == "exited with code 0");
  CHECK(run(io, orch.list())->empty());
  CHECK(run(io, orch.retire(*inst)).has_value());  // idempotent
}

TEST_CASE("graceful retirement finishes a request in flight") {
  asio::io_context io;
  auto probe = health_probe();
  auto o = sample();
  o.revision_args["slow"] = {"--latency-ms", "800"};
  Orch orch(probe, o);
  auto inst = run(io, orch.create(Revision{"slow"}));
  REQUIRE(inst.has_value());
  REQUIRE(run(io, orch.wait_ready(*inst)).has_value());
  auto in_flight = std::async(std::launch::async, [ep = inst->endpoint] { return get(ep, "/work"); });
  std::this_thread::sleep_for(200ms);  // the request is being served
  REQUIRE(run(io, orch.retire(*inst)).has_value());
  auto [status, body] = in_flight.get();
  CHECK(status == 200);
  CHECK(body == "hello from slow\n");
  CHECK(orch.last_exit(inst->id)->text() == "exited with code 0");
}

TEST_CASE("a process that dies while starting fails wait_ready with how it ended") {
  asio::io_context io;
  auto probe = health_probe();
  auto o = sample();
  o.revision_args["broken"] = {"--error-rate", "7"};  // rejected by the service: exit code 2
  Orch orch(probe, o);
  std::vector<std::string> exits;
  orch.on_exit = [&](const Instance& i, const detail::ExitStatus& s, bool crashed) {
    exits.push_back(fmt::format("{} {}{}", i.id, s.text(), crashed ? " (crash)" : ""));
  };
  auto inst = run(io, orch.create(Revision{"broken"}));
  REQUIRE(inst.has_value());
  auto ready = run(io, orch.wait_ready(*inst));
  REQUIRE_FALSE(ready.has_value());
  CHECK(ready.error() == errc::instance_failed);
  CHECK(ready.error().message == "broken-0 exited with code 2 while starting");
  CHECK(exits == std::vector<std::string>{"broken-0 exited with code 2 (crash)"});
  CHECK(run(io, orch.list())->empty());

  auto missing = sample();
  missing.executable = "/nonexistent/rollout-sample";
  Orch nowhere(probe, missing);
  auto none = run(io, nowhere.create(Revision{"v1"}));
  REQUIRE_FALSE(none.has_value());
  CHECK(none.error() == errc::instance_failed);
  CHECK(contains(none.error().message, "/nonexistent/rollout-sample"));
}

TEST_CASE("a crash is detected, and a signal is told apart from an exit code") {
  asio::io_context io;
  auto probe = health_probe();
  Orch orch(probe, sample());
  std::vector<std::string> exits;
  orch.on_exit = [&](const Instance& i, const detail::ExitStatus& s, bool crashed) {
    exits.push_back(fmt::format("{} {}{}", i.id, s.text(), crashed ? " (crash)" : ""));
  };
  auto inst = run(io, orch.create(Revision{"v1"}));
  REQUIRE(run(io, orch.wait_ready(*inst)).has_value());
  const auto pid = orch.pid(inst->id);
  REQUIRE(pid);
  ::kill(*pid, SIGKILL);
  for (int i = 0; i < 100 && exits.empty(); ++i) {
    io.restart();
    io.run_for(20ms);
  }
  CHECK(exits == std::vector<std::string>{"v1-0 killed by signal 9 (SIGKILL) (crash)"});
  CHECK(run(io, orch.list())->empty());
}

TEST_CASE("a process that ignores SIGTERM is killed after the grace period") {
  asio::io_context io;
  TcpProbe probe(200ms);
  ProcessOrchestratorOptions o;
  o.executable = "/bin/sh";
  o.args = {"-c", "trap '' TERM; exec sleep 30"};  // an ignored signal stays ignored across exec
  o.grace = 300ms;
  ProcessOrchestrator<TcpProbe> orch(probe, o);
  auto inst = run(io, orch.create(Revision{"stubborn"}));
  REQUIRE(inst.has_value());
  // Wait until the shell has installed its trap and exec'd sleep.
  const auto pid = orch.pid(inst->id);
  REQUIRE(pid);
  for (int i = 0; i < 200; ++i) {
    std::ifstream comm(fmt::format("/proc/{}/comm", *pid));
    std::string name;
    std::getline(comm, name);
    if (name == "sleep") break;
    std::this_thread::sleep_for(10ms);
  }
  const auto started = std::chrono::steady_clock::now();
  REQUIRE(run(io, orch.retire(*inst)).has_value());
  CHECK(orch.last_exit(inst->id)->text() == "killed by signal 9 (SIGKILL)");
  CHECK(std::chrono::steady_clock::now() - started < 10s);
}

TEST_CASE("load balancer hooks: registered when ready, removed before SIGTERM") {
  asio::io_context io;
  auto probe = health_probe();
  WeightedRouter router;
  std::vector<std::string> calls;
  InstanceRegistration reg;
  reg.on_ready = [&](const Instance& i) -> asio::awaitable<result<void>> {
    calls.push_back("ready " + i.id);
    router.add("pool", i);
    co_return router.apply_now(TrafficSplit::all_to("pool"));
  };
  reg.on_drain = [&](const Instance& i) -> asio::awaitable<result<void>> {
    calls.push_back("drain " + i.id);
    router.remove(i.id);
    co_return result<void>{};
  };
  reg.on_gone = [&](const Instance& i) -> asio::awaitable<result<void>> {
    calls.push_back("gone " + i.id);
    co_return result<void>{};
  };
  Orch orch(probe, sample(), reg);
  auto inst = run(io, orch.create(Revision{"v1"}));
  REQUIRE(run(io, orch.wait_ready(*inst)).has_value());
  REQUIRE(router.pick());
  CHECK(router.pick()->id == "v1-0");
  REQUIRE(run(io, orch.retire(*inst)).has_value());
  CHECK(calls == std::vector<std::string>{"ready v1-0", "drain v1-0", "gone v1-0"});
}

TEST_CASE("one readiness watch reports real processes: ready and registered, crashed, unknown") {
  asio::io_context io;
  auto probe = health_probe();
  auto o = sample();
  o.revision_args["broken"] = {"--error-rate", "7"};  // rejected by the service: exit code 2
  std::vector<std::string> registered;
  InstanceRegistration reg;
  reg.on_ready = [&](const Instance& i) -> asio::awaitable<result<void>> {
    registered.push_back(i.id);
    co_return result<void>{};
  };
  Orch orch(probe, o, reg);
  std::vector<Instance> made;
  for (const char* rev : {"v1", "v1", "broken"}) {
    auto inst = run(io, orch.create(Revision{rev}));
    REQUIRE(inst.has_value());
    made.push_back(*inst);
  }
  auto w = orch.watch_readiness();
  static_assert(ReadinessWatch<decltype(w)>);
  for (const auto& i : made) w.add(i);
  w.add(Instance{"ghost", Revision{"v1"}, made[0].endpoint});
  std::map<std::string, std::string> verdicts;
  while (verdicts.size() < 4) {
    auto got = run(io, w.next());
    REQUIRE(got.has_value());
    REQUIRE_FALSE(got->empty());
    for (const auto& r : *got) {
      CHECK_FALSE(verdicts.contains(r.id));  // each instance is reported once
      verdicts[r.id] = r.ready ? std::string("ready") : r.ready.error().message;
    }
  }
  CHECK(verdicts[made[0].id] == "ready");
  CHECK(verdicts[made[1].id] == "ready");
  CHECK(verdicts[made[2].id] == "broken-2 exited with code 2 while starting");
  CHECK(verdicts["ghost"] == "ghost is not one of our processes");
  std::sort(registered.begin(), registered.end());
  CHECK(registered == std::vector<std::string>{made[0].id, made[1].id});  // on_ready ran for the ready ones only
  for (int k = 0; k < 2; ++k) CHECK(get(made[k].endpoint, "/version").second == "v1\n");
  run(io, orch.shutdown());
}

TEST_CASE("a readiness watch undoes a registration the strategy gave up on, and a cancelled next() loses no report") {
  asio::io_context io;
  auto probe = health_probe();
  Orch::ReadinessWatchImpl* watch = nullptr;
  std::vector<std::string> registered, gone;
  bool hold_v1_1 = true, holding = false;
  InstanceRegistration reg;
  reg.on_ready = [&](const Instance& i) -> asio::awaitable<result<void>> {
    registered.push_back(i.id);
    if (i.id == "v1-2") {
      // The strategy's deadline for v1-2 passes while it is being registered.
      watch->remove(i.id);
    } else if (i.id == "v1-1" && hold_v1_1) {
      hold_v1_1 = false;
      holding = true;
      asio::steady_timer t(co_await asio::this_coro::executor, 30s);
      co_await t.async_wait(asio::use_awaitable);  // until the next() above is cancelled
    }
    co_return result<void>{};
  };
  reg.on_gone = [&](const Instance& i) -> asio::awaitable<result<void>> {
    gone.push_back(i.id);
    co_return result<void>{};
  };
  Orch orch(probe, sample(), reg);
  std::vector<Instance> made;
  for (int k = 0; k < 3; ++k) made.push_back(run(io, orch.create(Revision{"v1"})).value());
  auto w = orch.watch_readiness();
  watch = &w;
  for (const auto& i : made) w.add(i);
  // Wait until every process serves, so that one round settles all three in id order.
  for (const auto& i : made) {
    while (!run(io, probe.check(i)).healthy) run(io, asio::steady_timer(io, 20ms).async_wait(asio::use_awaitable));
  }
  // First next(): v1-0 is settled (ready, registered), then the round is
  // cancelled while v1-1 is being registered.
  asio::cancellation_signal sig;
  bool first_done = false;
  std::exception_ptr first_error;
  asio::co_spawn(io, w.next(), asio::bind_cancellation_slot(sig.slot(), [&](std::exception_ptr e, result<std::vector<ReadinessReport>>) {
                   first_done = true;
                   first_error = e;
                 }));
  io.restart();
  while (!holding) io.run_one();
  sig.emit(asio::cancellation_type::terminal);
  while (!first_done) io.run_one();
  CHECK(first_error);  // operation_aborted
  CHECK(gone.empty());
  // v1-0, settled by the cancelled round, is not lost: the next next() returns it,
  // alone, at once. Then a round registers v1-1 again and v1-2, which is removed
  // while it is being registered: unregistered (on_gone), not reported. A ghost
  // keeps every round reporting something, so that no next() below waits forever
  // if this breaks; each is also cut off after 10 s.
  w.add(Instance{"ghost", Revision{"v1"}, made[0].endpoint});
  auto next_within = [&](Duration limit) {
    asio::cancellation_signal stop;
    std::optional<std::vector<ReadinessReport>> got;
    bool done = false, timer_done = false;
    asio::co_spawn(io, w.next(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e, result<std::vector<ReadinessReport>> r) {
                     done = true;
                     if (!e && r) got = std::move(*r);
                   }));
    asio::steady_timer cutoff(io, limit);
    cutoff.async_wait([&](boost::system::error_code ec) {
      timer_done = true;
      if (!ec && !done) stop.emit(asio::cancellation_type::terminal);
    });
    io.restart();
    while (!done) io.run_one();
    cutoff.cancel();
    while (!timer_done) io.run_one();
    return got;
  };
  auto second = next_within(10s);
  REQUIRE(second);
  REQUIRE(second->size() == 1);
  CHECK((*second)[0].id == "v1-0");
  CHECK((*second)[0].ready.has_value());
  auto third = next_within(10s);
  REQUIRE(third);
  std::map<std::string, std::string> verdicts;
  for (const auto& r : *third) verdicts[r.id] = r.ready ? std::string("ready") : r.ready.error().message;
  CHECK(verdicts == std::map<std::string, std::string>{{"ghost", "ghost is not one of our processes"}, {"v1-1", "ready"}});
  CHECK(gone == std::vector<std::string>{"v1-2"});
  CHECK(registered == std::vector<std::string>{"v1-0", "v1-1", "v1-1", "v1-2"});  // v1-1 again: its first registration was cut short
  run(io, orch.shutdown());
}

TEST_CASE("a wait_ready cancelled while on_ready runs leaves the instance to be unregistered at retirement") {
  asio::io_context io;
  auto probe = health_probe();
  std::vector<std::string> calls;
  bool holding = false;
  InstanceRegistration reg = recording_drain_and_gone(calls);
  reg.on_ready = [&](const Instance& i) -> asio::awaitable<result<void>> {
    calls.push_back("ready " + i.id);  // added to the load balancer, then slow to return
    holding = true;
    asio::steady_timer t(co_await asio::this_coro::executor, 30s);
    co_await t.async_wait(asio::use_awaitable);
    co_return result<void>{};
  };
  Orch orch(probe, sample(), reg);
  auto inst = run(io, orch.create(Revision{"v1"}));
  REQUIRE(inst.has_value());
  asio::cancellation_signal deadline;  // the strategy's ready deadline
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, orch.wait_ready(*inst), asio::bind_cancellation_slot(deadline.slot(), [&](std::exception_ptr e, result<void>) {
                   done = true;
                   error = e;
                 }));
  io.restart();
  while (!holding) io.run_one();
  deadline.emit(asio::cancellation_type::terminal);
  while (!done) io.run_one();
  CHECK(error);  // operation_aborted
  // The hook had added it: retiring it must take it out again, not leave the
  // load balancer pointing at a process that is gone.
  REQUIRE(run(io, orch.retire(*inst)).has_value());
  CHECK(calls == std::vector<std::string>{"ready v1-0", "drain v1-0", "gone v1-0"});
}

TEST_CASE("retiring an instance while a readiness watch registers it waits for on_ready, then runs each hook once") {
  asio::io_context io;
  auto probe = health_probe();
  Orch* orch = nullptr;
  Orch::ReadinessWatchImpl* watch = nullptr;
  std::vector<std::string> calls;
  std::optional<Instance> given_up;  // outlives the retire started below
  bool retire_done = false, retired = false;
  InstanceRegistration reg = recording_drain_and_gone(calls);
  reg.on_ready = [&](const Instance& i) -> asio::awaitable<result<void>> {
    calls.push_back("ready " + i.id);
    // The strategy's ready deadline passes: it stops watching the instance and
    // retires it, while this hook is still adding it.
    watch->remove(i.id);
    given_up = i;
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, orch->retire(*given_up), [&](std::exception_ptr e, result<void> r) {
      retire_done = true;
      retired = !e && r.has_value();
    });
    asio::steady_timer t(ex, 200ms);
    co_await t.async_wait(asio::use_awaitable);
    calls.push_back("added " + i.id);
    co_return result<void>{};
  };
  Orch o(probe, sample(), reg);
  orch = &o;
  auto inst = run(io, o.create(Revision{"v1"}));
  REQUIRE(inst.has_value());
  while (!run(io, probe.check(*inst)).healthy) run(io, asio::steady_timer(io, 20ms).async_wait(asio::use_awaitable));
  auto w = o.watch_readiness();
  watch = &w;
  w.add(*inst);
  w.add(Instance{"ghost", Revision{"v1"}, inst->endpoint});  // so that the round reports something
  auto got = run(io, w.next());
  REQUIRE(got.has_value());
  REQUIRE(got->size() == 1);
  CHECK((*got)[0].id == "ghost");  // v1-0 was given up on: not reported
  io.restart();
  while (!retire_done) io.run_one();
  CHECK(retired);
  // on_drain only after on_ready has finished adding it; on_gone once, by retire.
  CHECK(calls == std::vector<std::string>{"ready v1-0", "added v1-0", "drain v1-0", "gone v1-0"});
}

TEST_CASE("a readiness watch reports a crash when it happens, not at its next poll") {
  asio::io_context io;
  auto probe = health_probe();
  auto o = sample();
  o.revision_args["sick"] = {"--unhealthy"};  // alive, and never healthy
  o.ready_poll = 1h;                          // so only the exit can start the next round in time
  Orch orch(probe, o);
  auto inst = run(io, orch.create(Revision{"sick"}));
  REQUIRE(inst.has_value());
  auto w = orch.watch_readiness();
  w.add(*inst);
  std::optional<result<std::vector<ReadinessReport>>> got;
  bool done = false, killed = false, cut_off = false;
  asio::cancellation_signal stop;
  asio::co_spawn(io, w.next(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e, result<std::vector<ReadinessReport>> r) {
                   done = true;
                   if (!e) got = std::move(r);
                 }));
  // The first round finds it starting (or unhealthy); then it is killed.
  asio::steady_timer crash(io, 300ms);
  crash.async_wait([&](boost::system::error_code ec) {
    if (ec) return;
    const auto pid = orch.pid(inst->id);
    REQUIRE(pid);
    ::kill(*pid, SIGKILL);
    killed = true;
  });
  asio::steady_timer cutoff(io, 20s);  // not a timing assertion: it only keeps a regression from hanging
  cutoff.async_wait([&](boost::system::error_code ec) {
    if (ec || done) return;
    cut_off = true;
    stop.emit(asio::cancellation_type::terminal);
  });
  io.restart();
  while (!done) io.run_one();
  crash.cancel();
  cutoff.cancel();
  io.run_for(100ms);
  CHECK(killed);
  CHECK_FALSE(cut_off);
  REQUIRE(got);
  REQUIRE(got->has_value());
  REQUIRE((*got)->size() == 1);
  const auto& report = (**got)[0];
  CHECK(report.id == inst->id);
  REQUIRE_FALSE(report.ready);
  CHECK(report.ready.error() == errc::instance_failed);
  CHECK(report.ready.error().message == "sick-0 killed by signal 9 (SIGKILL) while starting");
}

TEST_CASE("a rolling update of real processes") {
  asio::io_context io;
  auto probe = health_probe();
  Orch orch(probe, sample(3s));
  for (int i = 0; i < 3; ++i) {
    auto inst = run(io, orch.create(Revision{"v1"}));
    REQUIRE(inst.has_value());
    REQUIRE(run(io, orch.wait_ready(*inst)).has_value());
  }
  RollingOptions o;
  o.desired = 3;
  o.max_surge = 1;
  o.max_unavailable = 0;
  o.ready_deadline = 10s;
  Rolling<Orch> roll(orch, Revision{"v1"}, Revision{"v2"}, o);
  auto out = run(io, roll.run());
  CHECK(out.status == Status::promoted);
  auto fleet = run(io, orch.list());
  REQUIRE(fleet.has_value());
  CHECK(fleet->size() == 3);
  for (const auto& i : *fleet) CHECK(get(i.endpoint, "/version").second == "v2\n");
  MESSAGE(fmt::format("{}", out));
  run(io, orch.shutdown());
}
