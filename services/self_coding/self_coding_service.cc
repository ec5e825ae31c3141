#include "services/self_coding/self_coding_service.h"

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_server.h"
#include "services/common/identity.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {
namespace {

using anima::v1::JobEvent;

// The manager's BrokerFailure payload, if any, becomes the binary error details.
grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  std::string details;
  if (auto payload = s.GetPayload(kFailurePayloadUrl)) details = std::string(*payload);
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()), details);
}

absl::Status Busy() { return absl::UnavailableError("the self-coding service is busy; try again"); }

// Streams a job's events: for Run, the job is submitted first and an `accepted` event leads;
// then the stored events after `after_seq`, live ones as they are stored, then the result, then
// OK. One write in flight; the next batch is pulled from the manager (on the executor: it reads
// the store) only when the previous writes are done, so a slow reader costs memory for one batch
// at most. Owns itself; deleted in OnDone().
class EventStream : public grpc::ServerWriteReactor<JobEvent> {
 public:
  // Watch: job_id's events after after_seq.
  EventStream(JobManager* manager, BlockingExecutor* executor, common::Identity who,
              std::string job_id, int64_t after_seq)
      : EventStream(manager, executor, std::move(who), std::move(job_id), after_seq, std::nullopt) {
  }
  // Run: submits `spec`, then streams the new job from its first event.
  EventStream(JobManager* manager, BlockingExecutor* executor, common::Identity who,
              anima::v1::SubmitRequest spec)
      : EventStream(manager, executor, std::move(who), "", 0, std::move(spec)) {}

  // Ends the stream at once with `status` (used when the request is invalid).
  explicit EventStream(grpc::Status status) : guard_(std::make_shared<Guard>()) {
    guard_->self = this;
    finished_ = true;
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(guard_->mu);
    writing_ = false;
    if (!ok) {
      FinishLocked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    if (result_written_) {
      FinishLocked(lock, grpc::Status::OK);
      return;
    }
    PumpLocked(lock);
  }

  void OnCancel() override {
    std::unique_lock lock(guard_->mu);
    cancelled_ = true;
    if (!writing_) FinishLocked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }

  void OnDone() override {
    {
      std::lock_guard lock(guard_->mu);
      guard_->self = nullptr;
    }
    delete this;
  }

 private:
  // Shared with the tasks on the executor and the manager's wake-ups, which may outlive the
  // stream: they reach it only through `self`, under `mu`, and find null once it is done.
  struct Guard {
    std::mutex mu;
    EventStream* self = nullptr;
  };

  EventStream(JobManager* manager, BlockingExecutor* executor, common::Identity who,
              std::string job_id, int64_t after_seq, std::optional<anima::v1::SubmitRequest> spec)
      : manager_(manager),
        executor_(executor),
        who_(std::move(who)),
        job_id_(std::move(job_id)),
        after_seq_(after_seq),
        spec_(std::move(spec)),
        guard_(std::make_shared<Guard>()) {
    guard_->self = this;
    std::unique_lock lock(guard_->mu);
    PumpLocked(lock);
  }

  // The manager has something new (or may have): fetch again if the stream waits for it.
  static void Wake(const std::shared_ptr<Guard>& guard) {
    std::unique_lock lock(guard->mu);
    EventStream* self = guard->self;
    if (self == nullptr) return;
    self->wakes_++;
    if (self->waiting_) {
      self->waiting_ = false;
      self->PumpLocked(lock);
    }
  }

  void FinishLocked(std::unique_lock<std::mutex>& lock, grpc::Status status) {
    if (finished_) return;
    finished_ = true;
    lock.unlock();
    Finish(std::move(status));  // OnDone may delete this from here on
  }

  void PumpLocked(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finished_ || result_written_) return;
    if (cancelled_) {
      FinishLocked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      if (current_.has_result()) result_written_ = true;
      lock.unlock();
      StartWrite(&current_);
      return;
    }
    if (fetching_ || waiting_) return;
    fetching_ = true;
    bool posted = spec_ ? PostSubmit() : PostFetch();
    if (!posted) {
      fetching_ = false;
      FinishLocked(lock, ToGrpc(Busy()));
    }
  }

  bool PostSubmit() {
    auto guard = guard_;
    return executor_->Post(
        [guard, manager = manager_, who = who_, spec = std::move(*spec_)]() mutable {
          auto job_id = manager->Submit(who, std::move(spec));
          std::unique_lock lock(guard->mu);
          if (guard->self != nullptr) guard->self->OnSubmitted(lock, std::move(job_id));
        });
  }

  void OnSubmitted(std::unique_lock<std::mutex>& lock, absl::StatusOr<std::string> job_id) {
    fetching_ = false;
    spec_.reset();
    if (finished_) return;
    if (!job_id.ok()) {
      FinishLocked(lock, ToGrpc(job_id.status()));
      return;
    }
    job_id_ = *job_id;
    JobEvent accepted;
    accepted.mutable_accepted()->set_job_id(job_id_);
    pending_.push_back(std::move(accepted));
    PumpLocked(lock);
  }

  bool PostFetch() {
    auto guard = guard_;
    return executor_->Post([guard, manager = manager_, who = who_, job_id = job_id_,
                            after_seq = after_seq_, wakes = wakes_] {
      auto batch = manager->Next(who, job_id, after_seq, [guard] { Wake(guard); });
      std::unique_lock lock(guard->mu);
      if (guard->self != nullptr) guard->self->OnFetched(lock, std::move(batch), wakes);
    });
  }

  void OnFetched(std::unique_lock<std::mutex>& lock, absl::StatusOr<WatchBatch> batch,
                 uint64_t wakes_before) {
    fetching_ = false;
    if (finished_) return;
    if (!batch.ok()) {
      FinishLocked(lock, ToGrpc(batch.status()));
      return;
    }
    for (auto& event : batch->events) {
      after_seq_ = event.seq();
      JobEvent e;
      *e.mutable_progress() = std::move(event);
      pending_.push_back(std::move(e));
    }
    if (batch->result) {
      JobEvent e;
      *e.mutable_result() = std::move(*batch->result);
      pending_.push_back(std::move(e));
    }
    // Nothing yet: wait for Wake(), unless it came while this fetch was under way.
    if (pending_.empty() && wakes_ == wakes_before) {
      waiting_ = true;
      return;
    }
    PumpLocked(lock);
  }

  JobManager* manager_ = nullptr;
  BlockingExecutor* executor_ = nullptr;
  common::Identity who_;
  // Guarded by guard_->mu.
  std::string job_id_;
  int64_t after_seq_ = 0;
  std::optional<anima::v1::SubmitRequest> spec_;  // Run, until submitted
  std::shared_ptr<Guard> guard_;
  std::deque<JobEvent> pending_;
  JobEvent current_;
  uint64_t wakes_ = 0;     // Wake() calls so far
  bool fetching_ = false;  // a task on the executor will call back
  bool waiting_ = false;   // the manager will Wake() us
  bool writing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  bool result_written_ = false;
};

}  // namespace

anima::v1::Job ToProto(const JobRecord& record) {
  anima::v1::Job job;
  job.set_job_id(record.job_id);
  job.set_principal(record.principal);
  job.set_status(record.status);
  job.set_task(record.spec.task());
  job.set_language(record.spec.language());
  job.set_attempts(record.attempts);
  job.set_last_seq(record.last_seq);
  job.set_created_at(record.created_at);
  job.set_updated_at(record.updated_at);
  if (record.result) *job.mutable_result() = *record.result;
  return job;
}

grpc::ServerUnaryReactor* SelfCodingService::Submit(grpc::CallbackServerContext* context,
                                                    const anima::v1::SubmitRequest* request,
                                                    anima::v1::SubmitResponse* response) {
  auto* reactor = context->DefaultReactor();
  anima::v1::SubmitRequest spec = *request;
  if (spec.request_id().empty()) spec.set_request_id(common::RequestIdOf(*context));
  // The reactor and response live until Finish, which each path calls exactly once.
  bool posted = executor_->Post([this, reactor, response, who = common::IdentityOf(*context),
                                 spec = std::move(spec)]() mutable {
    auto job_id = manager_->Submit(who, std::move(spec));
    if (job_id.ok()) response->set_job_id(*job_id);
    reactor->Finish(ToGrpc(job_id.status()));
  });
  if (!posted) reactor->Finish(ToGrpc(Busy()));
  return reactor;
}

grpc::ServerWriteReactor<JobEvent>* SelfCodingService::Watch(
    grpc::CallbackServerContext* context, const anima::v1::WatchRequest* request) {
  if (request->job_id().empty()) {
    return new EventStream(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "job_id is required"));
  }
  if (request->after_seq() < 0) {
    return new EventStream(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "after_seq must not be negative"));
  }
  return new EventStream(manager_, executor_, common::IdentityOf(*context), request->job_id(),
                         request->after_seq());
}

grpc::ServerWriteReactor<JobEvent>* SelfCodingService::Run(
    grpc::CallbackServerContext* context, const anima::v1::SubmitRequest* request) {
  anima::v1::SubmitRequest spec = *request;
  if (spec.request_id().empty()) spec.set_request_id(common::RequestIdOf(*context));
  return new EventStream(manager_, executor_, common::IdentityOf(*context), std::move(spec));
}

grpc::ServerUnaryReactor* SelfCodingService::Cancel(grpc::CallbackServerContext* context,
                                                    const anima::v1::CancelRequest* request,
                                                    anima::v1::CancelResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (request->job_id().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "job_id is required"));
    return reactor;
  }
  // The reactor and response live until Finish, which the callback always calls exactly once.
  auto done = [reactor, response](absl::StatusOr<anima::v1::SelfCodingResult> result) {
    if (result.ok()) *response->mutable_result() = std::move(*result);
    reactor->Finish(ToGrpc(result.status()));
  };
  bool posted =
      executor_->Post([this, done, who = common::IdentityOf(*context), job_id = request->job_id()] {
        manager_->Cancel(who, job_id, done);
      });
  if (!posted) done(Busy());
  return reactor;
}

grpc::ServerUnaryReactor* SelfCodingService::Get(grpc::CallbackServerContext* context,
                                                 const anima::v1::GetJobRequest* request,
                                                 anima::v1::Job* response) {
  auto* reactor = context->DefaultReactor();
  bool posted = executor_->Post(
      [this, reactor, response, who = common::IdentityOf(*context), job_id = request->job_id()] {
        auto record = manager_->Get(who, job_id);
        if (record.ok()) *response = ToProto(*record);
        reactor->Finish(ToGrpc(record.status()));
      });
  if (!posted) reactor->Finish(ToGrpc(Busy()));
  return reactor;
}

grpc::ServerUnaryReactor* SelfCodingService::List(grpc::CallbackServerContext* context,
                                                  const anima::v1::ListJobsRequest* request,
                                                  anima::v1::ListJobsResponse* response) {
  auto* reactor = context->DefaultReactor();
  const std::string& status = request->status();
  if (!status.empty() && status != kQueued && status != kRunning && !IsFinalStatus(status)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "status must be queued, running, succeeded, failed or cancelled"));
    return reactor;
  }
  bool posted =
      executor_->Post([this, reactor, response, who = common::IdentityOf(*context),
                       limit = request->limit(), status, all = request->all_principals()] {
        auto jobs = manager_->List(who, limit, status, all);
        if (jobs.ok()) {
          for (const auto& record : *jobs) *response->add_jobs() = ToProto(record);
        }
        reactor->Finish(ToGrpc(jobs.status()));
      });
  if (!posted) reactor->Finish(ToGrpc(Busy()));
  return reactor;
}

anima::v1::DescribeResponse SelfCodingIntrospection::Snapshot() {
  anima::v1::DescribeResponse out;
  out.set_service("self-coding");
  ManagerStats stats = manager_->stats();
  auto add = [&](const std::string& name, const std::string& kind) {
    auto* m = out.add_modules();
    m->set_name(name);
    m->set_service("self-coding");
    m->set_kind(kind);
    m->set_health(anima::v1::MODULE_HEALTH_HEALTHY);
    m->set_last_active(stats.last_active);
    return m;
  };
  auto* service = add("self-coding", "service");
  service->set_in_flight(stats.running + stats.queued);
  auto& counters = *service->mutable_counters();
  counters["jobs_submitted_total"] = static_cast<double>(stats.submitted);
  counters["jobs_succeeded_total"] = static_cast<double>(stats.succeeded);
  counters["jobs_failed_total"] = static_cast<double>(stats.failed);
  counters["jobs_cancelled_total"] = static_cast<double>(stats.cancelled);
  int64_t ended = stats.succeeded + stats.failed + stats.cancelled;
  if (ended > 0) service->set_error_rate(static_cast<double>(stats.failed) / ended);

  // From what recent calls saw (no round trip); the detail names the backend.
  auto* store = add("self-coding/job-store", "store");
  StoreHealth health = manager_->store()->Health();
  store->set_detail(health.detail);
  if (health.level == StoreHealth::Level::kDown) {
    store->set_health(anima::v1::MODULE_HEALTH_DOWN);
  } else if (health.level == StoreHealth::Level::kDegraded) {
    store->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
  }

  // Which sandbox runs the jobs, and why it is down (jobs refused) or degraded (they may fail).
  auto* sandbox = add("self-coding/sandbox", "sandbox");
  (*sandbox->mutable_counters())["running"] = stats.running;
  const Sandbox* box = manager_->sandbox();
  std::string detail = box->name();
  if (canary_ != nullptr) absl::StrAppend(&detail, ": ", canary_->detail());
  if (auto s = box->Available(); !s.ok()) {
    sandbox->set_health(anima::v1::MODULE_HEALTH_DOWN);
    detail = absl::StrCat(box->name(), ": ", s.message());
  } else if (box->name() == "none") {
    sandbox->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
    detail = "--sandbox=none: generated code runs UNSANDBOXED";
  } else if (std::string degraded = box->Degraded(); !degraded.empty()) {
    sandbox->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
    absl::StrAppend(&detail, "; ", degraded);
  } else if (canary_ != nullptr && canary_->state() == SandboxCanary::State::kFailed) {
    sandbox->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
  }
  sandbox->set_detail(detail);
  if (sandbox->health() != anima::v1::MODULE_HEALTH_HEALTHY) {
    service->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
    service->set_detail("sandbox: " + sandbox->detail());
  } else if (store->health() == anima::v1::MODULE_HEALTH_DOWN) {
    // New jobs are refused; running ones wait for the store.
    service->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
    service->set_detail("job store: " + store->detail());
  }

  auto* queue = add("self-coding/queue", "queue");
  queue->set_in_flight(stats.running);
  (*queue->mutable_counters())["queued"] = stats.queued;
  (*queue->mutable_counters())["capacity"] = stats.queue_capacity;
  (*queue->mutable_counters())["workers"] = stats.workers;
  if (stats.queued >= stats.queue_capacity) {
    queue->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
    queue->set_detail("the queue is full: new jobs are refused");
  }
  return out;
}

grpc::ServerUnaryReactor* SelfCodingIntrospection::Describe(
    grpc::CallbackServerContext* context, const anima::v1::DescribeRequest* request,
    anima::v1::DescribeResponse* response) {
  auto* reactor = context->DefaultReactor();
  bool posted = executor_->Post([this, reactor, response] {
    *response = Snapshot();
    reactor->Finish(grpc::Status::OK);
  });
  if (!posted) reactor->Finish(ToGrpc(Busy()));
  return reactor;
}

}  // namespace anima::selfcoding
