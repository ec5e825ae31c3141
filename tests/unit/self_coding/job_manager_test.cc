#include "services/self_coding/job_manager.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <regex>
#include <set>

#include "absl/strings/str_replace.h"
#include "anima/v1/llm_broker.pb.h"
#include "services/common/identity.h"
#include "services/common/process.h"
#include "services/self_coding/prompts.h"
#include "services/self_coding/sqlite_job_store.h"
#include "tests/unit/self_coding/fakes.h"
#include "tests/unit/self_coding/manager_helpers.h"

namespace anima::selfcoding {
namespace {

using testing::CancelAndWait;
using testing::FakeBroker;
using testing::PythonSpec;
using testing::TempDir;
using testing::Watched;
using testing::WatchToEnd;

common::Identity Who(const std::string& principal, common::JobLimits limits = {}) {
  return {.principal = principal, .admin = false, .job_limits = limits};
}
const common::Identity kLocal;
const common::Identity kAdmin{.principal = "ops", .admin = true, .job_limits = {}};

// The BrokerFailure a refused Submit carries for the client.
anima::v1::BrokerFailure FailureOf(const absl::Status& status) {
  anima::v1::BrokerFailure failure;
  auto payload = status.GetPayload(kFailurePayloadUrl);
  EXPECT_TRUE(payload.has_value()) << status;
  if (payload) {
    EXPECT_TRUE(failure.ParseFromString(std::string(*payload)));
  }
  return failure;
}

class JobManagerTest : public ::testing::Test {
 protected:
  std::unique_ptr<JobManager> MakeManager(FakeBroker* broker, int workers = 1, int queue = 4,
                                          std::function<int64_t()> clock = {}) {
    pipeline_ = std::make_unique<JobPipeline>(broker, sandbox_.get(), PipelineOptions{});
    ManagerOptions options;
    options.workers = workers;
    options.queue_size = queue;
    options.work_dir = dir_.path() + "/work";
    options.now_unix_ms = std::move(clock);
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
  auto id = manager->Submit(kLocal, PythonSpec());
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
  auto job = manager->Get(kLocal, *id);
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
  EXPECT_EQ(manager->Submit(kLocal, spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = PythonSpec(9);
  EXPECT_EQ(manager->Submit(kLocal, spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = PythonSpec();
  spec.set_language("cobol");
  EXPECT_EQ(manager->Submit(kLocal, spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = PythonSpec();
  (*spec.mutable_files())["../x.py"] = "";
  EXPECT_EQ(manager->Submit(kLocal, spec).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->Next(kLocal, "job-nope", 0, [] {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(CancelAndWait(*manager, "job-nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, RefusesJobsWithoutASandbox) {
  FakeBroker broker({testing::kGoodPython});
  sandbox_ = MakeSandbox(SandboxMode::kBubblewrap, "/nonexistent/bwrap");
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());
  auto id = manager->Submit(kLocal, PythonSpec());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(id.status().message().find("bwrap"), std::string::npos) << id.status();
}

TEST_F(JobManagerTest, FullQueueIsRefusedAndCancelEndsQueuedAndRunningJobs) {
  FakeBroker broker({FakeBroker::kBlock});
  auto manager = MakeManager(&broker, /*workers=*/1, /*queue=*/1);
  ASSERT_TRUE(manager->Start().ok());
  auto running = manager->Submit(kLocal, PythonSpec());
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(broker.WaitBlocked(1));
  auto queued = manager->Submit(kLocal, PythonSpec());
  ASSERT_TRUE(queued.ok()) << queued.status();
  auto refused = manager->Submit(kLocal, PythonSpec());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FailureOf(refused.status()).code(), "overloaded");
  EXPECT_GT(FailureOf(refused.status()).retry_after_ms(), 0);
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

TEST_F(JobManagerTest, RestartRerunsTheAttemptThatWasRunningAndRunsQueuedJobs) {
  // What a crash leaves behind: one job mid-run (attempt 2, with the checkpoint of attempt 1),
  // one still queued.
  auto make = [&](const std::string& id, const std::string& status, int events,
                  const std::string& principal) {
    JobRecord job;
    job.job_id = id;
    job.principal = principal;
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
      e.set_attempt(i == 1 ? 0 : 2);
      e.set_percent(i * 20);
      JobUpdate update;
      if (i > 1) update.attempts = 2;
      if (i == 2) {
        Checkpoint checkpoint;
        checkpoint.next_attempt = 2;
        checkpoint.feedback = Feedback{"testing", "1 test failed", "assert 5 == -1", {}};
        update.checkpoint = EncodeCheckpoint(checkpoint);
      }
      ASSERT_TRUE(store_->Append(id, e, update).ok());
    }
  };
  make("job-was-running", kRunning, 3, "local");
  make("job-was-queued", kQueued, 1, "alice");

  FakeBroker broker({testing::kGoodPython});
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());

  // Its worker is gone (no lease): attempt 2 runs again, continuing the same events.
  Watched rerun = WatchToEnd(*manager, "job-was-running");
  ASSERT_TRUE(rerun.ended);
  EXPECT_EQ(rerun.result.status(), "succeeded") << rerun.result.reason();
  EXPECT_EQ(rerun.result.attempts(), 2);
  ASSERT_GT(rerun.events.size(), 4u);
  for (size_t i = 0; i < rerun.events.size(); ++i) {
    EXPECT_EQ(rerun.events[i].seq(), static_cast<int64_t>(i + 1));
    if (i > 0) {
      EXPECT_GE(rerun.events[i].percent(), rerun.events[i - 1].percent());
    }
  }
  EXPECT_EQ(rerun.events[3].stage(), "retrying");
  EXPECT_EQ(rerun.events[3].message(), "worker lost; attempt 2 re-run");
  EXPECT_EQ(rerun.events[4].stage(), "planning");
  EXPECT_EQ(rerun.events[4].attempt(), 2);
  // The re-run asked what the lost run would have: a retry, with attempt 1's failure.
  ASSERT_FALSE(broker.prompts().empty());
  EXPECT_NE(broker.prompts()[0].find(kRetryMarker), std::string::npos) << broker.prompts()[0];
  EXPECT_NE(broker.prompts()[0].find("assert 5 == -1"), std::string::npos);
  EXPECT_EQ(store_->Get("job-was-running")->reclaims, 1);

  EXPECT_EQ(manager->Next(Who("bob"), "job-was-queued", 0, [] {}).status().code(),
            absl::StatusCode::kNotFound);
  Watched resumed = WatchToEnd(*manager, "job-was-queued", 1, Who("alice"));
  ASSERT_TRUE(resumed.ended);
  EXPECT_EQ(resumed.result.status(), "succeeded") << resumed.result.reason();
  EXPECT_EQ(resumed.events.front().seq(), 2);
}

TEST_F(JobManagerTest, StopGivesRunningJobsBackAndTheNextStartRunsThem) {
  FakeBroker blocking({FakeBroker::kBlock});
  std::string running_id, queued_id;
  {
    auto manager = MakeManager(&blocking, 1, 4);
    ASSERT_TRUE(manager->Start().ok());
    running_id = *manager->Submit(kLocal, PythonSpec());
    ASSERT_TRUE(blocking.WaitBlocked(1));
    queued_id = *manager->Submit(kLocal, PythonSpec());
    manager->Stop();
    EXPECT_EQ(manager->Next(kLocal, running_id, 0, [] {}).status().code(),
              absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(store_->Get(running_id)->status, "queued");
  auto given_back = store_->Events(running_id, 0, 0);
  ASSERT_FALSE(given_back->empty());
  EXPECT_EQ(given_back->back().stage(), "queued");
  EXPECT_NE(given_back->back().message().find("back in the queue"), std::string::npos)
      << given_back->back().message();
  EXPECT_EQ(store_->Get(queued_id)->status, "queued");

  FakeBroker good({testing::kGoodPython});
  auto manager = MakeManager(&good);
  ASSERT_TRUE(manager->Start().ok());
  for (const auto& id : {running_id, queued_id}) {
    Watched w = WatchToEnd(*manager, id);
    ASSERT_TRUE(w.ended);
    EXPECT_EQ(w.result.status(), "succeeded") << w.result.reason();
    for (size_t i = 0; i < w.events.size(); ++i) {
      EXPECT_EQ(w.events[i].seq(), static_cast<int64_t>(i + 1));
    }
  }
  // Given back is not lost: no worker was.
  EXPECT_EQ(store_->Get(running_id)->reclaims, 0);
}

TEST_F(JobManagerTest, AJobWhoseWorkersKeepDyingEndsFailedAfterThreeLosses) {
  JobRecord job;
  job.job_id = "job-poison";
  job.status = kQueued;
  job.spec = PythonSpec();
  job.spec.set_language("python");
  job.created_at = common::Rfc3339Now();
  // Now, not long ago: an ended job past the retention age is pruned at once, and the watch
  // below, if slower than that (under TSan), found no job.
  job.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  ASSERT_TRUE(store_->Create(job).ok());
  // Three workers claim it in turn and die before their lease runs out.
  for (int dead = 0; dead < 3; ++dead) {
    std::optional<ClaimedJob> claimed;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!claimed && std::chrono::steady_clock::now() < deadline) {
      auto c = store_->Claim("dying-" + std::to_string(dead), std::chrono::milliseconds(50));
      ASSERT_TRUE(c.ok());
      if (c->has_value()) claimed = std::move(**c);
    }
    ASSERT_TRUE(claimed.has_value());
    EXPECT_EQ(claimed->job.reclaims, dead);
  }
  FakeBroker broker({testing::kGoodPython});
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());
  Watched w = WatchToEnd(*manager, "job-poison");
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.result.status(), "failed");
  EXPECT_EQ(w.result.reason(), "interrupted: workers lost 3 times");
  EXPECT_TRUE(broker.prompts().empty());  // not run a fourth time
}

TEST_F(JobManagerTest, JobIdsAre128RandomBitsAfterTheJobPrefix) {
  FakeBroker broker({FakeBroker::kBlock});
  auto manager = MakeManager(&broker, /*workers=*/1, /*queue=*/8);
  ASSERT_TRUE(manager->Start().ok());
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = manager->Submit(kLocal, PythonSpec());
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_TRUE(std::regex_match(*id, std::regex("job-[0-9a-f]{32}"))) << *id;
    ids.insert(*id);
  }
  EXPECT_EQ(ids.size(), 3u);
}

TEST_F(JobManagerTest, AnotherPrincipalsJobIsAnsweredLikeAnUnknownOneButAdminsSeeIt) {
  FakeBroker broker({FakeBroker::kBlock});
  auto manager = MakeManager(&broker);
  ASSERT_TRUE(manager->Start().ok());
  const common::Identity alice = Who("alice"), bob = Who("bob");
  auto id = manager->Submit(alice, PythonSpec());
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(broker.WaitBlocked(1));

  // What bob gets for alice's job, word for word what anyone gets for an id that does not exist.
  auto expect_hidden = [&](const std::string& job_id) {
    auto as_unknown = [&](const absl::Status& unknown) {
      return absl::Status(unknown.code(),
                          absl::StrReplaceAll(unknown.message(), {{"job-nope", job_id}}));
    };
    EXPECT_EQ(manager->Get(bob, job_id).status(),
              as_unknown(manager->Get(bob, "job-nope").status()));
    EXPECT_EQ(manager->Next(bob, job_id, 0, [] {}).status(),
              as_unknown(manager->Next(bob, "job-nope", 0, [] {}).status()));
    EXPECT_EQ(CancelAndWait(*manager, job_id, bob).status(),
              as_unknown(CancelAndWait(*manager, "job-nope", bob).status()));
    EXPECT_EQ(manager->Get(bob, job_id).status().code(), absl::StatusCode::kNotFound);
  };
  expect_hidden(*id);                                     // running
  EXPECT_EQ(manager->Get(alice, *id)->status, kRunning);  // bob's cancel did nothing

  EXPECT_TRUE(manager->List(bob, 50, "", false)->empty());
  EXPECT_TRUE(manager->List(bob, 50, "", /*all_principals=*/true)->empty());
  auto own = manager->List(alice, 50, "", false);
  ASSERT_EQ(own->size(), 1u);
  EXPECT_EQ((*own)[0].principal, "alice");
  auto everyone = manager->List(kAdmin, 50, "", true);
  ASSERT_EQ(everyone->size(), 1u);
  EXPECT_TRUE(manager->List(kAdmin, 50, "", false)->empty());  // without the flag: its own

  // An admin may read and cancel it.
  EXPECT_EQ(manager->Get(kAdmin, *id)->principal, "alice");
  auto cancelled = CancelAndWait(*manager, *id, kAdmin);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->status(), "cancelled");
  Watched admin_view = WatchToEnd(*manager, *id, 0, kAdmin);
  ASSERT_TRUE(admin_view.ended);

  expect_hidden(*id);  // ended: read from the store
  Watched own_view = WatchToEnd(*manager, *id, 0, alice);
  ASSERT_TRUE(own_view.ended);
  EXPECT_EQ(own_view.result.status(), "cancelled");
}

TEST_F(JobManagerTest, InFlightQuotaCountsQueuedAndRunningJobsOfThatPrincipal) {
  FakeBroker broker({FakeBroker::kBlock});
  auto manager = MakeManager(&broker, /*workers=*/1, /*queue=*/8);
  ASSERT_TRUE(manager->Start().ok());
  const common::Identity alice = Who("alice", {.in_flight = 2, .per_day = 0});
  auto running = manager->Submit(alice, PythonSpec());
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(broker.WaitBlocked(1));
  auto queued = manager->Submit(alice, PythonSpec());
  ASSERT_TRUE(queued.ok()) << queued.status();

  auto refused = manager->Submit(alice, PythonSpec());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  anima::v1::BrokerFailure failure = FailureOf(refused.status());
  EXPECT_EQ(failure.code(), "quota_exceeded");
  EXPECT_EQ(failure.limit(), "jobs_in_flight");
  EXPECT_EQ(failure.retry_after_ms(), kRetryWhenBusy.count());
  EXPECT_FALSE(failure.message().empty());
  // Nothing was stored for the refused job.
  EXPECT_EQ(manager->List(alice, 50, "", false)->size(), 2u);

  // Another principal with the same quota is not held to alice's jobs.
  EXPECT_TRUE(manager->Submit(Who("bob", {.in_flight = 2, .per_day = 0}), PythonSpec()).ok());

  // When one of alice's jobs ends, she has room again.
  ASSERT_TRUE(CancelAndWait(*manager, *queued, alice).ok());
  EXPECT_TRUE(manager->Submit(alice, PythonSpec()).ok());
}

TEST_F(JobManagerTest, PerDayQuotaLastsTheUtcDayAndSurvivesARestart) {
  const int64_t day = 24 * 3600 * 1000;
  // 23:00 UTC on some day; the quota frees at the next midnight, one hour later.
  std::atomic<int64_t> now{20000 * day + 23 * 3600 * 1000};
  auto clock = [&now] { return now.load(); };
  const common::Identity alice = Who("alice", {.in_flight = 0, .per_day = 2});
  {
    FakeBroker broker({FakeBroker::kBlock});
    auto manager = MakeManager(&broker, /*workers=*/1, /*queue=*/8, clock);
    ASSERT_TRUE(manager->Start().ok());
    ASSERT_TRUE(manager->Submit(alice, PythonSpec()).ok());
    ASSERT_TRUE(broker.WaitBlocked(1));
    auto second = manager->Submit(alice, PythonSpec());
    ASSERT_TRUE(second.ok());
    // Cancelled jobs still count: the quota is on submissions.
    ASSERT_TRUE(CancelAndWait(*manager, *second, alice).ok());
    auto refused = manager->Submit(alice, PythonSpec());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
    anima::v1::BrokerFailure failure = FailureOf(refused.status());
    EXPECT_EQ(failure.code(), "quota_exceeded");
    EXPECT_EQ(failure.limit(), "jobs_per_day");
    EXPECT_EQ(failure.retry_after_ms(), 3600 * 1000);
    EXPECT_TRUE(manager->Submit(Who("bob", {.in_flight = 0, .per_day = 2}), PythonSpec()).ok());
    manager->Stop();
  }
  FakeBroker broker({FakeBroker::kBlock});
  auto manager = MakeManager(&broker, /*workers=*/1, /*queue=*/8, clock);
  ASSERT_TRUE(manager->Start().ok());
  EXPECT_EQ(FailureOf(manager->Submit(alice, PythonSpec()).status()).limit(), "jobs_per_day");
  now += 3600 * 1000;  // midnight
  EXPECT_TRUE(manager->Submit(alice, PythonSpec()).ok());
}

TEST_F(JobManagerTest, PrincipalsTakeTurnsAndOneHoldsAtMostHalfTheQueue) {
  FakeBroker broker({FakeBroker::kBlock, testing::kGoodPython});
  auto manager = MakeManager(&broker, /*workers=*/1, /*queue=*/4);
  ASSERT_TRUE(manager->Start().ok());
  const common::Identity alice = Who("alice"), bob = Who("bob");
  auto spec = [](const std::string& name) {
    anima::v1::SubmitRequest s = PythonSpec();
    s.set_task("Task " + name + ": write add(a, b) in solution.py.");
    return s;
  };
  auto a0 = manager->Submit(alice, spec("A0"));
  ASSERT_TRUE(a0.ok());
  ASSERT_TRUE(broker.WaitBlocked(1));
  ASSERT_TRUE(manager->Submit(alice, spec("A1")).ok());
  auto a2 = manager->Submit(alice, spec("A2"));
  ASSERT_TRUE(a2.ok());
  // Alice holds half of the 4 places: her next job waits outside, bob's gets in.
  auto a3 = manager->Submit(alice, spec("A3"));
  EXPECT_EQ(a3.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FailureOf(a3.status()).code(), "overloaded");
  auto b1 = manager->Submit(bob, spec("B1"));
  ASSERT_TRUE(b1.ok()) << b1.status();
  EXPECT_EQ(manager->stats().queued, 3);

  ASSERT_TRUE(CancelAndWait(*manager, *a0, alice).ok());
  Watched last = WatchToEnd(*manager, *a2, 0, alice);
  ASSERT_TRUE(last.ended);
  Watched bobs = WatchToEnd(*manager, *b1, 0, bob);
  ASSERT_TRUE(bobs.ended);
  EXPECT_EQ(bobs.result.status(), "succeeded") << bobs.result.reason();

  // The order the model was asked in: bob's job came before alice's later one.
  std::vector<std::string> order;
  for (const std::string& prompt : broker.prompts()) {
    for (const char* name : {"A0", "A1", "A2", "B1"}) {
      if (prompt.find(std::string("Task ") + name + ":") != std::string::npos) {
        order.push_back(name);
      }
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"A0", "A1", "B1", "A2"}));
}

}  // namespace
}  // namespace anima::selfcoding
