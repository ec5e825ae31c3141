#include "tools/bench/overload_scenario.h"

#include <charconv>
#include <cstdio>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace anima::bench {

namespace {

constexpr int kCapacityConnections = 16;

bool IsRefusal(const std::string& code) {
  return code == "overloaded" || code == "too_many_in_flight" || code == "rate_limited";
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

absl::StatusOr<std::vector<double>> ParseSteps(const std::string& text) {
  std::vector<double> steps;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    double value = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (ec != std::errc() || end != item.data() + item.size() || !(value > 0 && value <= 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--steps: \"", item, "\" is not a factor in (0, 20]"));
    }
    if (!steps.empty() && value <= steps.back()) {
      return absl::InvalidArgumentError("--steps must ascend");
    }
    steps.push_back(value);
  }
  if (steps.empty()) return absl::InvalidArgumentError("--steps: no factor given");
  return steps;
}

absl::StatusOr<OverloadResult> RunOverload(const OverloadConfig& config) {
  OverloadResult out;
  out.capacity = config.capacity;
  if (out.capacity <= 0) {
    // Closed loop over a few connections, one request each: enough to keep the path busy, few
    // enough that admission does not refuse them (a refused request in a closed loop is sent
    // again at once, and the run would measure refusals).
    BenchConfig closed = config.base;
    closed.rate = 0;
    closed.requests = 0;
    closed.connections = std::min(closed.connections, kCapacityConnections);
    closed.in_flight = 1;
    auto run = RunLoad(closed, "ws");
    if (!run.ok()) return run.status();
    out.capacity = run->throughput();
    out.capacity_measured = true;
    out.capacity_run = *std::move(run);
    if (out.capacity <= 0) return absl::UnavailableError("the capacity run answered nothing");
  }
  for (double factor : config.steps) {
    BenchConfig step = config.base;
    step.rate = factor * out.capacity;
    step.requests = 0;
    auto run = RunLoad(step, "ws");
    if (!run.ok()) return run.status();
    out.steps.push_back({factor, *std::move(run)});
  }
  return out;
}

StepVerdict Judge(const OverloadResult& r, size_t step) {
  StepVerdict v;
  const BenchResult& s = r.steps[step].result;
  v.goodput_share = r.capacity > 0 ? s.throughput() / r.capacity : 0;
  const LatencySummary& unloaded = r.steps.front().result.latency;
  if (unloaded.count > 0 && s.latency.count > 0 && unloaded.p99_ms > 0) {
    v.p99_over_unloaded = s.latency.p99_ms / unloaded.p99_ms;
  }
  for (const auto& [code, n] : s.errors) (IsRefusal(code) ? v.refused : v.other_errors) += n;
  return v;
}

std::string FormatOverloadText(const OverloadResult& r) {
  std::ostringstream out;
  out << "capacity " << Fixed(r.capacity, 0) << " msg/s"
      << (r.capacity_measured ? " (closed loop, 16 connections x 1 in flight)" : " (--capacity)")
      << "\n";
  out << "  step   offered/s  goodput/s  of capacity  p50 ms   p99 ms  p99/unloaded  refused  "
         "refusal p99 ms  other errors\n";
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const BenchResult& s = r.steps[i].result;
    const StepVerdict v = Judge(r, i);
    char line[256];
    std::snprintf(line, sizeof line,
                  "  %4.2fx %10.0f %10.1f %11.0f%% %7.3f %8.3f %12.2fx %8lld %15.3f %13lld\n",
                  r.steps[i].factor, s.settings.rate, s.throughput(), 100 * v.goodput_share,
                  s.latency.p50_ms, s.latency.p99_ms, v.p99_over_unloaded,
                  static_cast<long long>(v.refused), s.error_latency.p99_ms,
                  static_cast<long long>(v.other_errors));
    out << line;
  }
  out << "  (unloaded: the first step; goals past 1x: goodput >= 90% of capacity, accepted p99 "
         "within 5x unloaded, refusals under 1 ms, no other errors)\n";
  if (r.capacity_run) out << "the capacity run:\n" << FormatText(*r.capacity_run);
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const BenchResult& s = r.steps[i].result;
    if (!s.process_cpu.empty() || !s.notes.empty()) {
      out << "step " << Fixed(r.steps[i].factor, 2) << "x:\n" << FormatText(s);
    }
  }
  return out.str();
}

nlohmann::json OverloadToJson(const OverloadResult& r) {
  nlohmann::json steps = nlohmann::json::array();
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const StepVerdict v = Judge(r, i);
    steps.push_back({{"factor", r.steps[i].factor},
                     {"goodput_share", v.goodput_share},
                     {"p99_over_unloaded", v.p99_over_unloaded},
                     {"refused", v.refused},
                     {"other_errors", v.other_errors},
                     {"run", ToJson(r.steps[i].result)}});
  }
  nlohmann::json out = {{"scenario", "overload"},
                        {"capacity_per_s", r.capacity},
                        {"capacity_measured", r.capacity_measured},
                        {"steps", steps}};
  if (r.capacity_run) out["capacity_run"] = ToJson(*r.capacity_run);
  return out;
}

}  // namespace anima::bench
