#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/bench/report.h"
#include "tools/bench/runner.h"

namespace anima::bench {

// --scenario overload: what the path does when offered more than it can serve. First the
// capacity (a closed-loop run over 16 connections, one request each, unless --capacity gives it),
// then one open-loop run per step at step x capacity. A healthy path keeps its goodput near
// capacity at every step past 1x, answers what it accepts about as fast as unloaded, and refuses
// the rest at once (overloaded, with retry_after_ms) instead of queueing it.
struct OverloadConfig {
  BenchConfig base;     // target ws; rate, in_flight and requests are set per run
  double capacity = 0;  // messages per second; 0: measured first
  std::vector<double> steps = {0.1, 0.5, 1, 1.5, 2, 3};
};

struct OverloadStep {
  double factor = 0;
  BenchResult result;
};

struct OverloadResult {
  double capacity = 0;
  bool capacity_measured = false;
  std::optional<BenchResult> capacity_run;
  std::vector<OverloadStep> steps;
};

// "0.1,0.5,1,1.5,2,3": ascending factors in (0, 20].
absl::StatusOr<std::vector<double>> ParseSteps(const std::string& text);

absl::StatusOr<OverloadResult> RunOverload(const OverloadConfig& config);

// The measures per step: goodput over capacity, accepted p99 over the unloaded p99 (that
// of the first step, which should be well under capacity), refusals and how fast they came.
struct StepVerdict {
  double goodput_share = 0;      // ok/s over capacity
  double p99_over_unloaded = 0;  // 0 when either has no samples
  int64_t refused = 0;           // overloaded, too_many_in_flight, rate_limited
  int64_t other_errors = 0;      // timeouts, closed connections, anything else
};
StepVerdict Judge(const OverloadResult& r, size_t step);

std::string FormatOverloadText(const OverloadResult& r);
nlohmann::json OverloadToJson(const OverloadResult& r);

}  // namespace anima::bench
