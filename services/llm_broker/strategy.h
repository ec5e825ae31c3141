#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "services/llm_broker/provider.h"

namespace anima::broker {

// The end of one broker request. Either `result` is set, or `code` names the failure with the
// protocol's error codes: provider_error, deadline_exceeded, cancelled, invalid_message.
struct StrategyOutcome {
  std::optional<ChatResult> result;
  std::string code;
  std::string message;
  std::vector<ProviderError> causes;                     // one per provider tried, its last error
  std::optional<std::chrono::milliseconds> retry_after;  // the smallest hint among the causes
  // Time spent waiting on providers (attempts and backoff between them): the rest of the time
  // in the broker is its own overhead.
  Clock::duration provider_time{0};
  // Every candidate (fanout returns them all; other strategies leave it empty).
  std::vector<ProviderOutcome> candidates;
};

// Same contract as ProviderSink: deltas in order, then on_done exactly once, never concurrent.
struct StrategySink {
  std::function<void(std::string_view delta)> on_delta;
  std::function<void(StrategyOutcome outcome)> on_done;
};

class StrategyCall {
 public:
  virtual ~StrategyCall() = default;
  // Thread-safe, idempotent: cancels the provider call in flight (closing its connection) and
  // ends the request with code "cancelled" unless it had ended already.
  virtual void Cancel() = 0;
};

// Runs a function later, off the caller's stack. The seam for time in strategies (backoff, hedge
// delays); tests may run the function at once.
class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual void RunAfter(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
};

// How one request is spread over providers: failover today; hedge, race and fanout plug in here.
// `candidates` are the providers allowed for this request, in order, never empty.
class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::shared_ptr<StrategyCall> Start(const ChatRequest& request,
                                              std::vector<std::shared_ptr<Provider>> candidates,
                                              StrategySink sink) = 0;
};

}  // namespace anima::broker
