#pragma once

#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace anima::selfcoding {

// anima_selfcoding_jobs_total{status}, anima_selfcoding_stage_seconds{stage},
// anima_selfcoding_queue_depth, anima_selfcoding_running_jobs,
// anima_selfcoding_quota_refusals_total{limit}, anima_selfcoding_lease_events_total{event}. No
// label names a principal (unbounded).
// Thread-safe.
class SelfCodingMetrics {
 public:
  explicit SelfCodingMetrics(prometheus::Registry& registry);
  void JobEnded(const std::string& status);
  void StageDone(const std::string& stage, double seconds);
  // A Submit refused by a principal's quota; `limit` is jobs_in_flight or jobs_per_day.
  void QuotaRefused(const std::string& limit);
  // Something happened to a job's lease on this replica: `reclaimed` (a job whose worker was lost
  // was claimed here), `lost` (a run here lost its lease and stopped), `released` (given back
  // to the queue by a stopping replica).
  void LeaseEvent(const std::string& event);
  void SetQueueDepth(double depth) { queue_depth_.Set(depth); }
  void SetRunning(double running) { running_.Set(running); }

 private:
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Family<prometheus::Histogram>& stages_;
  prometheus::Family<prometheus::Counter>& quota_refusals_;
  prometheus::Family<prometheus::Counter>& lease_events_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& running_;
};

}  // namespace anima::selfcoding
