#include "services/self_coding/job_manager.h"

#include <gtest/gtest.h>

#include <condition_variable>

#include "services/common/process.h"
#include "services/self_coding/sqlite_job_store.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

using testing::FakeBroker;
using testing::TempDir;

// Every event of a job and its result, read through Next() like a watcher does.
struct Watched {
  std::vector<anima::v1::SelfCodingProgress> events;
  anima::v1::SelfCodingResult result;
  bool ended = false;
};

Watched WatchToEnd(JobManager& manager, const std::string& job_id, int64_t after_seq = 0) {
  Watched out;
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    auto batch = manager.Next(job_id, after_seq, [&] {
      std::lock_guard lock(mu);
      woken = true;
      cv.notify_all();
    });
    EXPECT_TRUE(batch.ok()) << batch.status();
    if (!batch.ok()) return out;
    for (auto& e : batch->events) {
      after_seq = e.seq();
      out.events.push_back(e);
    }
    if (batch->result) {
      out.result = *batch->result;
      out.ended = true;
      return out;
    }
    if (batch->events.empty()) {
      std::unique_lock lock(mu);
      cv.wait_until(lock, deadline, [&] { return woken; });
      woken = false;
    }
  }
  return out;
}

absl::StatusOr<anima::v1::SelfCodingResult> CancelAndWait(JobManager& manager,
                                                          const std::string& job_id) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<absl::StatusOr<anima::v1::SelfCodingResult>> out;
  manager.Cancel(job_id, [&](absl::StatusOr<anima::v1::SelfCodingResult> r) {
    std::lock_guard lock(mu);
    out = std::move(r);
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait_for(lock, std::chrono::seconds(30), [&] { return out.has_value(); });
  if (!out) return absl::DeadlineExceededError("cancel did not answer");
  return *out;
}

anima::v1::SubmitRequest PythonSpec(int max_attempts = 3) {
  anima::v1::SubmitRequest spec;
  spec.set_task("Write add(a, b) in solution.py.");
  spec.set_tests(testing::kPythonTests);
  spec.set_max_attempts(max_attempts);
  return spec;
}

class JobManagerTest : public ::testing::Test {
 protected:
  std::unique_ptr<JobManager> MakeManager(FakeBroker* broker, int workers = 1, int queue = 4) {
    pipeline_ = std::make_unique<JobPipeline>(broker, sandbox_.get(), PipelineOptions{});
    ManagerOptions options;
    options.workers = workers;
    options.queue_size = queue;
    options.work_dir = dir_.path() + "/work";
    return std::make_unique<JobManager>(store_.get(), pipeline_.get(), sandbox_.get(), options,
                                        nullptr);
  }

  TempDir dir_;
  std::unique_ptr<SqliteJobStore> store_ = *SqliteJobStore::Open(dir_.path() + "/jobs.db");
  std::unique_ptr<Sandbox> sandbox_ = testing::TestSandbox();
  std::unique_ptr<JobPipeline> pipeline_;
};

TEST_F(JobManagerTest, RunsAJobAndStoresEveryEventInOrder) {
  FakeBroker broker({testing::kBadPython, testing::kGoodPython});
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());
  auto id = manager->Submit(PythonSpec());
  ASSERT_TRUE(id.ok()) << id.status();
  Watched w = WatchToEnd(*manager, *id);
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.result.status(), "succeeded") << w.result.reason();
  EXPECT_EQ(w.result.job_id(), *id);
  EXPECT_EQ(w.result.attempts(), 2);
  ASSERT_GE(w.events.size(), 10u);
  EXPECT_EQ(w.events.front().stage(), "queued");
  EXPECT_EQ(w.events.back().stage(), "succeeded");
  EXPECT_EQ(w.events.back().percent(), 100);
  for (size_t i = 0; i < w.events.size(); ++i) {
    EXPECT_EQ(w.events[i].seq(), static_cast<int64_t>(i + 1));
    if (i > 0) {
      EXPECT_GE(w.events[i].percent(), w.events[i - 1].percent());
    }
  }
  // Replay from every point gives exactly the rest.
  for (int64_t after = 0; after <= static_cast<int64_t>(w.events.size()); ++after) {
    Watched replay = WatchToEnd(*manager, *id, after);
    ASSERT_TRUE(replay.ended);
    EXPECT_EQ(replay.events.size(), w.events.size() - after);
    if (!replay.events.empty()) {
      EXPECT_EQ(replay.events.front().seq(), after + 1);
    }
  }
  auto job = manager->Get(*id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->status, "succeeded");
  EXPECT_EQ(job->last_seq, static_cast<int64_t>(w.events.size()));
}

TEST_F(JobManagerTest, RejectsBadRequests) {
  FakeBroker broker({testing::kGoodPython});
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());
  anima::v1::SubmitRequest spec = PythonSpec();
  spec.set_task("");
  EXPECT_EQ(manager->Submit(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = PythonSpec(9);
  EXPECT_EQ(manager->Submit(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = PythonSpec();
  spec.set_language("cobol");
  EXPECT_EQ(manager->Submit(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = PythonSpec();
  (*spec.mutable_files())["../x.py"] = "";
  EXPECT_EQ(manager->Submit(spec).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->Next("job-nope", 0, [] {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CancelAndWait(*manager, "job-nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, RefusesJobsWithoutASandbox) {
  FakeBroker broker({testing::kGoodPython});
  sandbox_ = MakeSandbox(SandboxMode::kBubblewrap, "/nonexistent/bwrap");
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());
  auto id = manager->Submit(PythonSpec());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(id.status().message().find("bwrap"), std::string::npos) << id.status();
}

TEST_F(JobManagerTest, FullQueueIsRefusedAndCancelEndsQueuedAndRunningJobs) {
  FakeBroker broker({FakeBroker::kBlock});
  auto manager = MakeManager(&broker, /*workers=*/1, /*queue=*/1);
  ASSERT_TRUE(manager->Start().ok());
  auto running = manager->Submit(PythonSpec());
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(broker.WaitBlocked(1));
  auto queued = manager->Submit(PythonSpec());
  ASSERT_TRUE(queued.ok()) << queued.status();
  auto refused = manager->Submit(PythonSpec());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(manager->stats().queued, 1);
  EXPECT_EQ(manager->stats().running, 1);

  auto cancelled_queued = CancelAndWait(*manager, *queued);
  ASSERT_TRUE(cancelled_queued.ok()) << cancelled_queued.status();
  EXPECT_EQ(cancelled_queued->status(), "cancelled");
  EXPECT_EQ(cancelled_queued->job_id(), *queued);

  auto cancelled_running = CancelAndWait(*manager, *running);
  ASSERT_TRUE(cancelled_running.ok()) << cancelled_running.status();
  EXPECT_EQ(cancelled_running->status(), "cancelled");

  Watched w = WatchToEnd(*manager, *running);
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.events.back().stage(), "cancelled");
  EXPECT_EQ(CancelAndWait(*manager, *running).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, RestartEndsRunningJobsInterruptedAndRunsQueuedOnes) {
  // What a crash leaves behind: one job mid-run, one still queued.
  auto make = [&](const std::string& id, const std::string& status, int events) {
    JobRecord job;
    job.job_id = id;
    job.status = status;
    job.spec = PythonSpec();
    job.spec.set_language("python");
    job.created_at = common::Rfc3339Now();
    job.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
    ASSERT_TRUE(store_->Create(job).ok());
    for (int i = 1; i <= events; ++i) {
      anima::v1::SelfCodingProgress e;
      e.set_job_id(id);
      e.set_seq(i);
      e.set_stage(i == 1 ? "queued" : "planning");
      e.set_percent(i * 5);
      ASSERT_TRUE(store_->Append(id, e, {}).ok());
    }
  };
  make("job-was-running", kRunning, 3);
  make("job-was-queued", kQueued, 1);

  FakeBroker broker({testing::kGoodPython});
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());

  Watched interrupted = WatchToEnd(*manager, "job-was-running");
  ASSERT_TRUE(interrupted.ended);
  EXPECT_EQ(interrupted.result.status(), "failed");
  EXPECT_EQ(interrupted.result.reason(), "interrupted");
  ASSERT_EQ(interrupted.events.size(), 4u);
  EXPECT_EQ(interrupted.events[3].seq(), 4);
  EXPECT_EQ(interrupted.events[3].stage(), "failed");

  Watched resumed = WatchToEnd(*manager, "job-was-queued", 1);
  ASSERT_TRUE(resumed.ended);
  EXPECT_EQ(resumed.result.status(), "succeeded") << resumed.result.reason();
  EXPECT_EQ(resumed.events.front().seq(), 2);
}

TEST_F(JobManagerTest, StopInterruptsRunningJobsAndKeepsQueuedOnesForTheNextStart) {
  FakeBroker blocking({FakeBroker::kBlock});
  std::string running_id, queued_id;
  {
    auto manager = MakeManager(&blocking, 1, 4);
    ASSERT_TRUE(manager->Start().ok());
    running_id = *manager->Submit(PythonSpec());
    ASSERT_TRUE(blocking.WaitBlocked(1));
    queued_id = *manager->Submit(PythonSpec());
    manager->Stop();
  }
  EXPECT_EQ(store_->Get(running_id)->status, "failed");
  EXPECT_EQ(store_->Get(running_id)->result->reason(), "interrupted");
  EXPECT_EQ(store_->Get(queued_id)->status, "queued");

  FakeBroker good({testing::kGoodPython});
  auto manager = MakeManager(&good);
  ASSERT_TRUE(manager->Start().ok());
  Watched w = WatchToEnd(*manager, queued_id);
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.result.status(), "succeeded");
}

}  // namespace
}  // namespace anima::selfcoding
