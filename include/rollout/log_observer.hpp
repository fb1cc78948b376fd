#pragma once

/// @file
/// `rollout::LogObserver`: one human-readable line per event.

#include <rollout/core/event.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace rollout {

/// An `Observer` that writes one fmt-formatted line per event, e.g.
/// `[checkout] +5m0.02s canary rollback_started stable: background analysis failed: ...`,
/// to a `FILE*` (default stderr) or to a sink of the caller's choosing. Events
/// carry no secrets (policies redact before reporting), so nothing is filtered.
/// Writing is synchronous: point it at something fast.
class LogObserver {
public:
  explicit LogObserver(std::string name = {}, std::FILE* out = stderr) : name_(std::move(name)), out_(out) {}
  LogObserver(std::string name, std::function<void(std::string_view)> sink) : name_(std::move(name)), sink_(std::move(sink)) {}

  void on_event(const Event& e) {
    const auto line = name_.empty() ? detail::format("{}", e) : detail::format("[{}] {}", name_, e);
    if (sink_) {
      sink_(line);
    } else if (out_) {
      fmt::print(out_, "{}\n", line);
      std::fflush(out_);
    }
  }

private:
  std::string name_;
  std::FILE* out_ = nullptr;
  std::function<void(std::string_view)> sink_;
};

static_assert(Observer<LogObserver>);

}  // namespace rollout
