// What only SQLite has: its file's schema versions. The JobStore contract both backends keep is
// job_store_contract_test.cc.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "services/self_coding/sqlite_job_store.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

using testing::Event;
using testing::NewJob;

using testing::TempDir;

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
  // The queue works on the upgraded file: the old job first, it was queued first.
  auto claimed = (*store)->Claim("w", std::chrono::seconds(60));
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_TRUE(claimed->has_value());
  EXPECT_EQ((*claimed)->job.job_id, "job-old");
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
