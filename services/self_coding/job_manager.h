#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "services/self_coding/cancel_token.h"
#include "services/self_coding/job_store.h"
#include "services/self_coding/pipeline.h"
#include "services/self_coding/sandbox.h"
#include "services/self_coding/self_coding_metrics.h"

namespace anima::selfcoding {

struct ManagerOptions {
  int workers = 2;
  int queue_size = 16;   // queued jobs beyond which Submit answers ResourceExhausted
  std::string work_dir;  // attempt workspaces live under work_dir/<job_id>/
  std::chrono::milliseconds retention_age = std::chrono::hours(24 * 7);
  int retention_jobs = 1000;
};

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

  // InvalidArgument for a bad request; Unavailable when the sandbox cannot run jobs (bubblewrap
  // missing) or while stopping; ResourceExhausted when the queue is full.
  absl::StatusOr<std::string> Submit(anima::v1::SubmitRequest spec);

  // The events with seq > after_seq (a bounded batch), or the result when there are none and the
  // job has ended. When neither exists yet, returns an empty batch and calls `on_more` once, from
  // any thread, when there is something new. NotFound for an unknown job.
  absl::StatusOr<WatchBatch> Next(const std::string& job_id, int64_t after_seq,
                                  std::function<void()> on_more);

  // Ends the job as cancelled and calls `done` with its final result (at once for a queued job,
  // when the running build or test has been killed otherwise). NotFound for an unknown job,
  // FailedPrecondition for one that has ended.
  void Cancel(const std::string& job_id,
              std::function<void(absl::StatusOr<anima::v1::SelfCodingResult>)> done);

  absl::StatusOr<JobRecord> Get(const std::string& job_id) { return store_->Get(job_id); }
  absl::StatusOr<std::vector<JobRecord>> List(int limit, const std::string& status);

  ManagerStats stats();
  Sandbox* sandbox() { return sandbox_; }
  JobStore* store() { return store_; }

 private:
  struct LiveJob {
    std::string job_id;
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
  std::string NewJobId();
  void UpdateGauges();

  JobStore* store_;
  JobPipeline* pipeline_;
  Sandbox* sandbox_;
  ManagerOptions options_;
  SelfCodingMetrics* metrics_;  // may be null

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::map<std::string, std::shared_ptr<LiveJob>> live_;
  std::deque<std::shared_ptr<LiveJob>> queue_;
  int running_ = 0;
  bool stopping_ = false;
  bool started_ = false;
  ManagerStats totals_;
  int ended_since_prune_ = 0;
  uint64_t id_counter_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace anima::selfcoding
