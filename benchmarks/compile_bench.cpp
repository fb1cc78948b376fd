// Compile time: a TU with <boost/asio.hpp> only, a TU with <rollout/rollout.hpp>,
// one with the three strategies instantiated, and one per opt-in header, all with
// the compiler that built this program, the same flags (-O0, C++20), one after
// the other in the same run. Printed as the compiler's CPU seconds (best of 3)
// and as a ratio to the Asio TU. The runs are interleaved (every TU once, three
// rounds), so that a slow spell of this shared VM falls on all of them alike
// instead of on the one whose turn it was.
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

/// CPU seconds (user + system) that the compiler's processes spent on one
/// compilation of `tu` (CPU time, unlike wall time, barely moves when something
/// else shares the machine), or -1 if it failed.
double compile_once(const std::filesystem::path& file, const Tu& tu, bool syntax_only) {
  const auto cmd = fmt::format("'{}' -std=c++20 -O0 -DBOOST_PROCESS_USE_STD_FS=1 -DBOOST_ASIO_NO_DEPRECATED -I'{}' {} '{}' 2>&1",
                               ROLLOUT_BENCH_CXX, ROLLOUT_BENCH_INCLUDE, syntax_only ? "-fsyntax-only" : "-c -o /dev/null", file.string());
  auto children_cpu = [] {
    rusage ru{};
    ::getrusage(RUSAGE_CHILDREN, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  };
  const double t0 = children_cpu();
  const int rc = std::system(cmd.c_str());
  const double s = children_cpu() - t0;
  if (rc != 0) {
    fmt::print(stderr, "compile_bench: {} failed to compile (exit {})\n", tu.name, rc);
    return -1;
  }
  return s;
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
  fmt::print("Compile time, {} -O0 -std=c++20{}, one TU at a time, CPU seconds (user + system), best of {} rounds (each round compiles every TU once)\n", ROLLOUT_BENCH_CXX,
             smoke ? " -fsyntax-only" : " -c", runs);
  fmt::print("| TU | CPU seconds | ratio to <boost/asio.hpp> |\n|---|---|---|\n");
  std::fflush(stdout);
  std::vector<std::filesystem::path> files;
  for (std::size_t i = 0; i < tus.size(); ++i) {
    files.push_back(dir / fmt::format("tu{}.cpp", i));
    std::ofstream(files.back()) << tus[i].source;
  }
  // Best of `runs`, in rounds: every TU once per round.
  std::vector<double> best(tus.size(), -1);
  std::vector<bool> broken(tus.size(), false);
  for (int k = 0; k < runs; ++k) {
    for (std::size_t i = 0; i < tus.size(); ++i) {
      if (broken[i]) continue;
      const double s = compile_once(files[i], tus[i], smoke);
      if (s < 0) broken[i] = true;
      else if (best[i] < 0 || s < best[i]) best[i] = s;
    }
  }
  int failed = 0;
  for (std::size_t i = 0; i < tus.size(); ++i) {
    if (broken[i]) {
      ++failed;
      continue;
    }
    fmt::print("| {} | {:.2f} | {:.2f}x |\n", tus[i].name, best[i], best[0] > 0 ? best[i] / best[0] : 0.0);
  }
  std::filesystem::remove_all(dir);
  fmt::print("Target: the umbrella TU within 1.3x of the Asio TU\n");
  return failed == 0 ? 0 : 1;
}
