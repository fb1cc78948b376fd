#pragma once

/// @file
/// `rollout::StatusExposition`: a strategy's live state in the Prometheus text
/// exposition format, for a service that already serves `/metrics`.

#include <rollout/core/event.hpp>
#include <rollout/core/traffic_split.hpp>
#include <rollout/detail/format.hpp>

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace rollout {

/// An `Observer` that keeps the state of one rollout and renders it as
/// Prometheus text (version 0.0.4), to append to an existing `/metrics` page:
///
/// ```
/// rollout_phase{rollout="checkout",strategy="canary",phase="progressing"} 1
/// rollout_traffic_weight{rollout="checkout",group="canary",revision="v42"} 0.1
/// rollout_analysis_result{rollout="checkout",metric="error-rate",result="successful"} 1
/// rollout_last_transition_timestamp_seconds{rollout="checkout"} 1.7641e+09
/// rollout_outcome{rollout="checkout",status="Promoted"} 1
/// ```
///
/// `revision` is the group's revision when told with `map_group`, else the group
/// name. Label values are escaped. `on_event` and `render` may be called from
/// different threads (a mutex guards the state; neither blocks for long).
class StatusExposition {
public:
  explicit StatusExposition(std::string rollout_name = "rollout") : name_(std::move(rollout_name)) {}

  /// Names the revision behind a traffic group, for the `revision` label.
  void map_group(const std::string& group, const std::string& revision) {
    std::lock_guard lock(mutex_);
    revisions_[group] = revision;
  }

  void on_event(const Event& e) {
    std::lock_guard lock(mutex_);
    strategy_ = e.strategy;
    const auto now = std::chrono::system_clock::now();
    switch (e.kind) {
      case EventKind::run_started:
        outcome_.reset();
        analysis_.clear();
        break;
      case EventKind::phase_changed:
        phase_ = e.subject;
        last_transition_ = now;
        break;
      case EventKind::traffic_applied:
        if (e.split) {
          weights_.clear();
          for (const auto& s : e.split->shares()) weights_[s.group] = s.weight.fraction();
          last_transition_ = now;
        }
        break;
      case EventKind::metric_result: {
        // The detail reads "<value>: <result> (failed N, ...)"; the value may itself contain ": ".
        const auto colon = e.detail.rfind(": ", e.detail.rfind(" (failed "));
        if (colon != std::string::npos) {
          const auto rest = e.detail.substr(colon + 2);
          analysis_[e.subject] = rest.substr(0, rest.find(' '));
        }
        break;
      }
      case EventKind::run_finished:
        outcome_ = e.detail.substr(0, e.detail.find(':'));
        last_transition_ = now;
        break;
      default: break;
    }
  }

  /// The exposition text, ending with a newline.
  std::string render() const {
    std::lock_guard lock(mutex_);
    std::string out;
    const auto r = detail::format("rollout=\"{}\"", escape(name_));
    out += "# HELP rollout_phase The current phase of the rollout (1 for the current phase).\n# TYPE rollout_phase gauge\n";
    if (!phase_.empty()) out += detail::format("rollout_phase{{{},strategy=\"{}\",phase=\"{}\"}} 1\n", r, escape(strategy_), escape(phase_));
    out += "# HELP rollout_traffic_weight Share of traffic per group, 0..1, as last verified on the load balancer.\n"
           "# TYPE rollout_traffic_weight gauge\n";
    for (const auto& [group, w] : weights_) {
      auto rev = revisions_.find(group);
      out += detail::format("rollout_traffic_weight{{{},group=\"{}\",revision=\"{}\"}} {}\n", r, escape(group),
                            escape(rev == revisions_.end() ? group : rev->second), w);
    }
    out += "# HELP rollout_analysis_result Latest result per metric (1 for the current result).\n"
           "# TYPE rollout_analysis_result gauge\n";
    for (const auto& [metric, result] : analysis_) {
      out += detail::format("rollout_analysis_result{{{},metric=\"{}\",result=\"{}\"}} 1\n", r, escape(metric), escape(result));
    }
    out += "# HELP rollout_last_transition_timestamp_seconds When the phase or the traffic last changed (Unix time).\n"
           "# TYPE rollout_last_transition_timestamp_seconds gauge\n";
    if (last_transition_) {
      out += detail::format("rollout_last_transition_timestamp_seconds{{{}}} {:.3f}\n", r,
                            std::chrono::duration<double>(last_transition_->time_since_epoch()).count());
    }
    if (outcome_) {
      out += "# HELP rollout_outcome How the last run ended (1 for its status).\n# TYPE rollout_outcome gauge\n";
      out += detail::format("rollout_outcome{{{},status=\"{}\"}} 1\n", r, escape(*outcome_));
    }
    return out;
  }

private:
  static std::string escape(std::string_view v) {  // label value escaping of the text format
    std::string out;
    for (char c : v) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else if (c == '\n') out += "\\n";
      else out += c;
    }
    return out;
  }

  std::string name_;
  mutable std::mutex mutex_;
  std::string strategy_;
  std::string phase_;
  std::map<std::string, double> weights_;
  std::map<std::string, std::string> revisions_;
  std::map<std::string, std::string> analysis_;
  std::optional<std::chrono::system_clock::time_point> last_transition_;
  std::optional<std::string> outcome_;
};

static_assert(Observer<StatusExposition>);

}  // namespace rollout
