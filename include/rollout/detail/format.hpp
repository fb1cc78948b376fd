// rollout/detail/format.hpp: how the library's own headers format text.
#pragma once

#include <fmt/format.h>

#include <string>

namespace rollout::detail {

/// `fmt::format` for the library's own messages, event texts and errors.
///
/// Where `ROLLOUT_CHECK_FORMAT_STRINGS` is defined, the format string is checked
/// at compile time against the arguments, exactly as `fmt::format` does; rollout's
/// own tests, examples, benchmarks and header check define it, so every format
/// string in these headers is checked by rollout's build. Elsewhere (a user's
/// build, by default) it is an ordinary runtime format string: those strings
/// never change, and checking them again cost every translation unit that
/// includes `<rollout/rollout.hpp>` about 0.4 G of g++'s 9.5 G instructions
/// (g++ 12 evaluates the check of each call site in non-template code, and each
/// distinct string and argument list instantiates its own checker), and pushed
/// the front end's memory past the point where it first collects garbage
/// (benchmarks/README.md, compile_bench). Define the macro to check them in your
/// own build too; the text produced is the same either way.
///
/// Errors: `fmt::format_error` if the string does not fit the arguments (which the
/// checked build rules out for every call in these headers), `std::bad_alloc`.
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

}  // namespace rollout::detail
