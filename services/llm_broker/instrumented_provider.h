#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "services/llm_broker/broker_metrics.h"
#include "services/llm_broker/circuit_breaker.h"
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

// What guards a provider before a call reaches it.
struct ProviderGuards {
  std::shared_ptr<CircuitBreaker> breaker;  // null: none
  int max_concurrency = 0;                  // calls in flight at once; 0: unlimited
  // Not a guard: prices by model for the cost metric and ChatResult::cost_usd (a model without a
  // price costs nothing).
  std::map<std::string, ModelPrice> prices;
};

// A Provider decorator that records metrics and stats for every call of the provider it wraps,
// and guards it: while its circuit breaker is open, or when max_concurrency calls are already in
// flight, a call ends at once (inline, without reaching the provider) with the retryable error
// circuit_open (its retry_after is the time until the breaker lets a probe through) or
// concurrency_limit. Retryable failures (server errors, timeouts, connection and stream
// failures) count against the breaker; the caller's own errors, cancellations and deadlines do
// not.
class InstrumentedProvider : public Provider {
 public:
  InstrumentedProvider(std::shared_ptr<Provider> inner, std::shared_ptr<BrokerMetrics> metrics,
                       ProviderGuards guards = {});

  const std::string& name() const override { return inner_->name(); }
  const std::string& default_model() const override { return inner_->default_model(); }
  const std::vector<std::string>& models() const override { return inner_->models(); }
  bool Supports(const std::string& model) const override { return inner_->Supports(model); }
  int max_retries() const override { return inner_->max_retries(); }
  std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) override;

  const ProviderStats& stats() const { return *stats_; }
  // Null when the provider has no breaker.
  CircuitBreaker* breaker() const { return guards_.breaker.get(); }

 private:
  std::optional<ModelPrice> PriceOf(const std::string& model) const;

  std::shared_ptr<Provider> inner_;
  std::shared_ptr<BrokerMetrics> metrics_;  // may be null
  std::shared_ptr<ProviderStats> stats_;
  ProviderGuards guards_;
  std::shared_ptr<std::atomic<int>> in_flight_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace anima::broker
