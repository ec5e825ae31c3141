#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/bench/process_cpu.h"
#include "tools/bench/report.h"
#include "tools/bench/ws_lane.h"
#include "tools/cli/url.h"

namespace anima::bench {

struct BenchConfig {
  cli::Url ws_url;
  cli::Url sim_url;
  std::string ws_url_text;
  std::string sim_url_text;
  std::string token;    // gateway bearer token, if auth is on
  std::string sim_key;  // simulator API key
  ChatLoad load;
  double rate = 0;  // 0: closed loop
  int connections = 16;
  int in_flight = 1;
  int threads = 1;
  double duration_s = 10;
  double warmup_s = 1;
  int64_t requests = 0;  // 0: no limit
  int drain_ms = 5000;
  // Processes whose CPU time over the recorded window (and the drain) the result reports.
  std::vector<WatchedProcess> watch;
};

// Runs the load against one target ("ws" or "sim") and returns the merged statistics. Fails
// when the connections cannot be opened (nothing is measured then). Blocks for about
// warmup + duration (+ up to drain_ms for missing answers).
absl::StatusOr<BenchResult> RunLoad(const BenchConfig& config, const std::string& target);

}  // namespace anima::bench
