// The running half of JobManager: workers that claim jobs and run them under leases, the
// heartbeat that renews the leases, and the writes of a run's events. The other half (the API,
// watchers, notifications) is job_manager.cc.
#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "services/common/process.h"
#include "services/self_coding/job_manager.h"
#include "services/self_coding/job_manager_internal.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {

using internal::LogLimiter;
using internal::Transient;
using internal::UnknownJob;

namespace {

namespace fs = std::filesystem;

// Watchers re-read this often even when nothing told them of a change (a safety net: a store
// notification lost without a resync).
constexpr auto kWatchRecheck = std::chrono::seconds(15);
// Retries of an event write while the store cannot be reached.
constexpr auto kWriteBackoffMin = std::chrono::milliseconds(100);
constexpr auto kWriteBackoffMax = std::chrono::milliseconds(5000);
// A progress frame stays far below the gateway's 64 KiB frame limit.
constexpr size_t kMaxMessageBytes = 4096;

// Where a job claimed again continues: the attempt that was in progress, with the checkpoint of
// the one before when it has it.
Checkpoint ResumePoint(const JobRecord& job) {
  int attempt = std::max(1, job.attempts);
  std::optional<Checkpoint> stored = DecodeCheckpoint(job.checkpoint);
  if (stored && stored->next_attempt >= attempt) return *stored;
  Checkpoint fresh;
  fresh.next_attempt = attempt;
  if (stored) fresh.usage = stored->usage;
  return fresh;
}

std::string FinalMessage(const anima::v1::SelfCodingResult& r) {
  if (r.status() == kSucceeded) {
    return absl::StrCat(r.tests().passed(), " passed, ", r.tests().failed(), " failed on attempt ",
                        r.attempts());
  }
  return r.reason().empty() ? r.status() : r.reason();
}

}  // namespace

// Turns the pipeline's progress into events of one run, stored under its lease.
class JobManager::Sink : public ProgressSink {
 public:
  Sink(JobManager* manager, JobManager::Run* run) : manager_(manager), run_(run) {}
  void Progress(const std::string& stage, int attempt, int percent,
                const std::string& message) override {
    if (run_->lost) return;
    JobUpdate update;
    update.attempts = attempt;
    run_->attempts = attempt;
    manager_->Emit(*run_, stage, attempt, percent, message, std::move(update), false);
  }
  void StageDone(const std::string& stage, double seconds) override {
    if (manager_->metrics_ != nullptr) manager_->metrics_->StageDone(stage, seconds);
  }
  void Checkpointed(const Checkpoint& checkpoint) override {
    run_->checkpoint = EncodeCheckpoint(checkpoint);
  }

 private:
  JobManager* manager_;
  JobManager::Run* run_;
};

void JobManager::WorkerLoop(int index) {
  const std::string worker_id = absl::StrCat(replica_id_, "/w", index);
  static LogLimiter claim_errors;
  bool look_now = true;  // at start, and after a job: there may be more
  uint64_t seen = 0;
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (!look_now) {
        work_cv_.wait_for(lock, options_.poll, [&] { return stopping_ || claim_epoch_ != seen; });
      }
      if (stopping_) return;
      seen = claim_epoch_;
    }
    look_now = false;
    auto claimed = store_->Claim(worker_id, options_.lease);
    if (!claimed.ok()) {
      if (claim_errors.Allow()) {
        spdlog::warn("cannot claim jobs: {}", std::string(claimed.status().message()));
      }
      continue;
    }
    if (!claimed->has_value()) continue;
    RunClaimed(std::move(**claimed));
    look_now = true;
    MaybePrune();
  }
}

void JobManager::RunClaimed(ClaimedJob claimed) {
  auto run = std::make_shared<Run>();
  run->job_id = claimed.job.job_id;
  run->principal = claimed.job.principal;
  run->spec = claimed.job.spec;
  run->lease = claimed.lease;
  run->last_seq = claimed.job.last_seq;
  run->last_percent = claimed.last_percent;
  run->attempts = claimed.job.attempts;
  run->cancel_requested = claimed.job.cancel_requested;
  bool stopping;
  {
    std::lock_guard lock(mu_);
    runs_[run->job_id] = run;
    stopping = stopping_;
    UpdateGauges();
  }
  if (stopping) {
    // Claimed while this replica stops: straight back to the queue.
    run->giving_back = true;
    run->token.Cancel();
  }
  const std::string& id = run->job_id;
  spdlog::info("req={} job {} claimed ({}, {} attempts at most{})", run->spec.request_id(), id,
               run->spec.language(), run->spec.max_attempts(),
               claimed.reclaimed ? ", its worker was lost" : "");

  anima::v1::SelfCodingResult result;
  result.set_attempts(run->attempts);
  if (run->cancel_requested) {
    result.set_status(kCancelled);
    result.set_reason("cancelled");
    Finish(run, std::move(result));
    return;
  }
  std::optional<Checkpoint> resume;
  if (claimed.reclaimed) {
    if (metrics_ != nullptr) metrics_->LeaseEvent("reclaimed");
    if (claimed.job.reclaims >= options_.max_reclaims) {
      spdlog::warn("job {}: workers lost {} times, it ends here", id, claimed.job.reclaims);
      result.set_status(kFailed);
      result.set_reason(absl::StrCat("interrupted: workers lost ", claimed.job.reclaims, " times"));
      Finish(run, std::move(result));
      return;
    }
    resume = ResumePoint(claimed.job);
    if (!Emit(*run, kStageRetrying, resume->next_attempt, run->last_percent,
              absl::StrCat("worker lost; attempt ", resume->next_attempt, " re-run"), {}, false)) {
      Forget(run);
      return;
    }
  } else if (claimed.job.attempts > 0) {
    // Given back by a replica that stopped: its event said which attempt runs again.
    resume = ResumePoint(claimed.job);
  }

  fs::path work_dir = fs::path(options_.work_dir) / id;
  std::error_code ec;
  fs::create_directories(work_dir, ec);
  if (ec) {
    result.set_status(kFailed);
    result.set_reason("cannot create the workspace: " + ec.message());
  } else {
    Sink sink(this, run.get());
    result = pipeline_->Run(run->spec, id, work_dir.string(), &sink, &run->token,
                            resume ? &*resume : nullptr);
  }
  fs::remove_all(work_dir, ec);
  if (run->lost) {
    spdlog::info("req={} job {}: stopped here, another worker has it", run->spec.request_id(), id);
    Forget(run);
    return;
  }
  if (result.status() == kCancelled && run->giving_back && !run->cancel_requested) {
    int attempt = std::max(1, run->attempts);
    if (Emit(*run, kStageQueued, attempt, run->last_percent,
             absl::StrCat("the replica running this job is stopping: back in the queue; attempt ",
                          attempt, " runs again on the next free worker"),
             {}, /*release=*/true)) {
      if (metrics_ != nullptr) metrics_->LeaseEvent("released");
      spdlog::info("req={} job {}: given back to the queue", run->spec.request_id(), id);
    }
    Forget(run);
    return;
  }
  Finish(run, std::move(result));
}

bool JobManager::Emit(Run& run, const std::string& stage, int attempt, int percent,
                      const std::string& message, JobUpdate update, bool release) {
  static LogLimiter write_errors;
  anima::v1::SelfCodingProgress event;
  event.set_job_id(run.job_id);
  event.set_seq(run.last_seq + 1);
  event.set_stage(stage);
  event.set_attempt(attempt);
  run.last_percent = std::max(run.last_percent, std::min(percent, 100));
  event.set_percent(run.last_percent);
  event.set_message(message.size() > kMaxMessageBytes ? Tail(message, kMaxMessageBytes) : message);
  event.set_ts(common::Rfc3339Now());
  if (run.checkpoint) update.checkpoint = *run.checkpoint;
  auto backoff = std::chrono::milliseconds(kWriteBackoffMin);
  while (true) {
    if (run.lost) return false;
    absl::Status s = store_->AppendLeased(run.lease, event, update, release);
    if (s.ok()) break;
    if (absl::IsAborted(s) && s.message().find("lease") != std::string::npos) {
      MarkLost(run, std::string(s.message()));
      return false;
    }
    if (!Transient(s)) {
      spdlog::error("job {}: cannot store an event: {}", run.job_id, std::string(s.message()));
      MarkLost(run, "the event could not be stored");
      return false;
    }
    std::unique_lock lock(mu_);
    if (stopping_ && std::chrono::steady_clock::now() > give_up_at_) {
      lock.unlock();
      MarkLost(run, "stopping with the job store unreachable");
      return false;
    }
    if (write_errors.Allow()) {
      spdlog::warn("job {}: the job store does not answer ({}); retrying", run.job_id,
                   std::string(s.message()));
    }
    // maint_cv_ is only a timer here: nothing else waits on the same predicate.
    maint_cv_.wait_for(lock, backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kWriteBackoffMax);
  }
  run.last_seq = event.seq();
  if (update.checkpoint) run.checkpoint.reset();
  WakeWatchers(run.job_id);
  return true;
}

void JobManager::MarkLost(Run& run, const std::string& why) {
  if (run.lost.exchange(true)) return;
  spdlog::warn("job {}: lease lost ({}): stopping its run here", run.job_id, why);
  if (metrics_ != nullptr) metrics_->LeaseEvent("lost");
  run.token.Cancel();
}

void JobManager::Finish(const std::shared_ptr<Run>& run, anima::v1::SelfCodingResult result) {
  result.set_job_id(run->job_id);
  JobUpdate update;
  update.status = result.status();
  update.attempts = result.attempts();
  update.result = result;
  bool stored = Emit(*run, result.status(), result.attempts(), 100, FinalMessage(result),
                     std::move(update), false);
  std::vector<DoneFn> dones;
  {
    std::lock_guard lock(mu_);
    if (stored) {
      if (result.status() == kSucceeded) totals_.succeeded++;
      if (result.status() == kFailed) totals_.failed++;
      if (result.status() == kCancelled) totals_.cancelled++;
      totals_.last_active = common::Rfc3339Now();
      ended_since_prune_++;
      if (auto it = cancel_waiters_.find(run->job_id); it != cancel_waiters_.end()) {
        dones = std::move(it->second);
        cancel_waiters_.erase(it);
      }
    }
  }
  if (stored) {
    if (metrics_ != nullptr) metrics_->JobEnded(result.status());
    spdlog::info("req={} job {} ended {}", run->spec.request_id(), run->job_id, result.status());
  }
  Forget(run);
  for (auto& done : dones) done(result);
}

void JobManager::Forget(const std::shared_ptr<Run>& run) {
  std::lock_guard lock(mu_);
  if (auto it = runs_.find(run->job_id); it != runs_.end() && it->second == run) runs_.erase(it);
  UpdateGauges();
}

void JobManager::MaintenanceLoop() {
  using Clock = std::chrono::steady_clock;
  auto next_heartbeat = Clock::now() + options_.heartbeat;
  auto next_poll = Clock::now() + options_.poll;
  auto next_recheck = Clock::now() + kWatchRecheck;
  MaybePrune();
  while (true) {
    std::set<std::string> checks;
    {
      std::unique_lock lock(mu_);
      maint_cv_.wait_until(lock, std::min(next_heartbeat, next_poll),
                           [&] { return maintenance_stop_ || !cancel_checks_.empty(); });
      if (maintenance_stop_) return;
      checks.swap(cancel_checks_);
    }
    auto now = Clock::now();
    if (now >= next_heartbeat) {
      next_heartbeat = now + options_.heartbeat;
      HeartbeatAll();
    }
    if (now >= next_poll) {
      next_poll = now + options_.poll;
      WakeClaimers(true);
      {
        std::lock_guard lock(mu_);
        for (const auto& [id, dones] : cancel_waiters_) checks.insert(id);
      }
      if (auto counts = store_->Counts("", 0); counts.ok()) {
        std::lock_guard lock(mu_);
        last_queued_ = counts->queued;
        UpdateGauges();
      }
      MaybePrune();
    }
    if (now >= next_recheck) {
      next_recheck = now + kWatchRecheck;
      WakeAllWatchers();
    }
    for (const auto& id : checks) CheckCancelWaiters(id);
  }
}

void JobManager::HeartbeatAll() {
  static LogLimiter heartbeat_errors;
  std::vector<std::shared_ptr<Run>> runs;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, run] : runs_) runs.push_back(run);
  }
  for (auto& run : runs) {
    if (run->lost) continue;
    auto reply = store_->Heartbeat(run->lease, options_.lease);
    if (!reply.ok()) {
      // The lease may run out meanwhile; if another worker then claims the job, this run's next
      // write or heartbeat finds out and it stops.
      if (heartbeat_errors.Allow()) {
        spdlog::warn("job {}: cannot renew the lease: {}", run->job_id,
                     std::string(reply.status().message()));
      }
      continue;
    }
    if (reply->lost) {
      MarkLost(*run, "another worker claimed it");
    } else if (reply->cancel_requested && !run->cancel_requested.exchange(true)) {
      run->token.Cancel();
    }
  }
}

void JobManager::CheckCancelWaiters(const std::string& job_id) {
  auto record = store_->Get(job_id);
  std::vector<DoneFn> dones;
  absl::StatusOr<anima::v1::SelfCodingResult> answer;
  if (record.ok() && IsFinalStatus(record->status) && record->result) {
    answer = *record->result;
  } else if (!record.ok() && absl::IsNotFound(record.status())) {
    answer = UnknownJob(job_id);  // pruned meanwhile
  } else {
    return;  // still running, or the store does not answer: the next check
  }
  {
    std::lock_guard lock(mu_);
    auto it = cancel_waiters_.find(job_id);
    if (it == cancel_waiters_.end()) return;
    dones = std::move(it->second);
    cancel_waiters_.erase(it);
  }
  for (auto& done : dones) done(answer);
}

}  // namespace anima::selfcoding
