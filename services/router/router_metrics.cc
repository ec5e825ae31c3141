#include "services/router/router_metrics.h"

#include <array>
#include <string_view>

#include "services/common/metrics.h"

namespace anima::router {

std::string TypeLabel(const std::string& type) {
  static const std::array<const char*, 7> kKnown = {"chat",
                                                    "consciousness_query",
                                                    "self_coding_request",
                                                    "self_coding_watch",
                                                    "self_coding_cancel",
                                                    "self_coding_list",
                                                    "module"};
  for (const char* k : kKnown) {
    if (type == k) return type;
  }
  return "other";
}

RouterMetrics::RouterMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("anima_router_requests_total")
                    .Help("Envelopes dispatched, by message type and outcome (ok or error code).")
                    .Register(registry)),
      seconds_(prometheus::BuildHistogram()
                   .Name("anima_router_request_seconds")
                   .Help("Time from an envelope's arrival to its terminal event, in seconds.")
                   .Register(registry)),
      in_flight_(prometheus::BuildGauge()
                     .Name("anima_router_in_flight")
                     .Help("Envelopes being dispatched now.")
                     .Register(registry)
                     .Add({})),
      conversations_(prometheus::BuildGauge()
                         .Name("anima_router_conversations")
                         .Help("Conversations held in memory.")
                         .Register(registry)
                         .Add({})),
      queue_depth_(prometheus::BuildGauge()
                       .Name("anima_router_queue_depth")
                       .Help("Requests waiting in the scheduler's queue, by priority class.")
                       .Register(registry)),
      queue_wait_(prometheus::BuildHistogram()
                      .Name("anima_router_queue_wait_seconds")
                      .Help("Time from arrival to start, by priority class, in seconds.")
                      .Register(registry)),
      rejected_(prometheus::BuildCounter()
                    .Name("anima_router_rejected_total")
                    .Help("Requests answered overloaded because their queue was full.")
                    .Register(registry)),
      memory_unavailable_(
          prometheus::BuildCounter()
              .Name("anima_router_memory_unavailable_total")
              .Help("Conversation memory reads (history) and writes (append) that failed; the "
                    "chat went on without memory.")
              .Register(registry)),
      memory_history_unavailable_(memory_unavailable_.Add({{"op", "history"}})),
      memory_append_unavailable_(memory_unavailable_.Add({{"op", "append"}})) {
  for (Priority p : {Priority::kHigh, Priority::kNormal, Priority::kLow}) {
    queue_depth_.Add({{"priority", PriorityName(p)}});
    rejected_.Add({{"priority", PriorityName(p)}});
  }
}

void RouterMetrics::MemoryUnavailable(const char* op) {
  (std::string_view(op) == "history" ? memory_history_unavailable_ : memory_append_unavailable_)
      .Increment();
}

void RouterMetrics::QueueDepths(const PriorityScheduler::Stats& stats) {
  for (Priority p : {Priority::kHigh, Priority::kNormal, Priority::kLow}) {
    queue_depth_.Add({{"priority", PriorityName(p)}})
        .Set(static_cast<double>(stats.queue_depth[static_cast<int>(p)]));
  }
}

void RouterMetrics::QueueWait(const char* priority, double seconds) {
  queue_wait_.Add({{"priority", priority}}, common::LatencyBuckets()).Observe(seconds);
}

void RouterMetrics::Rejected(const char* priority) {
  rejected_.Add({{"priority", priority}}).Increment();
}

void RouterMetrics::Started(const std::string& type) { in_flight_.Increment(); }

void RouterMetrics::Finished(const std::string& type, const std::string& outcome, double seconds) {
  in_flight_.Decrement();
  requests_.Add({{"type", TypeLabel(type)}, {"outcome", outcome}}).Increment();
  seconds_.Add({{"type", TypeLabel(type)}}, common::LatencyBuckets()).Observe(seconds);
}

namespace {
prometheus::Family<prometheus::Gauge>& ModulesFamily(prometheus::Registry& registry) {
  return prometheus::BuildGauge()
      .Name("anima_router_modules")
      .Help("Modules of the system state by status.")
      .Register(registry);
}
}  // namespace

StateMetrics::StateMetrics(prometheus::Registry& registry)
    : harmony_(prometheus::BuildGauge()
                   .Name("anima_router_harmony")
                   .Help("Mean module health (healthy 1, degraded 0.5, down 0), as in "
                         "consciousness_state.")
                   .Register(registry)
                   .Add({})),
      modules_(ModulesFamily(registry)),
      healthy_(modules_.Add({{"status", "healthy"}})),
      degraded_(modules_.Add({{"status", "degraded"}})),
      down_(modules_.Add({{"status", "down"}})) {}

void StateMetrics::Record(const anima::v1::ConsciousnessState& state) {
  harmony_.Set(state.harmony());
  double counts[4] = {0, 0, 0, 0};
  for (const auto& m : state.modules()) counts[m.health() & 3] += 1;
  healthy_.Set(counts[anima::v1::MODULE_HEALTH_HEALTHY]);
  degraded_.Set(counts[anima::v1::MODULE_HEALTH_DEGRADED]);
  down_.Set(counts[anima::v1::MODULE_HEALTH_DOWN] + counts[anima::v1::MODULE_HEALTH_UNSPECIFIED]);
}

}  // namespace anima::router
