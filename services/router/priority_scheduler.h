#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace anima::router {

enum class Priority { kHigh = 0, kNormal = 1, kLow = 2 };
inline constexpr int kPriorityCount = 3;
const char* PriorityName(Priority p);
bool ParsePriority(const std::string& name, Priority* out);

// Decides when each request may start.
//
// - high: starts at once while fewer than `high_in_flight` high requests run; past that it
//   waits in the high queue, which is always served first.
// - normal and low: start at once while the global budget (`max_in_flight`, shared by normal
//   and low) has room and nothing of theirs is waiting; otherwise they wait in bounded queues.
//   When a slot frees, the queues are served by weighted round robin (`normal_weight` normal
//   starts for every `low_weight` low starts, skipping an empty queue), and inside a class round
//   robin across sessions, so one chatty client cannot starve the others.
// - A full queue rejects with a retry-after estimated from the class's measured drain rate.
//
// A started request must call Finish(ticket) exactly once. A queued one may be withdrawn with
// Withdraw(ticket) (client gone). Start callbacks run on the thread that calls Submit or Finish,
// after the scheduler's lock is released. Thread-safe. No gRPC: tests drive it with a fake clock.
class PriorityScheduler {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // Called with the ticket when the request may start; the ticket is what Finish takes.
  using StartFn = std::function<void(uint64_t ticket)>;

  struct Options {
    int high_in_flight = 256;
    int max_in_flight = 64;  // normal + low running at once
    size_t queue_capacity[kPriorityCount] = {1024, 1024, 1024};
    int normal_weight = 4;
    int low_weight = 1;
  };

  struct Admission {
    enum Kind { kStarted, kQueued, kRejected } kind;
    uint64_t ticket = 0;
    int64_t retry_after_ms = 0;  // with kRejected
  };

  struct Stats {
    size_t queue_depth[kPriorityCount] = {0, 0, 0};
    int in_flight[kPriorityCount] = {0, 0, 0};
    uint64_t rejected[kPriorityCount] = {0, 0, 0};
    uint64_t started[kPriorityCount] = {0, 0, 0};
  };

  explicit PriorityScheduler(Options options, Clock clock = std::chrono::steady_clock::now);

  // Starts `start` now (kStarted: it has already run when Submit returns), queues it, or
  // rejects it (it is never called).
  Admission Submit(Priority priority, const std::string& session, StartFn start);
  // The started request with this ticket is done; queued work may start (on this thread).
  void Finish(uint64_t ticket);
  // Removes a queued request; false if it is not queued (already started, or unknown).
  bool Withdraw(uint64_t ticket);
  Stats stats();

 private:
  struct Waiting {
    uint64_t ticket;
    std::string session;
    StartFn start;
    std::chrono::steady_clock::time_point queued_at;
  };
  struct ClassQueue {
    // Round robin across sessions: each session has its own FIFO; `order` is the rotation.
    std::unordered_map<std::string, std::deque<Waiting>> by_session;
    std::list<std::string> order;
    size_t size = 0;
    // Drain rate: the exponentially weighted mean time between starts out of this queue.
    double drain_interval_ms = 0;  // 0: never drained yet
    std::chrono::steady_clock::time_point last_drain{};
  };

  bool CanStartLocked(Priority p) const;
  void Enqueue(Priority p, Waiting w);
  Waiting PopLocked(Priority p);
  // Picks the next queued request that may start now, or returns false.
  bool NextLocked(Priority* p, Waiting* w);
  void StartLocked(Priority p, uint64_t ticket);
  int64_t RetryAfterMsLocked(Priority p) const;

  Options options_;
  Clock clock_;
  std::mutex mu_;
  ClassQueue queues_[kPriorityCount];
  int in_flight_[kPriorityCount] = {0, 0, 0};
  uint64_t rejected_[kPriorityCount] = {0, 0, 0};
  uint64_t started_[kPriorityCount] = {0, 0, 0};
  std::unordered_map<uint64_t, Priority> running_;  // started tickets
  std::unordered_map<uint64_t, Priority> queued_;   // queued tickets
  uint64_t next_ticket_ = 1;
  int wrr_credit_ = 0;  // position in the normal/low weighted cycle
};

}  // namespace anima::router
