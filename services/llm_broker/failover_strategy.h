#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "services/llm_broker/strategy.h"

namespace anima::broker {

struct RetryPolicy {
  std::chrono::milliseconds initial_backoff{250};
  std::chrono::milliseconds max_backoff{4000};
  // A provider delay hint above this is not waited for: the next provider is tried instead.
  std::chrono::milliseconds max_retry_after{20000};
  // Returns a number in [0, 1) for jitter; the delay is backoff * (1 - 0.25 * jitter()).
  std::function<double()> jitter;
};

// Tries the candidates in order. On a retryable error a provider is retried up to its
// max_retries() with exponential backoff (or its own delay hint, when not above the cap), then
// the next provider is tried. A provider that refused the call itself (circuit_open,
// concurrency_limit) is passed over at once, and only waited for when it is the last candidate.
// A non-retryable error ends the request (retrying elsewhere cannot fix a bad request). Once a
// delta has reached the caller nothing is retried or failed over: the error is returned. The
// outcome carries one cause per provider tried.
class FailoverStrategy : public Strategy {
 public:
  FailoverStrategy(std::shared_ptr<Scheduler> scheduler, RetryPolicy policy);

  std::shared_ptr<StrategyCall> Start(const ChatRequest& request,
                                      std::vector<std::shared_ptr<Provider>> candidates,
                                      StrategySink sink) override;

 private:
  std::shared_ptr<Scheduler> scheduler_;
  RetryPolicy policy_;
};

}  // namespace anima::broker
