// Compile time: a TU with <boost/asio.hpp> only, a TU with <rollout/rollout.hpp>,
// one with the three strategies instantiated, and one per opt-in header, all with
// the compiler that built this program, the same flags (-O0, C++20), one after
// the other in the same run. Printed as the compiler's CPU seconds (best of 3)
// and as a ratio to the Asio TU.
//
// Usage: compile_bench [--smoke]   (--smoke: the Asio and umbrella TUs with -fsyntax-only)
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#if !defined(ROLLOUT_BENCH_CXX) || !defined(ROLLOUT_BENCH_INCLUDE)
#error "ROLLOUT_BENCH_CXX and ROLLOUT_BENCH_INCLUDE must name the compiler and rollout's include directory"
#endif

namespace {

struct Tu {
  std::string name;
  std::string source;
};

/// CPU seconds (user + system) that the compiler's processes spent on `tu`,
/// the best of `runs` compilations: CPU time, unlike wall time, barely moves
/// when something else shares the machine, and the best run drops the rest.
double compile(const std::filesystem::path& dir, const Tu& tu, bool syntax_only, int runs) {
  const auto file = dir / "tu.cpp";
  std::ofstream(file) << tu.source;
  const auto cmd = fmt::format("'{}' -std=c++20 -O0 -DBOOST_PROCESS_USE_STD_FS=1 -DBOOST_ASIO_NO_DEPRECATED -I'{}' {} '{}' 2>&1",
                               ROLLOUT_BENCH_CXX, ROLLOUT_BENCH_INCLUDE, syntax_only ? "-fsyntax-only" : "-c -o /dev/null", file.string());
  auto children_cpu = [] {
    rusage ru{};
    ::getrusage(RUSAGE_CHILDREN, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  };
  double best = -1;
  for (int k = 0; k < runs; ++k) {
    const double t0 = children_cpu();
    const int rc = std::system(cmd.c_str());
    const double s = children_cpu() - t0;
    if (rc != 0) {
      fmt::print(stderr, "compile_bench: {} failed to compile (exit {})\n", tu.name, rc);
      return -1;
    }
    if (best < 0 || s < best) best = s;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  std::vector<Tu> tus;
  tus.push_back({"<boost/asio.hpp> only", "#include <boost/asio.hpp>\nint main() {}\n"});
  tus.push_back({"<rollout/rollout.hpp> (umbrella)", "#include <rollout/rollout.hpp>\nint main() {}\n"});
  if (!smoke) {
    // What rollout's own builds compile: every format string in the headers checked
    // at compile time (rollout/detail/format.hpp); a user's build skips the check.
    tus.push_back({"<rollout/rollout.hpp>, format strings checked (ROLLOUT_CHECK_FORMAT_STRINGS)",
                   "#define ROLLOUT_CHECK_FORMAT_STRINGS\n#include <rollout/rollout.hpp>\nint main() {}\n"});
    tus.push_back({"umbrella + BlueGreen, Canary, Rolling instantiated",
                   "#include <rollout/rollout.hpp>\n#include <rollout/testing/testing.hpp>\n"
                   "using namespace rollout;\nusing LB = testing::ScriptedLoadBalancer<>;\n"
                   "template class rollout::BlueGreen<LB, testing::ScriptedProbe<>, testing::SimClock>;\n"
                   "template class rollout::Canary<LB, testing::ScriptedMetrics<>, testing::SimClock>;\n"
                   "template class rollout::Rolling<testing::FakeOrchestrator<>, testing::SimClock>;\n"
                   "int main() {}\n"});
    for (const char* h : {"http_probe.hpp", "https_probe.hpp", "tcp_probe.hpp", "haproxy.hpp", "weighted_router.hpp",
                          "process_orchestrator.hpp", "counter_source.hpp", "prometheus.hpp", "exposition.hpp", "webhook.hpp",
                          "log_observer.hpp", "testing/testing.hpp"}) {
      tus.push_back({fmt::format("<rollout/{}>", h), fmt::format("#include <rollout/{}>\nint main() {{}}\n", h)});
    }
  }
  char tmpl[] = "/tmp/rollout-compile-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) return 1;
  const std::filesystem::path dir = tmpl;
  const int runs = smoke ? 1 : 3;
  fmt::print("Compile time, {} -O0 -std=c++20{}, one TU at a time, CPU seconds (user + system) of the best of {}\n", ROLLOUT_BENCH_CXX,
             smoke ? " -fsyntax-only" : " -c", runs);
  fmt::print("| TU | CPU seconds | ratio to <boost/asio.hpp> |\n|---|---|---|\n");
  std::fflush(stdout);
  double base = 0;
  int failed = 0;
  for (const auto& tu : tus) {
    const double s = compile(dir, tu, smoke, runs);
    if (s < 0) {
      ++failed;
      continue;
    }
    if (base == 0) base = s;
    fmt::print("| {} | {:.2f} | {:.2f}x |\n", tu.name, s, s / base);
    std::fflush(stdout);
  }
  std::filesystem::remove_all(dir);
  fmt::print("Target: the umbrella TU within 1.3x of the Asio TU\n");
  return failed == 0 ? 0 : 1;
}
