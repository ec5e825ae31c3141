#include "services/self_coding/job_manager.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "anima/v1/llm_broker.pb.h"
#include "services/common/process.h"
#include "services/self_coding/job_manager_internal.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {

using internal::FromStore;
using internal::kPruneEvery;
using internal::StoreUnavailable;
using internal::Transient;
using internal::UnknownJob;

namespace {

constexpr int kWatchBatch = 64;

std::string DefaultReplicaId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "replica", "-", getpid(), "-",
                      common::NewSecureId("").substr(0, 6));
}

}  // namespace

JobManager::JobManager(JobStore* store, JobPipeline* pipeline, Sandbox* sandbox,
                       ManagerOptions options, SelfCodingMetrics* metrics)
    : store_(store),
      pipeline_(pipeline),
      sandbox_(sandbox),
      options_(std::move(options)),
      metrics_(metrics),
      limits_{.queue_size = options_.queue_size,
              .max_queued_per_principal = options_.max_queued_per_principal > 0
                                              ? options_.max_queued_per_principal
                                              : std::max(1, (options_.queue_size + 1) / 2)},
      replica_id_(options_.replica_id.empty() ? DefaultReplicaId() : options_.replica_id) {
  totals_.queue_capacity = options_.queue_size;
  totals_.workers = options_.workers;
}

JobManager::~JobManager() { Stop(); }

absl::Status JobManager::Start() {
  {
    std::lock_guard lock(mu_);
    if (started_ || stopping_) return absl::OkStatus();
    started_ = true;
    ended_since_prune_ = kPruneEvery;  // prune once at start
  }
  subscription_ = store_->Subscribe([this](const JobChange& change) { OnStoreChange(change); });
  // A replica that cannot sandbox must not take jobs that another replica could run.
  int workers = options_.workers;
  if (auto s = sandbox_->Available(); !s.ok() && workers > 0) {
    spdlog::warn("the sandbox is unavailable, so this replica claims no jobs: {}",
                 std::string(s.message()));
    workers = 0;
  }
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
  maintenance_ = std::thread([this] { MaintenanceLoop(); });
  spdlog::info("self-coding replica {}: {} workers, lease {} ms, heartbeat {} ms", replica_id_,
               workers, options_.lease.count(), options_.heartbeat.count());
  return absl::OkStatus();
}

void JobManager::Stop() {
  std::vector<std::shared_ptr<Run>> runs;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    // Writes that cannot get through are given up after a lease: the job is then claimed again
    // elsewhere, as if this replica had died.
    give_up_at_ = std::chrono::steady_clock::now() + options_.lease;
    for (auto& [id, run] : runs_) runs.push_back(run);
  }
  for (auto& run : runs) {
    run->giving_back = true;
    run->token.Cancel();
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  {
    std::lock_guard lock(mu_);
    maintenance_stop_ = true;
  }
  maint_cv_.notify_all();
  if (maintenance_.joinable()) maintenance_.join();
  if (subscription_ >= 0) store_->Unsubscribe(subscription_);
  subscription_ = -1;
  std::map<std::string, std::vector<DoneFn>> waiters;
  {
    std::lock_guard lock(mu_);
    waiters.swap(cancel_waiters_);
  }
  for (auto& [id, dones] : waiters) {
    for (auto& done : dones) {
      done(absl::UnavailableError("the self-coding service is shutting down; job " + id +
                                  " is to be cancelled by whichever replica runs it"));
    }
  }
  WakeAllWatchers();
}

int64_t JobManager::NowUnixMs() const {
  if (options_.now_unix_ms) return options_.now_unix_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::string> JobManager::Submit(const common::Identity& who,
                                               anima::v1::SubmitRequest spec) {
  if (auto s = ValidateRequest(spec); !s.ok()) return s;
  // Unavailable (the client sees `unavailable`): this service cannot run jobs, the request is fine.
  if (auto s = sandbox_->Available(); !s.ok()) return absl::UnavailableError(s.message());
  {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::UnavailableError("the self-coding service is shutting down");
  }
  std::string job_id = common::NewSecureId("job-");
  int64_t now = NowUnixMs();
  JobRecord record;
  record.job_id = job_id;
  record.principal = who.principal;
  record.status = kQueued;
  record.spec = std::move(spec);
  record.created_at = record.updated_at = common::Rfc3339Now();
  record.created_unix_ms = now;
  anima::v1::SelfCodingProgress first;
  first.set_job_id(job_id);
  first.set_seq(1);
  first.set_stage(kStageQueued);
  first.set_message("queued");
  first.set_ts(record.created_at);
  int64_t queued = 0;
  auto status = store_->Create(
      record, &first, [&](const AdmissionCounts& counts, anima::v1::SelfCodingProgress& event) {
        if (auto s = Admit(who, counts, limits_, now); !s.ok()) return s;
        queued = counts.queued + 1;
        if (counts.queued > 0) {
          event.set_message(absl::StrCat("queued (", counts.queued, " jobs waiting, ",
                                         counts.running, " running)"));
        }
        return absl::OkStatus();
      });
  if (!status.ok()) {
    if (auto payload = status.GetPayload(kFailurePayloadUrl); payload && metrics_ != nullptr) {
      anima::v1::BrokerFailure failure;
      if (failure.ParseFromString(std::string(*payload)) && !failure.limit().empty()) {
        metrics_->QuotaRefused(failure.limit());
      }
    }
    if (Transient(status)) return StoreUnavailable(status);
    return status;
  }
  {
    std::lock_guard lock(mu_);
    totals_.submitted++;
    totals_.last_active = common::Rfc3339Now();
    last_queued_ = queued;
    UpdateGauges();
  }
  WakeClaimers(false);
  return job_id;
}

void JobManager::WakeClaimers(bool all) {
  {
    std::lock_guard lock(mu_);
    claim_epoch_++;
  }
  if (all) {
    work_cv_.notify_all();
  } else {
    work_cv_.notify_one();
  }
}

void JobManager::OnStoreChange(const JobChange& change) {
  switch (change.kind) {
    case JobChange::Kind::kQueued:
      WakeClaimers(false);
      break;
    case JobChange::Kind::kEvent: {
      WakeWatchers(change.job_id);
      bool check = false;
      {
        std::lock_guard lock(mu_);
        check = cancel_waiters_.count(change.job_id) != 0;
        if (check) cancel_checks_.insert(change.job_id);
      }
      if (check) maint_cv_.notify_all();
      break;
    }
    case JobChange::Kind::kCancelRequested: {
      std::shared_ptr<Run> run;
      {
        std::lock_guard lock(mu_);
        if (auto it = runs_.find(change.job_id); it != runs_.end()) run = it->second;
      }
      if (run && !run->cancel_requested.exchange(true)) run->token.Cancel();
      break;
    }
    case JobChange::Kind::kResync: {
      WakeAllWatchers();
      WakeClaimers(true);
      {
        std::lock_guard lock(mu_);
        for (const auto& [id, dones] : cancel_waiters_) cancel_checks_.insert(id);
      }
      maint_cv_.notify_all();
      break;
    }
  }
}

void JobManager::WakeWatchers(const std::string& job_id) {
  std::map<int, std::function<void()>> wake;
  {
    std::lock_guard lock(mu_);
    auto it = watchers_.find(job_id);
    if (it == watchers_.end()) return;
    wake.swap(it->second);
    watchers_.erase(it);
  }
  for (auto& [id, fn] : wake) fn();
}

void JobManager::WakeAllWatchers() {
  std::map<std::string, std::map<int, std::function<void()>>> wake;
  {
    std::lock_guard lock(mu_);
    wake.swap(watchers_);
  }
  for (auto& [job, fns] : wake) {
    for (auto& [id, fn] : fns) fn();
  }
}

void JobManager::RemoveWatcher(const std::string& job_id, int id) {
  std::lock_guard lock(mu_);
  auto it = watchers_.find(job_id);
  if (it == watchers_.end()) return;
  it->second.erase(id);
  if (it->second.empty()) watchers_.erase(it);
}

absl::StatusOr<WatchBatch> JobManager::Next(const common::Identity& who, const std::string& job_id,
                                            int64_t after_seq, std::function<void()> on_more) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      return absl::UnavailableError(
          absl::StrCat("the self-coding service is shutting down; watch job ", job_id,
                       " again from seq ", after_seq, " on another replica"));
    }
  }
  auto wait = [&]() -> absl::StatusOr<WatchBatch> {
    std::lock_guard lock(mu_);
    watchers_[job_id][next_watcher_++] = std::move(on_more);
    return WatchBatch{};
  };
  auto record = store_->Get(job_id);
  if (!record.ok()) {
    // The store does not answer: keep the watcher waiting; it is woken to try again.
    if (Transient(record.status())) return wait();
    return FromStore(record.status(), job_id);
  }
  if (!Visible(who, record->principal)) return UnknownJob(job_id);
  const bool ended = IsFinalStatus(record->status);
  int watcher = -1;
  if (!ended) {
    // Registered before the events are read: an event stored in between wakes it.
    std::lock_guard lock(mu_);
    watcher = next_watcher_++;
    watchers_[job_id][watcher] = std::move(on_more);
  }
  auto events = store_->Events(job_id, after_seq, kWatchBatch);
  if (!events.ok()) {
    if (!ended && Transient(events.status())) return WatchBatch{};  // woken to try again
    if (watcher >= 0) RemoveWatcher(job_id, watcher);
    return FromStore(events.status(), job_id);
  }
  WatchBatch batch;
  if (!events->empty()) {
    if (watcher >= 0) RemoveWatcher(job_id, watcher);
    batch.events = std::move(*events);
    return batch;
  }
  if (ended) {
    if (!record->result) return absl::InternalError("job " + job_id + " ended without a result");
    batch.result = *record->result;
  }
  return batch;
}

void JobManager::Cancel(const common::Identity& who, const std::string& job_id, DoneFn done) {
  auto record = store_->Get(job_id);
  if (!record.ok()) {
    done(FromStore(record.status(), job_id));
    return;
  }
  if (!Visible(who, record->principal)) {
    done(UnknownJob(job_id));
    return;
  }
  auto already_ended = [&](const std::string& status) {
    done(absl::FailedPreconditionError("job " + job_id + " has already ended (" + status + ")"));
  };
  if (IsFinalStatus(record->status)) {
    already_ended(record->status);
    return;
  }
  anima::v1::SelfCodingProgress event;
  event.set_job_id(job_id);
  event.set_stage(kCancelled);
  event.set_attempt(record->attempts);
  event.set_percent(100);
  event.set_message("cancelled");
  event.set_ts(common::Rfc3339Now());
  anima::v1::SelfCodingResult result;
  result.set_job_id(job_id);
  result.set_status(kCancelled);
  result.set_reason("cancelled");
  result.set_attempts(record->attempts);
  auto outcome = store_->RequestCancel(job_id, event, result);
  if (!outcome.ok()) {
    done(FromStore(outcome.status(), job_id));
    return;
  }
  switch (outcome->kind) {
    case CancelOutcome::Kind::kFinal:
      already_ended(outcome->job.status);
      return;
    case CancelOutcome::Kind::kEnded: {
      {
        std::lock_guard lock(mu_);
        totals_.cancelled++;
        totals_.last_active = common::Rfc3339Now();
        ended_since_prune_++;
      }
      if (metrics_ != nullptr) metrics_->JobEnded(kCancelled);
      WakeWatchers(job_id);
      done(outcome->job.result ? *outcome->job.result : result);
      return;
    }
    case CancelOutcome::Kind::kRequested: {
      std::shared_ptr<Run> run;
      {
        std::lock_guard lock(mu_);
        if (stopping_) {
          done(absl::UnavailableError("the self-coding service is shutting down"));
          return;
        }
        cancel_waiters_[job_id].push_back(std::move(done));
        // It may have ended before the waiter was in place: look once more.
        cancel_checks_.insert(job_id);
        if (auto it = runs_.find(job_id); it != runs_.end()) run = it->second;
      }
      maint_cv_.notify_all();
      if (run && !run->cancel_requested.exchange(true)) run->token.Cancel();
      return;
    }
  }
}

absl::StatusOr<JobRecord> JobManager::Get(const common::Identity& who, const std::string& job_id) {
  auto record = store_->Get(job_id);
  if (!record.ok()) return FromStore(record.status(), job_id);
  if (!Visible(who, record->principal)) return UnknownJob(job_id);
  return record;
}

absl::StatusOr<std::vector<JobRecord>> JobManager::List(const common::Identity& who, int limit,
                                                        const std::string& status,
                                                        bool all_principals) {
  if (limit <= 0 || limit > 500) limit = limit <= 0 ? 50 : 500;
  auto jobs = store_->List({.limit = limit,
                            .status = status,
                            .oldest_first = false,
                            .principal = all_principals && who.admin ? "" : who.principal});
  if (!jobs.ok() && Transient(jobs.status())) return StoreUnavailable(jobs.status());
  return jobs;
}

ManagerStats JobManager::stats() {
  auto counts = store_->Counts("", 0);
  std::lock_guard lock(mu_);
  if (counts.ok()) last_queued_ = counts->queued;
  ManagerStats s = totals_;
  s.queued = static_cast<int>(last_queued_);
  s.running = static_cast<int>(runs_.size());
  return s;
}

void JobManager::UpdateGauges() {
  if (metrics_ == nullptr) return;
  metrics_->SetQueueDepth(static_cast<double>(last_queued_));
  metrics_->SetRunning(static_cast<double>(runs_.size()));
}

void JobManager::MaybePrune() {
  {
    std::lock_guard lock(mu_);
    if (ended_since_prune_ < kPruneEvery) return;
    ended_since_prune_ = 0;
  }
  auto pruned = store_->Prune(options_.retention_age, options_.retention_jobs, NowUnixMs());
  if (!pruned.ok()) {
    spdlog::warn("pruning old jobs failed: {}", std::string(pruned.status().message()));
  } else if (!pruned->empty()) {
    spdlog::info("pruned {} old jobs", pruned->size());
  }
}

}  // namespace anima::selfcoding
