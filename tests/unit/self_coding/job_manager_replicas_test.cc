// Two JobManagers on one PostgreSQL store: two replicas in one process, each with its own store
// connection, pipeline and fake broker. What a user of a scaled-out self-coding service sees:
// a job submitted on one replica is watched on the other; a replica that dies mid-job is
// replaced and the watcher sees every event once; cancel and quotas work across replicas; a
// stopping replica hands its job over; PostgreSQL going away and coming back.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <set>

#include "services/self_coding/job_manager.h"
#include "tests/unit/self_coding/fakes.h"
#include "tests/unit/self_coding/manager_helpers.h"
#include "tests/unit/self_coding/postgres_fixture.h"

namespace anima::selfcoding {
namespace {

using namespace std::chrono_literals;
using testing::CancelAndWait;
using testing::FakeBroker;
using testing::PythonSpec;
using testing::TempDir;
using testing::Watched;
using testing::WatchToEnd;

// A replica's view of the store that a test can cut off, as a network partition would: while
// cut, every call fails Unavailable (so its heartbeats and writes do not get through), and the
// other replicas see a worker that has gone silent.
class PartitionableStore : public JobStore {
 public:
  explicit PartitionableStore(std::unique_ptr<JobStore> inner) : inner_(std::move(inner)) {}
  void Cut(bool cut) { cut_ = cut; }

  using JobStore::Create;
  absl::Status Create(const JobRecord& job, const anima::v1::SelfCodingProgress* first,
                      const AdmitFn& admit) override {
    if (cut_) return Partitioned();
    return inner_->Create(job, first, admit);
  }
  absl::StatusOr<int64_t> CreatedOn(const std::string& principal, int64_t day) override {
    if (cut_) return Partitioned();
    return inner_->CreatedOn(principal, day);
  }
  absl::StatusOr<AdmissionCounts> Counts(const std::string& principal, int64_t day) override {
    if (cut_) return Partitioned();
    return inner_->Counts(principal, day);
  }
  absl::Status Append(const std::string& job_id, const anima::v1::SelfCodingProgress& event,
                      const JobUpdate& update) override {
    if (cut_) return Partitioned();
    return inner_->Append(job_id, event, update);
  }
  absl::StatusOr<std::optional<ClaimedJob>> Claim(const std::string& worker,
                                                  std::chrono::milliseconds lease) override {
    if (cut_) return Partitioned();
    return inner_->Claim(worker, lease);
  }
  absl::StatusOr<HeartbeatReply> Heartbeat(const Lease& lease,
                                           std::chrono::milliseconds lease_for) override {
    if (cut_) return Partitioned();
    return inner_->Heartbeat(lease, lease_for);
  }
  absl::Status AppendLeased(const Lease& lease, const anima::v1::SelfCodingProgress& event,
                            const JobUpdate& update, bool release) override {
    if (cut_) return Partitioned();
    return inner_->AppendLeased(lease, event, update, release);
  }
  absl::StatusOr<CancelOutcome> RequestCancel(const std::string& job_id,
                                              const anima::v1::SelfCodingProgress& event,
                                              const anima::v1::SelfCodingResult& result) override {
    if (cut_) return Partitioned();
    return inner_->RequestCancel(job_id, event, result);
  }
  absl::StatusOr<JobRecord> Get(const std::string& job_id) override {
    if (cut_) return Partitioned();
    return inner_->Get(job_id);
  }
  absl::StatusOr<std::vector<anima::v1::SelfCodingProgress>> Events(const std::string& job_id,
                                                                    int64_t after_seq,
                                                                    int limit) override {
    if (cut_) return Partitioned();
    return inner_->Events(job_id, after_seq, limit);
  }
  absl::StatusOr<std::vector<JobRecord>> List(const ListQuery& query) override {
    if (cut_) return Partitioned();
    return inner_->List(query);
  }
  absl::StatusOr<std::vector<std::string>> Prune(std::chrono::milliseconds max_age, int max_jobs,
                                                 int64_t now) override {
    if (cut_) return Partitioned();
    return inner_->Prune(max_age, max_jobs, now);
  }
  absl::Status Ping() override { return cut_ ? Partitioned() : inner_->Ping(); }
  StoreHealth Health() override { return inner_->Health(); }
  int Subscribe(std::function<void(const JobChange&)> fn) override {
    return inner_->Subscribe(std::move(fn));
  }
  void Unsubscribe(int id) override { inner_->Unsubscribe(id); }

 private:
  static absl::Status Partitioned() { return absl::UnavailableError("partitioned (test)"); }
  std::unique_ptr<JobStore> inner_;
  std::atomic<bool> cut_{false};
};

struct Replica {
  std::unique_ptr<PartitionableStore> store;
  std::unique_ptr<FakeBroker> broker;
  std::unique_ptr<JobPipeline> pipeline;
  std::unique_ptr<JobManager> manager;  // last: goes first
};

// Every event of a job, as stored, checked for the stream's promises: seq from 1 without gaps
// or repeats, percent never down.
void ExpectContiguous(const std::vector<anima::v1::SelfCodingProgress>& events) {
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1)) << "event " << i;
    if (i > 0) {
      EXPECT_GE(events[i].percent(), events[i - 1].percent()) << "event " << i;
    }
  }
}

int Count(const std::vector<anima::v1::SelfCodingProgress>& events, const std::string& text) {
  int n = 0;
  for (const auto& e : events) {
    if (e.message().find(text) != std::string::npos) n++;
  }
  return n;
}

bool Eventually(const std::function<bool()>& condition) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = testing::FreshDatabase();
    ASSERT_FALSE(url_.empty());
  }

  // A replica with `workers` workers (0: it only serves RPCs) and a broker answering `replies`.
  std::unique_ptr<Replica> MakeReplica(const std::string& name, std::vector<std::string> replies,
                                       int workers, int queue_size = 8) {
    auto r = std::make_unique<Replica>();
    auto store = testing::OpenPostgresStore(url_);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    r->store = std::make_unique<PartitionableStore>(std::move(*store));
    r->broker = std::make_unique<FakeBroker>(std::move(replies));
    r->pipeline = std::make_unique<JobPipeline>(r->broker.get(), sandbox_.get(), PipelineOptions{});
    ManagerOptions options;
    options.workers = workers;
    options.queue_size = queue_size;
    options.work_dir = dir_.path() + "/" + name;
    options.lease = 1000ms;
    options.heartbeat = 200ms;
    options.poll = 200ms;
    options.replica_id = name;
    r->manager = std::make_unique<JobManager>(r->store.get(), r->pipeline.get(), sandbox_.get(),
                                              options, nullptr);
    return r;
  }

  TempDir dir_;
  std::unique_ptr<Sandbox> sandbox_ = testing::TestSandbox();
  std::string url_;
};

TEST_F(ReplicasTest, AJobSubmittedOnOneReplicaIsWatchedOnTheOther) {
  auto front = MakeReplica("front", {testing::kGoodPython}, /*workers=*/0);
  auto worker = MakeReplica("worker", {testing::kBadPython, testing::kGoodPython}, 1);
  ASSERT_TRUE(front && worker);
  ASSERT_TRUE(front->manager->Start().ok());
  ASSERT_TRUE(worker->manager->Start().ok());
  auto id = front->manager->Submit({}, PythonSpec());
  ASSERT_TRUE(id.ok()) << id.status();

  Watched w = WatchToEnd(*front->manager, *id);
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.result.status(), "succeeded") << w.result.reason();
  EXPECT_EQ(w.result.attempts(), 2);
  ExpectContiguous(w.events);
  EXPECT_EQ(w.events.front().stage(), "queued");
  EXPECT_EQ(w.events.back().stage(), "succeeded");
  EXPECT_TRUE(front->broker->prompts().empty());  // the front replica ran nothing
  EXPECT_EQ(worker->broker->prompts().size(), 2u);
  EXPECT_EQ(front->manager->Get({}, *id)->status, "succeeded");
}

TEST_F(ReplicasTest, AReplicaThatDiesMidJobIsReplacedAndTheWatcherSeesEveryEventOnce) {
  auto doomed = MakeReplica("doomed", {FakeBroker::kBlock}, 1);
  auto survivor = MakeReplica("survivor", {testing::kGoodPython}, 1);
  ASSERT_TRUE(doomed && survivor);
  ASSERT_TRUE(doomed->manager->Start().ok());
  auto id = doomed->manager->Submit({}, PythonSpec());
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(doomed->broker->WaitBlocked(1));  // it is generating
  ASSERT_TRUE(survivor->manager->Start().ok());
  auto watched =
      std::async(std::launch::async, [&] { return WatchToEnd(*survivor->manager, *id); });

  // The doomed replica drops off the network: no heartbeat, no write gets through.
  doomed->store->Cut(true);
  Watched w = watched.get();
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.result.status(), "succeeded") << w.result.reason();
  ExpectContiguous(w.events);
  EXPECT_EQ(Count(w.events, "worker lost; attempt 1 re-run"), 1);
  EXPECT_EQ(survivor->broker->prompts().size(), 1u);

  // It comes back: it learns that it lost the job, stops its run and writes nothing.
  doomed->store->Cut(false);
  EXPECT_TRUE(Eventually([&] { return doomed->manager->stats().running == 0; }));
  auto stored = survivor->store->Events(*id, 0, 0);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->size(), w.events.size());
  auto job = survivor->store->Get(*id);
  EXPECT_EQ(job->status, "succeeded");
  EXPECT_EQ(job->reclaims, 1);
}

TEST_F(ReplicasTest, CancelFromTheOtherReplica) {
  auto running = MakeReplica("running", {FakeBroker::kBlock}, 1);
  auto other = MakeReplica("other", {testing::kGoodPython}, 0);
  ASSERT_TRUE(running && other);
  ASSERT_TRUE(running->manager->Start().ok());
  ASSERT_TRUE(other->manager->Start().ok());
  auto id = running->manager->Submit({}, PythonSpec());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(running->broker->WaitBlocked(1));

  auto cancelled = CancelAndWait(*other->manager, *id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->status(), "cancelled");
  EXPECT_EQ(cancelled->job_id(), *id);
  Watched w = WatchToEnd(*other->manager, *id);
  ASSERT_TRUE(w.ended);
  ExpectContiguous(w.events);
  EXPECT_EQ(w.events.back().stage(), "cancelled");
  EXPECT_EQ(CancelAndWait(*other->manager, *id).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ReplicasTest, AStoppingReplicaHandsItsJobToTheOther) {
  auto stopping = MakeReplica("stopping", {FakeBroker::kBlock}, 1);
  auto taking = MakeReplica("taking", {testing::kGoodPython}, 1);
  ASSERT_TRUE(stopping && taking);
  ASSERT_TRUE(stopping->manager->Start().ok());
  auto id = stopping->manager->Submit({}, PythonSpec());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(stopping->broker->WaitBlocked(1));
  ASSERT_TRUE(taking->manager->Start().ok());

  stopping->manager->Stop();  // SIGTERM
  Watched w = WatchToEnd(*taking->manager, *id);
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.result.status(), "succeeded") << w.result.reason();
  ExpectContiguous(w.events);
  EXPECT_EQ(Count(w.events, "back in the queue"), 1);
  EXPECT_EQ(Count(w.events, "worker lost"), 0);
  EXPECT_EQ(taking->store->Get(*id)->reclaims, 0);
}

TEST_F(ReplicasTest, QuotasAndTheQueueBoundHoldAcrossReplicas) {
  auto a = MakeReplica("a", {testing::kGoodPython}, 0, /*queue_size=*/3);
  auto b = MakeReplica("b", {testing::kGoodPython}, 0, /*queue_size=*/3);
  ASSERT_TRUE(a && b);
  const common::Identity alice{
      .principal = "alice", .admin = false, .job_limits = {.in_flight = 1, .per_day = 0}};
  ASSERT_TRUE(a->manager->Submit(alice, PythonSpec()).ok());
  auto refused = b->manager->Submit(alice, PythonSpec());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  anima::v1::BrokerFailure failure;
  ASSERT_TRUE(
      failure.ParseFromString(std::string(*refused.status().GetPayload(kFailurePayloadUrl))));
  EXPECT_EQ(failure.limit(), "jobs_in_flight");

  // Three places in the queue, whichever replica takes the job.
  ASSERT_TRUE(
      b->manager->Submit({.principal = "bob", .admin = false, .job_limits = {}}, PythonSpec())
          .ok());
  ASSERT_TRUE(
      a->manager->Submit({.principal = "carol", .admin = false, .job_limits = {}}, PythonSpec())
          .ok());
  auto full =
      b->manager->Submit({.principal = "dave", .admin = false, .job_limits = {}}, PythonSpec());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(a->manager->stats().queued, 3);
}

// PostgreSQL itself goes away: a server of its own.
TEST_F(ReplicasTest, WhilePostgresIsDownJobsAreRefusedAndTheRunningOneWaitsThenFinishes) {
  auto server = ::anima::testing::PostgresServer::Start();
  ASSERT_NE(server, nullptr);
  url_ = server->CreateDatabase("outage");
  ASSERT_FALSE(url_.empty());
  auto r = MakeReplica("r", {FakeBroker::kGate, testing::kGoodPython}, 1);
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->manager->Start().ok());
  auto id = r->manager->Submit({}, PythonSpec());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(r->broker->WaitBlocked(1));
  auto watched = std::async(std::launch::async, [&] { return WatchToEnd(*r->manager, *id); });

  ASSERT_TRUE(server->Stop());
  auto refused = r->manager->Submit({}, PythonSpec());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("job store unavailable"), std::string::npos)
      << refused.status();
  EXPECT_EQ(r->manager->Get({}, *id).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(Eventually([&] { return r->store->Health().level == StoreHealth::Level::kDown; }));
  // The model answers while the store is down: the job goes on, its events wait.
  r->broker->OpenGate();

  ASSERT_TRUE(server->Restart());
  Watched w = watched.get();
  ASSERT_TRUE(w.ended);
  EXPECT_EQ(w.result.status(), "succeeded") << w.result.reason();
  ExpectContiguous(w.events);
  EXPECT_EQ(Count(w.events, "worker lost"), 0);
  EXPECT_TRUE(r->manager->Submit({}, PythonSpec()).ok());
  EXPECT_TRUE(Eventually([&] { return r->store->Health().level == StoreHealth::Level::kHealthy; }));
}

}  // namespace
}  // namespace anima::selfcoding
