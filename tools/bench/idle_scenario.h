#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/cli/url.h"

namespace anima::bench {

// DESIGN.md's memory goal: this many idle connections in under kIdleGoalBytes of gateway RSS.
inline constexpr int kIdleGoalConnections = 10000;
inline constexpr double kIdleGoalBytes = 100e6;

struct IdleConfig {
  cli::Url ws_url;
  cli::Url metrics_url;  // the gateway's Prometheus endpoint, http://
  std::string ws_url_text;
  std::string metrics_url_text;
  std::string token;  // gateway bearer token, if auth is on
  int connections = 16;
  double connect_rate = 400;  // new connections per second, below the gateway's default 500
  double hold_s = 10;
};

// What the gateway's metrics endpoint said at one moment.
struct GatewaySample {
  double rss_bytes = 0;    // process_resident_memory_bytes
  double connections = 0;  // anima_gateway_connections
};

struct IdleResult {
  IdleConfig config;
  int opened = 0;  // upgraded and welcomed
  int failed = 0;  // gave up: error, no welcome, or still refused after every retry
  std::string first_error;
  int64_t retries = 0;          // upgrades refused with 429 or 503 and tried again
  int dropped = 0;              // open connections the gateway closed during the hold
  double open_s = 0;            // from the first attempt to the last connection opened or failed
  GatewaySample baseline;       // before the first connection
  GatewaySample opened_sample;  // once every connection is open
  GatewaySample held_sample;    // at the end of the hold

  // Gateway RSS per open connection at the end of the hold, over the baseline.
  double PerConnectionBytes() const;
  // Gateway RSS with kIdleGoalConnections open: measured when this run held that many,
  // otherwise the baseline plus that many times PerConnectionBytes().
  double GoalConnectionsBytes() const;
};

// The bench needs a file descriptor per connection: raises the soft RLIMIT_NOFILE to the hard
// limit when it is under connections + 64; fails when the hard limit is too low.
absl::Status EnsureFileLimit(int connections);

// Reads the gateway's RSS and connection gauge from its metrics endpoint (5 s timeout).
absl::StatusOr<GatewaySample> ScrapeGateway(const cli::Url& metrics_url);

// Opens config.connections WebSocket connections at config.connect_rate per second (an upgrade
// refused with HTTP 429 or 503 is tried again later), each counted open once its welcome frame
// arrives; holds them idle for config.hold_s seconds (the client answers the gateway's pings),
// then closes them. Samples the gateway's metrics before, once all are open, and at the end of
// the hold. Fails only when the metrics cannot be read.
absl::StatusOr<IdleResult> RunIdle(const IdleConfig& config);

std::string FormatIdleText(const IdleResult& r);
nlohmann::json IdleToJson(const IdleResult& r);

}  // namespace anima::bench
