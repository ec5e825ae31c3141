// anima-llm-broker: wires the configuration, the HTTP client, the providers, the failover
// strategy and the gRPC services together, then waits for SIGINT/SIGTERM.
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "services/common/config.h"
#include "services/common/flags.h"
#include "services/common/grpc_server.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "services/common/service_flags.h"
#include "services/llm_broker/broker.h"
#include "services/llm_broker/broker_config.h"
#include "services/llm_broker/broker_metrics.h"
#include "services/llm_broker/failover_strategy.h"
#include "services/llm_broker/gemini_provider.h"
#include "services/llm_broker/http_client.h"
#include "services/llm_broker/instrumented_provider.h"
#include "services/llm_broker/llm_broker_service.h"
#include "services/llm_broker/openai_provider.h"
#include "services/llm_broker/parallel_strategy.h"
#include "spdlog/spdlog.h"

namespace {

using namespace anima;
using namespace anima::broker;

int Usage(const std::string& message) {
  std::fprintf(stderr, "anima-llm-broker: %s\n", message.c_str());
  return 2;
}

int Run(int argc, char** argv) {
  common::BlockShutdownSignals();
  common::ServiceFlags service{.port = 50052, .metrics_port = 9102};
  std::string config_path;
  std::string openai_base_url;
  std::string venice_base_url;
  std::string gemini_base_url;
  common::FlagSet flags("anima-llm-broker");
  common::AddServiceFlags(flags, "ANIMA_LLM_BROKER", "gRPC port (0 picks a free one)", &service);
  flags.Add("config", &config_path, "ANIMA_LLM_BROKER_CONFIG",
            "JSON configuration file (providers); without it: openai, venice and gemini, each at "
            "its real API when OPENAI_API_KEY / VENICE_API_KEY / GEMINI_API_KEY is set, else at "
            "the simulator on http://127.0.0.1:18080");
  flags.Add("openai-base-url", &openai_base_url, "ANIMA_LLM_BROKER_OPENAI_BASE_URL",
            "overrides base_url of the provider named 'openai'");
  flags.Add("venice-base-url", &venice_base_url, "ANIMA_LLM_BROKER_VENICE_BASE_URL",
            "overrides base_url of the provider named 'venice'");
  flags.Add("gemini-base-url", &gemini_base_url, "ANIMA_LLM_BROKER_GEMINI_BASE_URL",
            "overrides base_url of the provider named 'gemini'");
  if (auto s = flags.Parse(argc, argv); !s.ok()) return Usage(std::string(s.message()));
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  if (auto s = common::InitService(service, "llm-broker"); !s.ok()) {
    return Usage(std::string(s.message()));
  }

  BrokerConfig config;
  if (!config_path.empty()) {
    auto json = common::LoadJsonFile(config_path);
    if (!json.ok()) return Usage(std::string(json.status().message()));
    auto parsed = ParseBrokerConfig(*json);
    if (!parsed.ok()) return Usage(absl::StrCat(config_path, ": ", parsed.status().message()));
    config = *std::move(parsed);
    config.source = "config file " + config_path;
  } else {
    auto set = [](const char* name) {
      const char* key = std::getenv(name);
      return key != nullptr && *key != '\0';
    };
    config =
        DefaultBrokerConfig(set("OPENAI_API_KEY"), set("VENICE_API_KEY"), set("GEMINI_API_KEY"));
  }
  for (const auto& [name, url] : {std::pair<std::string, std::string>{"openai", openai_base_url},
                                  {"venice", venice_base_url},
                                  {"gemini", gemini_base_url}}) {
    if (url.empty()) continue;
    std::string flag = absl::StrCat("--", name, "-base-url");
    if (auto parsed = ParseUrl(url); !parsed.ok()) {
      return Usage(absl::StrCat(flag, ": ", parsed.status().message()));
    }
    bool found = false;
    for (auto& p : config.providers) {
      if (p.name == name) {
        p.base_url = url;
        found = true;
      }
    }
    if (!found) {
      return Usage(absl::StrCat(flag, ": the configuration has no provider named ", name));
    }
  }
  spdlog::info("providers from {}", config.source);
  for (const auto& p : config.providers) {
    spdlog::info("provider {} ({}) at {}", p.name, p.type, p.base_url);
  }

  auto metrics_server = common::StartMetricsServer(service);
  if (!metrics_server.ok()) return Usage(std::string(metrics_server.status().message()));
  auto metrics = std::make_shared<BrokerMetrics>((*metrics_server)->registry());

  HttpClientOptions http_options;
  http_options.ca_file = config.ca_file;
  http_options.max_idle_per_origin = static_cast<size_t>(config.max_idle_connections_per_origin);
  http_options.idle_timeout = std::chrono::milliseconds(config.idle_timeout_ms);
  http_options.on_connection_opened = [metrics](const std::string& origin) {
    metrics->ConnectionOpened(origin);
  };
  // The usual proxy variables (either case): https origins tunnel through HTTPS_PROXY.
  auto env = [](const char* upper, const char* lower) {
    const char* v = std::getenv(upper);
    if (v == nullptr || *v == '\0') v = std::getenv(lower);
    return std::string(v == nullptr ? "" : v);
  };
  http_options.https_proxy = env("HTTPS_PROXY", "https_proxy");
  http_options.no_proxy = env("NO_PROXY", "no_proxy");
  if (!http_options.https_proxy.empty()) {
    spdlog::info("https providers go through the proxy {} (NO_PROXY: '{}')",
                 anima::broker::RedactUserInfo(http_options.https_proxy), http_options.no_proxy);
  }
  auto client = HttpClient::Create(http_options);
  if (!client.ok()) {
    return Usage(absl::StrCat(http_options.https_proxy.empty() ? "ca_file: " : "",
                              client.status().message()));
  }

  std::vector<std::shared_ptr<Provider>> providers;
  std::vector<std::shared_ptr<InstrumentedProvider>> instrumented;
  for (const auto& p : config.providers) {
    auto key = LoadApiKey(p);
    std::string api_key;
    if (!key.ok()) {
      if (p.type != "openai_compatible") return Usage(std::string(key.status().message()));
      spdlog::warn("{}; sending the placeholder key EMPTY", std::string(key.status().message()));
    } else {
      api_key = *key;
    }
    if (api_key.empty() && p.type != "openai") {
      // No key source configured: a keyless server (vLLM, Ollama) or the simulator.
      spdlog::warn("provider {} has no key source; sending the placeholder key EMPTY", p.name);
      api_key = "EMPTY";
    }
    metrics->AddModels(p.name, p.models);
    std::shared_ptr<Provider> inner;
    if (p.type == "gemini") {
      GeminiProviderOptions options;
      options.api_key = api_key;
      options.name = p.name;
      options.base_url = p.base_url;
      options.models = p.models;
      options.default_model = p.default_model;
      options.connect_timeout = std::chrono::milliseconds(p.connect_timeout_ms);
      options.first_token_timeout = std::chrono::milliseconds(p.first_token_timeout_ms);
      options.total_timeout = std::chrono::milliseconds(p.total_timeout_ms);
      options.max_retries = p.max_retries;
      inner = std::make_shared<GeminiProvider>(std::move(options), *client);
    }
    OpenAiProviderOptions options;
    options.api_key = api_key;
    options.venice = p.type == "venice";
    options.name = p.name;
    options.base_url = p.base_url;
    options.organization = p.organization;
    options.models = p.models;
    options.default_model = p.default_model;
    options.connect_timeout = std::chrono::milliseconds(p.connect_timeout_ms);
    options.first_token_timeout = std::chrono::milliseconds(p.first_token_timeout_ms);
    options.total_timeout = std::chrono::milliseconds(p.total_timeout_ms);
    options.max_retries = p.max_retries;
    if (inner == nullptr) inner = std::make_shared<OpenAiProvider>(std::move(options), *client);
    ProviderGuards guards;
    guards.max_concurrency = p.max_concurrency;
    guards.prices = p.prices;
    if (config.breaker_failure_threshold > 0) {
      guards.breaker = std::make_shared<CircuitBreaker>(
          CircuitBreaker::Options{static_cast<int>(config.breaker_failure_threshold),
                                  std::chrono::milliseconds(config.breaker_open_ms)});
    }
    auto provider = std::make_shared<InstrumentedProvider>(std::move(inner), metrics, guards);
    instrumented.push_back(provider);
    providers.push_back(provider);
  }

  RetryPolicy policy;
  policy.initial_backoff = std::chrono::milliseconds(config.initial_backoff_ms);
  policy.max_backoff = std::chrono::milliseconds(config.max_backoff_ms);
  policy.max_retry_after = std::chrono::milliseconds(config.max_retry_after_ms);
  std::map<std::string, std::shared_ptr<Strategy>> strategies;
  strategies["failover"] = std::make_shared<FailoverStrategy>((*client)->scheduler(), policy);
  strategies["hedge"] =
      std::make_shared<ParallelStrategy>(ParallelMode::kHedge, (*client)->scheduler(),
                                         std::chrono::milliseconds(config.hedge_delay_ms));
  strategies["race"] =
      std::make_shared<ParallelStrategy>(ParallelMode::kRace, (*client)->scheduler());
  strategies["fanout"] =
      std::make_shared<ParallelStrategy>(ParallelMode::kFanout, (*client)->scheduler());
  auto broker = std::make_shared<Broker>(providers, strategies, config.default_strategy);
  if (config.cache_max_entries > 0) {
    broker->EnableCache(
        std::make_shared<ResponseCache>(static_cast<size_t>(config.cache_max_entries),
                                        std::chrono::milliseconds(config.cache_ttl_ms)),
        [metrics](bool hit) { metrics->CacheLookup(hit); });
    spdlog::info("response cache on: {} entries, {} ms", config.cache_max_entries,
                 config.cache_ttl_ms);
  }

  LlmBrokerService broker_service(broker, metrics);
  BrokerIntrospectionService introspection(&broker_service, instrumented);
  auto server =
      common::GrpcServer::Start(absl::StrCat(service.bind, ":", service.port),
                                {&broker_service, &introspection}, (*metrics_server)->registry());
  if (!server.ok()) return Usage(std::string(server.status().message()));
  spdlog::info("llm-broker listening: grpc {}:{} metrics {}:{}", service.bind, (*server)->port(),
               service.bind, (*metrics_server)->port());
  if (auto s = common::WriteReadyFile(service.ready_file, {{"grpc", (*server)->port()},
                                                           {"metrics", (*metrics_server)->port()}});
      !s.ok()) {
    spdlog::error("ready file: {}", s.ToString());
    return 1;
  }

  int sig = common::WaitForShutdownSignal();
  spdlog::info("signal {}: draining", sig);
  (*server)->Shutdown(std::chrono::seconds(10));
  server->reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return anima::common::RunMain("anima-llm-broker", Run, argc, argv);
}
