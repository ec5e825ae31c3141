#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace anima::broker {

struct ProviderConfig {
  std::string name;
  std::string type;  // openai, openai_compatible
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
};

struct BrokerConfig {
  std::vector<ProviderConfig> providers;
  std::string default_strategy = "failover";
  std::string ca_file;
  int64_t max_idle_connections_per_origin = 32;
  int64_t idle_timeout_ms = 30000;
  int64_t initial_backoff_ms = 250;
  int64_t max_backoff_ms = 4000;
  int64_t max_retry_after_ms = 20000;
  std::string source;  // where it came from, for the first log lines
};

// Validates a configuration object. Unknown fields are errors; every error names its field
// ("providers[0].base_url: ...").
absl::StatusOr<BrokerConfig> ParseBrokerConfig(const nlohmann::json& json);

// The configuration used without --config: the real OpenAI API when `openai_key_set`, else the
// local simulator at http://127.0.0.1:18080/v1.
BrokerConfig DefaultBrokerConfig(bool openai_key_set);

// The secret of a provider: from its api_key_file or the environment variable api_key_env.
// `getenv` is injectable for tests. Empty when neither is configured. NOT_FOUND (naming the
// variable or file, never the value) when a configured source is empty or missing.
absl::StatusOr<std::string> LoadApiKey(
    const ProviderConfig& provider,
    const std::function<const char*(const char*)>& getenv_fn = nullptr);

}  // namespace anima::broker
