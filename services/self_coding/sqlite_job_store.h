#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "services/self_coding/job_store.h"

struct sqlite3;

namespace anima::selfcoding {

// JobStore on one SQLite file in WAL mode. One connection, serialised by a mutex: jobs write a
// handful of events a second, far below what one connection sustains.
class SqliteJobStore : public JobStore {
 public:
  // Opens (creating if needed) `path` and upgrades its schema; ":memory:" works for tests.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;

  absl::Status Create(const JobRecord& job) override;
  absl::StatusOr<int64_t> CreatedOn(const std::string& principal, int64_t utc_day) override;
  absl::Status Append(const std::string& job_id, const anima::v1::SelfCodingProgress& event,
                      const JobUpdate& update) override;
  absl::StatusOr<JobRecord> Get(const std::string& job_id) override;
  absl::StatusOr<std::vector<anima::v1::SelfCodingProgress>> Events(const std::string& job_id,
                                                                    int64_t after_seq,
                                                                    int limit) override;
  absl::StatusOr<std::vector<JobRecord>> List(const ListQuery& query) override;
  absl::StatusOr<std::vector<std::string>> Prune(std::chrono::milliseconds max_age, int max_jobs,
                                                 int64_t now_unix_ms) override;
  absl::Status Ping() override;

 private:
  explicit SqliteJobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  // Brings the schema to the version this build knows (PRAGMA user_version); FailedPrecondition
  // for a file written by a newer build.
  absl::Status Migrate();
  absl::StatusOr<JobRecord> GetLocked(const std::string& job_id);
  absl::Status DeleteJobLocked(const std::string& job_id);

  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace anima::selfcoding
