#include "services/llm_broker/circuit_breaker.h"

namespace anima::broker {

CircuitBreaker::CircuitBreaker(Options options, std::function<Clock::time_point()> now)
    : options_(options), now_(now ? std::move(now) : [] { return Clock::now(); }) {}

void CircuitBreaker::OnTransition(std::function<void(State)> fn) {
  std::lock_guard lock(mu_);
  on_transition_ = std::move(fn);
}

CircuitBreaker::State CircuitBreaker::StateLocked(Clock::time_point now) {
  if (state_ == State::kOpen && now - opened_at_ >= options_.open_duration) {
    state_ = State::kHalfOpen;
    probe_in_flight_ = false;
  }
  return state_;
}

void CircuitBreaker::Transition(std::unique_lock<std::mutex>& lock, State to) {
  state_ = to;
  auto fn = on_transition_;
  lock.unlock();
  if (fn) fn(to);
}

bool CircuitBreaker::Allow() {
  if (options_.failure_threshold <= 0) return true;
  std::unique_lock lock(mu_);
  State before = state_;
  State now = StateLocked(now_());
  bool allowed = true;
  if (now == State::kOpen) {
    allowed = false;
  } else if (now == State::kHalfOpen) {
    allowed = !probe_in_flight_;
    probe_in_flight_ = true;
  }
  if (before != now) Transition(lock, now);
  return allowed;
}

void CircuitBreaker::Record(bool success) {
  if (options_.failure_threshold <= 0) return;
  std::unique_lock lock(mu_);
  Clock::time_point now = now_();
  State current = StateLocked(now);
  if (current == State::kHalfOpen) {
    probe_in_flight_ = false;
    consecutive_failures_ = success ? 0 : consecutive_failures_;
    opened_at_ = now;
    return Transition(lock, success ? State::kClosed : State::kOpen);
  }
  if (success) {
    consecutive_failures_ = 0;
    return;
  }
  if (current == State::kClosed && ++consecutive_failures_ >= options_.failure_threshold) {
    opened_at_ = now;
    Transition(lock, State::kOpen);
  }
}

void CircuitBreaker::Release() {
  std::lock_guard lock(mu_);
  if (state_ == State::kHalfOpen) probe_in_flight_ = false;
}

CircuitBreaker::State CircuitBreaker::state() {
  std::unique_lock lock(mu_);
  State before = state_;
  State now = StateLocked(now_());
  if (before != now) Transition(lock, now);
  return now;
}

std::chrono::milliseconds CircuitBreaker::RetryIn() {
  std::lock_guard lock(mu_);
  Clock::time_point now = now_();
  if (StateLocked(now) != State::kOpen) return std::chrono::milliseconds(0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(opened_at_ + options_.open_duration -
                                                               now);
}

}  // namespace anima::broker
