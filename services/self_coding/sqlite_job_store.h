#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "services/self_coding/job_change_hub.h"
#include "services/self_coding/job_store.h"

struct sqlite3;

namespace anima::selfcoding {

// JobStore on one SQLite file in WAL mode, the embedded default for one replica. One
// connection, serialised by a mutex: jobs write a handful of events a second, far below what
// one connection sustains. Leases are measured on this host's clock; changes are published in
// process, after the transaction that made them has committed.
class SqliteJobStore : public JobStore {
 public:
  // Opens (creating if needed) `path` and upgrades its schema; ":memory:" works for tests.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;

  using JobStore::Create;
  absl::Status Create(const JobRecord& job, const anima::v1::SelfCodingProgress* first_event,
                      const AdmitFn& admit) override;
  absl::StatusOr<int64_t> CreatedOn(const std::string& principal, int64_t utc_day) override;
  absl::StatusOr<AdmissionCounts> Counts(const std::string& principal, int64_t utc_day) override;
  absl::Status Append(const std::string& job_id, const anima::v1::SelfCodingProgress& event,
                      const JobUpdate& update) override;
  absl::StatusOr<std::optional<ClaimedJob>> Claim(const std::string& worker_id,
                                                  std::chrono::milliseconds lease) override;
  absl::StatusOr<HeartbeatReply> Heartbeat(const Lease& lease,
                                           std::chrono::milliseconds lease_for) override;
  absl::Status AppendLeased(const Lease& lease, const anima::v1::SelfCodingProgress& event,
                            const JobUpdate& update, bool release) override;
  absl::StatusOr<CancelOutcome> RequestCancel(const std::string& job_id,
                                              const anima::v1::SelfCodingProgress& event,
                                              const anima::v1::SelfCodingResult& result) override;
  absl::StatusOr<JobRecord> Get(const std::string& job_id) override;
  absl::StatusOr<std::vector<anima::v1::SelfCodingProgress>> Events(const std::string& job_id,
                                                                    int64_t after_seq,
                                                                    int limit) override;
  absl::StatusOr<std::vector<JobRecord>> List(const ListQuery& query) override;
  absl::StatusOr<std::vector<std::string>> Prune(std::chrono::milliseconds max_age, int max_jobs,
                                                 int64_t now_unix_ms) override;
  absl::Status Ping() override;
  StoreHealth Health() override;
  int Subscribe(std::function<void(const JobChange&)> fn) override { return hub_.Subscribe(fn); }
  void Unsubscribe(int id) override { hub_.Unsubscribe(id); }

 private:
  SqliteJobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status Exec(const char* sql);
  // Brings the schema to the version this build knows (PRAGMA user_version); FailedPrecondition
  // for a file written by a newer build.
  absl::Status Migrate();
  absl::StatusOr<JobRecord> GetLocked(const std::string& job_id);
  absl::Status DeleteJobLocked(const std::string& job_id);
  // Inserts `event` and moves the job to it with `update`, inside the caller's transaction.
  absl::Status WriteEventLocked(const JobRecord& job, const anima::v1::SelfCodingProgress& event,
                                const JobUpdate& update, bool release);
  absl::StatusOr<int64_t> NextTurnLocked();
  absl::StatusOr<AdmissionCounts> CountsLocked(const std::string& principal, int64_t utc_day);
  // Runs `body` in BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error). Caller holds mu_.
  absl::Status InTransaction(const std::function<absl::Status()>& body);

  std::mutex mu_;
  sqlite3* db_;
  const std::string path_;
  JobChangeHub hub_;
};

}  // namespace anima::selfcoding
