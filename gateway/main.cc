// anima-gateway: the WebSocket front door (PROTOCOL.md), translating client frames to
// Router.Dispatch calls.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "gateway/gateway_server.h"
#include "services/common/flags.h"
#include "services/common/logging.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "spdlog/spdlog.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "anima-gateway: %s\n", message.c_str());
  return 2;
}

bool ValidTypeName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) {
      return false;
    }
  }
  return true;
}

int Main(int argc, char** argv) {
  anima::common::BlockShutdownSignals();
  anima::gateway::GatewaySettings settings;
  int metrics_port = 9100;
  int max_message_bytes = static_cast<int>(settings.max_message_bytes);
  std::string extra_types, log_format = "text", log_level = "info", ready_file;

  anima::common::FlagSet flags("anima-gateway");
  flags.Add("bind", &settings.bind, "ANIMA_GATEWAY_BIND", "address to listen on");
  flags.Add("port", &settings.port, "ANIMA_GATEWAY_PORT", "WebSocket/HTTP port (0: any free)");
  flags.Add("metrics-port", &metrics_port, "ANIMA_GATEWAY_METRICS_PORT",
            "Prometheus /metrics port (0: any free)");
  flags.Add("router", &settings.router, "ANIMA_GATEWAY_ROUTER", "router gRPC address host:port");
  flags.Add("threads", &settings.threads, "ANIMA_GATEWAY_THREADS", "io threads");
  flags.Add("max-message-bytes", &max_message_bytes, "ANIMA_GATEWAY_MAX_MESSAGE_BYTES",
            "largest client frame; larger: too_large and close 1009");
  flags.Add("max-in-flight", &settings.max_in_flight, "ANIMA_GATEWAY_MAX_IN_FLIGHT",
            "requests in flight per connection");
  flags.Add("extra-types", &extra_types, "ANIMA_GATEWAY_EXTRA_TYPES",
            "comma-separated message types routed to external modules as raw JSON");
  flags.Add("log-format", &log_format, "ANIMA_GATEWAY_LOG_FORMAT", "text or json");
  flags.Add("log-level", &log_level, "ANIMA_GATEWAY_LOG_LEVEL", "trace, debug, info, warn, error");
  flags.Add("ready-file", &ready_file, "ANIMA_GATEWAY_READY_FILE",
            "write {\"http\":port,\"metrics\":port} here once listening");
  if (auto s = flags.Parse(argc, argv); !s.ok()) {
    return Fail(std::string(s.message()) + "\n" + flags.Usage());
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  if (settings.port < 0 || settings.port > 65535) return Fail("--port: expected 0 to 65535");
  if (metrics_port < 0 || metrics_port > 65535) {
    return Fail("--metrics-port: expected 0 to 65535");
  }
  if (settings.threads < 1 || settings.threads > 256) return Fail("--threads: expected 1 to 256");
  if (max_message_bytes < 64 || max_message_bytes > 16 * 1024 * 1024) {
    return Fail("--max-message-bytes: expected 64 to 16777216");
  }
  settings.max_message_bytes = static_cast<size_t>(max_message_bytes);
  if (settings.max_in_flight < 1 || settings.max_in_flight > 100000) {
    return Fail("--max-in-flight: expected 1 to 100000");
  }
  if (settings.router.empty()) return Fail("--router: required host:port");
  for (auto& type : absl::StrSplit(extra_types, ',', absl::SkipWhitespace())) {
    std::string name(absl::StripAsciiWhitespace(type));
    if (!ValidTypeName(name)) {
      return Fail("--extra-types: \"" + name + "\" is not a type name ([a-z0-9_.-], 1 to 64)");
    }
    settings.extra_types.push_back(name);
  }
  if (auto s = anima::common::InitLogging("gateway", log_format, log_level); !s.ok()) {
    return Fail(std::string(s.message()));
  }

  auto metrics =
      anima::common::MetricsServer::Start(settings.bind + ":" + std::to_string(metrics_port));
  if (!metrics.ok()) {
    spdlog::error("{}", metrics.status().ToString());
    return 1;
  }
  std::string router = settings.router, bind = settings.bind;
  auto server = anima::gateway::GatewayServer::Start(std::move(settings), (*metrics)->registry());
  if (!server.ok()) {
    spdlog::error("{}", server.status().ToString());
    return 1;
  }
  if (auto s = anima::common::WriteReadyFile(
          ready_file, {{"http", (*server)->port()}, {"metrics", (*metrics)->port()}});
      !s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  spdlog::info("listening on ws://{}:{}/ (metrics :{}), router {}", bind, (*server)->port(),
               (*metrics)->port(), router);
  int sig = anima::common::WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down", sig);
  (*server)->Shutdown();
  server->reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "anima-gateway: fatal: %s\n", e.what());
    return 1;
  }
}
