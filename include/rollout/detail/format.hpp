// rollout/detail/format.hpp: how the library's own headers format text.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace rollout::detail {

/// `fmt::format` for the library's own messages, event texts and errors.
///
/// Where `ROLLOUT_CHECK_FORMAT_STRINGS` is defined, the format string is checked
/// at compile time against the arguments, exactly as `fmt::format` does; rollout's
/// own tests, examples, benchmarks and header check define it, so rollout's build
/// checks these headers' format strings. Elsewhere (a user's
/// build, by default) it is an ordinary runtime format string: those strings
/// never change, and checking them again in every translation unit that includes
/// `<rollout/rollout.hpp>` cost it 1.2 G of g++ 12's instructions (9.21 G against
/// 8.02 G; `<boost/asio.hpp>` alone is 6.69 G): g++ evaluates the check at each
/// call site in non-template code, each distinct string and argument list
/// instantiates its own checker, and the memory this takes made g++ collect
/// garbage once more (benchmarks/README.md, compile_bench). Define the macro to
/// check them in your own build too; the text produced is the same either way.
///
/// Errors: `fmt::format_error` if the string does not fit the arguments (which the
/// checked build rules out: it compiles all non-template code, every template the
/// tests use, and every member of the class templates that format text, through
/// explicit instantiations in tests/format_strings_check.cpp), `std::bad_alloc`.
/// Not a coroutine: no cancellation.
#if defined(ROLLOUT_CHECK_FORMAT_STRINGS)
template <class... Args>
[[nodiscard]] inline std::string format(fmt::format_string<Args...> f, Args&&... args) {
  return fmt::vformat(f, fmt::make_format_args(args...));
}
#else
template <class... Args>
[[nodiscard]] inline std::string format(fmt::string_view f, Args&&... args) {
  return fmt::vformat(f, fmt::make_format_args(args...));
}
#endif

/// `prefix`, the decimal digits of `n`, then `suffix`, as one string: for the
/// texts built on every step of every run (`steps[3]`, `10%`, `1m`). fmt's own
/// integer formatter (`fmt::format_int`) does the digits; going through
/// `format("{}", ...)` instead parses the format string and dispatches on
/// type-erased arguments, which cost a 1,000-canary benchmark about 650
/// instructions per text (benchmarks/README.md, callgrind).
/// Errors: `std::bad_alloc`. Not a coroutine: no cancellation.
[[nodiscard]] inline std::string join_int(std::string_view prefix, long long n, std::string_view suffix) {
  const fmt::format_int digits(n);
  std::string s;
  s.reserve(prefix.size() + digits.size() + suffix.size());
  s.append(prefix).append(digits.data(), digits.size()).append(suffix);
  return s;
}

}  // namespace rollout::detail
