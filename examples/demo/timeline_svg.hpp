#pragma once

// The demo's timeline picture: an SVG, written with fmt (no plotting library is
// needed for a few rectangles and polylines).
//
// Top: the share of answered requests per revision over time (stacked), as the
// load generator observed it, so it shows where traffic really went. Bottom:
// the share of failed requests. Phases are bands with their names and
// outcomes; each verified weight change is a tick on the time axis.
#include "load_generator.hpp"
#include "scenario.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace demo {

inline std::string svg_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

/// Renders the run. `start` is the load generator's start; slices are 100 ms.
inline std::string timeline_svg(const std::vector<Slice>& slices, SteadyTime start, const std::vector<PhaseReport>& phases,
                                const std::vector<std::pair<SteadyTime, rollout::TrafficSplit>>& changes, const std::string& title) {
  constexpr double W = 1100, left = 70, right = 150, top = 80, share_h = 260, gap = 50, err_h = 110;
  const double plot_w = W - left - right;
  const double H = top + share_h + gap + err_h + 60;
  const std::size_t n = std::max<std::size_t>(slices.size(), 1);
  const double secs = static_cast<double>(n) / 10.0;
  auto x_of = [&](double t) { return left + plot_w * std::clamp(t / secs, 0.0, 1.0); };
  auto t_of = [&](SteadyTime t) { return std::chrono::duration<double>(t - start).count(); };

  // Revisions in order of first appearance; "?" (no answer) is left out of the shares.
  std::vector<std::string> revs;
  for (const auto& s : slices) {
    for (const auto& [r, c] : s.by_revision) {
      if (r != "?" && std::find(revs.begin(), revs.end(), r) == revs.end()) revs.push_back(r);
    }
  }
  std::sort(revs.begin(), revs.end());
  const char* palette[] = {"#4e79a7", "#59a14f", "#f28e2b", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};
  std::map<std::string, std::string> color;
  for (std::size_t i = 0; i < revs.size(); ++i) color[revs[i]] = palette[i % 8];

  // Smooth over 3 slices (300 ms) so single slices with few requests do not flicker.
  auto window = [&](std::size_t i) {
    std::map<std::string, Counts> sum;
    for (std::size_t k = i >= 1 ? i - 1 : 0; k <= std::min(i + 1, n - 1) && k < slices.size(); ++k) {
      for (const auto& [r, c] : slices[k].by_revision) sum[r].add(c);
    }
    return sum;
  };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"20\" font-size=\"16\" font-weight=\"bold\">{3}</text>\n",
      W, H, left, svg_escape(title));

  // Phase bands, then their labels (on two rows, so short phases do not hide each other's).
  for (std::size_t p = 0; p < phases.size(); ++p) {
    const double x0 = x_of(t_of(phases[p].began)), x1 = x_of(t_of(phases[p].ended));
    svg += fmt::format("<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{}\" fill=\"{}\"/>\n", x0, top - 36, std::max(1.0, x1 - x0),
                       share_h + gap + err_h + 36, p % 2 ? "#f4f4f4" : "#e9eef5");
  }
  for (std::size_t p = 0; p < phases.size(); ++p) {
    const double x0 = x_of(t_of(phases[p].began));
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"11\">{}</text>\n", x0 + 3, p % 2 ? top - 6 : top - 24,
                       svg_escape(fmt::format("{}: {}", phases[p].name, phases[p].outcome.status)));
  }

  // Stacked shares per revision.
  std::vector<std::vector<double>> lower(revs.size(), std::vector<double>(n)), upper(revs.size(), std::vector<double>(n));
  std::vector<double> err(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto sum = window(i);
    std::uint64_t answered = 0, all = 0, failed = 0;
    for (const auto& [r, c] : sum) {
      all += c.requests;
      failed += c.failed();
      if (r != "?") answered += c.requests;
    }
    double acc = 0;
    for (std::size_t k = 0; k < revs.size(); ++k) {
      auto it = sum.find(revs[k]);
      const double share = answered && it != sum.end() ? static_cast<double>(it->second.requests) / static_cast<double>(answered) : 0.0;
      lower[k][i] = acc;
      acc += share;
      upper[k][i] = acc;
    }
    err[i] = all ? static_cast<double>(failed) / static_cast<double>(all) : 0.0;
  }
  auto y_share = [&](double v) { return top + share_h * (1.0 - v); };
  for (std::size_t k = 0; k < revs.size(); ++k) {
    std::string pts;
    for (std::size_t i = 0; i < n; ++i) pts += fmt::format("{:.1f},{:.1f} ", x_of((static_cast<double>(i) + 0.5) / 10), y_share(upper[k][i]));
    for (std::size_t i = n; i-- > 0;) pts += fmt::format("{:.1f},{:.1f} ", x_of((static_cast<double>(i) + 0.5) / 10), y_share(lower[k][i]));
    svg += fmt::format("<polygon points=\"{}\" fill=\"{}\" fill-opacity=\"0.85\" stroke=\"none\"/>\n", pts, color[revs[k]]);
  }
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", left, top, plot_w, share_h);
  for (int pct = 0; pct <= 100; pct += 25) {
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}%</text>\n", left - 6, y_share(pct / 100.0) + 4, pct);
  }
  svg += fmt::format("<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">traffic share per revision</text>\n",
                     top + share_h / 2, top + share_h / 2);

  // Failed requests.
  const double err_top = top + share_h + gap;
  const double err_max = std::max(0.05, *std::max_element(err.begin(), err.end()) * 1.1);
  auto y_err = [&](double v) { return err_top + err_h * (1.0 - v / err_max); };
  std::string line;
  for (std::size_t i = 0; i < n; ++i) line += fmt::format("{:.1f},{:.1f} ", x_of((static_cast<double>(i) + 0.5) / 10), y_err(err[i]));
  svg += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\"/>\n", line);
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", left, err_top, plot_w, err_h);
  svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.0f}%</text>\n", left - 6, err_top + 4, err_max * 100);
  svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">0%</text>\n", left - 6, err_top + err_h + 4);
  svg += fmt::format("<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">failed requests</text>\n",
                     err_top + err_h / 2, err_top + err_h / 2);

  // Time axis, and a tick for each verified weight change.
  const double axis_y = err_top + err_h;
  for (int s = 0; s <= static_cast<int>(secs); s += secs > 60 ? 10 : 5) {
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}s</text>\n", x_of(s), axis_y + 16, s);
  }
  for (const auto& [at, split] : changes) {
    const double x = x_of(t_of(at));
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#333\"><title>{3}</title></line>\n", x,
                       top + share_h, top + share_h + 8, svg_escape(fmt::format("{}", split)));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\">ticks under the share chart: weight changes verified on the load balancer</text>\n",
                     left, top + share_h + 22);

  // Legend.
  double ly = top + 10;
  for (const auto& r : revs) {
    svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n", W - right + 16,
                       ly, color[r], W - right + 36, ly + 12, svg_escape(r));
    ly += 22;
  }
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#d62728\" stroke-width=\"2\"/><text x=\"{3}\" y=\"{4}\">failed</text>\n",
                     W - right + 16, ly + 7, W - right + 30, W - right + 36, ly + 12);
  svg += "</svg>\n";
  return svg;
}

}  // namespace demo
