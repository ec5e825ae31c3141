#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/flags.h"
#include "services/common/metrics.h"

namespace anima::common {

// The flags every Anima binary has: where it listens, how it logs, where it reports its ports.
// A main sets its own defaults and registers them beside its other flags:
//
//   ServiceFlags service{.port = 50051, .metrics_port = 9101};
//   FlagSet flags("anima-router");
//   AddServiceFlags(flags, "ANIMA_ROUTER", "gRPC port (0 picks a free one)", &service);
//   ...parse, check its own flags...
//   if (auto s = InitService(service, "router"); !s.ok()) { ...exit 2... }
struct ServiceFlags {
  std::string bind = "127.0.0.1";
  int port = 0;
  int metrics_port = 0;
  std::string log_format = "text";
  std::string log_level = "info";
  std::string ready_file = "";  // empty: no ready file
  // How often the process checks whether to give freed memory back (memory_trim.h); 0: never.
  int64_t memory_trim_interval_ms = 10000;
};

// Adds --bind, --port, --metrics-port, --log-format, --log-level, --ready-file and
// --memory-trim-interval-ms to `flags`, read from <env_prefix>_BIND, _PORT, _METRICS_PORT,
// _LOG_FORMAT, _LOG_LEVEL, _READY_FILE and _MEMORY_TRIM_INTERVAL_MS. The two log variables and
// the trim interval fall back to ANIMA_LOG_FORMAT, ANIMA_LOG_LEVEL and
// ANIMA_MEMORY_TRIM_INTERVAL_MS, so that one setting serves a whole deployment. `port_help` says
// what --port serves.
void AddServiceFlags(FlagSet& flags, const std::string& env_prefix, std::string port_help,
                     ServiceFlags* service);

// Checks the ports (0 to 65535; the error names the flag) and the trim interval, sets up logging
// as `log_name` (InitLogging) and starts the memory trimmer (StartMemoryTrimmer). Call once the
// flags are parsed; an error is a bad flag.
absl::Status InitService(const ServiceFlags& service, const std::string& log_name);

// Starts the Prometheus /metrics server on --bind and --metrics-port.
absl::StatusOr<std::unique_ptr<MetricsServer>> StartMetricsServer(const ServiceFlags& service);

// Returns run(argc, argv); an exception escaping it is printed as "<program>: fatal: <what>" on
// stderr and exits 1, so that no binary dies of std::terminate without saying why.
int RunMain(const char* program, int (*run)(int argc, char** argv), int argc, char** argv);

}  // namespace anima::common
