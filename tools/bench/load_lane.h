#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "tools/bench/latency_recorder.h"

namespace anima::bench {

using Clock = std::chrono::steady_clock;

// When and how fast every lane sends. Filled by the runner before Start() is posted to the lanes
// and read-only afterwards (the post orders the writes before the reads).
struct LoadPlan {
  bool open_loop = false;
  double rate = 0;  // open loop: messages per second over all lanes
  int lanes = 1;
  int in_flight = 1;               // closed loop: requests each lane keeps outstanding
  Clock::time_point start;         // first send
  Clock::time_point record_from;   // end of warmup: sends scheduled from here on are recorded
  Clock::time_point record_until;  // no send is scheduled at or after this
  Clock::time_point drain_until;   // answers still missing then count as "timeout"
  std::atomic<int64_t>* budget = nullptr;  // recorded sends left (--requests); null: unlimited
};

// Counters of the lanes of one thread; only that thread touches them.
struct LaneStats {
  LatencyRecorder latency;
  LatencyRecorder error_latency;  // answers that were errors (not timeouts)
  int64_t sent = 0;
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;
  Clock::time_point last_answer{};
  // From the gateway's welcome frame (0 when unknown): per-connection limits.
  int64_t limit_messages_per_second = 0;
  int64_t limit_max_in_flight = 0;
};

// One connection's worth of load (a "lane"): the scheduling shared by every target. Open loop: a
// send every lanes/rate seconds, phase-shifted by lane, whether or not earlier answers came
// back, latency measured from the *scheduled* time (no coordinated omission). Closed loop:
// `in_flight` requests outstanding, the next sent as soon as one is answered.
// Single-threaded: everything runs on the io_context the lane was created with.
class Lane {
 public:
  Lane(boost::asio::io_context& io, int index, const LoadPlan& plan, LaneStats& stats);
  virtual ~Lane() = default;

  // Opens the connection(s); `done` gets "" or an error description.
  virtual void Connect(std::function<void(std::string error)> done) = 0;
  // Begins sending per the plan; the lane stops by itself and closes its connection(s).
  void Start();
  // Closes at once (used when the run is abandoned before Start).
  virtual void Abort() = 0;

 protected:
  // Sends request `seq`; the transport later calls Complete(seq, ...) exactly once for it
  // (possibly through FailAll).
  virtual void Transmit(uint64_t seq) = 0;
  // Closes the connection(s); no more Transmit calls follow.
  virtual void Shutdown() = 0;

  // `error` "" means success. `at` is when the answer was complete. `retry_after`: the wait the
  // server asked for with an error (retry_after_ms); a closed loop honours it, as an SDK would,
  // before it sends the next request.
  void Complete(uint64_t seq, std::string_view error, Clock::time_point at,
                std::chrono::milliseconds retry_after = std::chrono::milliseconds(0));
  // The transport is gone: every outstanding request fails with `error`, and sending stops.
  void FailAll(std::string_view error);
  bool finished() const { return finished_; }
  int index() const { return index_; }
  LaneStats& stats() { return stats_; }

 private:
  struct Outstanding {
    Clock::time_point scheduled;
    bool recorded;
  };

  void Issue(Clock::time_point scheduled);
  void OnTick();
  void StopSending();
  void OnDrainDeadline();
  void MaybeFinish();

  const int index_;
  const LoadPlan& plan_;
  LaneStats& stats_;
  boost::asio::steady_timer tick_;
  boost::asio::steady_timer end_;
  std::unordered_map<uint64_t, Outstanding> outstanding_;
  uint64_t next_seq_ = 0;
  Clock::time_point next_due_;
  Clock::duration interval_{};
  bool stopped_ = false;
  bool finished_ = false;
  int backing_off_ = 0;  // closed loop: sends waiting out a retry_after
};

}  // namespace anima::bench
