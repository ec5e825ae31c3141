// The JobStore contract, one suite run against both backends: SQLite (the embedded default) and
// PostgreSQL (a real server, tests/support/postgres_server.h). What one replica or several may
// rely on: events, listing, retention, per-day counts, admission in the transaction, the queue
// (claims, round robin, SKIP LOCKED, leases, fencing, release, cancel), notifications and
// migrations.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <set>
#include <thread>

#include "services/self_coding/sqlite_job_store.h"
#include "tests/unit/self_coding/fakes.h"
#include "tests/unit/self_coding/postgres_fixture.h"

namespace anima::selfcoding {
namespace {

using testing::Event;
using testing::NewJob;

using namespace std::chrono_literals;

constexpr int64_t kDay = 24 * 3600 * 1000;

// SQLite in a file of a temp dir: Open() again gives another handle on the same data.
class SqliteBackend {
 public:
  static constexpr bool kShared = false;  // handles do not see each other's notifications
  bool Ready() const { return true; }
  absl::StatusOr<std::unique_ptr<JobStore>> Open() {
    auto store = SqliteJobStore::Open(dir_.path() + "/jobs.db");
    if (!store.ok()) return store.status();
    return std::unique_ptr<JobStore>(std::move(*store));
  }

 private:
  testing::TempDir dir_;
};

// A fresh database of the shared server: Open() again is another replica on the same data.
class PostgresBackend {
 public:
  static constexpr bool kShared = true;
  bool Ready() const { return !url_.empty(); }
  absl::StatusOr<std::unique_ptr<JobStore>> Open() {
    auto store = testing::OpenPostgresStore(url_);
    if (!store.ok()) return store.status();
    return std::unique_ptr<JobStore>(std::move(*store));
  }
  const std::string& url() const { return url_; }

 private:
  std::string url_ = testing::FreshDatabase();
};

anima::v1::SelfCodingResult Result(const std::string& status) {
  anima::v1::SelfCodingResult r;
  r.set_status(status);
  r.set_reason(status);
  return r;
}

// Polls until `condition` holds or 20 s pass.
bool Eventually(const std::function<bool()>& condition) {
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

// Collects the changes a store publishes.
class ChangeLog {
 public:
  explicit ChangeLog(JobStore* store) : store_(store) {
    id_ = store->Subscribe([this](const JobChange& change) {
      std::lock_guard lock(mu_);
      changes_.push_back(change);
      cv_.notify_all();
    });
  }
  ~ChangeLog() { store_->Unsubscribe(id_); }
  // Waits until a change of `kind` about `job_id` (any job when empty) has come.
  bool Saw(JobChange::Kind kind, const std::string& job_id = "") {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 20s, [&] {
      for (const auto& c : changes_) {
        if (c.kind == kind && (job_id.empty() || c.job_id == job_id)) return true;
      }
      return false;
    });
  }

 private:
  JobStore* store_;
  int id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<JobChange> changes_;
};

template <typename Backend>
class JobStoreContract : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!backend_.Ready()) GTEST_FAIL() << "the backend did not start";
    auto store = backend_.Open();
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  std::unique_ptr<JobStore> Another() {
    auto store = backend_.Open();
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  // Claims until it gets a job (leases run on the store's clock, so an expiry is polled for).
  ClaimedJob ClaimSoon(JobStore& store, const std::string& worker,
                       std::chrono::milliseconds lease = 60s) {
    std::optional<ClaimedJob> out;
    EXPECT_TRUE(Eventually([&] {
      auto c = store.Claim(worker, lease);
      EXPECT_TRUE(c.ok()) << c.status();
      if (c.ok() && c->has_value()) out = std::move(**c);
      return out.has_value();
    }));
    return out.value_or(ClaimedJob{});
  }

  Backend backend_;
  std::unique_ptr<JobStore> store_;
};

using Backends = ::testing::Types<SqliteBackend, PostgresBackend>;
class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, SqliteBackend> ? "Sqlite" : "Postgres";
  }
};
TYPED_TEST_SUITE(JobStoreContract, Backends, BackendNames);

TYPED_TEST(JobStoreContract, EventsRoundTripAndReplayAfterAnySeq) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("job-a", 1)).ok());
  const char* stages[] = {"queued", "planning", "generating", "writing", "testing"};
  for (int i = 0; i < 5; ++i) {
    JobUpdate update;
    if (i == 1) update.status = kRunning;
    update.attempts = 1;
    ASSERT_TRUE(store.Append("job-a", Event("job-a", i + 1, stages[i]), update).ok());
  }
  for (int after = 0; after <= 5; ++after) {
    auto events = store.Events("job-a", after, 0);
    ASSERT_TRUE(events.ok()) << events.status();
    ASSERT_EQ(events->size(), static_cast<size_t>(5 - after));
    for (size_t i = 0; i < events->size(); ++i) {
      EXPECT_EQ((*events)[i].seq(), after + 1 + static_cast<int64_t>(i));
      EXPECT_EQ((*events)[i].stage(), stages[after + i]);
      EXPECT_EQ((*events)[i].message(), "message " + std::to_string(after + 1 + i));
    }
  }
  EXPECT_EQ(store.Events("job-a", 1, 2)->size(), 2u);
  auto job = store.Get("job-a");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->status, kRunning);
  EXPECT_EQ(job->last_seq, 5);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_EQ(job->spec.task(), "task of job-a");
  EXPECT_FALSE(job->result.has_value());
}

TYPED_TEST(JobStoreContract, RejectsOutOfOrderSeqAndUnknownJobs) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("job-a", 1)).ok());
  EXPECT_EQ(store.Append("job-a", Event("job-a", 2, "queued"), {}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.Append("nope", Event("nope", 1, "queued"), {}).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store.Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.Create(NewJob("job-a", 1)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(store.Events("nope", 0, 0)->empty());
}

TYPED_TEST(JobStoreContract, ResultAndEventsSurviveReopening) {
  {
    auto store = this->Another();
    ASSERT_TRUE(store->Create(NewJob("job-a", 1)).ok());
    ASSERT_TRUE(store->Append("job-a", Event("job-a", 1, "queued"), {}).ok());
    anima::v1::SelfCodingResult result = Result(kSucceeded);
    result.set_job_id("job-a");
    result.set_attempts(2);
    (*result.mutable_files())["solution.py"] = std::string("x = 1\n\0binary'\"", 16);
    JobUpdate update{.status = kSucceeded, .attempts = 2, .result = result, .checkpoint = {}};
    ASSERT_TRUE(store->Append("job-a", Event("job-a", 2, "succeeded"), update).ok());
  }
  auto store = this->Another();
  auto job = store->Get("job-a");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->status, kSucceeded);
  EXPECT_EQ(job->attempts, 2);
  ASSERT_TRUE(job->result.has_value());
  EXPECT_EQ(job->result->files().at("solution.py"), std::string("x = 1\n\0binary'\"", 16));
  EXPECT_EQ(store->Events("job-a", 0, 0)->size(), 2u);
}

TYPED_TEST(JobStoreContract, ListsNewestFirstAndByStatus) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("job-1", 100)).ok());
  ASSERT_TRUE(store.Create(NewJob("job-2", 200, kRunning)).ok());
  ASSERT_TRUE(store.Create(NewJob("job-3", 300)).ok());
  auto all = store.List({.limit = 0, .status = "", .oldest_first = false, .principal = ""});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].job_id, "job-3");
  auto queued = store.List({.limit = 10, .status = kQueued, .oldest_first = true, .principal = ""});
  ASSERT_EQ(queued->size(), 2u);
  EXPECT_EQ((*queued)[0].job_id, "job-1");
  EXPECT_EQ(store.List({.limit = 1, .status = "", .oldest_first = false, .principal = ""})->size(),
            1u);
}

TYPED_TEST(JobStoreContract, PrunesEndedJobsByAgeAndCountButNeverLiveOnes) {
  JobStore& store = *this->store_;
  const int64_t now = 1'000'000'000;
  ASSERT_TRUE(store.Create(NewJob("old-ended", now - 10 * kDay, kFailed)).ok());
  ASSERT_TRUE(store.Append("old-ended", Event("old-ended", 1, "failed"), {}).ok());
  ASSERT_TRUE(store.Create(NewJob("old-queued", now - 10 * kDay, kQueued)).ok());
  for (int i = 0; i < 5; ++i) {
    std::string id = "recent-" + std::to_string(i);
    ASSERT_TRUE(store.Create(NewJob(id, now - 1000 + i, kSucceeded)).ok());
  }
  auto pruned = store.Prune(std::chrono::hours(24 * 7), 4, now);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  // The old ended job by age; then the oldest ended ones until 4 jobs remain.
  ASSERT_EQ(pruned->size(), 3u);
  EXPECT_EQ((*pruned)[0], "old-ended");
  EXPECT_EQ((*pruned)[1], "recent-0");
  EXPECT_EQ((*pruned)[2], "recent-1");
  EXPECT_EQ(store.Get("old-ended").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store.Events("old-ended", 0, 0)->empty());
  EXPECT_TRUE(store.Get("old-queued").ok());
  EXPECT_EQ(store.List({.limit = 0, .status = "", .oldest_first = false, .principal = ""})->size(),
            4u);
}

TYPED_TEST(JobStoreContract, JobsKeepTheirPrincipalAndListFiltersByIt) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("job-1", 100, kQueued, "alice")).ok());
  ASSERT_TRUE(store.Create(NewJob("job-2", 200, kQueued, "bob")).ok());
  ASSERT_TRUE(store.Create(NewJob("job-3", 300, kRunning, "alice")).ok());
  EXPECT_EQ(store.Get("job-2")->principal, "bob");
  auto alices = store.List({.limit = 0, .status = "", .oldest_first = false, .principal = "alice"});
  ASSERT_EQ(alices->size(), 2u);
  EXPECT_EQ((*alices)[0].job_id, "job-3");
  EXPECT_EQ((*alices)[0].principal, "alice");
  EXPECT_EQ((*alices)[1].job_id, "job-1");
  auto queued =
      store.List({.limit = 0, .status = kQueued, .oldest_first = false, .principal = "alice"});
  ASSERT_EQ(queued->size(), 1u);
  EXPECT_EQ((*queued)[0].job_id, "job-1");
  EXPECT_EQ(store.List({.limit = 0, .status = "", .oldest_first = false, .principal = ""})->size(),
            3u);
  EXPECT_TRUE(
      store.List({.limit = 0, .status = "", .oldest_first = false, .principal = "carol"})->empty());
}

TYPED_TEST(JobStoreContract, CountsJobsPerPrincipalAndUtcDayAndPruningKeepsTheCount) {
  JobStore& store = *this->store_;
  const int64_t today = 20000;
  // The last ms of yesterday, the first and the last of today, and one job of bob.
  ASSERT_TRUE(store.Create(NewJob("a-0", today * kDay - 1, kSucceeded, "alice")).ok());
  ASSERT_TRUE(store.Create(NewJob("a-1", today * kDay, kSucceeded, "alice")).ok());
  ASSERT_TRUE(store.Create(NewJob("a-2", (today + 1) * kDay - 1, kFailed, "alice")).ok());
  ASSERT_TRUE(store.Create(NewJob("b-1", today * kDay + 5, kQueued, "bob")).ok());
  EXPECT_EQ(*store.CreatedOn("alice", today - 1), 1);
  EXPECT_EQ(*store.CreatedOn("alice", today), 2);
  EXPECT_EQ(*store.CreatedOn("bob", today), 1);
  EXPECT_EQ(*store.CreatedOn("carol", today), 0);
  // A duplicate is refused and not counted.
  EXPECT_EQ(store.Create(NewJob("a-1", today * kDay, kQueued, "alice")).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*store.CreatedOn("alice", today), 2);

  // Pruning every ended job leaves today's count as it was.
  auto pruned = store.Prune(std::chrono::hours(24 * 7), 1, today * kDay + 10);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->size(), 3u);
  EXPECT_EQ(*store.CreatedOn("alice", today), 2);
  // Two days later, the counts of days before yesterday are gone.
  ASSERT_TRUE(store.Prune(std::chrono::hours(24 * 7), 0, (today + 2) * kDay).ok());
  EXPECT_EQ(*store.CreatedOn("alice", today), 0);
}

TYPED_TEST(JobStoreContract, CreateStoresTheFirstEventAndAdmitsInTheTransaction) {
  JobStore& store = *this->store_;
  const int64_t today = 20000;
  ASSERT_TRUE(store.Create(NewJob("a-1", today * kDay, kQueued, "alice")).ok());
  ASSERT_TRUE(store.Create(NewJob("a-2", today * kDay, kRunning, "alice")).ok());
  ASSERT_TRUE(store.Create(NewJob("b-1", today * kDay, kQueued, "bob")).ok());

  AdmissionCounts seen;
  anima::v1::SelfCodingProgress first = Event("a-3", 1, "queued");
  auto admit = [&](const AdmissionCounts& counts, anima::v1::SelfCodingProgress& event) {
    seen = counts;
    event.set_message("queued behind " + std::to_string(counts.queued));
    return absl::OkStatus();
  };
  ASSERT_TRUE(store.Create(NewJob("a-3", today * kDay + 1, kQueued, "alice"), &first, admit).ok());
  EXPECT_EQ(seen.queued, 2);
  EXPECT_EQ(seen.running, 1);
  EXPECT_EQ(seen.principal_queued, 1);
  EXPECT_EQ(seen.principal_in_flight, 2);
  EXPECT_EQ(seen.principal_today, 2);
  auto events = store.Events("a-3", 0, 0);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].seq(), 1);
  EXPECT_EQ((*events)[0].message(), "queued behind 2");
  EXPECT_EQ(store.Get("a-3")->last_seq, 1);

  // A refusal stores nothing and counts nothing.
  auto refuse = [](const AdmissionCounts&, anima::v1::SelfCodingProgress&) {
    return absl::ResourceExhaustedError("no");
  };
  EXPECT_EQ(store.Create(NewJob("a-4", today * kDay + 2, kQueued, "alice"), &first, refuse).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store.Get("a-4").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store.CreatedOn("alice", today), 3);
  auto counts = store.Counts("alice", today);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->queued, 3);
  EXPECT_EQ(counts->principal_in_flight, 3);
}

TYPED_TEST(JobStoreContract, ClaimsServePrincipalsRoundRobinThenOldestFirst) {
  JobStore& store = *this->store_;
  EXPECT_FALSE(store.Claim("w", 60s)->has_value());  // nothing to do
  // Alice queues three, then bob one, then carol one.
  for (const char* id : {"a1", "a2", "a3"}) {
    ASSERT_TRUE(store.Create(NewJob(id, 1, kQueued, "alice")).ok());
  }
  ASSERT_TRUE(store.Create(NewJob("b1", 1, kQueued, "bob")).ok());
  ASSERT_TRUE(store.Create(NewJob("c1", 1, kQueued, "carol")).ok());
  std::vector<std::string> order;
  for (int i = 0; i < 5; ++i) {
    auto c = store.Claim("w", 60s);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE(c->has_value());
    EXPECT_EQ((*c)->job.status, kRunning);
    EXPECT_FALSE((*c)->reclaimed);
    order.push_back((*c)->job.job_id);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"a1", "b1", "c1", "a2", "a3"}));
  EXPECT_FALSE(store.Claim("w", 60s)->has_value());
  EXPECT_EQ(store.Get("a3")->status, kRunning);
}

TYPED_TEST(JobStoreContract, TwoClaimersNeverGetTheSameJob) {
  constexpr int kJobs = 60;
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(
        this->store_
            ->Create(NewJob("j" + std::to_string(i), i, kQueued, "p" + std::to_string(i % 3)))
            .ok());
  }
  // Two replicas, four claimers each, hammering at once.
  std::unique_ptr<JobStore> other = this->Another();
  std::mutex mu;
  std::vector<std::string> claimed;
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    JobStore* store = t % 2 == 0 ? this->store_.get() : other.get();
    threads.emplace_back([&, store, t] {
      while (true) {
        auto c = store->Claim("w" + std::to_string(t), 60s);
        if (!c.ok()) {
          // SQLite's writers queue on one lock; a busy timeout would show here.
          ADD_FAILURE() << c.status();
          failed = true;
          return;
        }
        if (!c->has_value()) return;
        std::lock_guard lock(mu);
        claimed.push_back((*c)->job.job_id);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_FALSE(failed);
  std::set<std::string> unique(claimed.begin(), claimed.end());
  EXPECT_EQ(claimed.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(unique.size(), static_cast<size_t>(kJobs));
}

TYPED_TEST(JobStoreContract, AnExpiredLeaseIsClaimedAgainAndTheOldWorkerIsFencedOut) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("job-a", 1)).ok());
  ASSERT_TRUE(store.Append("job-a", Event("job-a", 1, "queued"), {}).ok());
  auto first = store.Claim("dead-worker", 300ms);
  ASSERT_TRUE(first.ok() && first->has_value());
  Lease old = (*first)->lease;
  auto planning = Event("job-a", 2, "planning");
  ASSERT_TRUE(
      store
          .AppendLeased(
              old, planning,
              {.status = {}, .attempts = 1, .result = {}, .checkpoint = std::string("cp-1")}, false)
          .ok());

  // Its worker goes silent; once the lease has run out on the store's clock, another claims it.
  ClaimedJob second = this->ClaimSoon(store, "live-worker");
  EXPECT_EQ(second.job.job_id, "job-a");
  EXPECT_TRUE(second.reclaimed);
  EXPECT_EQ(second.job.reclaims, 1);
  EXPECT_EQ(second.job.attempts, 1);
  EXPECT_EQ(second.job.last_seq, 2);
  EXPECT_EQ(second.job.checkpoint, "cp-1");
  EXPECT_EQ(second.last_percent, 20);
  EXPECT_NE(second.lease.token, old.token);

  // The old worker comes back: it can neither write nor renew.
  EXPECT_EQ(store.AppendLeased(old, Event("job-a", 3, "generating"), {}, false).code(),
            absl::StatusCode::kAborted);
  auto beat = store.Heartbeat(old, 60s);
  ASSERT_TRUE(beat.ok());
  EXPECT_TRUE(beat->lost);
  // The new one continues the same stream.
  ASSERT_TRUE(store.AppendLeased(second.lease, Event("job-a", 3, "retrying"), {}, false).ok());
  auto events = store.Events("job-a", 0, 0);
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[2].stage(), "retrying");
}

TYPED_TEST(JobStoreContract, LeasedAppendsAreIdempotentAndEndWithTheJob) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("job-a", 1)).ok());
  ClaimedJob c = this->ClaimSoon(store, "w");
  ASSERT_TRUE(store.AppendLeased(c.lease, Event("job-a", 1, "planning"), {}, false).ok());
  // The same write again (its answer was lost): stored once.
  ASSERT_TRUE(store.AppendLeased(c.lease, Event("job-a", 1, "planning"), {}, false).ok());
  EXPECT_EQ(store.Events("job-a", 0, 0)->size(), 1u);
  // A gap is refused.
  EXPECT_EQ(store.AppendLeased(c.lease, Event("job-a", 3, "testing"), {}, false).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.AppendLeased({"nope", c.lease.token}, Event("nope", 1, "x"), {}, false).code(),
            absl::StatusCode::kNotFound);
  // The final event ends the lease: a retry of it is fine, a later event is not.
  anima::v1::SelfCodingResult result = Result(kSucceeded);
  JobUpdate done{.status = kSucceeded, .attempts = 1, .result = result, .checkpoint = {}};
  ASSERT_TRUE(store.AppendLeased(c.lease, Event("job-a", 2, "succeeded"), done, false).ok());
  ASSERT_TRUE(store.AppendLeased(c.lease, Event("job-a", 2, "succeeded"), done, false).ok());
  EXPECT_EQ(store.AppendLeased(c.lease, Event("job-a", 3, "late"), {}, false).code(),
            absl::StatusCode::kAborted);
  EXPECT_TRUE(store.Heartbeat(c.lease, 60s)->lost);
  auto job = store.Get("job-a");
  EXPECT_EQ(job->status, kSucceeded);
  EXPECT_EQ(job->last_seq, 2);
  ASSERT_TRUE(job->result.has_value());
  EXPECT_FALSE(store.Claim("w", 60s)->has_value());
}

TYPED_TEST(JobStoreContract, HeartbeatsKeepTheLeaseAndReleaseGivesTheJobBack) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("job-a", 1)).ok());
  ClaimedJob c = this->ClaimSoon(store, "w", 400ms);
  // Renewed every 50 ms for well over the lease: nobody else may take it meanwhile.
  auto until = std::chrono::steady_clock::now() + 1500ms;
  while (std::chrono::steady_clock::now() < until) {
    auto beat = store.Heartbeat(c.lease, 400ms);
    ASSERT_TRUE(beat.ok()) << beat.status();
    ASSERT_FALSE(beat->lost);
    auto other = store.Claim("thief", 60s);
    ASSERT_TRUE(other.ok());
    ASSERT_FALSE(other->has_value()) << "claimed while its lease was being renewed";
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(store
                  .AppendLeased(c.lease, Event("job-a", 1, "planning"),
                                {.status = {}, .attempts = 1, .result = {}, .checkpoint = {}},
                                false)
                  .ok());
  // Given back: queued again, the lease gone, and the next claim is not a reclaim.
  ASSERT_TRUE(store.AppendLeased(c.lease, Event("job-a", 2, "queued"), {}, /*release=*/true).ok());
  EXPECT_EQ(store.Get("job-a")->status, kQueued);
  EXPECT_TRUE(store.Heartbeat(c.lease, 60s)->lost);
  ClaimedJob next = this->ClaimSoon(store, "w2");
  EXPECT_EQ(next.job.job_id, "job-a");
  EXPECT_FALSE(next.reclaimed);
  EXPECT_EQ(next.job.reclaims, 0);
  EXPECT_EQ(next.job.attempts, 1);
  EXPECT_EQ(next.job.last_seq, 2);
}

TYPED_TEST(JobStoreContract, CancelEndsQueuedJobsAtOnceAndFlagsRunningOnes) {
  JobStore& store = *this->store_;
  ASSERT_TRUE(store.Create(NewJob("queued", 1)).ok());
  ASSERT_TRUE(store.Append("queued", Event("queued", 1, "queued"), {}).ok());
  anima::v1::SelfCodingProgress cancelled = Event("", 0, "cancelled");
  auto out = store.RequestCancel("queued", cancelled, Result(kCancelled));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, CancelOutcome::Kind::kEnded);
  EXPECT_EQ(out->job.status, kCancelled);
  ASSERT_TRUE(out->job.result.has_value());
  EXPECT_EQ(out->job.result->job_id(), "queued");
  auto events = store.Events("queued", 0, 0);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].seq(), 2);
  EXPECT_EQ((*events)[1].stage(), "cancelled");
  EXPECT_EQ(store.RequestCancel("queued", cancelled, Result(kCancelled))->kind,
            CancelOutcome::Kind::kFinal);
  EXPECT_EQ(store.RequestCancel("nope", cancelled, Result(kCancelled)).status().code(),
            absl::StatusCode::kNotFound);

  ASSERT_TRUE(store.Create(NewJob("running", 2)).ok());
  ClaimedJob c = this->ClaimSoon(store, "w");
  EXPECT_FALSE(store.Heartbeat(c.lease, 60s)->cancel_requested);
  out = store.RequestCancel("running", cancelled, Result(kCancelled));
  EXPECT_EQ(out->kind, CancelOutcome::Kind::kRequested);
  EXPECT_EQ(out->job.status, kRunning);
  EXPECT_TRUE(store.Heartbeat(c.lease, 60s)->cancel_requested);
  EXPECT_TRUE(store.Get("running")->cancel_requested);
}

TYPED_TEST(JobStoreContract, ChangesArePublished) {
  JobStore& store = *this->store_;
  ChangeLog log(&store);
  anima::v1::SelfCodingProgress first = Event("job-a", 1, "queued");
  ASSERT_TRUE(store.Create(NewJob("job-a", 1), &first, nullptr).ok());
  EXPECT_TRUE(log.Saw(JobChange::Kind::kQueued, "job-a"));
  EXPECT_TRUE(log.Saw(JobChange::Kind::kEvent, "job-a"));
  EXPECT_EQ(this->ClaimSoon(store, "w").job.job_id, "job-a");
  ASSERT_TRUE(store.RequestCancel("job-a", Event("", 0, "cancelled"), Result(kCancelled)).ok());
  EXPECT_TRUE(log.Saw(JobChange::Kind::kCancelRequested, "job-a"));
}

TYPED_TEST(JobStoreContract, StoresOpenedAtOnceOnFreshDataMigrateOnce) {
  TypeParam fresh;  // nothing opened it yet: its schema is made by the first of these
  ASSERT_TRUE(fresh.Ready());
  std::vector<std::future<absl::StatusOr<std::unique_ptr<JobStore>>>> opening;
  for (int i = 0; i < 4; ++i) {
    opening.push_back(std::async(std::launch::async, [&fresh] { return fresh.Open(); }));
  }
  std::vector<std::unique_ptr<JobStore>> stores;
  for (auto& f : opening) {
    auto store = f.get();
    ASSERT_TRUE(store.ok()) << store.status();
    stores.push_back(std::move(*store));
  }
  ASSERT_TRUE(stores[1]->Create(NewJob("job-a", 1)).ok());
  EXPECT_EQ(stores[3]->Get("job-a")->job_id, "job-a");
}

// What only a shared backend can promise: other replicas hear of changes, and a claim passes
// over a row another transaction holds instead of waiting for it.
class PostgresJobStoreTest : public JobStoreContract<PostgresBackend> {};

TEST_F(PostgresJobStoreTest, ChangesReachOtherReplicas) {
  auto other = this->Another();
  ChangeLog log(other.get());  // Open() returned once it was listening
  anima::v1::SelfCodingProgress first = Event("job-a", 1, "queued");
  ASSERT_TRUE(store_->Create(NewJob("job-a", 1), &first, nullptr).ok());
  EXPECT_TRUE(log.Saw(JobChange::Kind::kQueued, "job-a"));
  EXPECT_TRUE(log.Saw(JobChange::Kind::kEvent, "job-a"));
  EXPECT_EQ(ClaimSoon(*store_, "w").job.job_id, "job-a");
  ASSERT_TRUE(store_->RequestCancel("job-a", Event("", 0, "cancelled"), Result(kCancelled)).ok());
  EXPECT_TRUE(log.Saw(JobChange::Kind::kCancelRequested, "job-a"));
}

TEST_F(PostgresJobStoreTest, AClaimSkipsARowAnotherTransactionHolds) {
  ASSERT_TRUE(store_->Create(NewJob("first", 1)).ok());
  ASSERT_TRUE(store_->Create(NewJob("second", 2)).ok());
  auto client = store::PostgresClient::Create(testing::TestOptions(backend_.url()), nullptr);
  ASSERT_TRUE(client.ok());
  std::promise<void> locked, release;
  std::thread holder([&] {
    auto s = (*client)->Transaction("hold", [&](store::PgSession& tx) -> absl::Status {
      auto r = tx.Query("SELECT job_id FROM selfcoding_jobs WHERE job_id = 'first' FOR UPDATE");
      if (!r.ok()) return r.status();
      locked.set_value();
      release.get_future().wait();
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
  });
  locked.get_future().wait();
  // Not blocked behind the lock (the client's timeouts would fail it): the next job instead.
  auto c = store_->Claim("w", 60s);
  release.set_value();
  holder.join();
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->job.job_id, "second");
}

TEST_F(PostgresJobStoreTest, RecordsItsSchemaVersionAndRefusesANewerOne) {
  auto client = store::PostgresClient::Create(testing::TestOptions(backend_.url()), nullptr);
  ASSERT_TRUE(client.ok());
  auto rows = (*client)->Query(
      "test", "SELECT version FROM schema_migrations WHERE component = 'selfcoding'");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), PostgresJobStore::SchemaVersion());
  ASSERT_TRUE((*client)
                  ->Query("test",
                          "INSERT INTO schema_migrations (component, version) "
                          "VALUES ('selfcoding', 99)")
                  .ok());
  auto store = this->backend_.Open();
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_NE(store.status().message().find("99"), std::string::npos) << store.status();
}

}  // namespace
}  // namespace anima::selfcoding
