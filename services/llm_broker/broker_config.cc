#include "services/llm_broker/broker_config.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/config.h"
#include "services/llm_broker/http_client.h"

namespace anima::broker {

absl::StatusOr<BrokerConfig> ParseBrokerConfig(const nlohmann::json& json) {
  common::ConfigReader r(json, "");
  BrokerConfig config;
  config.default_strategy = r.String("default_strategy", "failover");
  if (r.ok() && config.default_strategy != "failover" && config.default_strategy != "hedge" &&
      config.default_strategy != "race" && config.default_strategy != "fanout") {
    r.Fail("default_strategy", "must be failover, hedge, race or fanout");
  }
  config.hedge_delay_ms = r.Int("hedge_delay_ms", 500, 0, 600000);
  config.ca_file = r.String("ca_file");
  config.max_idle_connections_per_origin = r.Int("max_idle_connections_per_origin", 32, 0, 10000);
  config.idle_timeout_ms = r.Int("idle_timeout_ms", 30000, 100, 3600000);
  config.initial_backoff_ms = r.Int("initial_backoff_ms", 250, 0, 60000);
  config.max_backoff_ms = r.Int("max_backoff_ms", 4000, 0, 600000);
  config.max_retry_after_ms = r.Int("max_retry_after_ms", 20000, 0, 600000);
  config.breaker_failure_threshold = r.Int("breaker_failure_threshold", 5, 0, 1000);
  config.breaker_open_ms = r.Int("breaker_open_ms", 30000, 1, 3600000);
  config.cache_max_entries = r.Int("cache_max_entries", 0, 0, 10000000);
  config.cache_ttl_ms = r.Int("cache_ttl_ms", 600000, 1, 86400000);
  const nlohmann::json* providers = r.Array("providers", /*required=*/true);
  r.RejectUnknown();
  if (!r.ok()) return r.status();
  if (providers->empty()) return absl::InvalidArgumentError("providers: at least one is required");
  std::set<std::string> names;
  for (size_t i = 0; i < providers->size(); ++i) {
    std::string path = absl::StrCat("providers[", i, "]");
    common::ConfigReader p((*providers)[i], path);
    ProviderConfig pc;
    pc.name = p.String("name", "", true);
    pc.type = p.String("type", "", true);
    pc.base_url = p.String("base_url", "", true);
    pc.api_key_env = p.String("api_key_env");
    pc.api_key_file = p.String("api_key_file");
    pc.organization = p.String("organization");
    if (const auto* models = p.Array("models")) {
      for (size_t m = 0; m < models->size(); ++m) {
        if (!(*models)[m].is_string() || (*models)[m].get<std::string>().empty()) {
          p.Fail(absl::StrCat("models[", m, "]"), "expected a non-empty string");
          break;
        }
        pc.models.push_back((*models)[m].get<std::string>());
      }
    }
    pc.default_model = p.String("default_model", "", true);
    pc.connect_timeout_ms = p.Int("connect_timeout_ms", 5000, 1, 600000);
    pc.first_token_timeout_ms = p.Int("first_token_timeout_ms", 30000, 1, 3600000);
    pc.total_timeout_ms = p.Int("total_timeout_ms", 120000, 1, 3600000);
    pc.max_retries = static_cast<int>(p.Int("max_retries", 2, 0, 10));
    pc.max_concurrency = static_cast<int>(p.Int("max_concurrency", 0, 0, 100000));
    if (const auto* prices = p.Object("prices")) {
      for (auto it = prices->begin(); it != prices->end(); ++it) {
        common::ConfigReader price(*it, absl::StrCat(path, ".prices.", it.key()));
        ModelPrice mp;
        mp.input_per_mtok = price.Number("input_per_mtok", 0, 0, 1e6);
        mp.output_per_mtok = price.Number("output_per_mtok", 0, 0, 1e6);
        price.RejectUnknown();
        if (!price.ok()) return price.status();
        pc.prices[it.key()] = mp;
      }
    }
    p.RejectUnknown();
    if (p.ok()) {
      if (pc.type != "openai" && pc.type != "openai_compatible" && pc.type != "venice" &&
          pc.type != "gemini") {
        p.Fail("type", absl::StrCat("'", pc.type,
                                    "' is not a provider type (openai, openai_compatible, venice, "
                                    "gemini)"));
      } else if (!names.insert(pc.name).second) {
        p.Fail("name", absl::StrCat("'", pc.name, "' is used twice"));
      } else if (auto url = ParseUrl(pc.base_url); !url.ok()) {
        p.Fail("base_url", std::string(url.status().message()));
      } else if (!pc.api_key_env.empty() && !pc.api_key_file.empty()) {
        p.Fail("api_key_file", "set api_key_env or api_key_file, not both");
      } else if (pc.type == "openai" && pc.api_key_env.empty() && pc.api_key_file.empty()) {
        p.Fail("api_key_env", "an openai provider needs api_key_env or api_key_file");
      } else if (!pc.models.empty() && std::find(pc.models.begin(), pc.models.end(),
                                                 pc.default_model) == pc.models.end()) {
        p.Fail("default_model", absl::StrCat("'", pc.default_model, "' is not in models"));
      } else if (!pc.organization.empty() && pc.type == "gemini") {
        p.Fail("organization", "only OpenAI-shaped providers have an organization");
      }
    }
    if (!p.ok()) return p.status();
    config.providers.push_back(std::move(pc));
  }
  return config;
}

BrokerConfig DefaultBrokerConfig(bool openai_key_set, bool venice_key_set, bool gemini_key_set) {
  BrokerConfig config;
  ProviderConfig openai;
  openai.name = "openai";
  openai.type = "openai";
  openai.api_key_env = "OPENAI_API_KEY";
  openai.models = {"gpt-4o-mini", "gpt-4o"};
  openai.default_model = "gpt-4o-mini";
  if (openai_key_set) {
    openai.base_url = "https://api.openai.com/v1";
    config.source = "built-in default: the real OpenAI API (OPENAI_API_KEY is set)";
  } else {
    openai.base_url = "http://127.0.0.1:18080/v1";
    openai.type = "openai_compatible";
    openai.api_key_env.clear();
    openai.models.clear();  // the simulator answers any model name
    config.source =
        "built-in default: OPENAI_API_KEY is not set, so the provider 'openai' points at the "
        "local simulator http://127.0.0.1:18080/v1";
  }
  config.providers.push_back(std::move(openai));

  // Venice and Gemini: the real APIs when their keys are set, else the simulator, which accepts
  // the placeholder key a provider without a key source sends.
  ProviderConfig venice;
  venice.name = "venice";
  venice.type = "venice";
  if (venice_key_set) {
    venice.base_url = "https://api.venice.ai/api/v1";
    venice.api_key_env = "VENICE_API_KEY";
    venice.models = {"venice-uncensored", "llama-3.3-70b"};
  } else {
    venice.base_url = "http://127.0.0.1:18080/api/v1";
  }
  venice.default_model = "venice-uncensored";
  config.providers.push_back(std::move(venice));

  ProviderConfig gemini;
  gemini.name = "gemini";
  gemini.type = "gemini";
  if (gemini_key_set) {
    gemini.base_url = "https://generativelanguage.googleapis.com/v1beta";
    gemini.api_key_env = "GEMINI_API_KEY";
    gemini.models = {"gemini-2.0-flash", "gemini-2.5-flash"};
  } else {
    gemini.base_url = "http://127.0.0.1:18080/v1beta";
  }
  gemini.default_model = "gemini-2.0-flash";
  config.providers.push_back(std::move(gemini));
  absl::StrAppend(&config.source, "; venice at ", config.providers[1].base_url, "; gemini at ",
                  config.providers[2].base_url);
  return config;
}

absl::StatusOr<std::string> LoadApiKey(const ProviderConfig& provider,
                                       const std::function<const char*(const char*)>& getenv_fn) {
  if (!provider.api_key_file.empty()) {
    std::ifstream in(provider.api_key_file, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(absl::StrCat(
          "providers.", provider.name, ".api_key_file: cannot read ", provider.api_key_file));
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    std::string key(absl::StripAsciiWhitespace(buffer.str()));
    if (key.empty()) {
      return absl::NotFoundError(absl::StrCat(
          "providers.", provider.name, ".api_key_file: ", provider.api_key_file, " is empty"));
    }
    return key;
  }
  if (!provider.api_key_env.empty()) {
    const char* value = getenv_fn ? getenv_fn(provider.api_key_env.c_str())
                                  : std::getenv(provider.api_key_env.c_str());
    if (value == nullptr || *value == '\0') {
      return absl::NotFoundError(absl::StrCat("providers.", provider.name,
                                              ".api_key_env: the environment variable ",
                                              provider.api_key_env, " is not set"));
    }
    return std::string(absl::StripAsciiWhitespace(value));
  }
  return std::string();
}

}  // namespace anima::broker
