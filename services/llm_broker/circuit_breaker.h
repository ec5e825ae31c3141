#pragma once

#include <chrono>
#include <functional>
#include <mutex>

#include "services/llm_broker/types.h"

namespace anima::broker {

// A per-provider circuit breaker, free of I/O and with an injectable clock.
//  - closed: every call is allowed; `failure_threshold` consecutive failures open it;
//  - open: no call is allowed until `open_duration` has passed, then it is half-open;
//  - half-open: one probe call at a time is allowed; its success closes the breaker, its failure
//    opens it again for another `open_duration`.
// Only failures that say something about the provider's health should be recorded (server
// errors, timeouts, connection failures), not the caller's mistakes (400, 401, ...). A
// failure_threshold of 0 disables the breaker. Thread-safe.
class CircuitBreaker {
 public:
  enum class State { kClosed = 0, kOpen = 1, kHalfOpen = 2 };

  struct Options {
    int failure_threshold = 5;
    std::chrono::milliseconds open_duration{30000};
  };

  explicit CircuitBreaker(Options options, std::function<Clock::time_point()> now = nullptr);

  // Whether a call may start now. An allowed call must be followed by exactly one Record() or
  // Release().
  bool Allow();
  // The end of an allowed call: success, or a failure that counts against the provider.
  void Record(bool success);
  // The end of an allowed call that says nothing about the provider (cancelled, caller errors).
  void Release();

  State state();
  // While open: the time until a probe will be allowed; zero otherwise.
  std::chrono::milliseconds RetryIn();

  // Called (outside the lock) with the new state on every transition, e.g. for a metric.
  void OnTransition(std::function<void(State)> fn);

 private:
  State StateLocked(Clock::time_point now);
  void Transition(std::unique_lock<std::mutex>& lock, State to);

  const Options options_;
  std::function<Clock::time_point()> now_;
  std::function<void(State)> on_transition_;
  std::mutex mu_;
  State state_ = State::kClosed;
  int consecutive_failures_ = 0;
  Clock::time_point opened_at_{};
  bool probe_in_flight_ = false;
};

}  // namespace anima::broker
