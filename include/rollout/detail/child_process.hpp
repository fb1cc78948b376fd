#pragma once

/// @file
/// `detail::ChildProcess`: one child process on Boost.Process v2 (Boost 1.81),
/// with the 1.81 traps handled.
///
/// Requires `BOOST_PROCESS_USE_STD_FS` in every TU that includes Boost.Process:
/// Debian 12 ships no Boost.Filesystem 1.81, so v2 must use std::filesystem.
/// Link `rollout::process` (CMake), which defines it.

#if !defined(BOOST_PROCESS_USE_STD_FS)
#error "rollout's process support needs BOOST_PROCESS_USE_STD_FS: link the CMake target rollout::process (or define it in every TU)"
#endif

#include <rollout/core/error.hpp>
#include <rollout/detail/format.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
// Boost.Process 1.81 with BOOST_PROCESS_USE_STD_FS names boost::optional and uses
// unqualified decay / is_convertible that only its Boost.Filesystem path brings
// in; these includes make them visible from namespace boost.
#include <boost/optional.hpp>
#include <boost/type_traits/decay.hpp>
#include <boost/type_traits/enable_if.hpp>
#include <boost/type_traits/is_convertible.hpp>
#include <boost/process/v2/process.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace rollout::detail {

static_assert(std::is_same_v<boost::process::v2::filesystem::path, std::filesystem::path>,
              "Boost.Process v2 must be configured with BOOST_PROCESS_USE_STD_FS");

/// How a process ended, telling a signal apart from an exit code (Boost.Process
/// 1.81's `exit_code()` folds both into one int).
struct ExitStatus {
  bool signaled = false;
  int code = 0;    ///< exit code, when not signaled
  int signal = 0;  ///< terminating signal, when signaled

  bool clean() const noexcept { return !signaled && code == 0; }
  /// `exited with code 0`, `killed by signal 15 (SIGTERM)`.
  std::string text() const {
    if (!signaled) return detail::format("exited with code {}", code);
    const char* name = signal == SIGTERM ? " (SIGTERM)" : signal == SIGKILL ? " (SIGKILL)" : signal == SIGINT ? " (SIGINT)"
                       : signal == SIGSEGV ? " (SIGSEGV)" : signal == SIGABRT ? " (SIGABRT)" : "";
    return detail::format("killed by signal {}{}", signal, name);
  }
  static ExitStatus from_wait_status(int status) {
    ExitStatus s;
    if (WIFSIGNALED(status)) {
      s.signaled = true;
      s.signal = WTERMSIG(status);
    } else if (WIFEXITED(status)) {
      s.code = WEXITSTATUS(status);
    }
    return s;
  }
};

/// Sets the child's environment to the parent's plus `extra`, with an inline
/// `on_setup`. (Boost 1.81's `process_environment` defines its `on_setup` in a
/// non-inline .ipp that header-only users cannot include safely.)
struct ChildEnvironment {
  std::vector<std::string> entries;
  std::vector<const char*> pointers;

  explicit ChildEnvironment(const std::vector<std::pair<std::string, std::string>>& extra) {
    for (char** e = ::environ; e && *e; ++e) {
      const std::string_view kv{*e};
      const auto key = kv.substr(0, kv.find('='));
      bool overridden = false;
      for (const auto& [k, v] : extra) overridden = overridden || k == key;
      if (!overridden) entries.emplace_back(kv);
    }
    for (const auto& [k, v] : extra) entries.push_back(k + "=" + v);
    for (const auto& s : entries) pointers.push_back(s.c_str());
    pointers.push_back(nullptr);
  }
  ChildEnvironment(const ChildEnvironment&) = delete;  // `pointers` point into `entries`
  ChildEnvironment& operator=(const ChildEnvironment&) = delete;

  boost::process::v2::error_code on_setup(boost::process::v2::posix::default_launcher& launcher, const std::filesystem::path&,
                                          const char* const*) {
    launcher.env = pointers.data();
    return {};
  }
};

/// Marks every inherited descriptor above stderr close-on-exec in the child.
/// (Boost 1.81's descriptor-closing loop skips some, so the parent's listening
/// sockets would otherwise leak into every child.)
struct CloseInheritedDescriptors {
  boost::process::v2::error_code on_exec_setup(boost::process::v2::posix::default_launcher&, const std::filesystem::path&,
                                               const char* const*) {
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    return {};
  }
};

/// A child process. Destroying it while the child runs sends SIGKILL and reaps
/// it (Boost.Process's behaviour, kept on purpose: no orphans).
class ChildProcess {
public:
  /// Starts `exe` (an absolute path) with `args` and extra environment. Throws
  /// `invalid_option` if it cannot be started (the message names the executable).
  ChildProcess(const boost::asio::any_io_executor& ex, const std::filesystem::path& exe, const std::vector<std::string>& args,
               const std::vector<std::pair<std::string, std::string>>& env = {})
      : proc_(start(ex, exe, args, env)) {}

  int pid() const { return proc_.id(); }
  bool exited() const noexcept { return status_.has_value(); }
  const std::optional<ExitStatus>& status() const noexcept { return status_; }

  /// Sends `sig` unless the child has already been reaped (its pid may be reused).
  void signal(int sig) {
    if (!status_) ::kill(proc_.id(), sig);
  }

  /// Waits for the child to exit and reaps it. Only one wait at a time.
  /// Cancellation (terminal) ends the wait with `operation_aborted`; the child keeps running.
  boost::asio::awaitable<result<ExitStatus>> wait() {
    if (status_) co_return *status_;
    auto [ec, code] = co_await proc_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    if (ec) co_return Error(ec, detail::format("waiting for pid {}: {}", proc_.id(), ec.message()));
    status_ = ExitStatus::from_wait_status(proc_.native_exit_code());
    co_return *status_;
  }

private:
  static boost::process::v2::process start(const boost::asio::any_io_executor& ex, const std::filesystem::path& exe,
                                           const std::vector<std::string>& args,
                                           const std::vector<std::pair<std::string, std::string>>& env) {
#if defined(BOOST_PROCESS_V2_PIDFD_OPEN)
    // Boost.Process 1.81 opens a pidfd for the child only after it has started.
    // Where pidfd_open is refused (Linux before 5.3, valgrind 3.19, some
    // seccomp profiles) that throws, and the child runs on with nobody to stop
    // it. So refuse before starting anything.
    static const int pidfd_errno = [] {
      const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
      if (fd < 0) return errno;
      ::close(static_cast<int>(fd));
      return 0;
    }();
    if (pidfd_errno != 0) {
      throw invalid_option("executable", exe.string(),
                           detail::format("could not be started: pidfd_open is refused here ({}), and Boost.Process needs it to own the child",
                                          std::generic_category().message(pidfd_errno)));
    }
#endif
    ChildEnvironment environment(env);
    try {
      return boost::process::v2::process(ex, exe, args, environment, CloseInheritedDescriptors{});
    } catch (const boost::system::system_error& e) {
      throw invalid_option("executable", exe.string(), detail::format("could not be started: {}", e.code().message()));
    }
  }

  boost::process::v2::process proc_;
  std::optional<ExitStatus> status_;
};

}  // namespace rollout::detail
