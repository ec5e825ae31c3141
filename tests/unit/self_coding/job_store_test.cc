#include <gtest/gtest.h>
#include <sqlite3.h>

#include "services/self_coding/sqlite_job_store.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

using testing::TempDir;

JobRecord NewJob(const std::string& id, int64_t created_ms, const std::string& status = kQueued,
                 const std::string& principal = "local") {
  JobRecord job;
  job.job_id = id;
  job.principal = principal;
  job.status = status;
  job.spec.set_task("task of " + id);
  job.spec.set_language("python");
  job.created_at = "2026-11-25T10:00:00.000Z";
  job.created_unix_ms = created_ms;
  return job;
}

anima::v1::SelfCodingProgress Event(const std::string& id, int64_t seq, const std::string& stage) {
  anima::v1::SelfCodingProgress e;
  e.set_job_id(id);
  e.set_seq(seq);
  e.set_stage(stage);
  e.set_percent(static_cast<int>(seq * 10));
  e.set_message("message " + std::to_string(seq));
  e.set_ts("2026-11-25T10:00:0" + std::to_string(seq % 10) + ".000Z");
  return e;
}

TEST(SqliteJobStore, EventsRoundTripAndReplayAfterAnySeq) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Create(NewJob("job-a", 1)).ok());
  const char* stages[] = {"queued", "planning", "generating", "writing", "testing"};
  for (int i = 0; i < 5; ++i) {
    JobUpdate update;
    if (i == 1) update.status = kRunning;
    update.attempts = 1;
    ASSERT_TRUE((*store)->Append("job-a", Event("job-a", i + 1, stages[i]), update).ok());
  }
  for (int after = 0; after <= 5; ++after) {
    auto events = (*store)->Events("job-a", after, 0);
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), static_cast<size_t>(5 - after));
    for (size_t i = 0; i < events->size(); ++i) {
      EXPECT_EQ((*events)[i].seq(), after + 1 + static_cast<int64_t>(i));
      EXPECT_EQ((*events)[i].stage(), stages[after + i]);
      EXPECT_EQ((*events)[i].message(), "message " + std::to_string(after + 1 + i));
    }
  }
  auto job = (*store)->Get("job-a");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->status, kRunning);
  EXPECT_EQ(job->last_seq, 5);
  EXPECT_EQ(job->spec.task(), "task of job-a");
  EXPECT_FALSE(job->result.has_value());
}

TEST(SqliteJobStore, RejectsOutOfOrderSeqAndUnknownJobs) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Create(NewJob("job-a", 1)).ok());
  EXPECT_EQ((*store)->Append("job-a", Event("job-a", 2, "queued"), {}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*store)->Append("nope", Event("nope", 1, "queued"), {}).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->Create(NewJob("job-a", 1)).code(), absl::StatusCode::kAlreadyExists);
}

TEST(SqliteJobStore, ResultAndEventsSurviveReopening) {
  TempDir dir;
  std::string path = dir.path() + "/jobs.db";
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Create(NewJob("job-a", 1)).ok());
    ASSERT_TRUE((*store)->Append("job-a", Event("job-a", 1, "queued"), {}).ok());
    anima::v1::SelfCodingResult result;
    result.set_job_id("job-a");
    result.set_status(kSucceeded);
    result.set_attempts(2);
    (*result.mutable_files())["solution.py"] = "x = 1\n";
    JobUpdate update{.status = kSucceeded, .attempts = 2, .result = result};
    ASSERT_TRUE((*store)->Append("job-a", Event("job-a", 2, "succeeded"), update).ok());
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto job = (*store)->Get("job-a");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->status, kSucceeded);
  EXPECT_EQ(job->attempts, 2);
  ASSERT_TRUE(job->result.has_value());
  EXPECT_EQ(job->result->files().at("solution.py"), "x = 1\n");
  EXPECT_EQ((*store)->Events("job-a", 0, 0)->size(), 2u);
}

TEST(SqliteJobStore, ListsNewestFirstAndByStatus) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Create(NewJob("job-1", 100)).ok());
  ASSERT_TRUE((*store)->Create(NewJob("job-2", 200, kRunning)).ok());
  ASSERT_TRUE((*store)->Create(NewJob("job-3", 300)).ok());
  auto all = (*store)->List({.limit = 0, .status = "", .oldest_first = false, .principal = ""});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].job_id, "job-3");
  auto queued =
      (*store)->List({.limit = 10, .status = kQueued, .oldest_first = true, .principal = ""});
  ASSERT_EQ(queued->size(), 2u);
  EXPECT_EQ((*queued)[0].job_id, "job-1");
  EXPECT_EQ(
      (*store)->List({.limit = 1, .status = "", .oldest_first = false, .principal = ""})->size(),
      1u);
}

TEST(SqliteJobStore, PrunesEndedJobsByAgeAndCountButNeverLiveOnes) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  const int64_t now = 1'000'000'000;
  const int64_t day = 24 * 3600 * 1000;
  ASSERT_TRUE((*store)->Create(NewJob("old-ended", now - 10 * day, kFailed)).ok());
  ASSERT_TRUE((*store)->Append("old-ended", Event("old-ended", 1, "failed"), {}).ok());
  ASSERT_TRUE((*store)->Create(NewJob("old-queued", now - 10 * day, kQueued)).ok());
  for (int i = 0; i < 5; ++i) {
    std::string id = "recent-" + std::to_string(i);
    ASSERT_TRUE((*store)->Create(NewJob(id, now - 1000 + i, kSucceeded)).ok());
  }
  auto pruned = (*store)->Prune(std::chrono::hours(24 * 7), 4, now);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  // The old ended job by age; then the oldest ended ones until 4 jobs remain.
  ASSERT_EQ(pruned->size(), 3u);
  EXPECT_EQ((*pruned)[0], "old-ended");
  EXPECT_EQ((*pruned)[1], "recent-0");
  EXPECT_EQ((*pruned)[2], "recent-1");
  EXPECT_EQ((*store)->Get("old-ended").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*store)->Events("old-ended", 0, 0)->empty());
  EXPECT_TRUE((*store)->Get("old-queued").ok());
  EXPECT_EQ(
      (*store)->List({.limit = 0, .status = "", .oldest_first = false, .principal = ""})->size(),
      4u);
}

constexpr int64_t kDay = 24 * 3600 * 1000;

TEST(SqliteJobStore, JobsKeepTheirPrincipalAndListFiltersByIt) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Create(NewJob("job-1", 100, kQueued, "alice")).ok());
  ASSERT_TRUE((*store)->Create(NewJob("job-2", 200, kQueued, "bob")).ok());
  ASSERT_TRUE((*store)->Create(NewJob("job-3", 300, kRunning, "alice")).ok());
  EXPECT_EQ((*store)->Get("job-2")->principal, "bob");
  auto alices =
      (*store)->List({.limit = 0, .status = "", .oldest_first = false, .principal = "alice"});
  ASSERT_EQ(alices->size(), 2u);
  EXPECT_EQ((*alices)[0].job_id, "job-3");
  EXPECT_EQ((*alices)[0].principal, "alice");
  EXPECT_EQ((*alices)[1].job_id, "job-1");
  auto queued =
      (*store)->List({.limit = 0, .status = kQueued, .oldest_first = false, .principal = "alice"});
  ASSERT_EQ(queued->size(), 1u);
  EXPECT_EQ((*queued)[0].job_id, "job-1");
  EXPECT_EQ(
      (*store)->List({.limit = 0, .status = "", .oldest_first = false, .principal = ""})->size(),
      3u);
  EXPECT_TRUE((*store)
                  ->List({.limit = 0, .status = "", .oldest_first = false, .principal = "carol"})
                  ->empty());
}

TEST(SqliteJobStore, CountsJobsPerPrincipalAndUtcDayAndPruningKeepsTheCount) {
  auto store = SqliteJobStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  const int64_t today = 20000;
  // The last ms of yesterday, the first and the last of today, and one job of bob.
  ASSERT_TRUE((*store)->Create(NewJob("a-0", today * kDay - 1, kSucceeded, "alice")).ok());
  ASSERT_TRUE((*store)->Create(NewJob("a-1", today * kDay, kSucceeded, "alice")).ok());
  ASSERT_TRUE((*store)->Create(NewJob("a-2", (today + 1) * kDay - 1, kFailed, "alice")).ok());
  ASSERT_TRUE((*store)->Create(NewJob("b-1", today * kDay + 5, kQueued, "bob")).ok());
  EXPECT_EQ(*(*store)->CreatedOn("alice", today - 1), 1);
  EXPECT_EQ(*(*store)->CreatedOn("alice", today), 2);
  EXPECT_EQ(*(*store)->CreatedOn("bob", today), 1);
  EXPECT_EQ(*(*store)->CreatedOn("carol", today), 0);
  // A duplicate is refused and not counted.
  EXPECT_EQ((*store)->Create(NewJob("a-1", today * kDay, kQueued, "alice")).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*(*store)->CreatedOn("alice", today), 2);

  // Pruning every ended job leaves today's count as it was.
  auto pruned = (*store)->Prune(std::chrono::hours(24 * 7), 1, today * kDay + 10);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->size(), 3u);
  EXPECT_EQ(*(*store)->CreatedOn("alice", today), 2);
  // Two days later, the counts of days before yesterday are gone.
  ASSERT_TRUE((*store)->Prune(std::chrono::hours(24 * 7), 0, (today + 2) * kDay).ok());
  EXPECT_EQ(*(*store)->CreatedOn("alice", today), 0);
}

// Runs `sql` on the file at `path` with the SQLite API, as an older build would have.
void RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

TEST(SqliteJobStore, UpgradesAFileOfTheSchemaBeforePrincipals) {
  TempDir dir;
  std::string path = dir.path() + "/jobs.db";
  anima::v1::SubmitRequest spec;
  spec.set_task("old task");
  spec.set_language("python");
  std::string spec_hex;
  for (unsigned char c : spec.SerializeAsString()) {
    static constexpr char kHex[] = "0123456789abcdef";
    spec_hex += kHex[c >> 4];
    spec_hex += kHex[c & 15];
  }
  // The schema as the previous release created it (no user_version), with one job.
  RawExec(path,
          R"sql(
CREATE TABLE jobs (
  job_id TEXT PRIMARY KEY, status TEXT NOT NULL, spec BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, created_unix_ms INTEGER NOT NULL,
  result BLOB);
CREATE INDEX jobs_by_status ON jobs(status, created_unix_ms);
CREATE INDEX jobs_by_time ON jobs(created_unix_ms);
CREATE TABLE events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
INSERT INTO jobs (job_id, status, spec, attempts, last_seq, created_at, updated_at,
  created_unix_ms) VALUES ('job-old', 'queued', x')sql" +
              spec_hex +
              R"sql(', 0, 0, '2026-11-25T10:00:00.000Z', '2026-11-25T10:00:00.000Z', 1728000000123);
)sql");
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto job = (*store)->Get("job-old");
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->principal, "local");
    EXPECT_EQ(job->spec.task(), "old task");
    EXPECT_EQ(*(*store)->CreatedOn("local", UtcDayOf(1728000000123)), 1);
    ASSERT_TRUE((*store)->Append("job-old", Event("job-old", 1, "queued"), {}).ok());
    ASSERT_TRUE((*store)->Create(NewJob("job-new", 1728000000500, kQueued, "alice")).ok());
  }
  // Opening the upgraded file again changes nothing.
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Get("job-new")->principal, "alice");
  EXPECT_EQ((*store)->Get("job-old")->last_seq, 1);
  EXPECT_EQ(*(*store)->CreatedOn("local", UtcDayOf(1728000000123)), 1);
  EXPECT_EQ((*store)
                ->List({.limit = 0, .status = "", .oldest_first = false, .principal = "local"})
                ->size(),
            1u);
}

TEST(SqliteJobStore, RefusesAFileFromANewerBuild) {
  TempDir dir;
  std::string path = dir.path() + "/jobs.db";
  ASSERT_TRUE(SqliteJobStore::Open(path).ok());
  RawExec(path, "PRAGMA user_version = 99");
  auto store = SqliteJobStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("99"), std::string::npos) << store.status();
}

}  // namespace
}  // namespace anima::selfcoding
