#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/llm_broker/billing.h"
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
  // Every provider call of the request that reported usage before this outcome (Broker fills
  // it; strategies leave it alone). A call still running then, such as a cancelled race loser,
  // is not in it.
  Bill billed;
};

// The outcome of a request that got no answer: `code`, one cause per provider tried and the
// smallest retry hint among them. An empty `message` names every cause instead
// ("every provider tried failed: a (http_503) b (timeout)").
inline StrategyOutcome FailedOutcome(std::string code, std::string message,
                                     std::vector<ProviderError> causes) {
  StrategyOutcome out;
  out.code = std::move(code);
  out.message = std::move(message);
  if (out.message.empty()) {
    out.message = "every provider tried failed:";
    for (const auto& c : causes) absl::StrAppend(&out.message, " ", c.provider, " (", c.code, ")");
  }
  for (const auto& c : causes) {
    if (c.retry_after && (!out.retry_after || *c.retry_after < *out.retry_after)) {
      out.retry_after = c.retry_after;
    }
  }
  out.causes = std::move(causes);
  return out;
}

// Same contract as ProviderSink: deltas in order, then on_done exactly once, never concurrent.
struct StrategySink {
  std::function<void(std::string_view delta)> on_delta;
  std::function<void(StrategyOutcome outcome)> on_done;
};

class StrategyCall {
 public:
  virtual ~StrategyCall() = default;
  // Thread-safe, idempotent: cancels the provider calls in flight (closing their connections)
  // and ends the request with code "cancelled" unless it had ended already. That on_done may come
  // later, from a provider's thread, once those calls have ended: one may be in the sink now.
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
