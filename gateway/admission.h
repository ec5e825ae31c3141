#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace prometheus {
class Gauge;
}

namespace anima::gateway {

class GatewayMetrics;

// One admission limiter's gauges (GatewayMetrics::AdmissionGaugesFor); null without metrics.
struct AdmissionGauges {
  prometheus::Gauge* limit = nullptr;
  prometheus::Gauge* waiting_sessions = nullptr;
  prometheus::Gauge* baseline_seconds = nullptr;
};

using AdmissionClock = std::chrono::steady_clock;

// How an AdaptiveLimit moves. The defaults hold a cheap, CPU-bound type near the concurrency at
// which its round trip doubles, and let an I/O-bound type (a provider call, which takes as long at
// 64 in flight as at 1) grow to `max`.
struct AdaptiveLimitOptions {
  int initial = 4;
  int min = 1;
  int max = 256;
  // The limit shrinks while the median round trip is over tolerance x the baseline, and grows
  // while it is under (and the limit was reached: demand is there).
  double tolerance = 2.0;
  // How often the limit moves, given at least min_samples round trips since the last move. A
  // type with fewer answers than that in ten intervals while at its limit (long-lived streams)
  // grows as if it had no baseline.
  std::chrono::milliseconds update_interval{100};
  int min_samples = 8;
  // The baseline is re-measured this often: starts pause until nothing is in flight, then up to
  // probe_samples requests run one at a time; their median is the new baseline. A probe that
  // takes longer than probe_timeout (slow work) ends with the baseline unchanged.
  std::chrono::milliseconds probe_interval{30000};
  int probe_samples = 10;
  std::chrono::milliseconds probe_timeout{1000};
  // The first probe waits this long after the limit is created (the type's first request), so
  // it measures warm connections.
  std::chrono::milliseconds first_probe_after{1000};
};

// An adaptive concurrency limit for one message type, in the spirit of Envoy's adaptive
// concurrency filter and Netflix's concurrency-limits: the round trip at concurrency 1 is the
// baseline; every update_interval the limit is multiplied by tolerance x baseline / median round
// trip (clamped to 0.5..2). Work that queues for CPU (its round trip rises with concurrency)
// settles where the round trip is tolerance x the baseline; work that waits on I/O keeps its
// round trip and grows to `max`. Not thread-safe; times are passed in (tests use a fake clock).
class AdaptiveLimit {
 public:
  using TimePoint = AdmissionClock::time_point;
  using Duration = AdmissionClock::duration;

  AdaptiveLimit(AdaptiveLimitOptions options, TimePoint now);

  // Whether one more request may start now. Call Advance(now) first.
  bool CanStart() const;
  // A request started (it had CanStart()).
  void OnStart(TimePoint now);
  // A request that started at `started` ended at `now`; `answered`: it ended with an answer, so
  // its round trip is a sample (a cancelled or failed call's is not).
  void OnEnd(TimePoint started, TimePoint now, bool answered);
  // Moves the limit and the probe along; cheap, call it whenever anything happens.
  void Advance(TimePoint now);

  // The limit starts are held to now: 0 while a probe waits for in-flight work to end, 1 while
  // it measures, the adaptive limit otherwise.
  int effective_limit() const;
  int limit() const { return limit_; }
  int in_flight() const { return in_flight_; }
  // The median round trip at concurrency 1; nullopt until a probe has measured it.
  std::optional<Duration> baseline() const { return baseline_; }

 private:
  enum class Phase { kNormal, kDraining, kProbing };
  void Update(TimePoint now);
  void StartProbe(TimePoint now);
  void EndProbe(TimePoint now);
  static Duration Median(std::vector<Duration>& samples);

  const AdaptiveLimitOptions options_;
  int limit_;
  int in_flight_ = 0;
  int peak_in_flight_ = 0;  // since the last update
  std::optional<Duration> baseline_;
  std::vector<Duration> samples_;  // since the last update
  size_t sample_count_ = 0;        // round trips since the last update (samples_ keeps 1024)
  TimePoint last_update_;
  Phase phase_ = Phase::kNormal;
  TimePoint next_probe_;
  TimePoint probe_deadline_;  // of the probe under way
  TimePoint probe_started_;   // when its requests began running one at a time
  std::vector<Duration> probe_samples_;
  bool active_since_probe_ = false;  // a request started since the last probe
};

// Admission of normal and low work before it costs anything downstream (docs/gateway.md).
// The router tells each type's priority class (Router.ListRoutes); high-priority types are never
// held here. Every other type gets an AdaptiveLimit; a request over it waits in the gateway, in
// round robin across sessions, and is dispatched when a slot frees. The gateway never reads more
// than max_in_flight frames of one connection ahead, so what waits is bounded. Thread-safe.
class Admission {
 public:
  struct Options {
    bool enabled = true;
    AdaptiveLimitOptions limit;
    std::function<AdmissionClock::time_point()> clock = [] { return AdmissionClock::now(); };
  };
  // A waiter runs once, on whichever thread freed its slot, with the slot already taken for it;
  // it must not block (post to the session's strand), and must call ReleaseUnused(key) if the
  // slot is not used.
  using Waiter = std::function<void()>;

  Admission(Options options, GatewayMetrics* metrics);  // metrics may be null (tests)

  // The routing table: the priority class ("high", "normal", "low") of each type, and of any
  // type not listed. Until it is set, every type counts as high (nothing is held).
  void SetRoutes(std::map<std::string, std::string> priorities, std::string default_priority);

  // How a request of `type` is admitted: nullopt when it goes straight on (admission off, or its
  // class is high); else the limiter `key` it is held in (the type itself when the routing table
  // lists it, else "other": keys are bounded by the table, so callers may key state by them) and
  // its `priority` class, for metrics.
  struct Hold {
    std::string key;
    std::string priority;
  };
  std::optional<Hold> HoldFor(const std::string& type) const;

  // Takes a slot of limiter `key` (HoldFor's) when one is free and no other session waits for
  // one: true. Otherwise queues `waiter` behind the sessions already waiting and returns false.
  // A session keeps at most one waiter per key.
  bool Acquire(const std::string& key, Waiter waiter);
  // Gives back a slot of `key` taken at `started`. `answered`: the request ended with an answer,
  // so its round trip is a sample.
  void Release(const std::string& key, AdmissionClock::time_point started, bool answered);
  // A slot handed to a waiter that had no use for it.
  void ReleaseUnused(const std::string& key);
  // Moves limits and probes along with no request event (a probe's timeout); the gateway calls
  // it every 100 ms.
  void Tick();

  struct TypeSnapshot {
    int limit = 0;
    int in_flight = 0;
    size_t waiting = 0;
    std::optional<AdmissionClock::duration> baseline;
  };
  std::map<std::string, TypeSnapshot> Snapshot() const;

 private:
  struct TypeState {
    explicit TypeState(const AdaptiveLimitOptions& o, AdmissionClock::time_point now)
        : limit(o, now) {}
    AdaptiveLimit limit;
    std::deque<Waiter> waiting;
    AdmissionGauges gauges;  // looked up once, set on every change
  };
  TypeState& StateLocked(const std::string& key);
  // Hands free slots of `state` to its waiters; they run after the lock is released.
  void GrantLocked(TypeState& state, std::vector<Waiter>* grants);
  static void Publish(const TypeState& state);
  const std::string& PriorityLocked(const std::string& type) const;
  const std::string& KeyLocked(const std::string& type) const;

  const Options options_;
  GatewayMetrics* const metrics_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> priorities_;
  std::string default_priority_ = "high";
  std::map<std::string, std::unique_ptr<TypeState>> types_;
};

}  // namespace anima::gateway
