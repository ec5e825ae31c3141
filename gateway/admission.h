#pragma once

#include <algorithm>
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
class Counter;
class Gauge;
}  // namespace prometheus

namespace anima::gateway {

class GatewayMetrics;

// One admission limiter's gauges (GatewayMetrics::AdmissionGaugesFor); null without metrics.
struct AdmissionGauges {
  prometheus::Gauge* limit = nullptr;
  prometheus::Gauge* waiting_sessions = nullptr;
  prometheus::Gauge* baseline_seconds = nullptr;
  prometheus::Counter* refused_standing_queue = nullptr;  // Overloaded() said so
  prometheus::Counter* refused_max_wait = nullptr;        // a waiter past max_queue_wait
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
  // The median round trip of the last update that had answers (zero before any).
  Duration last_median() const { return last_median_; }
  // A probe holds starts back (draining, then one at a time).
  bool probing() const { return phase_ != Phase::kNormal; }
  // When the last probe ended (the epoch before any): what waited through it waited for the
  // probe, not for capacity, so waits are counted from here at most.
  TimePoint probe_ended() const { return probe_ended_; }

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
  Duration last_median_{};
  std::vector<Duration> samples_;  // since the last update
  size_t sample_count_ = 0;        // round trips since the last update (samples_ keeps 1024)
  TimePoint last_update_;
  Phase phase_ = Phase::kNormal;
  TimePoint next_probe_;
  TimePoint probe_deadline_;  // of the probe under way
  TimePoint probe_started_;   // when its requests began running one at a time
  TimePoint probe_ended_{};
  std::vector<Duration> probe_samples_;
  bool active_since_probe_ = false;  // a request started since the last probe
};

// Admission of every request before it costs anything downstream (docs/gateway.md). The router
// tells each type's priority class (Router.ListRoutes). Every type it lists gets an AdaptiveLimit
// of its own (unlisted types share one), so a flood of low-priority work is held to its own
// limit and never takes a high-priority type's slots; a request over its type's limit waits in
// the gateway, in round robin across sessions, and is dispatched when a slot frees. The gateway
// never reads more than max_in_flight frames of one connection ahead, so what waits is bounded.
//
// What waits is also short: a queue is for bursts, not for load the path cannot serve. Once the
// oldest waiter of a type has waited longer than queue_target, a new request of that type is
// refused at once (Overloaded(): a new one would wait at least as long; the client hears
// `overloaded` with retry_after_ms in microseconds, not seconds later), and a waiter still
// waiting after max_queue_wait is refused (its Waiter runs with granted false). Past its
// capacity the path then serves what it can at the latency it has unloaded plus queue_target,
// and refuses the rest cheaply, instead of queueing everything until deadlines expire (CoDel's
// standing-queue test and Facebook's adaptive queue timeout, applied at the front door).
// Thread-safe.
class Admission {
 public:
  struct Options {
    bool enabled = true;
    AdaptiveLimitOptions limit;
    // limit.tolerance is for normal and low types: 2 keeps a flood of them from doubling the
    // round trip of everything else. A high-priority type uses this one: its limit is there to
    // stop overload, and at 2 it stopped growing at about half the path's throughput (the round
    // trip of the whole path doubles long before its CPUs are busy: docs/BENCHMARKS.md).
    double high_tolerance = 4.0;
    // A queue whose oldest waiter has waited longer than this refuses new requests at once.
    std::chrono::milliseconds queue_target{10};
    // A waiter still waiting after this is refused (a stalled path cannot hold requests).
    std::chrono::milliseconds max_queue_wait{50};
    std::function<AdmissionClock::time_point()> clock = [] { return AdmissionClock::now(); };
  };
  // A waiter runs once, on whichever thread freed its slot or gave up on it. `granted`: the slot
  // is taken for it, and it must call ReleaseUnused(key) if the slot is not used; false: it
  // waited past max_queue_wait and is refused (nothing to give back). It must not block (post to
  // the session's strand).
  using Waiter = std::function<void(bool granted)>;

  Admission(Options options, GatewayMetrics* metrics);  // metrics may be null (tests)

  // The routing table: the priority class ("high", "normal", "low") of each type, and of any
  // type not listed. Until it is set, nothing is held.
  void SetRoutes(std::map<std::string, std::string> priorities, std::string default_priority);

  // How a request of `type` is admitted: nullopt when it goes straight on (admission off, or the
  // routing table not known yet); else the limiter `key` it is held in (the type itself when the
  // routing table lists it, else "other": keys are bounded by the table, so callers may key state
  // by them) and its `priority` class, for metrics.
  struct Hold {
    std::string key;
    std::string priority;
  };
  std::optional<Hold> HoldFor(const std::string& type) const;

  // Takes a slot of limiter `key` (HoldFor's) when one is free and no other session waits for
  // one: true. Otherwise queues `waiter` behind the sessions already waiting and returns false.
  // A session keeps at most one waiter per key.
  bool Acquire(const std::string& key, Waiter waiter);
  // Whether a new request of `key` is refused instead of held: the oldest waiter has waited past
  // queue_target. Then the wait the client is asked to back off for (retry_after_ms).
  std::optional<std::chrono::milliseconds> Overloaded(const std::string& key);
  // The retry_after_ms for a request of `key` refused now (after its waiter was refused).
  std::chrono::milliseconds RetryAfter(const std::string& key);
  // Gives back a slot of `key` taken at `started`. `answered`: the request ended with an answer,
  // so its round trip is a sample.
  void Release(const std::string& key, AdmissionClock::time_point started, bool answered);
  // A slot handed to a waiter that had no use for it.
  void ReleaseUnused(const std::string& key);
  // Moves limits and probes along with no request event (a probe's timeout) and refuses waiters
  // past max_queue_wait; the gateway calls it every 100 ms.
  void Tick();

  struct TypeSnapshot {
    int limit = 0;
    int in_flight = 0;
    size_t waiting = 0;
    std::optional<AdmissionClock::duration> baseline;
    uint64_t refused = 0;  // by Overloaded() and max_queue_wait
  };
  std::map<std::string, TypeSnapshot> Snapshot() const;

 private:
  struct TypeState {
    explicit TypeState(const AdaptiveLimitOptions& o, AdmissionClock::time_point now)
        : limit(o, now) {}
    AdaptiveLimit limit;
    struct Waiting {
      Waiter waiter;
      AdmissionClock::time_point since;
    };
    std::deque<Waiting> waiting;
    uint64_t refused = 0;
    // How long the oldest waiter has waited for capacity (a probe's pause not counted).
    AdmissionClock::duration HeadWait(AdmissionClock::time_point now) const {
      if (waiting.empty()) return AdmissionClock::duration::zero();
      return now - std::max(waiting.front().since, limit.probe_ended());
    }
    AdmissionGauges gauges;  // looked up once, set on every change
  };
  // A waiter to run after the lock is released, and with what.
  struct Call {
    Waiter waiter;
    bool granted;
  };
  TypeState& StateLocked(const std::string& key);
  // Hands free slots of `state` to its waiters, and refuses those past max_queue_wait.
  void GrantLocked(TypeState& state, AdmissionClock::time_point now, std::vector<Call>* calls);
  std::chrono::milliseconds RetryAfterLocked(const TypeState& state,
                                             AdmissionClock::time_point now) const;
  // `bound` (queue_target or max_queue_wait) for this type: as given for work that answers
  // within queue_target, in proportion to its round trip for slower work.
  AdmissionClock::duration Scaled(const TypeState& state, std::chrono::milliseconds bound) const;
  static void Publish(const TypeState& state);
  const std::string& PriorityLocked(const std::string& type) const;
  const std::string& KeyLocked(const std::string& type) const;

  const Options options_;
  GatewayMetrics* const metrics_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> priorities_;
  std::string default_priority_ = "normal";
  bool routes_known_ = false;
  std::map<std::string, std::unique_ptr<TypeState>> types_;
};

}  // namespace anima::gateway
