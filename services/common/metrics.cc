#include "services/common/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace anima::common {

namespace {

class ProcessCollector final : public prometheus::Collectable {
 public:
  ProcessCollector()
      : start_time_(
            std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                .count()) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    ProcessUsage usage = ReadProcessUsage();
    std::vector<prometheus::MetricFamily> out;
    auto add = [&](const char* name, const char* help, prometheus::MetricType type, double v) {
      prometheus::MetricFamily family;
      family.name = name;
      family.help = help;
      family.type = type;
      prometheus::ClientMetric metric;
      if (type == prometheus::MetricType::Counter) {
        metric.counter.value = v;
      } else {
        metric.gauge.value = v;
      }
      family.metric.push_back(std::move(metric));
      out.push_back(std::move(family));
    };
    add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
        prometheus::MetricType::Counter, usage.cpu_seconds);
    add("process_resident_memory_bytes", "Resident memory size in bytes.",
        prometheus::MetricType::Gauge, static_cast<double>(usage.rss_bytes));
    add("process_open_fds", "Number of open file descriptors.", prometheus::MetricType::Gauge,
        static_cast<double>(usage.open_fds));
    add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
        prometheus::MetricType::Gauge, start_time_);
    return out;
  }

 private:
  double start_time_;
};

}  // namespace

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
  return kBuckets;
}

ProcessUsage ReadProcessUsage() {
  ProcessUsage usage;
  std::ifstream stat("/proc/self/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may contain spaces.
  auto close = content.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(content.substr(close + 2));
    std::string f;
    long ticks = sysconf(_SC_CLK_TCK);
    double utime = 0, stime = 0;
    long rss_pages = 0;
    for (int i = 3; fields >> f; ++i) {
      if (i == 14) utime = std::stod(f);
      if (i == 15) stime = std::stod(f);
      if (i == 24) {
        rss_pages = std::stol(f);
        break;
      }
    }
    usage.cpu_seconds = (utime + stime) / static_cast<double>(ticks);
    usage.rss_bytes = rss_pages * sysconf(_SC_PAGESIZE);
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] != '.') ++usage.open_fds;
    }
    closedir(dir);
    --usage.open_fds;  // the directory stream itself
  }
  return usage;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->registry_ = std::make_shared<prometheus::Registry>();
  server->process_ = std::make_shared<ProcessCollector>();
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", address, ": ", e.what()));
  }
  server->exposer_->RegisterCollectable(server->registry_);
  server->exposer_->RegisterCollectable(server->process_);
  auto ports = server->exposer_->GetListeningPorts();
  server->port_ = ports.empty() ? 0 : ports.front();
  return server;
}

}  // namespace anima::common
