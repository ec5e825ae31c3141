#include "services/common/service_flags.h"

#include <cstdio>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "services/common/logging.h"
#include "services/common/memory_trim.h"

namespace anima::common {

void AddServiceFlags(FlagSet& flags, const std::string& env_prefix, std::string port_help,
                     ServiceFlags* service) {
  auto env = [&](const char* suffix) { return absl::StrCat(env_prefix, "_", suffix); };
  flags.Add("bind", &service->bind, env("BIND"), "address to listen on");
  flags.Add("port", &service->port, env("PORT"), std::move(port_help));
  flags.Add("metrics-port", &service->metrics_port, env("METRICS_PORT"),
            "Prometheus /metrics port (0 picks a free one)");
  flags.Add("log-format", &service->log_format, env("LOG_FORMAT"), "text or json");
  flags.AddEnvFallback("log-format", "ANIMA_LOG_FORMAT");
  flags.Add("log-level", &service->log_level, env("LOG_LEVEL"), "trace, debug, info, warn, error");
  flags.AddEnvFallback("log-level", "ANIMA_LOG_LEVEL");
  flags.Add("ready-file", &service->ready_file, env("READY_FILE"),
            "once listening, write the bound ports here as JSON: {\"<listener>\":port,...}");
  flags.Add("memory-trim-interval-ms", &service->memory_trim_interval_ms,
            env("MEMORY_TRIM_INTERVAL_MS"),
            "how often to check whether the process went quiet holding freed memory, and give it "
            "back to the system (malloc_trim); 0: never");
  flags.AddEnvFallback("memory-trim-interval-ms", "ANIMA_MEMORY_TRIM_INTERVAL_MS");
}

absl::Status InitService(const ServiceFlags& service, const std::string& log_name) {
  for (const auto& [flag, port] :
       {std::pair{"--port", service.port}, std::pair{"--metrics-port", service.metrics_port}}) {
    if (port < 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": must be between 0 and 65535, got ", port));
    }
  }
  if (service.memory_trim_interval_ms < 0 || service.memory_trim_interval_ms > 3600000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory-trim-interval-ms: must be between 0 and 3600000, got ",
                     service.memory_trim_interval_ms));
  }
  if (auto s = InitLogging(log_name, service.log_format, service.log_level); !s.ok()) return s;
  StartMemoryTrimmer({.interval = std::chrono::milliseconds(service.memory_trim_interval_ms)});
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> StartMetricsServer(const ServiceFlags& service) {
  return MetricsServer::Start(absl::StrCat(service.bind, ":", service.metrics_port));
}

int RunMain(const char* program, int (*run)(int argc, char** argv), int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on: gRPC's
  // locks then update a global lock-order graph (GraphCycles showed in perf profiles of the
  // broker under load). A debugging aid, not something to pay for on every RPC; the saving
  // measured at 3,000 msg/s is small (about 1% of the broker's CPU).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: fatal: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace anima::common
