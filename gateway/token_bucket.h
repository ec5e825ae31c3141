#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

namespace anima::gateway {

// A token bucket: holds at most `capacity` tokens and refills at `capacity` per `period`, so
// `capacity` is both the sustained rate per period and the burst. The bucket may go into debt
// (Charge past zero), as a token budget charged after the fact does. Not thread-safe: its owner
// serialises access (a session's strand, a quota shard's mutex). Time is passed in, never read.
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  TokenBucket() = default;
  TokenBucket(double capacity, Clock::duration period, Clock::time_point now)
      : capacity_(capacity),
        rate_per_second_(capacity / std::chrono::duration<double>(period).count()),
        tokens_(capacity),
        at_(now) {}

  // Takes `n` tokens when the bucket holds at least `n`; otherwise takes nothing.
  bool TryTake(Clock::time_point now, double n = 1.0) {
    Refill(now);
    if (tokens_ < n) return false;
    tokens_ -= n;
    return true;
  }

  // Takes `n` tokens, possibly going below zero.
  void Charge(Clock::time_point now, double n) {
    Refill(now);
    tokens_ -= n;
  }

  // The tokens held now (negative while in debt).
  double Available(Clock::time_point now) {
    Refill(now);
    return tokens_;
  }

  // How long until the bucket holds `n` tokens (zero when it already does).
  std::chrono::milliseconds WaitFor(Clock::time_point now, double n = 1.0) {
    Refill(now);
    if (tokens_ >= n || rate_per_second_ <= 0) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(
        static_cast<int64_t>(std::ceil((n - tokens_) * 1000.0 / rate_per_second_)));
  }

  // How long until the bucket is full again.
  std::chrono::milliseconds UntilFull(Clock::time_point now) { return WaitFor(now, capacity_); }

  double capacity() const { return capacity_; }

 private:
  void Refill(Clock::time_point now) {
    if (now <= at_) return;
    tokens_ = std::min(
        capacity_, tokens_ + std::chrono::duration<double>(now - at_).count() * rate_per_second_);
    at_ = now;
  }

  double capacity_ = 0;
  double rate_per_second_ = 0;
  double tokens_ = 0;
  Clock::time_point at_{};
};

}  // namespace anima::gateway
