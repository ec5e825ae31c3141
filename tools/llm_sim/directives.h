#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tools/llm_sim/response_plan.h"
#include "tools/llm_sim/rules.h"
#include "tools/llm_sim/scenario.h"

namespace anima::sim {

// Delays, in milliseconds, applied when neither a rule nor a request header says otherwise.
struct Timing {
  int first_token_ms = 0;            // before the first event of every stream
  int token_interval_ms = 0;         // between content events
  int latency_ms = 0;                // before a non-streaming response
  int slow_first_token_ms = 2000;    // `slow` scenario
  int slow_token_interval_ms = 200;  // `slow` scenario
};

// Everything the simulator is told at start. Shared read-only by all connections.
struct SimConfig {
  RuleSet rules;
  Timing timing;
  bool require_key = true;  // a request without "Authorization: Bearer ..." gets 401
  std::string api_key;      // when set, any other key gets 401 invalid_api_key
  FaultMix faults;          // --faults: scenarios drawn at random for requests that name none
};

// What one request will get, resolved from (in order of precedence) its x-sim-* headers, the
// first matching rule, the fault mix of `api` (openai, venice or gemini) when neither names a
// scenario, and the configured defaults. The same resolution serves every provider.
struct Directives {
  Scenario scenario;
  const Rule* rule = nullptr;
  std::string reply;
  int first_token_ms = 0;
  int token_interval_ms = 0;
  int latency_ms = -1;  // -1: not fixed; the provider derives it (slow: first + n * interval)
  uint64_t seed = 1;    // for split_bytes; header x-sim-seed
};

// Headers read: x-sim-scenario, x-sim-first-token-ms, x-sim-token-interval-ms, x-sim-latency-ms,
// x-sim-seed. An unknown scenario or a bad number is an InvalidArgument naming the header.
absl::StatusOr<Directives> ResolveDirectives(const SimConfig& config, const SimRequest& request,
                                             std::string_view api, std::string_view user_text,
                                             std::string_view model);

}  // namespace anima::sim
