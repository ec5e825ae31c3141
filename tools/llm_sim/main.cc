// anima-llm-sim: a local stand-in for the OpenAI (/v1), Venice (/api/v1) and Gemini (/v1beta)
// APIs with scripted replies and switchable faults. See docs/simulator.md.
#include <cstdio>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/flags.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "services/common/service_flags.h"
#include "services/common/tls_front.h"
#include "spdlog/spdlog.h"
#include "tools/llm_sim/gemini_api.h"
#include "tools/llm_sim/openai_api.h"
#include "tools/llm_sim/sim_server.h"
#include "tools/llm_sim/venice_api.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "anima-llm-sim: %s\n", message.c_str());
  return 2;
}

int Run(int argc, char** argv) {
  anima::common::BlockShutdownSignals();
  using anima::sim::SimConfig;

  anima::common::ServiceFlags service{.port = 18080, .metrics_port = 9104};
  std::string rules_path;
  int first_token_ms = 0;
  int token_interval_ms = 0;
  int latency_ms = 0;
  int slow_first_token_ms = 2000;
  int slow_token_interval_ms = 200;
  bool require_key = true;
  std::string api_key_env;
  std::string faults;
  int idle_close_seconds = 0;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int max_body_bytes = 4 * 1024 * 1024;
  int tls_port = -1;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_cert_dir;

  anima::common::FlagSet flags("anima-llm-sim");
  anima::common::AddServiceFlags(flags, "ANIMA_SIM",
                                 "HTTP port of the simulated APIs (0 picks a free one)", &service);
  flags.Add("rules", &rules_path, "ANIMA_SIM_RULES",
            "JSON rules file mapping prompts to replies and scenarios (empty = built-in default)");
  flags.Add("first-token-ms", &first_token_ms, "ANIMA_SIM_FIRST_TOKEN_MS",
            "delay before the first event of every stream");
  flags.Add("token-interval-ms", &token_interval_ms, "ANIMA_SIM_TOKEN_INTERVAL_MS",
            "delay between content events of every stream");
  flags.Add("latency-ms", &latency_ms, "ANIMA_SIM_LATENCY_MS",
            "delay before every non-streaming response");
  flags.Add("slow-first-token-ms", &slow_first_token_ms, "ANIMA_SIM_SLOW_FIRST_TOKEN_MS",
            "first-token delay of the `slow` scenario");
  flags.Add("slow-token-interval-ms", &slow_token_interval_ms, "ANIMA_SIM_SLOW_TOKEN_INTERVAL_MS",
            "token interval of the `slow` scenario");
  flags.Add("require-key", &require_key, "ANIMA_SIM_REQUIRE_KEY",
            "reject requests without a key (401 for OpenAI/Venice, 403 for Gemini)");
  flags.Add("api-key-env", &api_key_env, "ANIMA_SIM_API_KEY_ENV",
            "name of an environment variable holding the only accepted key (empty = any key)");
  flags.Add("idle-close-seconds", &idle_close_seconds, "ANIMA_SIM_IDLE_CLOSE_SECONDS",
            "close keep-alive connections idle this long (0 = never)");
  flags.Add("faults", &faults, "ANIMA_SIM_FAULTS",
            "a provider fault storm: scenarios drawn at random per request, e.g. "
            "'openai=rate_limit_429:0.2,error_500:0.1;gemini=truncated:0.05' (requests whose "
            "header or rule names a scenario are exempt)");
  flags.Add("threads", &threads, "ANIMA_SIM_THREADS", "I/O threads");
  flags.Add("max-body-bytes", &max_body_bytes, "ANIMA_SIM_MAX_BODY_BYTES",
            "larger request bodies get 413");
  flags.Add("tls-port", &tls_port, "ANIMA_SIM_TLS_PORT",
            "also serve the same APIs over TLS on this port (0 = any free, -1 = no TLS)");
  flags.Add("tls-cert", &tls_cert, "ANIMA_SIM_TLS_CERT",
            "PEM certificate chain served over TLS when the SNI names no other");
  flags.Add("tls-key", &tls_key, "ANIMA_SIM_TLS_KEY", "PEM private key of --tls-cert");
  flags.Add("tls-cert-dir", &tls_cert_dir, "ANIMA_SIM_TLS_CERT_DIR",
            "directory of <server name>.pem/.key pairs chosen by the client's SNI");
  if (auto s = flags.Parse(argc, argv); !s.ok()) return Fail(std::string(s.message()));
  if (flags.help_requested()) {
    std::printf("%s\nScenarios (header x-sim-scenario, comma-separated): %s\n",
                flags.Usage().c_str(), absl::StrJoin(anima::sim::ScenarioNames(), ", ").c_str());
    return 0;
  }
  for (auto [name, value] : {std::pair{"--first-token-ms", first_token_ms},
                             {"--token-interval-ms", token_interval_ms},
                             {"--latency-ms", latency_ms},
                             {"--slow-first-token-ms", slow_first_token_ms},
                             {"--slow-token-interval-ms", slow_token_interval_ms},
                             {"--idle-close-seconds", idle_close_seconds}}) {
    if (value < 0) return Fail(absl::StrCat(name, ": must not be negative"));
  }
  if (threads < 1 || threads > 256) return Fail("--threads: must be between 1 and 256");
  if (tls_port < -1 || tls_port > 65535) return Fail("--tls-port: must be between -1 and 65535");
  if (tls_port >= 0 && (tls_cert.empty() || tls_key.empty())) {
    return Fail("--tls-port: needs --tls-cert and --tls-key");
  }
  if (max_body_bytes < 1024) return Fail("--max-body-bytes: must be at least 1024");
  if (auto s = anima::common::InitService(service, "anima-llm-sim"); !s.ok()) {
    return Fail(std::string(s.message()));
  }

  auto config = std::make_shared<SimConfig>();
  if (!rules_path.empty()) {
    auto rules = anima::sim::RuleSet::LoadFile(rules_path);
    if (!rules.ok()) return Fail(absl::StrCat("--rules: ", rules.status().message()));
    config->rules = *std::move(rules);
  }
  config->timing = {first_token_ms, token_interval_ms, latency_ms, slow_first_token_ms,
                    slow_token_interval_ms};
  config->require_key = require_key;
  if (!faults.empty()) {
    auto mix = anima::sim::FaultMix::Parse(faults);
    if (!mix.ok()) return Fail(absl::StrCat("--", mix.status().message()));
    config->faults = *std::move(mix);
  }
  if (!api_key_env.empty()) {
    const char* key = std::getenv(api_key_env.c_str());
    if (key == nullptr || *key == '\0') {
      return Fail(absl::StrCat("--api-key-env: environment variable ", api_key_env, " is not set"));
    }
    config->api_key = key;
  }

  auto metrics = anima::common::StartMetricsServer(service);
  if (!metrics.ok()) return Fail(absl::StrCat("--metrics-port: ", metrics.status().message()));

  std::vector<std::unique_ptr<anima::sim::ProviderApi>> apis;
  apis.push_back(std::make_unique<anima::sim::OpenAiApi>(config));
  apis.push_back(std::make_unique<anima::sim::VeniceApi>(config));
  apis.push_back(std::make_unique<anima::sim::GeminiApi>(config));
  anima::sim::SimServerOptions options{service.bind, service.port, threads, idle_close_seconds,
                                       static_cast<size_t>(max_body_bytes)};
  auto server =
      anima::sim::SimServer::Start(options, std::move(apis), (*metrics)->shared_registry());
  if (!server.ok()) return Fail(std::string(server.status().message()));

  std::unique_ptr<anima::common::TlsFront> tls;
  if (tls_port >= 0) {
    anima::common::TlsFrontOptions tls_options;
    tls_options.bind = service.bind;
    tls_options.port = tls_port;
    tls_options.cert_file = tls_cert;
    tls_options.key_file = tls_key;
    tls_options.backend_port = (*server)->port();
    if (!tls_cert_dir.empty()) {
      auto certs = anima::common::LoadSniCertDir(tls_cert_dir);
      if (!certs.ok()) return Fail(absl::StrCat("--tls-cert-dir: ", certs.status().message()));
      tls_options.sni_certs = *std::move(certs);
    }
    auto started = anima::common::TlsFront::Start(tls_options);
    if (!started.ok()) return Fail(absl::StrCat("--tls-port: ", started.status().message()));
    tls = *std::move(started);
    spdlog::info("TLS on {}:{} ({} SNI certificates)", service.bind, tls->port(),
                 tls_options.sni_certs.size());
  }
  std::map<std::string, int> ports = {{"http", (*server)->port()}, {"metrics", (*metrics)->port()}};
  if (tls != nullptr) ports["https"] = tls->port();
  if (auto s = anima::common::WriteReadyFile(service.ready_file, ports); !s.ok()) {
    return Fail(absl::StrCat("--ready-file: ", s.message()));
  }
  spdlog::info(
      "anima-llm-sim listening on {}:{} (OpenAI at /v1, Venice at /api/v1, Gemini at /v1beta), "
      "metrics on {}, {} rules",
      service.bind, (*server)->port(), (*metrics)->port(), config->rules.size());
  int sig = anima::common::WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down", sig);
  if (tls != nullptr) tls->Stop();
  (*server)->Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return anima::common::RunMain("anima-llm-sim", Run, argc, argv); }
