#pragma once

#include <string>

#include "anima/v1/introspection.pb.h"
#include "services/router/priority_scheduler.h"

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace anima::router {

// The router's own metrics. `type` is a known message type or "other", so labels stay bounded.
class RouterMetrics {
 public:
  explicit RouterMetrics(prometheus::Registry& registry);

  void Started(const std::string& type);
  // outcome: "ok" or the protocol error code.
  void Finished(const std::string& type, const std::string& outcome, double seconds);
  void ConversationsStored(double n) { conversations_.Set(n); }
  void QueueDepths(const PriorityScheduler::Stats& stats);
  void QueueWait(const char* priority, double seconds);
  void Rejected(const char* priority);
  // The conversation store failed a read or write ("history", "append"); the chat went on.
  void MemoryUnavailable(const char* op);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  prometheus::Gauge& in_flight_;
  prometheus::Gauge& conversations_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Counter>& memory_unavailable_;
  prometheus::Counter& memory_history_unavailable_;
  prometheus::Counter& memory_append_unavailable_;
};

// The system state as metrics, recorded after every poll: anima_router_harmony (0..1) and
// anima_router_modules{status} (how many modules are healthy, degraded, down).
class StateMetrics {
 public:
  explicit StateMetrics(prometheus::Registry& registry);
  void Record(const anima::v1::ConsciousnessState& state);

 private:
  prometheus::Gauge& harmony_;
  prometheus::Family<prometheus::Gauge>& modules_;
  prometheus::Gauge& healthy_;
  prometheus::Gauge& degraded_;
  prometheus::Gauge& down_;
};

// Known message types keep their name as a label; anything else is "other".
std::string TypeLabel(const std::string& type);

}  // namespace anima::router
