#include "services/self_coding/job_manager.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "anima/v1/llm_broker.pb.h"
#include "services/common/process.h"
#include "services/self_coding/file_blocks.h"
#include "services/self_coding/prompts.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;

constexpr int kWatchBatch = 64;
constexpr size_t kMaxTaskBytes = 16 * 1024;
constexpr size_t kMaxTestsBytes = 32 * 1024;
constexpr size_t kMaxSeedBytes = 48 * 1024;
constexpr int kPruneEvery = 20;
// A progress frame stays far below the gateway's 64 KiB frame limit.
constexpr size_t kMaxMessageBytes = 4096;

// What another principal's job and an unknown id both get, word for word.
absl::Status UnknownJob(const std::string& job_id) {
  return absl::NotFoundError("unknown job " + job_id);
}

// The store's NotFound, in the words of UnknownJob.
absl::Status FromStore(const absl::Status& status, const std::string& job_id) {
  return status.code() == absl::StatusCode::kNotFound ? UnknownJob(job_id) : status;
}

// A refused Submit: ResourceExhausted carrying the BrokerFailure the client is to see.
absl::Status Refusal(const std::string& code, const std::string& limit, const std::string& message,
                     int64_t retry_after_ms) {
  anima::v1::BrokerFailure failure;
  failure.set_code(code);
  failure.set_message(message);
  failure.set_limit(limit);
  failure.set_retry_after_ms(retry_after_ms);
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kFailurePayloadUrl, absl::Cord(failure.SerializeAsString()));
  return status;
}

absl::Status Validate(anima::v1::SubmitRequest& spec) {
  if (spec.task().empty()) return absl::InvalidArgumentError("task is required");
  if (spec.task().size() > kMaxTaskBytes) {
    return absl::InvalidArgumentError(absl::StrCat("task is over ", kMaxTaskBytes, " bytes"));
  }
  const LanguageProfile* lang = FindLanguage(spec.language());
  if (lang == nullptr) {
    return absl::InvalidArgumentError("language must be python or cpp, not \"" +
                                      spec.language().substr(0, 40) + "\"");
  }
  spec.set_language(lang->name);
  if (spec.max_attempts() == 0) spec.set_max_attempts(3);
  if (spec.max_attempts() < 1 || spec.max_attempts() > 5) {
    return absl::InvalidArgumentError("max_attempts must be from 1 to 5");
  }
  if (spec.tests().size() > kMaxTestsBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tests are over ", kMaxTestsBytes, " bytes"));
  }
  size_t seed = 0;
  for (const auto& [path, content] : spec.files()) {
    if (!FileBlockParser::IsSafePath(path) || path == "_anima_run_tests.py") {
      return absl::InvalidArgumentError("files: \"" + path.substr(0, 100) +
                                        "\" is not a safe relative path");
    }
    seed += content.size();
  }
  if (seed > kMaxSeedBytes) {
    return absl::InvalidArgumentError(absl::StrCat("files are over ", kMaxSeedBytes, " bytes"));
  }
  return absl::OkStatus();
}

std::string FinalMessage(const anima::v1::SelfCodingResult& r) {
  if (r.status() == kSucceeded) {
    return absl::StrCat(r.tests().passed(), " passed, ", r.tests().failed(), " failed on attempt ",
                        r.attempts());
  }
  return r.reason().empty() ? r.status() : r.reason();
}

}  // namespace

// Turns the pipeline's progress into stored events of one job.
class JobManager::Sink : public ProgressSink {
 public:
  Sink(JobManager* manager, std::shared_ptr<LiveJob> job) : manager_(manager), job_(job) {}
  void Progress(const std::string& stage, int attempt, int percent,
                const std::string& message) override {
    std::vector<std::function<void()>> wake;
    {
      std::lock_guard lock(manager_->mu_);
      JobUpdate update;
      update.attempts = attempt;
      if (job_->status == kQueued) {
        job_->status = kRunning;
        update.status = kRunning;
      }
      job_->attempts = attempt;
      if (auto s = manager_->EmitLocked(*job_, stage, attempt, percent, message, update, &wake);
          !s.ok()) {
        spdlog::error("job {}: cannot store an event: {}", job_->job_id, std::string(s.message()));
      }
    }
    for (auto& w : wake) w();
  }
  void StageDone(const std::string& stage, double seconds) override {
    if (manager_->metrics_ != nullptr) manager_->metrics_->StageDone(stage, seconds);
  }

 private:
  JobManager* manager_;
  std::shared_ptr<LiveJob> job_;
};

JobManager::JobManager(JobStore* store, JobPipeline* pipeline, Sandbox* sandbox,
                       ManagerOptions options, SelfCodingMetrics* metrics)
    : store_(store),
      pipeline_(pipeline),
      sandbox_(sandbox),
      options_(std::move(options)),
      metrics_(metrics),
      max_queued_per_principal_(options_.max_queued_per_principal > 0
                                    ? options_.max_queued_per_principal
                                    : std::max(1, (options_.queue_size + 1) / 2)) {
  totals_.queue_capacity = options_.queue_size;
  totals_.workers = options_.workers;
}

JobManager::~JobManager() { Stop(); }

absl::Status JobManager::Start() {
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard lock(mu_);
    if (started_) return absl::OkStatus();
    auto running =
        store_->List({.limit = 0, .status = kRunning, .oldest_first = true, .principal = ""});
    if (!running.ok()) return running.status();
    for (const auto& record : *running) {
      auto job = std::make_shared<LiveJob>();
      job->job_id = record.job_id;
      job->principal = record.principal;
      job->spec = record.spec;
      job->status = kRunning;
      job->attempts = record.attempts;
      job->last_seq = record.last_seq;
      job->last_percent = 0;
      live_[job->job_id] = job;
      in_flight_[job->principal]++;
      anima::v1::SelfCodingResult result;
      result.set_job_id(record.job_id);
      result.set_status(kFailed);
      result.set_attempts(record.attempts);
      result.set_reason("interrupted");
      auto w = FinishLocked(job, std::move(result));
      wake.insert(wake.end(), w.begin(), w.end());
      spdlog::warn("job {} was running when the service stopped: failed (interrupted)",
                   record.job_id);
    }
    auto queued =
        store_->List({.limit = 0, .status = kQueued, .oldest_first = true, .principal = ""});
    if (!queued.ok()) return queued.status();
    for (const auto& record : *queued) {
      auto job = std::make_shared<LiveJob>();
      job->job_id = record.job_id;
      job->principal = record.principal;
      job->spec = record.spec;
      job->last_seq = record.last_seq;
      EnqueueLocked(std::move(job));
    }
    if (!queued->empty()) spdlog::info("{} queued jobs recovered", queued->size());
    started_ = true;
    ended_since_prune_ = kPruneEvery;  // prune once at start
    for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
    UpdateGauges();
  }
  for (auto& w : wake) w();
  MaybePrune();
  return absl::OkStatus();
}

void JobManager::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    // Everything live and not waiting in the queue is on a worker: stop it.
    for (auto& [id, job] : live_) {
      if (!queue_.Contains(job->principal, job)) job->token.Cancel();
    }
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

int64_t JobManager::NowUnixMs() const {
  if (options_.now_unix_ms) return options_.now_unix_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void JobManager::EnqueueLocked(std::shared_ptr<LiveJob> job) {
  live_[job->job_id] = job;
  in_flight_[job->principal]++;
  std::string principal = job->principal;
  queue_.Push(principal, std::move(job));
}

absl::Status JobManager::AdmitLocked(const common::Identity& who, int64_t now_unix_ms) {
  const common::JobLimits& limits = who.job_limits;
  if (limits.in_flight > 0) {
    auto it = in_flight_.find(who.principal);
    int64_t in_flight = it == in_flight_.end() ? 0 : it->second;
    if (in_flight >= limits.in_flight) {
      if (metrics_ != nullptr) metrics_->QuotaRefused("jobs_in_flight");
      return Refusal("quota_exceeded", "jobs_in_flight",
                     absl::StrCat("you have ", in_flight,
                                  " self-coding jobs queued or running, the most your quota "
                                  "allows; submit again when one has ended"),
                     kRetryWhenBusy.count());
    }
  }
  if (limits.per_day > 0) {
    auto created = store_->CreatedOn(who.principal, UtcDayOf(now_unix_ms));
    if (!created.ok()) return created.status();
    if (*created >= limits.per_day) {
      if (metrics_ != nullptr) metrics_->QuotaRefused("jobs_per_day");
      return Refusal("quota_exceeded", "jobs_per_day",
                     absl::StrCat("you have submitted ", *created,
                                  " self-coding jobs today (UTC), the most your quota allows"),
                     kDayMs - now_unix_ms % kDayMs);
    }
  }
  size_t queued = queue_.size(who.principal);
  if (queued >= static_cast<size_t>(max_queued_per_principal_)) {
    return Refusal("overloaded", "",
                   absl::StrCat("you have ", queued,
                                " self-coding jobs waiting, the most one principal may hold in "
                                "this queue of ",
                                options_.queue_size),
                   kRetryWhenBusy.count());
  }
  if (queue_.size() >= static_cast<size_t>(options_.queue_size)) {
    return Refusal(
        "overloaded", "",
        absl::StrCat("the self-coding queue is full (", options_.queue_size, " jobs waiting)"),
        kRetryWhenBusy.count());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobManager::Submit(const common::Identity& who,
                                               anima::v1::SubmitRequest spec) {
  if (auto s = Validate(spec); !s.ok()) return s;
  // Unavailable (the client sees `unavailable`): this service cannot run jobs, the request is fine.
  if (auto s = sandbox_->Available(); !s.ok()) return absl::UnavailableError(s.message());
  std::vector<std::function<void()>> wake;
  std::string job_id = common::NewSecureId("job-");
  {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::UnavailableError("the self-coding service is shutting down");
    int64_t now = NowUnixMs();
    if (auto s = AdmitLocked(who, now); !s.ok()) return s;
    JobRecord record;
    record.job_id = job_id;
    record.principal = who.principal;
    record.status = kQueued;
    record.spec = spec;
    record.created_at = record.updated_at = common::Rfc3339Now();
    record.created_unix_ms = now;
    if (auto s = store_->Create(record); !s.ok()) return s;
    auto job = std::make_shared<LiveJob>();
    job->job_id = job_id;
    job->principal = who.principal;
    job->spec = std::move(spec);
    std::string message =
        queue_.empty() && running_ < options_.workers
            ? "queued"
            : absl::StrCat("queued (", queue_.size(), " jobs waiting, ", running_, " running)");
    if (auto s = EmitLocked(*job, kStageQueued, 0, 0, message, {}, &wake); !s.ok()) return s;
    EnqueueLocked(std::move(job));
    totals_.submitted++;
    totals_.last_active = common::Rfc3339Now();
    UpdateGauges();
  }
  work_cv_.notify_one();
  for (auto& w : wake) w();
  return job_id;
}

absl::Status JobManager::EmitLocked(LiveJob& job, const std::string& stage, int attempt,
                                    int percent, const std::string& message,
                                    const JobUpdate& update,
                                    std::vector<std::function<void()>>* wake) {
  anima::v1::SelfCodingProgress event;
  event.set_job_id(job.job_id);
  event.set_seq(job.last_seq + 1);
  event.set_stage(stage);
  event.set_attempt(attempt);
  job.last_percent = std::max(job.last_percent, std::min(percent, 100));
  event.set_percent(job.last_percent);
  event.set_message(message.size() > kMaxMessageBytes ? Tail(message, kMaxMessageBytes) : message);
  event.set_ts(common::Rfc3339Now());
  if (auto s = store_->Append(job.job_id, event, update); !s.ok()) return s;
  job.last_seq = event.seq();
  for (auto& w : job.watchers) wake->push_back(std::move(w));
  job.watchers.clear();
  return absl::OkStatus();
}

std::vector<std::function<void()>> JobManager::FinishLocked(const std::shared_ptr<LiveJob>& job,
                                                            anima::v1::SelfCodingResult result) {
  std::vector<std::function<void()>> wake;
  result.set_job_id(job->job_id);
  JobUpdate update;
  update.status = result.status();
  update.attempts = result.attempts();
  update.result = result;
  if (auto s = EmitLocked(*job, result.status(), result.attempts(), 100, FinalMessage(result),
                          update, &wake);
      !s.ok()) {
    spdlog::error("job {}: cannot store its result: {}", job->job_id, std::string(s.message()));
  }
  live_.erase(job->job_id);
  if (auto it = in_flight_.find(job->principal); it != in_flight_.end() && --it->second == 0) {
    in_flight_.erase(it);
  }
  job->status = result.status();
  for (auto& done : job->on_end) {
    wake.push_back([done = std::move(done), result] { done(result); });
  }
  job->on_end.clear();
  if (result.status() == kSucceeded) totals_.succeeded++;
  if (result.status() == kFailed) totals_.failed++;
  if (result.status() == kCancelled) totals_.cancelled++;
  totals_.last_active = common::Rfc3339Now();
  if (metrics_ != nullptr) metrics_->JobEnded(result.status());
  ended_since_prune_++;
  return wake;
}

void JobManager::WorkerLoop() {
  while (true) {
    std::shared_ptr<LiveJob> job;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = *queue_.Pop();
      running_++;
      UpdateGauges();
    }
    RunJob(job);
    {
      std::lock_guard lock(mu_);
      running_--;
      UpdateGauges();
    }
    MaybePrune();
  }
}

void JobManager::RunJob(const std::shared_ptr<LiveJob>& job) {
  fs::path work_dir = fs::path(options_.work_dir) / job->job_id;
  std::error_code ec;
  fs::create_directories(work_dir, ec);
  Sink sink(this, job);
  spdlog::info("req={} job {} started ({}, {} attempts at most)", job->spec.request_id(),
               job->job_id, job->spec.language(), job->spec.max_attempts());
  anima::v1::SelfCodingResult result;
  if (ec) {
    result.set_status(kFailed);
    result.set_reason("cannot create the workspace: " + ec.message());
  } else {
    result = pipeline_->Run(job->spec, job->job_id, work_dir.string(), &sink, &job->token);
  }
  fs::remove_all(work_dir, ec);
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard lock(mu_);
    if (result.status() == kCancelled && stopping_ && job->on_end.empty()) {
      result.set_status(kFailed);
      result.set_reason("interrupted");
    }
    wake = FinishLocked(job, std::move(result));
  }
  spdlog::info("req={} job {} ended {}", job->spec.request_id(), job->job_id, job->status);
  for (auto& w : wake) w();
}

absl::StatusOr<WatchBatch> JobManager::Next(const common::Identity& who, const std::string& job_id,
                                            int64_t after_seq, std::function<void()> on_more) {
  bool live = false;
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(job_id);
    if (it != live_.end()) {
      if (!Visible(who, it->second->principal)) return UnknownJob(job_id);
      if (it->second->last_seq <= after_seq) {
        it->second->watchers.push_back(std::move(on_more));
        return WatchBatch{};
      }
      // Stored already (events are stored before last_seq moves); read below, unlocked.
      live = true;
    }
  }
  // A job that is not live has ended, and its owner never changes: one read settles both.
  std::optional<JobRecord> ended;
  if (!live) {
    auto record = store_->Get(job_id);
    if (!record.ok()) return FromStore(record.status(), job_id);
    if (!Visible(who, record->principal)) return UnknownJob(job_id);
    ended = std::move(*record);
  }
  WatchBatch batch;
  auto events = store_->Events(job_id, after_seq, kWatchBatch);
  if (!events.ok()) return events.status();
  if (!events->empty()) {
    batch.events = std::move(*events);
    return batch;
  }
  if (!ended) {
    auto record = store_->Get(job_id);
    if (!record.ok()) return FromStore(record.status(), job_id);
    ended = std::move(*record);
  }
  if (IsFinalStatus(ended->status) && ended->result) {
    batch.result = *ended->result;
    return batch;
  }
  // Not live and not ended cannot happen after Start(); if it did, waiting would never end.
  return absl::InternalError("job " + job_id + " is neither live nor ended");
}

void JobManager::Cancel(const common::Identity& who, const std::string& job_id,
                        std::function<void(absl::StatusOr<anima::v1::SelfCodingResult>)> done) {
  std::vector<std::function<void()>> wake;
  std::shared_ptr<LiveJob> running;
  bool hidden = false;
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(job_id);
    if (it != live_.end() && !Visible(who, it->second->principal)) {
      hidden = true;
    } else if (it != live_.end()) {
      std::shared_ptr<LiveJob> job = it->second;
      job->on_end.push_back(std::move(done));
      if (queue_.Remove(job->principal, job)) {
        anima::v1::SelfCodingResult result;
        result.set_status(kCancelled);
        result.set_reason("cancelled");
        result.set_attempts(job->attempts);
        wake = FinishLocked(job, std::move(result));
        UpdateGauges();
      } else {
        running = job;
      }
    }
  }
  if (hidden) {
    done(UnknownJob(job_id));
    return;
  }
  if (running) {
    running->token.Cancel();
    return;
  }
  if (!wake.empty()) {
    for (auto& w : wake) w();
    return;
  }
  auto record = store_->Get(job_id);
  if (!record.ok()) {
    done(FromStore(record.status(), job_id));
  } else if (!Visible(who, record->principal)) {
    done(UnknownJob(job_id));
  } else {
    done(absl::FailedPreconditionError("job " + job_id + " has already ended (" + record->status +
                                       ")"));
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
  return store_->List({.limit = limit,
                       .status = status,
                       .oldest_first = false,
                       .principal = all_principals && who.admin ? "" : who.principal});
}

ManagerStats JobManager::stats() {
  std::lock_guard lock(mu_);
  ManagerStats s = totals_;
  s.queued = static_cast<int>(queue_.size());
  s.running = running_;
  return s;
}

void JobManager::UpdateGauges() {
  if (metrics_ == nullptr) return;
  metrics_->SetQueueDepth(static_cast<double>(queue_.size()));
  metrics_->SetRunning(running_);
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
