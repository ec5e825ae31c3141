#include "services/self_coding/self_coding_service.h"

#include <gtest/gtest.h>

#include "anima/v1/llm_broker.pb.h"
#include "grpcpp/grpcpp.h"
#include "services/common/grpc_server.h"
#include "services/common/identity.h"
#include "services/self_coding/sqlite_job_store.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

using anima::v1::JobEvent;
using testing::FakeBroker;
using testing::TempDir;

struct StreamResult {
  std::vector<JobEvent> events;
  grpc::Status status;
};

// The service on a real port, called through a real client.
class SelfCodingServiceTest : public ::testing::Test {
 protected:
  void StartWith(std::vector<std::string> replies, int queue_size = 4) {
    broker_ = std::make_unique<FakeBroker>(std::move(replies));
    pipeline_ = std::make_unique<JobPipeline>(broker_.get(), sandbox_.get(), PipelineOptions{});
    ManagerOptions options;
    options.workers = 1;
    options.queue_size = queue_size;
    options.work_dir = dir_.path() + "/work";
    manager_ = std::make_unique<JobManager>(store_.get(), pipeline_.get(), sandbox_.get(), options,
                                            &metrics_);
    ASSERT_TRUE(manager_->Start().ok());
    service_ = std::make_unique<SelfCodingService>(manager_.get(), &executor_);
    introspection_ = std::make_unique<SelfCodingIntrospection>(manager_.get(), &executor_);
    auto server =
        common::GrpcServer::Start("127.0.0.1:0", {service_.get(), introspection_.get()}, registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                       grpc::InsecureChannelCredentials());
    stub_ = anima::v1::SelfCoding::NewStub(channel);
    introspection_stub_ = anima::v1::Introspection::NewStub(channel);
  }

  void TearDown() override {
    if (manager_) manager_->Stop();
    if (server_) server_->Shutdown(std::chrono::seconds(2));
  }

  template <typename Reader>
  static StreamResult ReadAll(Reader& reader) {
    StreamResult out;
    JobEvent e;
    while (reader->Read(&e)) out.events.push_back(e);
    out.status = reader->Finish();
    return out;
  }

  StreamResult Watch(const std::string& job_id, int64_t after_seq,
                     const common::Identity* who = nullptr) {
    grpc::ClientContext ctx;
    if (who != nullptr) common::AttachIdentity(*who, &ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    anima::v1::WatchRequest req;
    req.set_job_id(job_id);
    req.set_after_seq(after_seq);
    auto reader = stub_->Watch(&ctx, req);
    return ReadAll(reader);
  }

  grpc::Status Cancel(const std::string& job_id, anima::v1::CancelResponse* response,
                      const common::Identity* who = nullptr) {
    grpc::ClientContext ctx;
    if (who != nullptr) common::AttachIdentity(*who, &ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    anima::v1::CancelRequest req;
    req.set_job_id(job_id);
    return stub_->Cancel(&ctx, req, response);
  }

  grpc::Status Submit(const common::Identity& who, anima::v1::SubmitResponse* response) {
    grpc::ClientContext ctx;
    common::AttachIdentity(who, &ctx);
    return stub_->Submit(&ctx, PythonSpec(), response);
  }

  grpc::Status Get(const common::Identity& who, const std::string& job_id, anima::v1::Job* job) {
    grpc::ClientContext ctx;
    common::AttachIdentity(who, &ctx);
    anima::v1::GetJobRequest req;
    req.set_job_id(job_id);
    return stub_->Get(&ctx, req, job);
  }

  anima::v1::ListJobsResponse List(const common::Identity& who, bool all_principals) {
    grpc::ClientContext ctx;
    common::AttachIdentity(who, &ctx);
    anima::v1::ListJobsRequest req;
    req.set_all_principals(all_principals);
    anima::v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->List(&ctx, req, &response).ok());
    return response;
  }

  static anima::v1::SubmitRequest PythonSpec() {
    anima::v1::SubmitRequest spec;
    spec.set_task("Write add(a, b) in solution.py.");
    spec.set_tests(testing::kPythonTests);
    return spec;
  }

  TempDir dir_;
  std::unique_ptr<SqliteJobStore> store_ = *SqliteJobStore::Open(dir_.path() + "/jobs.db");
  std::unique_ptr<Sandbox> sandbox_ = testing::TestSandbox();
  std::unique_ptr<FakeBroker> broker_;
  std::unique_ptr<JobPipeline> pipeline_;
  std::unique_ptr<JobManager> manager_;
  BlockingExecutor executor_{4, 256};
  std::unique_ptr<SelfCodingService> service_;
  std::unique_ptr<SelfCodingIntrospection> introspection_;
  prometheus::Registry registry_;
  SelfCodingMetrics metrics_{registry_};
  std::unique_ptr<common::GrpcServer> server_;
  std::unique_ptr<anima::v1::SelfCoding::Stub> stub_;
  std::unique_ptr<anima::v1::Introspection::Stub> introspection_stub_;
};

TEST_F(SelfCodingServiceTest, RunStreamsAcceptedProgressResultThenOk) {
  StartWith({testing::kBadPython, testing::kGoodPython});
  grpc::ClientContext ctx;
  auto reader = stub_->Run(&ctx, PythonSpec());
  StreamResult run = ReadAll(reader);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_GE(run.events.size(), 3u);
  ASSERT_TRUE(run.events.front().has_accepted());
  std::string job_id = run.events.front().accepted().job_id();
  EXPECT_EQ(job_id.rfind("job-", 0), 0u);
  ASSERT_TRUE(run.events.back().has_result());
  const auto& result = run.events.back().result();
  EXPECT_EQ(result.status(), "succeeded") << result.reason();
  EXPECT_EQ(result.attempts(), 2);
  EXPECT_EQ(result.job_id(), job_id);
  int64_t seq = 0;
  std::vector<std::string> stages;
  for (size_t i = 1; i + 1 < run.events.size(); ++i) {
    ASSERT_TRUE(run.events[i].has_progress());
    EXPECT_EQ(run.events[i].progress().seq(), ++seq);
    stages.push_back(run.events[i].progress().stage());
  }
  EXPECT_EQ(stages.front(), "queued");
  EXPECT_NE(std::find(stages.begin(), stages.end(), "retrying"), stages.end());
  EXPECT_EQ(stages.back(), "succeeded");

  // Watch from every after_seq replays exactly what follows it, then the result, then OK.
  for (int64_t after = 0; after <= seq + 1; ++after) {
    StreamResult w = Watch(job_id, after);
    ASSERT_TRUE(w.status.ok()) << after << ": " << w.status.error_message();
    size_t expected = static_cast<size_t>(std::max<int64_t>(seq - after, 0));
    ASSERT_EQ(w.events.size(), expected + 1) << "after_seq " << after;
    for (size_t i = 0; i < expected; ++i) {
      EXPECT_EQ(w.events[i].progress().seq(), after + 1 + static_cast<int64_t>(i));
    }
    ASSERT_TRUE(w.events.back().has_result());
    EXPECT_EQ(w.events.back().result().status(), "succeeded");
  }

  // Get and List see it.
  grpc::ClientContext get_ctx;
  anima::v1::GetJobRequest get;
  get.set_job_id(job_id);
  anima::v1::Job job;
  ASSERT_TRUE(stub_->Get(&get_ctx, get, &job).ok());
  EXPECT_EQ(job.status(), "succeeded");
  EXPECT_EQ(job.last_seq(), seq);
  EXPECT_EQ(job.language(), "python");
  EXPECT_EQ(job.principal(), "local");  // no x-anima-principal: the one principal without auth
  EXPECT_EQ(job.result().attempts(), 2);
  grpc::ClientContext list_ctx;
  anima::v1::ListJobsRequest list;
  list.set_status("succeeded");
  anima::v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->List(&list_ctx, list, &jobs).ok());
  ASSERT_EQ(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(0).job_id(), job_id);

  // Cancel of an ended job is a conflict.
  anima::v1::CancelResponse cancel;
  EXPECT_EQ(Cancel(job_id, &cancel).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(SelfCodingServiceTest, WatchFollowsLiveAndCancelEndsItWithTheResult) {
  StartWith({FakeBroker::kBlock});
  grpc::ClientContext submit_ctx;
  anima::v1::SubmitResponse submitted;
  ASSERT_TRUE(stub_->Submit(&submit_ctx, PythonSpec(), &submitted).ok());
  const std::string job_id = submitted.job_id();
  ASSERT_TRUE(broker_->WaitBlocked(1));

  grpc::ClientContext ctx;
  anima::v1::WatchRequest req;
  req.set_job_id(job_id);
  auto reader = stub_->Watch(&ctx, req);
  // The stored events arrive while the job is still waiting for the model.
  JobEvent e;
  std::vector<std::string> stages;
  while (reader->Read(&e)) {
    ASSERT_TRUE(e.has_progress());
    stages.push_back(e.progress().stage());
    if (e.progress().stage() == "generating") break;
  }
  EXPECT_EQ(stages, (std::vector<std::string>{"queued", "planning", "generating"}));

  // A second watcher that has seen up to seq 2 gets seq 3 next, live.
  grpc::ClientContext ctx2;
  req.set_after_seq(2);
  auto reader2 = stub_->Watch(&ctx2, req);
  ASSERT_TRUE(reader2->Read(&e));
  EXPECT_EQ(e.progress().seq(), 3);
  EXPECT_EQ(e.progress().stage(), "generating");

  anima::v1::CancelResponse cancelled;
  ASSERT_TRUE(Cancel(job_id, &cancelled).ok());
  EXPECT_EQ(cancelled.result().status(), "cancelled");
  EXPECT_EQ(cancelled.result().job_id(), job_id);

  std::vector<JobEvent> rest;
  while (reader->Read(&e)) rest.push_back(e);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].progress().stage(), "cancelled");
  EXPECT_EQ(rest[0].progress().percent(), 100);
  EXPECT_EQ(rest[1].result().status(), "cancelled");
  std::vector<JobEvent> rest2;
  while (reader2->Read(&e)) rest2.push_back(e);
  ASSERT_TRUE(reader2->Finish().ok());
  ASSERT_EQ(rest2.size(), 2u);
  EXPECT_EQ(rest2[0].progress().seq(), 4);
  EXPECT_TRUE(rest2[1].has_result());
}

TEST_F(SelfCodingServiceTest, AWatcherThatGoesAwayLeavesTheJobRunning) {
  StartWith({FakeBroker::kBlock});
  std::string job_id;
  {
    grpc::ClientContext ctx;
    auto reader = stub_->Run(&ctx, PythonSpec());
    JobEvent e;
    ASSERT_TRUE(reader->Read(&e));
    job_id = e.accepted().job_id();
    ASSERT_TRUE(broker_->WaitBlocked(1));
    ctx.TryCancel();
    while (reader->Read(&e)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  grpc::ClientContext get_ctx;
  anima::v1::GetJobRequest get;
  get.set_job_id(job_id);
  anima::v1::Job job;
  ASSERT_TRUE(stub_->Get(&get_ctx, get, &job).ok());
  EXPECT_EQ(job.status(), "running");
  anima::v1::CancelResponse cancelled;
  ASSERT_TRUE(Cancel(job_id, &cancelled).ok());
  EXPECT_EQ(cancelled.result().status(), "cancelled");
}

TEST_F(SelfCodingServiceTest, UnknownJobsAndBadRequests) {
  StartWith({testing::kGoodPython});
  StreamResult w = Watch("job-unknown", 0);
  EXPECT_EQ(w.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(w.events.empty());
  anima::v1::CancelResponse cancel;
  EXPECT_EQ(Cancel("job-unknown", &cancel).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext get_ctx;
  anima::v1::GetJobRequest get;
  get.set_job_id("job-unknown");
  anima::v1::Job job;
  EXPECT_EQ(stub_->Get(&get_ctx, get, &job).error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext run_ctx;
  anima::v1::SubmitRequest no_task;
  auto reader = stub_->Run(&run_ctx, no_task);
  StreamResult run = ReadAll(reader);
  EXPECT_EQ(run.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(run.status.error_message().find("task"), std::string::npos);
  EXPECT_TRUE(run.events.empty());
}

TEST_F(SelfCodingServiceTest, FullQueueIsResourceExhausted) {
  StartWith({FakeBroker::kBlock}, /*queue_size=*/1);
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext ctx;
    anima::v1::SubmitResponse r;
    ASSERT_TRUE(stub_->Submit(&ctx, PythonSpec(), &r).ok());
    if (i == 0) {
      ASSERT_TRUE(broker_->WaitBlocked(1));
    }
  }
  grpc::ClientContext ctx;
  anima::v1::SubmitResponse r;
  auto status = stub_->Submit(&ctx, PythonSpec(), &r);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  grpc::ClientContext describe_ctx;
  anima::v1::DescribeResponse described;
  ASSERT_TRUE(
      introspection_stub_->Describe(&describe_ctx, anima::v1::DescribeRequest(), &described).ok());
  EXPECT_EQ(described.service(), "self-coding");
  std::map<std::string, anima::v1::ModuleStatus> modules;
  for (const auto& m : described.modules()) modules[m.name()] = m;
  ASSERT_EQ(modules.size(), 4u);
  EXPECT_EQ(modules["self-coding/queue"].health(), anima::v1::MODULE_HEALTH_DEGRADED);
  EXPECT_EQ(modules["self-coding/queue"].in_flight(), 1);
  EXPECT_EQ(modules["self-coding/job-store"].health(), anima::v1::MODULE_HEALTH_HEALTHY);
  EXPECT_EQ(modules["self-coding/sandbox"].kind(), "sandbox");
  EXPECT_EQ(modules["self-coding"].in_flight(), 2);
}

common::Identity Who(const std::string& principal, common::JobLimits limits = {}) {
  return {.principal = principal, .admin = false, .job_limits = limits};
}

// The value of a counter of the registry with the given label, -1 when there is none.
double CounterValue(prometheus::Registry& registry, const std::string& name,
                    const std::string& label, const std::string& value) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      for (const auto& l : metric.label) {
        if (l.name == label && l.value == value) return metric.counter.value;
      }
    }
  }
  return -1;
}

TEST_F(SelfCodingServiceTest, JobsBelongToTheCallersPrincipal) {
  StartWith({FakeBroker::kBlock});
  const common::Identity alice = Who("alice"), bob = Who("bob");
  const common::Identity admin{.principal = "ops", .admin = true, .job_limits = {}};
  anima::v1::SubmitResponse submitted;
  ASSERT_TRUE(Submit(alice, &submitted).ok());
  const std::string job_id = submitted.job_id();
  ASSERT_TRUE(broker_->WaitBlocked(1));

  // Bob gets for alice's job exactly what he gets for an id nobody has.
  const std::string nobodys = "job-" + std::string(32, '0');
  auto same_as_unknown = [&](const grpc::Status& mine, const grpc::Status& unknown) {
    EXPECT_EQ(mine.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
    std::string expected = unknown.error_message();
    expected.replace(expected.find(nobodys), nobodys.size(), job_id);
    EXPECT_EQ(mine.error_message(), expected);
  };
  anima::v1::Job job;
  same_as_unknown(Get(bob, job_id, &job), Get(bob, nobodys, &job));
  StreamResult watched = Watch(job_id, 0, &bob);
  EXPECT_TRUE(watched.events.empty());
  same_as_unknown(watched.status, Watch(nobodys, 0, &bob).status);
  anima::v1::CancelResponse cancel;
  same_as_unknown(Cancel(job_id, &cancel, &bob), Cancel(nobodys, &cancel, &bob));
  EXPECT_EQ(List(bob, false).jobs_size(), 0);
  EXPECT_EQ(List(bob, /*all_principals=*/true).jobs_size(), 0);

  // Alice sees her job, with her name on it; so does an admin, who may cancel it.
  ASSERT_TRUE(Get(alice, job_id, &job).ok());
  EXPECT_EQ(job.principal(), "alice");
  EXPECT_EQ(job.status(), "running");
  anima::v1::ListJobsResponse own = List(alice, false);
  ASSERT_EQ(own.jobs_size(), 1);
  EXPECT_EQ(own.jobs(0).job_id(), job_id);
  EXPECT_EQ(own.jobs(0).principal(), "alice");
  anima::v1::ListJobsResponse everyone = List(admin, true);
  ASSERT_EQ(everyone.jobs_size(), 1);
  EXPECT_EQ(everyone.jobs(0).principal(), "alice");
  ASSERT_TRUE(Cancel(job_id, &cancel, &admin).ok());
  EXPECT_EQ(cancel.result().status(), "cancelled");
  StreamResult own_watch = Watch(job_id, 0, &alice);
  ASSERT_TRUE(own_watch.status.ok()) << own_watch.status.error_message();
  ASSERT_FALSE(own_watch.events.empty());
  EXPECT_EQ(own_watch.events.back().result().status(), "cancelled");
  same_as_unknown(Watch(job_id, 0, &bob).status, Watch(nobodys, 0, &bob).status);
}

TEST_F(SelfCodingServiceTest, OverAQuotaIsResourceExhaustedWithABrokerFailure) {
  StartWith({FakeBroker::kBlock});
  const common::Identity alice = Who("alice", {.in_flight = 1, .per_day = 0});
  anima::v1::SubmitResponse submitted;
  ASSERT_TRUE(Submit(alice, &submitted).ok());

  auto expect_quota = [](const grpc::Status& status) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    anima::v1::BrokerFailure failure;
    ASSERT_TRUE(failure.ParseFromString(status.error_details()));
    EXPECT_EQ(failure.code(), "quota_exceeded");
    EXPECT_EQ(failure.limit(), "jobs_in_flight");
    EXPECT_EQ(failure.retry_after_ms(), kRetryWhenBusy.count());
    EXPECT_EQ(failure.message(), status.error_message());
  };
  anima::v1::SubmitResponse refused;
  expect_quota(Submit(alice, &refused));
  EXPECT_TRUE(refused.job_id().empty());
  grpc::ClientContext run_ctx;
  common::AttachIdentity(alice, &run_ctx);
  auto reader = stub_->Run(&run_ctx, PythonSpec());
  StreamResult run = ReadAll(reader);
  EXPECT_TRUE(run.events.empty());
  expect_quota(run.status);
  EXPECT_EQ(
      CounterValue(registry_, "anima_selfcoding_quota_refusals_total", "limit", "jobs_in_flight"),
      2);
  EXPECT_EQ(
      CounterValue(registry_, "anima_selfcoding_quota_refusals_total", "limit", "jobs_per_day"), 0);
  EXPECT_EQ(List(alice, false).jobs_size(), 1);
}

}  // namespace
}  // namespace anima::selfcoding
