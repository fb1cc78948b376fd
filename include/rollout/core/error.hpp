#pragma once

/// @file
/// Errors: `rollout::errc` and its category, `rollout::result<T>`, and
/// `rollout::invalid_option`, the exception for rejected options and plans.

#include <rollout/detail/format.hpp>

#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <boost/system/system_error.hpp>

#include <fmt/format.h>

#include <iosfwd>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace rollout {

/// The error code type used everywhere in rollout (Asio's and Beast's too).
using error_code = boost::system::error_code;

/// Errors that rollout and its policies report. They live in `rollout::category()`.
///
/// `is_transient()` says which ones a strategy retries with backoff before it
/// gives up and rolls back.
enum class errc {
  timeout = 1,          ///< A call or wait exceeded its deadline (transient).
  aborted,              ///< Aborted through the control handle or by cancellation.
  invalid_option,       ///< An option, plan or name was rejected before anything was done.
  lb_unavailable,       ///< The load balancer could not be reached or closed the connection (transient).
  lb_rejected,          ///< The load balancer refused a command (its own text is in the message).
  lb_verify_mismatch,   ///< The load balancer's read-back state disagrees with the split applied (transient).
  unknown_server,       ///< The load balancer does not know a backend or server.
  permission_denied,    ///< The load balancer or source refused for lack of permission.
  protocol_error,       ///< A reply could not be parsed (malformed HTTP, JSON or runtime API text).
  probe_failed,         ///< A health probe reported the instance unhealthy.
  not_ready,            ///< Instances did not become ready within their deadline.
  unhealthy,            ///< Instances crossed their failure threshold after being ready.
  check_failed,         ///< A user-supplied pre- or post-promotion check failed.
  analysis_failed,      ///< Metric analysis reached its failure limit.
  analysis_inconclusive,///< Metric analysis reached its inconclusive limit.
  analysis_error,       ///< Metric queries errored too many times in a row.
  no_data,              ///< A metric query returned no data (distinct from a value of 0).
  query_failed,         ///< A metrics backend answered with an error (its own text is in the message).
  progress_deadline,    ///< No progress was made within the progress deadline.
  too_many_failures,    ///< Too many new instances failed to become ready.
  instance_failed,      ///< An instance crashed or could not be started.
  policy_exception,     ///< A policy threw instead of returning an error (its what() is in the message).
  rollback_failed,      ///< Restoring the previous state failed as well; both errors are reported.
};

namespace detail {

class rollout_category final : public boost::system::error_category {
public:
  // A fixed id, so that two copies of the category in different shared objects compare equal.
  constexpr rollout_category() noexcept : boost::system::error_category(0x726f6c6c6f757431ULL) {}

  const char* name() const noexcept override { return "rollout"; }

  std::string message(int ev) const override { return describe(static_cast<errc>(ev)); }

  static const char* describe(errc e) noexcept {
    switch (e) {
      case errc::timeout: return "timed out";
      case errc::aborted: return "aborted";
      case errc::invalid_option: return "invalid option";
      case errc::lb_unavailable: return "load balancer unavailable";
      case errc::lb_rejected: return "load balancer rejected the command";
      case errc::lb_verify_mismatch: return "load balancer state does not match the applied split";
      case errc::unknown_server: return "unknown backend or server";
      case errc::permission_denied: return "permission denied";
      case errc::protocol_error: return "malformed reply";
      case errc::probe_failed: return "health probe failed";
      case errc::not_ready: return "instances not ready before the deadline";
      case errc::unhealthy: return "instances became unhealthy";
      case errc::check_failed: return "check failed";
      case errc::analysis_failed: return "analysis failed";
      case errc::analysis_inconclusive: return "analysis inconclusive";
      case errc::analysis_error: return "analysis errored";
      case errc::no_data: return "no data";
      case errc::query_failed: return "metrics query failed";
      case errc::progress_deadline: return "progress deadline exceeded";
      case errc::too_many_failures: return "too many failed instances";
      case errc::instance_failed: return "instance failed";
      case errc::policy_exception: return "policy threw an exception";
      case errc::rollback_failed: return "rollback failed";
    }
    return "unknown rollout error";
  }
};

inline constexpr rollout_category the_category{};

}  // namespace detail

/// The `boost::system::error_category` of `rollout::errc`, named "rollout".
inline const boost::system::error_category& category() noexcept { return detail::the_category; }

/// Makes an `error_code` in `rollout::category()`; found by ADL.
inline error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

/// True for errors that a retry with backoff may cure: timeouts, an unreachable or
/// restarting load balancer, a read-back that has not converged yet, and the
/// usual connection errors. Everything else (rejections, unknown servers,
/// permission errors, malformed replies) is permanent: retrying cannot help.
inline bool is_transient(const error_code& ec) noexcept {
  if (ec.category() == category()) {
    switch (static_cast<errc>(ec.value())) {
      case errc::timeout:
      case errc::lb_unavailable:
      case errc::lb_verify_mismatch:
      case errc::policy_exception:
        return true;
      default:
        return false;
    }
  }
  namespace ae = boost::asio::error;
  return ec == ae::connection_refused || ec == ae::connection_reset || ec == ae::connection_aborted ||
         ec == ae::broken_pipe || ec == ae::timed_out || ec == ae::try_again || ec == ae::eof ||
         ec == ae::host_unreachable || ec == ae::network_unreachable;
}

/// Thrown when an option, a plan or a name is rejected. The message always names
/// the field and the offending value, e.g.
/// `invalid option probe.period = 0s: must be greater than 0`.
class invalid_option : public std::invalid_argument {
public:
  invalid_option(std::string_view field, std::string_view value, std::string_view requirement)
      : std::invalid_argument(detail::format("invalid option {} = {}: {}", field, value, requirement)),
        field_(field),
        value_(value) {}

  /// The dotted name of the rejected field, e.g. `steps[3].weight`.
  const std::string& field() const noexcept { return field_; }
  /// The rejected value, as text.
  const std::string& value() const noexcept { return value_; }

private:
  std::string field_;
  std::string value_;
};

/// An error as a policy reports it: a code to branch on, and the backend's own
/// words to show a human (HAProxy's reply, Prometheus' `error`, a probe's detail).
/// Secrets never go into `message`: policies redact tokens before building it.
struct Error {
  error_code code;      ///< What kind of failure; usually an `errc`.
  std::string message;  ///< A sentence for humans; never empty when `code` is set.

  Error() = default;
  /// From a rollout error code; the message is the code's description.
  Error(errc e) : code(make_error_code(e)), message(code.message()) {}  // NOLINT: implicit on purpose
  /// From any error code; the message is the code's description.
  Error(error_code ec) : code(ec), message(ec.message()) {}  // NOLINT: implicit on purpose
  /// From a code and a specific message, e.g. `{errc::unknown_server, "No such server."}`.
  Error(error_code ec, std::string msg) : code(ec), message(msg.empty() ? ec.message() : std::move(msg)) {}
  Error(errc e, std::string msg) : Error(make_error_code(e), std::move(msg)) {}

  explicit operator bool() const noexcept { return static_cast<bool>(code); }
  friend bool operator==(const Error& a, const Error& b) noexcept { return a.code == b.code; }
  friend bool operator==(const Error& a, errc b) noexcept { return a.code == make_error_code(b); }
};

/// Streams the message, so that `result<T>` prints (test frameworks need it).
template <class Ch, class Tr>
std::basic_ostream<Ch, Tr>& operator<<(std::basic_ostream<Ch, Tr>& os, const Error& e) {
  return os << e.message;
}

/// The exception `result<T>::value()` throws when it holds an `Error`.
class system_error : public boost::system::system_error {
public:
  explicit system_error(const Error& e) : boost::system::system_error(e.code, e.message), message_(e.message) {}
  const std::string& message() const noexcept { return message_; }

private:
  std::string message_;
};

/// Customisation point of `boost::system::result`: how `value()` reports an `Error`.
[[noreturn]] inline void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw system_error(e);
}

/// `is_transient(e.code)`.
inline bool is_transient(const Error& e) noexcept { return is_transient(e.code); }

/// The return type of every policy call that can fail in an expected way: a value,
/// or an `Error`. Exceptions are reserved for bugs.
template <class T>
using result = boost::system::result<T, Error>;

}  // namespace rollout

template <>
struct boost::system::is_error_code_enum<rollout::errc> : std::true_type {};

/// Formats an `Error` as its message.
template <>
struct fmt::formatter<rollout::Error> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const rollout::Error& e, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(e.message, ctx);
  }
};

/// Formats an `errc` as its message, e.g. `timed out`.
template <>
struct fmt::formatter<rollout::errc> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(rollout::errc e, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(rollout::detail::rollout_category::describe(e), ctx);
  }
};
