#include "services/self_coding/self_coding_metrics.h"

#include "services/common/metrics.h"

namespace anima::selfcoding {

SelfCodingMetrics::SelfCodingMetrics(prometheus::Registry& registry)
    : jobs_(prometheus::BuildCounter()
                .Name("anima_selfcoding_jobs_total")
                .Help("Self-coding jobs ended, by final status")
                .Register(registry)),
      stages_(prometheus::BuildHistogram()
                  .Name("anima_selfcoding_stage_seconds")
                  .Help("Time spent in each pipeline stage")
                  .Register(registry)),
      quota_refusals_(prometheus::BuildCounter()
                          .Name("anima_selfcoding_quota_refusals_total")
                          .Help("Jobs refused because a principal was over a job quota, by quota")
                          .Register(registry)),
      lease_events_(prometheus::BuildCounter()
                        .Name("anima_selfcoding_lease_events_total")
                        .Help("Job leases reclaimed from lost workers, lost by workers here, or "
                              "released by a stopping replica")
                        .Register(registry)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("anima_selfcoding_queue_depth")
                       .Help("Jobs waiting for a worker, on every replica")
                       .Register(registry)
                       .Add({})),
      running_(prometheus::BuildGauge()
                   .Name("anima_selfcoding_running_jobs")
                   .Help("Jobs being worked on")
                   .Register(registry)
                   .Add({})) {
  for (const char* status : {"succeeded", "failed", "cancelled"}) jobs_.Add({{"status", status}});
  for (const char* limit : {"jobs_in_flight", "jobs_per_day"})
    quota_refusals_.Add({{"limit", limit}});
  for (const char* event : {"reclaimed", "lost", "released"}) lease_events_.Add({{"event", event}});
}

void SelfCodingMetrics::LeaseEvent(const std::string& event) {
  lease_events_.Add({{"event", event}}).Increment();
}

void SelfCodingMetrics::JobEnded(const std::string& status) {
  jobs_.Add({{"status", status}}).Increment();
}

void SelfCodingMetrics::QuotaRefused(const std::string& limit) {
  quota_refusals_.Add({{"limit", limit}}).Increment();
}

void SelfCodingMetrics::StageDone(const std::string& stage, double seconds) {
  stages_.Add({{"stage", stage}}, common::LatencyBuckets()).Observe(seconds);
}

}  // namespace anima::selfcoding
