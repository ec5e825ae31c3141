#include "services/self_coding/self_coding_service.h"

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

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

// Streams a job's events: an optional first event (Run's accepted), the stored events after
// `after_seq`, live ones as they are stored, then the result, then OK. One write in flight; the
// next batch is pulled from the manager only when the previous write is done, so a slow reader
// costs memory for one batch at most. Owns itself; deleted in OnDone().
class EventStream : public grpc::ServerWriteReactor<JobEvent> {
 public:
  EventStream(JobManager* manager, common::Identity who, std::string job_id, int64_t after_seq,
              std::optional<JobEvent> first)
      : manager_(manager),
        who_(std::move(who)),
        job_id_(std::move(job_id)),
        after_seq_(after_seq),
        guard_(std::make_shared<Guard>()) {
    guard_->self = this;
    if (first) pending_.push_back(std::move(*first));
    std::unique_lock lock(guard_->mu);
    PumpLocked(lock);
  }

  // Ends the stream at once with `status` (used when the request is invalid).
  EventStream(grpc::Status status) : guard_(std::make_shared<Guard>()) {
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
  // Shared with the manager's wake-up callbacks, which may outlive the stream.
  struct Guard {
    std::mutex mu;
    EventStream* self = nullptr;
  };

  static void Wake(const std::shared_ptr<Guard>& guard) {
    std::unique_lock lock(guard->mu);
    if (guard->self != nullptr) guard->self->PumpLocked(lock);
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
    if (pending_.empty()) {
      std::shared_ptr<Guard> guard = guard_;
      auto batch = manager_->Next(who_, job_id_, after_seq_, [guard] { Wake(guard); });
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
      if (pending_.empty()) return;  // Wake() pumps again when there is more
    }
    current_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    if (current_.has_result()) result_written_ = true;
    lock.unlock();
    StartWrite(&current_);
  }

  JobManager* manager_ = nullptr;
  common::Identity who_;
  std::string job_id_;
  int64_t after_seq_ = 0;
  std::shared_ptr<Guard> guard_;
  // Guarded by guard_->mu.
  std::deque<JobEvent> pending_;
  JobEvent current_;
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
  auto job_id = manager_->Submit(common::IdentityOf(*context), std::move(spec));
  if (job_id.ok()) response->set_job_id(*job_id);
  reactor->Finish(ToGrpc(job_id.status()));
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
  return new EventStream(manager_, common::IdentityOf(*context), request->job_id(),
                         request->after_seq(), std::nullopt);
}

grpc::ServerWriteReactor<JobEvent>* SelfCodingService::Run(
    grpc::CallbackServerContext* context, const anima::v1::SubmitRequest* request) {
  anima::v1::SubmitRequest spec = *request;
  if (spec.request_id().empty()) spec.set_request_id(common::RequestIdOf(*context));
  common::Identity who = common::IdentityOf(*context);
  auto job_id = manager_->Submit(who, std::move(spec));
  if (!job_id.ok()) return new EventStream(ToGrpc(job_id.status()));
  JobEvent accepted;
  accepted.mutable_accepted()->set_job_id(*job_id);
  return new EventStream(manager_, std::move(who), *job_id, 0, std::move(accepted));
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
  manager_->Cancel(common::IdentityOf(*context), request->job_id(),
                   [reactor, response](absl::StatusOr<anima::v1::SelfCodingResult> result) {
                     if (result.ok()) *response->mutable_result() = std::move(*result);
                     reactor->Finish(ToGrpc(result.status()));
                   });
  return reactor;
}

grpc::ServerUnaryReactor* SelfCodingService::Get(grpc::CallbackServerContext* context,
                                                 const anima::v1::GetJobRequest* request,
                                                 anima::v1::Job* response) {
  auto* reactor = context->DefaultReactor();
  auto record = manager_->Get(common::IdentityOf(*context), request->job_id());
  if (record.ok()) *response = ToProto(*record);
  reactor->Finish(ToGrpc(record.status()));
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
  auto jobs = manager_->List(common::IdentityOf(*context), request->limit(), status,
                             request->all_principals());
  if (jobs.ok()) {
    for (const auto& record : *jobs) *response->add_jobs() = ToProto(record);
  }
  reactor->Finish(ToGrpc(jobs.status()));
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

  auto* store = add("self-coding/job-store", "store");
  if (auto s = manager_->store()->Ping(); !s.ok()) {
    store->set_health(anima::v1::MODULE_HEALTH_DOWN);
    store->set_detail(std::string(s.message()));
  }

  auto* sandbox = add("self-coding/sandbox", "sandbox");
  (*sandbox->mutable_counters())["running"] = stats.running;
  if (auto s = manager_->sandbox()->Available(); !s.ok()) {
    sandbox->set_health(anima::v1::MODULE_HEALTH_DOWN);
    sandbox->set_detail(std::string(s.message()));
  } else if (manager_->sandbox()->name() == "none") {
    sandbox->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
    sandbox->set_detail("--sandbox=none: generated code runs UNSANDBOXED");
  }
  if (sandbox->health() != anima::v1::MODULE_HEALTH_HEALTHY) {
    service->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
    service->set_detail("sandbox: " + sandbox->detail());
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
  *response = Snapshot();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace anima::selfcoding
