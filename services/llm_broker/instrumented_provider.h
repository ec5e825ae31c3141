#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "services/llm_broker/broker_metrics.h"
#include "services/llm_broker/provider.h"

namespace anima::broker {

// The health of one provider, computed from its recent outcomes.
struct ProviderHealth {
  enum class State { kHealthy, kDegraded, kDown };
  State state = State::kHealthy;
  int64_t in_flight = 0;
  double requests_per_second = 0;   // over the last minute
  double error_rate = 0;            // over the last minute
  double p95_ms = 0;                // successful requests of the last minute
  Clock::time_point last_active{};  // zero: never
  int64_t requests = 0;
  int64_t errors = 0;
  std::string detail;  // the last error, when not healthy
};

// Recent outcomes of one provider. Cancelled requests and the caller's own deadlines do not count
// against the provider. Down: the last 3 counted outcomes failed (the last within 5 minutes).
// Degraded: over 20% of the last minute's outcomes failed. Thread-safe.
class ProviderStats {
 public:
  void Begin();
  void End(bool counted, bool ok, Clock::duration latency, const std::string& error);
  ProviderHealth Snapshot(Clock::time_point now) const;

 private:
  struct Outcome {
    Clock::time_point at;
    bool ok;
    Clock::duration latency;
  };
  mutable std::mutex mu_;
  std::deque<Outcome> recent_;  // at most kMaxRecent, newest at the back
  int64_t in_flight_ = 0;
  int64_t requests_ = 0;
  int64_t errors_ = 0;
  Clock::time_point last_active_{};
  std::string last_error_;
};

// A Provider decorator that records metrics and stats for every call of the provider it wraps.
class InstrumentedProvider : public Provider {
 public:
  InstrumentedProvider(std::shared_ptr<Provider> inner, std::shared_ptr<BrokerMetrics> metrics);

  const std::string& name() const override { return inner_->name(); }
  const std::string& default_model() const override { return inner_->default_model(); }
  const std::vector<std::string>& models() const override { return inner_->models(); }
  bool Supports(const std::string& model) const override { return inner_->Supports(model); }
  int max_retries() const override { return inner_->max_retries(); }
  std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) override;

  const ProviderStats& stats() const { return *stats_; }

 private:
  std::shared_ptr<Provider> inner_;
  std::shared_ptr<BrokerMetrics> metrics_;  // may be null
  std::shared_ptr<ProviderStats> stats_;
};

}  // namespace anima::broker
