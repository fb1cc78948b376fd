// libFuzzer target: Prometheus HTTP API response bodies, as PrometheusSource
// decodes them (Boost.JSON, bounded depth). Any input gives a value, no data,
// or an Error with a message; never a crash, and never a value of the wrong shape.
#include <rollout/prometheus.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the caller's wish and the non-finite policy; the rest is the body.
  const auto want = (data[0] & 1) ? rollout::MetricQuery::Want::samples : rollout::MetricQuery::Want::value;
  const bool non_finite_is_no_data = (data[0] & 2) != 0;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto r = rollout::detail::decode_prometheus(body, want, non_finite_is_no_data);
  if (!r) {
    if (r.error().message.empty()) std::abort();
    return 0;
  }
  if (want == rollout::MetricQuery::Want::value && std::holds_alternative<std::vector<double>>(*r)) std::abort();
  if (want == rollout::MetricQuery::Want::samples && std::holds_alternative<double>(*r)) std::abort();
  return 0;
}
