#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/identity.h"
#include "services/self_coding/cancel_token.h"
#include "services/self_coding/job_store.h"
#include "services/self_coding/pipeline.h"
#include "services/self_coding/round_robin_queue.h"
#include "services/self_coding/sandbox.h"
#include "services/self_coding/self_coding_metrics.h"

namespace anima::selfcoding {

struct ManagerOptions {
  int workers = 2;
  int queue_size = 16;  // queued jobs beyond which Submit answers ResourceExhausted
  // Queued jobs one principal may hold, so that others always find room; 0: half of queue_size,
  // rounded up.
  int max_queued_per_principal = 0;
  std::string work_dir;  // attempt workspaces live under work_dir/<job_id>/
  std::chrono::milliseconds retention_age = std::chrono::hours(24 * 7);
  int retention_jobs = 1000;
  // The wall clock, ms since the Unix epoch: job times, retention, the UTC day of the per-day
  // quota. Empty: the system clock.
  std::function<int64_t()> now_unix_ms;
};

// A Submit refused by a quota or a full queue carries an anima.v1.BrokerFailure (serialized)
// under this payload URL: the protocol's code (quota_exceeded or overloaded), `limit` for a quota
// (jobs_in_flight, jobs_per_day) and retry_after_ms. The RPC edge sends it as the status details.
inline constexpr char kFailurePayloadUrl[] = "type.googleapis.com/anima.v1.BrokerFailure";
// The retry hint when a job has to end before another fits (in-flight quota, queue full): jobs
// take seconds to minutes and nothing predicts which ends first, so this is a polling interval,
// not a promise.
inline constexpr std::chrono::milliseconds kRetryWhenBusy{1000};

// Events a watcher has not seen yet, or the result once it has seen every event.
struct WatchBatch {
  std::vector<anima::v1::SelfCodingProgress> events;
  std::optional<anima::v1::SelfCodingResult> result;  // set only when `events` is empty
};

struct ManagerStats {
  int queued = 0;
  int running = 0;
  int queue_capacity = 0;
  int workers = 0;
  int64_t submitted = 0;
  int64_t succeeded = 0;
  int64_t failed = 0;
  int64_t cancelled = 0;
  std::string last_active;  // RFC 3339, empty before the first job
};

// Owns the queue, the workers and every live job. Each event is stored first, then watchers are
// told, so a watcher that reads the store after a notification never misses one. Thread-safe.
//
// Every job belongs to the principal that submitted it. A caller (`who`) sees only its own jobs;
// another principal's job is NotFound with the same message as an unknown id, so ids cannot be
// probed. Admins see every job. The queue is served round robin between principals, and one
// principal holds at most max_queued_per_principal queued jobs.
class JobManager {
 public:
  JobManager(JobStore* store, JobPipeline* pipeline, Sandbox* sandbox, ManagerOptions options,
             SelfCodingMetrics* metrics);
  ~JobManager();

  // Recovers after a restart (running jobs end failed "interrupted", queued jobs are queued
  // again), prunes, and starts the workers.
  absl::Status Start();
  // Stops taking jobs; running jobs end failed "interrupted", queued ones stay queued for the
  // next start. Idempotent.
  void Stop();

  // Queues a job owned by who.principal. InvalidArgument for a bad request; Unavailable when the
  // sandbox cannot run jobs (bubblewrap missing) or while stopping; ResourceExhausted, with a
  // kFailurePayloadUrl payload, over who.job_limits (quota_exceeded: jobs_in_flight counts the
  // principal's queued and running jobs, jobs_per_day the jobs it submitted this UTC day, retry
  // at the next UTC midnight), over the principal's share of the queue, or when the queue is full
  // (overloaded).
  absl::StatusOr<std::string> Submit(const common::Identity& who, anima::v1::SubmitRequest spec);

  // The events with seq > after_seq (a bounded batch), or the result when there are none and the
  // job has ended. When neither exists yet, returns an empty batch and calls `on_more` once, from
  // any thread, when there is something new. NotFound for a job `who` cannot see.
  absl::StatusOr<WatchBatch> Next(const common::Identity& who, const std::string& job_id,
                                  int64_t after_seq, std::function<void()> on_more);

  // Ends the job as cancelled and calls `done` with its final result (at once for a queued job,
  // when the running build or test has been killed otherwise). NotFound for a job `who` cannot
  // see, FailedPrecondition for one that has ended.
  void Cancel(const common::Identity& who, const std::string& job_id,
              std::function<void(absl::StatusOr<anima::v1::SelfCodingResult>)> done);

  // NotFound for a job `who` cannot see.
  absl::StatusOr<JobRecord> Get(const common::Identity& who, const std::string& job_id);
  // Newest first: who's jobs, or every principal's when `all_principals` and who is an admin
  // (a non-admin asking for all gets its own).
  absl::StatusOr<std::vector<JobRecord>> List(const common::Identity& who, int limit,
                                              const std::string& status, bool all_principals);

  ManagerStats stats();
  Sandbox* sandbox() { return sandbox_; }
  JobStore* store() { return store_; }

 private:
  struct LiveJob {
    std::string job_id;
    std::string principal;
    anima::v1::SubmitRequest spec;
    std::string status = kQueued;
    int attempts = 0;
    int64_t last_seq = 0;
    int last_percent = 0;
    CancelToken token;
    std::vector<std::function<void()>> watchers;
    std::vector<std::function<void(absl::StatusOr<anima::v1::SelfCodingResult>)>> on_end;
  };
  class Sink;

  void WorkerLoop();
  void RunJob(const std::shared_ptr<LiveJob>& job);
  // Stores the event, then wakes the job's watchers. Caller holds mu_; the callbacks to run
  // after unlocking are appended to `wake`.
  absl::Status EmitLocked(LiveJob& job, const std::string& stage, int attempt, int percent,
                          const std::string& message, const JobUpdate& update,
                          std::vector<std::function<void()>>* wake);
  // Stores the final event and result, forgets the live job; returns the callbacks to run.
  std::vector<std::function<void()>> FinishLocked(const std::shared_ptr<LiveJob>& job,
                                                  anima::v1::SelfCodingResult result);
  void MaybePrune();
  int64_t NowUnixMs() const;
  // Adds a job to live_, in_flight_ and the queue. Caller holds mu_.
  void EnqueueLocked(std::shared_ptr<LiveJob> job);
  // OK, or the ResourceExhausted refusal of a Submit by `who` now. Caller holds mu_.
  absl::Status AdmitLocked(const common::Identity& who, int64_t now_unix_ms);
  // Whether `who` may see a job of `owner`.
  static bool Visible(const common::Identity& who, const std::string& owner) {
    return who.admin || who.principal == owner;
  }
  void UpdateGauges();

  JobStore* store_;
  JobPipeline* pipeline_;
  Sandbox* sandbox_;
  ManagerOptions options_;
  SelfCodingMetrics* metrics_;  // may be null

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::map<std::string, std::shared_ptr<LiveJob>> live_;
  // Queued jobs keyed by principal. A job taken by a worker is live_ but no longer here.
  RoundRobinQueue<std::shared_ptr<LiveJob>> queue_;
  std::map<std::string, int> in_flight_;  // live jobs per principal; no zero entries
  int max_queued_per_principal_;
  int running_ = 0;
  bool stopping_ = false;
  bool started_ = false;
  ManagerStats totals_;
  int ended_since_prune_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace anima::selfcoding
