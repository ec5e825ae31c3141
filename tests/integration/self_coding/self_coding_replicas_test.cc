// Two real anima-self-coding binaries on one real PostgreSQL, generating through the real broker
// and simulator: the replica running a job is killed with SIGKILL and the other finishes it, with
// every event stored once and in order; PostgreSQL stopped and started again.
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "anima/v1/introspection.grpc.pb.h"
#include "anima/v1/self_coding.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"
#include "tests/support/postgres_server.h"

namespace anima::testing {
namespace {

using anima::v1::JobEvent;

// The model takes 5 s over "Replica task", time enough to kill the replica that asked.
constexpr char kRules[] = R"({"rules": [{"match": "/Task:\\s+Replica task:/", "latency_ms": 5000,
  "reply": "```python title=\"solution.py\"\ndef f():\n    return 1\n```\n"}]})";

anima::v1::SubmitRequest ReplicaTask() {
  anima::v1::SubmitRequest spec;
  spec.set_task("Replica task: write f() returning 1 in solution.py.");
  spec.set_tests("from solution import f\n\ndef test_f():\n    assert f() == 1\n");
  spec.set_max_attempts(1);
  return spec;
}

struct Watched {
  std::vector<anima::v1::SelfCodingProgress> events;
  std::optional<anima::v1::SelfCodingResult> result;
  grpc::Status status;
};

class SelfCodingReplicasTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pg_ = PostgresServer::Start();
    ASSERT_NE(pg_, nullptr);
    url_ = pg_->CreateDatabase("replicas");
    ASSERT_FALSE(url_.empty());
    std::string rules = MakeTempDir("anima-replica-rules") + "/rules.json";
    std::ofstream(rules) << kRules;
    system_ = std::make_unique<System>();
    ASSERT_TRUE(system_->StartSim({"--rules=" + rules}));
    ASSERT_TRUE(system_->StartBroker());
    for (auto& replica : replicas_) {
      replica = StartReplica();
      ASSERT_NE(replica, nullptr);
    }
  }

  static void TearDownTestSuite() {
    for (auto& replica : replicas_) replica.reset();
    system_.reset();
    pg_.reset();
  }

  static std::unique_ptr<Process> StartReplica() {
    return Process::Start(
        "anima-self-coding",
        {"--port=0", "--metrics-port=0", "--broker=" + system_->broker()->address("grpc"),
         "--data-dir=" + MakeTempDir("anima-sc-replica"), "--postgres=" + url_, "--lease-ms=2000",
         "--heartbeat-ms=300", "--workers=1"});
  }

  static std::unique_ptr<anima::v1::SelfCoding::Stub> Stub(const Process& replica) {
    return anima::v1::SelfCoding::NewStub(
        grpc::CreateChannel(replica.address("grpc"), grpc::InsecureChannelCredentials()));
  }

  static absl::StatusOr<std::string> Submit(const Process& replica) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    anima::v1::SubmitResponse response;
    grpc::Status status = Stub(replica)->Submit(&ctx, ReplicaTask(), &response);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return response.job_id();
  }

  // Watches `job_id` on `replica` from after_seq to the result or the stream's end; each event
  // goes to `on_event` as it comes.
  static Watched Watch(
      const Process& replica, const std::string& job_id, int64_t after_seq,
      const std::function<void(const anima::v1::SelfCodingProgress&)>& on_event = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 120s);
    anima::v1::WatchRequest req;
    req.set_job_id(job_id);
    req.set_after_seq(after_seq);
    auto reader = Stub(replica)->Watch(&ctx, req);
    Watched out;
    JobEvent e;
    while (reader->Read(&e)) {
      if (e.has_progress()) {
        out.events.push_back(e.progress());
        if (on_event) on_event(e.progress());
      }
      if (e.has_result()) out.result = e.result();
    }
    out.status = reader->Finish();
    return out;
  }

  static double RunningJobs(const Process& replica) {
    auto metrics = ScrapeMetrics(replica.port("metrics"));
    auto it = metrics.find("anima_selfcoding_running_jobs");
    return it == metrics.end() ? -1 : it->second;
  }

  static inline std::unique_ptr<PostgresServer> pg_;
  static inline std::string url_;
  static inline std::unique_ptr<System> system_;
  static inline std::unique_ptr<Process> replicas_[2];
};

TEST_F(SelfCodingReplicasTest, KillingTheReplicaRunningAJobLosesNoEvent) {
  auto job_id = Submit(*replicas_[0]);
  ASSERT_TRUE(job_id.ok()) << job_id.status();

  // A client follows the job on the other replica, from the start.
  std::mutex mu;
  std::condition_variable cv;
  bool generating = false;
  auto follow = [&](const anima::v1::SelfCodingProgress& e) {
    std::lock_guard lock(mu);
    if (e.stage() == "generating") generating = true;
    cv.notify_all();
  };
  auto watched =
      std::async(std::launch::async, [&] { return Watch(*replicas_[1], *job_id, 0, follow); });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 60s, [&] { return generating; }));
  }
  // The replica waiting for the model dies.
  int victim = -1;
  ASSERT_TRUE(Eventually([&] {
    for (int i = 0; i < 2; ++i) {
      if (RunningJobs(*replicas_[i]) == 1) victim = i;
    }
    return victim >= 0;
  }));
  replicas_[victim]->Signal(SIGKILL);
  replicas_[victim]->Wait();
  const Process& survivor = *replicas_[1 - victim];

  // The follower's stream ends with the replica it watched, or goes on; either way it resumes on
  // the survivor from the last seq it saw.
  Watched first = watched.get();
  std::vector<anima::v1::SelfCodingProgress> seen = first.events;
  std::optional<anima::v1::SelfCodingResult> result = first.result;
  if (!result) {
    Watched rest = Watch(survivor, *job_id, seen.empty() ? 0 : seen.back().seq());
    ASSERT_TRUE(rest.status.ok()) << rest.status.error_message();
    seen.insert(seen.end(), rest.events.begin(), rest.events.end());
    result = rest.result;
  }
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status(), "succeeded") << result->reason();

  // From the start, on the survivor: every event once, in order; the loss said once.
  Watched all = Watch(survivor, *job_id, 0);
  ASSERT_TRUE(all.status.ok()) << all.status.error_message();
  ASSERT_TRUE(all.result.has_value());
  std::set<int64_t> seqs;
  int lost = 0;
  for (size_t i = 0; i < all.events.size(); ++i) {
    EXPECT_EQ(all.events[i].seq(), static_cast<int64_t>(i + 1));
    seqs.insert(all.events[i].seq());
    if (all.events[i].message() == "worker lost; attempt 1 re-run") lost++;
  }
  EXPECT_EQ(seqs.size(), all.events.size());
  EXPECT_EQ(lost, 1);
  EXPECT_EQ(all.events.back().stage(), "succeeded");
  ASSERT_EQ(seen.size(), all.events.size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].seq(), all.events[i].seq());

  // The replica comes back for the next test.
  replicas_[victim] = StartReplica();
  ASSERT_NE(replicas_[victim], nullptr);
}

TEST_F(SelfCodingReplicasTest, WhilePostgresIsDownSubmitIsUnavailableThenWorksAgain) {
  ASSERT_TRUE(Submit(*replicas_[0]).ok());
  ASSERT_TRUE(pg_->Stop());
  auto refused = Submit(*replicas_[0]);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("job store unavailable"), std::string::npos)
      << refused.status();
  // Introspection says why, without waiting on the store.
  auto introspection = anima::v1::Introspection::NewStub(
      grpc::CreateChannel(replicas_[1]->address("grpc"), grpc::InsecureChannelCredentials()));
  EXPECT_TRUE(Eventually([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    anima::v1::DescribeResponse described;
    if (!introspection->Describe(&ctx, {}, &described).ok()) return false;
    for (const auto& m : described.modules()) {
      if (m.name() == "self-coding/job-store") {
        return m.health() == anima::v1::MODULE_HEALTH_DOWN &&
               m.detail().find("postgres") != std::string::npos;
      }
    }
    return false;
  }));

  ASSERT_TRUE(pg_->Restart());
  std::optional<std::string> job_id;
  EXPECT_TRUE(Eventually(
      [&] {
        auto id = Submit(*replicas_[1]);
        if (id.ok()) job_id = *id;
        return id.ok();
      },
      30s));
  ASSERT_TRUE(job_id.has_value());
  Watched w = Watch(*replicas_[0], *job_id, 0);
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_TRUE(w.result.has_value());
  EXPECT_EQ(w.result->status(), "succeeded") << w.result->reason();
}

}  // namespace
}  // namespace anima::testing
