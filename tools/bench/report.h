#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/bench/latency_recorder.h"
#include "tools/bench/process_cpu.h"

namespace anima::bench {

// The settings a run used, echoed in every report so a number is never quoted without them.
struct RunSettings {
  std::string target;  // "ws" or "sim"
  std::string url;
  bool open_loop = false;
  double rate = 0;  // messages per second over all connections (open loop)
  int connections = 0;
  int in_flight = 0;
  int threads = 0;
  bool stream = false;
  double duration_s = 0;
  double warmup_s = 0;
  int64_t requests_limit = 0;  // 0: none
};

// The outcome of one run of one target.
struct BenchResult {
  RunSettings settings;
  int64_t sent = 0;  // recorded requests sent (after warmup)
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;  // by code: gateway codes, http_<status>, timeout, ...
  double window_s = 0;                    // from the end of warmup to the last recorded answer
  LatencySummary latency;
  // How long the errors took to come back (a refusal should be immediate), from the scheduled
  // send; timeouts are not in it.
  LatencySummary error_latency;
  double generator_cpu_percent = 0;  // this process, user+system over wall time
  std::vector<std::string> notes;    // warnings that make the numbers suspect
  // CPU seconds of each --cpu-pids process from the start of the recorded window to the end of
  // the drain: that window's messages, per answered message in the report.
  std::vector<ProcessCpu> process_cpu;

  int64_t error_count() const;
  double throughput() const { return window_s > 0 ? ok / window_s : 0; }
};

// Human-readable report of one run (several lines, ms with 3 decimals).
std::string FormatText(const BenchResult& r);
// One JSON object (latencies in ms with 3 decimals).
nlohmann::json ToJson(const BenchResult& r);

// The percentiles of `full` minus those of `direct`: what the full path adds.
struct Overhead {
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
};
Overhead OverheadOf(const BenchResult& direct, const BenchResult& full);
// Table of both runs and the difference row.
std::string FormatComparison(const BenchResult& direct, const BenchResult& full);
nlohmann::json ComparisonJson(const BenchResult& direct, const BenchResult& full);

// `value` in ms rounded to 3 decimals ("1.235").
std::string Ms(double value);

}  // namespace anima::bench
