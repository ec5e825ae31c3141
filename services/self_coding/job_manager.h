#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/identity.h"
#include "services/self_coding/admission.h"
#include "services/self_coding/cancel_token.h"
#include "services/self_coding/job_store.h"
#include "services/self_coding/pipeline.h"
#include "services/self_coding/sandbox.h"
#include "services/self_coding/self_coding_metrics.h"

namespace anima::selfcoding {

struct ManagerOptions {
  int workers = 2;      // jobs this replica runs at once
  int queue_size = 16;  // queued jobs (every replica's) beyond which Submit answers overloaded
  // Queued jobs one principal may hold, so that others always find room; 0: half of queue_size,
  // rounded up.
  int max_queued_per_principal = 0;
  std::string work_dir;  // attempt workspaces live under work_dir/<job_id>/
  std::chrono::milliseconds retention_age = std::chrono::hours(24 * 7);
  int retention_jobs = 1000;
  // The wall clock, ms since the Unix epoch: job times, retention, the UTC day of the per-day
  // quota. Empty: the system clock. (Leases run on the store's clock, not this one.)
  std::function<int64_t()> now_unix_ms;
  // How long a claim holds a job without a heartbeat; after it, another worker (on any replica)
  // may claim the job and run its attempt again.
  std::chrono::milliseconds lease{15000};
  // How often the leases of running jobs are renewed: well under `lease`.
  std::chrono::milliseconds heartbeat{5000};
  // How often idle workers look for work without being told of any (a safety net for lost
  // notifications; jobs submitted here or NOTIFYed start at once).
  std::chrono::milliseconds poll{2000};
  // Workers lost on one job after which it ends failed instead of running again.
  int max_reclaims = 3;
  std::string replica_id;  // names this replica's workers in the store; empty: host-pid-random
};

// Events a watcher has not seen yet, or the result once it has seen every event.
struct WatchBatch {
  std::vector<anima::v1::SelfCodingProgress> events;
  std::optional<anima::v1::SelfCodingResult> result;  // set only when `events` is empty
};

struct ManagerStats {
  int queued = 0;   // every replica's
  int running = 0;  // on this replica
  int queue_capacity = 0;
  int workers = 0;
  int64_t submitted = 0;  // the counters count what this replica did
  int64_t succeeded = 0;
  int64_t failed = 0;
  int64_t cancelled = 0;
  std::string last_active;  // RFC 3339, empty before the first job
};

// Runs self-coding jobs from a JobStore's queue, which any number of replicas share. Thread-safe.
//
// - Submit stores the job (admission decided inside the store's transaction, so the limits hold
//   across replicas); idle workers on every replica claim jobs from the store, woken by a local
//   Submit, by the store's notification of a queued job, and by a periodic poll.
// - A claim is a lease: a heartbeat renews the leases of this replica's running jobs. Every
//   event is written under the lease (JobStore::AppendLeased) before watchers are told; a worker
//   whose lease is lost stops its run without writing another event.
// - A job whose worker died (kill -9, a lost host) is claimed again once its lease has expired
//   and the attempt in progress runs again, from the checkpoint of the attempt before ("worker
//   lost; attempt N re-run"); seq continues. After max_reclaims lost workers it ends failed
//   ("interrupted: workers lost N times"), so a job that kills its worker cannot loop.
// - Stop (SIGTERM) gives running jobs back to the queue with an event saying so; another
//   replica, or this one after a restart, continues them.
// - Store outages: Submit, Get, List and Cancel answer Unavailable ("job store unavailable");
//   running jobs keep running and their event writes are retried with backoff until the store
//   answers (the lease fences them); watchers wait.
//
// Store calls may block on the network: call Submit, Next, Cancel, Get, List and stats() from a
// worker thread, never from a gRPC callback.
//
// Every job belongs to the principal that submitted it. A caller (`who`) sees only its own jobs;
// another principal's job is NotFound with the same message as an unknown id, so ids cannot be
// probed. Admins see every job. Claims serve principals round robin, and one principal holds at
// most max_queued_per_principal queued jobs.
class JobManager {
 public:
  JobManager(JobStore* store, JobPipeline* pipeline, Sandbox* sandbox, ManagerOptions options,
             SelfCodingMetrics* metrics);
  ~JobManager();  // Stop(), then waits for its threads

  // Starts the workers and the heartbeat. Idempotent.
  absl::Status Start();
  // Stops claiming; running jobs are given back to the queue for another worker (an event says
  // so); answers the Cancels still waiting with Unavailable and wakes every watcher (whose next
  // Next is Unavailable). Idempotent.
  void Stop();

  // Queues a job owned by who.principal. InvalidArgument for a bad request; Unavailable when the
  // sandbox cannot run jobs (bubblewrap missing), while stopping, or when the store cannot be
  // reached ("job store unavailable: ..."); ResourceExhausted, with a kFailurePayloadUrl
  // payload, over who.job_limits (quota_exceeded: jobs_in_flight counts the principal's queued
  // and running jobs, jobs_per_day the jobs it submitted this UTC day, retry at the next UTC
  // midnight), over the principal's share of the queue, or when the queue is full (overloaded).
  absl::StatusOr<std::string> Submit(const common::Identity& who, anima::v1::SubmitRequest spec);

  // The events with seq > after_seq (a bounded batch), or the result when there are none and the
  // job has ended. When neither exists yet (or the store cannot be read now), returns an empty
  // batch and calls `on_more` once, from any thread, when there may be something new: an event
  // stored here or on another replica, a lost-notification resync, or a periodic re-check.
  // NotFound for a job `who` cannot see; Unavailable once stopped.
  absl::StatusOr<WatchBatch> Next(const common::Identity& who, const std::string& job_id,
                                  int64_t after_seq, std::function<void()> on_more);

  // Ends the job as cancelled and calls `done` with its final result: at once for a queued job;
  // for a running one (on any replica) when its worker has stopped it. NotFound for a job `who`
  // cannot see, FailedPrecondition for one that has ended, Unavailable when the store cannot be
  // reached or this replica stops first. `done` runs exactly once, on any thread.
  void Cancel(const common::Identity& who, const std::string& job_id,
              std::function<void(absl::StatusOr<anima::v1::SelfCodingResult>)> done);

  // NotFound for a job `who` cannot see.
  absl::StatusOr<JobRecord> Get(const common::Identity& who, const std::string& job_id);
  // Newest first: who's jobs, or every principal's when `all_principals` and who is an admin
  // (a non-admin asking for all gets its own).
  absl::StatusOr<std::vector<JobRecord>> List(const common::Identity& who, int limit,
                                              const std::string& status, bool all_principals);

  // Reads the queue depth from the store (the last known one if it cannot).
  ManagerStats stats();
  Sandbox* sandbox() { return sandbox_; }
  JobStore* store() { return store_; }

 private:
  using DoneFn = std::function<void(absl::StatusOr<anima::v1::SelfCodingResult>)>;
  // A job this replica runs, from its claim until its last write.
  struct Run {
    std::string job_id;
    std::string principal;
    anima::v1::SubmitRequest spec;
    Lease lease;
    CancelToken token;
    // Touched by the job's worker only, but for lost/cancel_requested/giving_back.
    int64_t last_seq = 0;
    int last_percent = 0;
    int attempts = 0;
    std::optional<std::string> checkpoint;      // stored with the next event
    std::atomic<bool> lost{false};              // the lease is gone: write nothing more
    std::atomic<bool> cancel_requested{false};  // end cancelled
    std::atomic<bool> giving_back{false};       // this replica stops: release the lease
  };
  class Sink;

  void WorkerLoop(int index);
  void RunClaimed(ClaimedJob claimed);
  // Stores an event of `run` under its lease, retrying with backoff while the store cannot be
  // reached, then wakes the job's watchers. False when it was not stored: the lease is lost
  // (the run must stop), or this replica stops and the store stayed unreachable.
  bool Emit(Run& run, const std::string& stage, int attempt, int percent,
            const std::string& message, JobUpdate update, bool release);
  // Stores the final event and result, forgets the run, answers waiting Cancels.
  void Finish(const std::shared_ptr<Run>& run, anima::v1::SelfCodingResult result);
  void Forget(const std::shared_ptr<Run>& run);
  void MarkLost(Run& run, const std::string& why);
  void MaintenanceLoop();
  void HeartbeatAll();
  void CheckCancelWaiters(const std::string& job_id);
  void OnStoreChange(const JobChange& change);
  void WakeWatchers(const std::string& job_id);
  void WakeAllWatchers();
  void WakeClaimers(bool all);
  // Removes watcher `id` of `job_id` (it has been answered).
  void RemoveWatcher(const std::string& job_id, int id);
  void MaybePrune();
  int64_t NowUnixMs() const;
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
  const AdmissionLimits limits_;
  std::string replica_id_;

  std::mutex mu_;
  std::condition_variable work_cv_;   // idle workers: claim_epoch_ moved, or stopping_
  std::condition_variable maint_cv_;  // the maintenance thread: checks to do, or stopping
  std::map<std::string, std::shared_ptr<Run>> runs_;
  std::map<std::string, std::map<int, std::function<void()>>> watchers_;
  int next_watcher_ = 1;
  std::map<std::string, std::vector<DoneFn>> cancel_waiters_;
  std::set<std::string> cancel_checks_;  // jobs whose waiters should read the store again
  uint64_t claim_epoch_ = 1;             // moves when there may be a job to claim
  bool stopping_ = false;
  bool maintenance_stop_ = false;
  bool started_ = false;
  std::chrono::steady_clock::time_point give_up_at_;  // while stopping: stop retrying writes
  ManagerStats totals_;
  int64_t last_queued_ = 0;  // the last queue depth read from the store
  int ended_since_prune_ = 0;
  int subscription_ = -1;
  std::vector<std::thread> workers_;
  std::thread maintenance_;
};

}  // namespace anima::selfcoding
