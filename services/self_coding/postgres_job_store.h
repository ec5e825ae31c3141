#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "services/self_coding/job_change_hub.h"
#include "services/self_coding/job_store.h"
#include "services/store/postgres_client.h"

namespace anima::selfcoding {

// JobStore on PostgreSQL, shared by every replica of the service (tables selfcoding_jobs,
// selfcoding_events, selfcoding_job_days; docs/self-coding.md).
//
// - Claims are one statement: `SELECT ... FOR UPDATE SKIP LOCKED` picks the job (two claimers
//   never wait for each other nor get the same job), the UPDATE sets the lease, measured with
//   the database's now(), never a worker's clock.
// - Appends lock the job's row, check the lease's token and write the event with seq =
//   last_seq + 1 in that transaction: a worker that lost its lease cannot write.
// - Every change NOTIFYs in the transaction that makes it (channels selfcoding_event,
//   selfcoding_queue, selfcoding_cancel; payload the job id), so it is delivered exactly when it
//   commits; the LISTEN connection's reconnects become JobChange::kResync.
// - Admission (Create with an AdmitFn) holds a transaction-scoped advisory lock, so the counts it
//   decides on cannot change under it on another replica.
// - Migrations: a versioned list applied at Open in one transaction holding
//   pg_advisory_xact_lock, recorded in schema_migrations (component 'selfcoding'); two replicas
//   starting at once apply them once.
class PostgresJobStore : public JobStore {
 public:
  // Migrates the schema (FailedPrecondition for a database migrated by a newer build;
  // Unavailable when PostgreSQL cannot be reached) and starts listening: it returns once the
  // LISTENs are in effect (or after a few seconds, the listener then keeps trying), so that
  // changes made from then on reach its subscribers.
  static absl::StatusOr<std::unique_ptr<PostgresJobStore>> Open(
      std::unique_ptr<store::PostgresClient> client);
  ~PostgresJobStore() override;

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

  // The schema version this build migrates to.
  static int SchemaVersion();

 private:
  explicit PostgresJobStore(std::unique_ptr<store::PostgresClient> client)
      : client_(std::move(client)) {}
  absl::Status Migrate();
  absl::Status StartListening();

  std::unique_ptr<store::PostgresClient> client_;
  JobChangeHub hub_;
  std::vector<int> listens_;
  std::mutex listening_mu_;
  std::condition_variable listening_cv_;
  int listening_ = 0;  // channels whose LISTEN took effect at least once
};

}  // namespace anima::selfcoding
