#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "services/llm_broker/types.h"

namespace anima::broker {

struct ProviderConfig {
  std::string name;
  std::string type;  // openai, openai_compatible, venice, gemini
  std::string base_url;
  std::string api_key_env;   // the environment variable holding the key
  std::string api_key_file;  // or a file holding it (trailing whitespace trimmed)
  std::string organization;
  std::vector<std::string> models;
  std::string default_model;
  int64_t connect_timeout_ms = 5000;
  int64_t first_token_timeout_ms = 30000;
  int64_t total_timeout_ms = 120000;
  int max_retries = 2;
  int max_concurrency = 0;  // calls in flight at once to this provider; 0: unlimited
  std::map<std::string, ModelPrice> prices;  // by model, for anima_broker_cost_usd_total
};

struct BrokerConfig {
  std::vector<ProviderConfig> providers;
  std::string default_strategy = "failover";  // failover, hedge, race or fanout
  int64_t hedge_delay_ms = 500;               // hedge: the wait before starting the next provider
  std::string ca_file;
  int64_t max_idle_connections_per_origin = 32;
  int64_t idle_timeout_ms = 30000;
  int64_t initial_backoff_ms = 250;
  int64_t max_backoff_ms = 4000;
  int64_t max_retry_after_ms = 20000;
  int64_t breaker_failure_threshold = 5;  // consecutive failures that open a breaker; 0: off
  int64_t breaker_open_ms = 30000;        // how long an open breaker stays open
  int64_t cache_max_entries = 0;          // the response cache; 0: off
  int64_t cache_ttl_ms = 600000;
  std::string source;  // where it came from, for the first log lines
};

// Validates a configuration object. Unknown fields are errors; every error names its field
// ("providers[0].base_url: ...").
absl::StatusOr<BrokerConfig> ParseBrokerConfig(const nlohmann::json& json);

// The configuration used without --config: the providers openai, venice and gemini, in that
// order, each at its real API when its key (OPENAI_API_KEY, VENICE_API_KEY, GEMINI_API_KEY) is
// set, else at the local simulator (http://127.0.0.1:18080/v1, /api/v1, /v1beta), which accepts
// any model and the placeholder key.
BrokerConfig DefaultBrokerConfig(bool openai_key_set, bool venice_key_set = false,
                                 bool gemini_key_set = false);

// The secret of a provider: from its api_key_file or the environment variable api_key_env.
// `getenv` is injectable for tests. Empty when neither is configured. NOT_FOUND (naming the
// variable or file, never the value) when a configured source is empty or missing.
absl::StatusOr<std::string> LoadApiKey(
    const ProviderConfig& provider,
    const std::function<const char*(const char*)>& getenv_fn = nullptr);

}  // namespace anima::broker
