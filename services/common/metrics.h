#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace anima::common {

// Latency buckets in seconds, from 100 µs to 60 s: wide enough for a local hop and for an LLM.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

// One registry and one HTTP exposer per process, serving /metrics. The registry always carries
// the standard process_* metrics (cpu, resident memory, open fds, start time).
class MetricsServer {
 public:
  // Binds `address` ("127.0.0.1:9101", port 0 picks a free port).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address);

  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

// Reads this process's CPU seconds and resident memory from /proc (for state snapshots).
struct ProcessUsage {
  double cpu_seconds = 0;
  int64_t rss_bytes = 0;
  int64_t open_fds = 0;
};
ProcessUsage ReadProcessUsage();

}  // namespace anima::common
