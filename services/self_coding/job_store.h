#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "anima/v1/self_coding.pb.h"
#include "services/common/identity.h"

namespace anima::selfcoding {

// Job statuses as stored and reported: queued and running are live; the others are final.
inline constexpr char kQueued[] = "queued";
inline constexpr char kRunning[] = "running";
inline constexpr char kSucceeded[] = "succeeded";
inline constexpr char kFailed[] = "failed";
inline constexpr char kCancelled[] = "cancelled";

bool IsFinalStatus(const std::string& status);

// One job as stored: who submitted it, the request, where it is, and its result once ended.
struct JobRecord {
  std::string job_id;
  std::string principal = common::kLocalPrincipal;
  std::string status;
  anima::v1::SubmitRequest spec;
  int attempts = 0;
  int64_t last_seq = 0;
  std::string created_at;  // RFC 3339
  std::string updated_at;
  int64_t created_unix_ms = 0;
  std::optional<anima::v1::SelfCodingResult> result;  // set once the job has ended
};

// What an appended event changes on its job, in the same transaction as the event.
struct JobUpdate {
  std::optional<std::string> status;
  std::optional<int> attempts;
  std::optional<anima::v1::SelfCodingResult> result;
};

struct ListQuery {
  int limit = 50;      // 0: no limit
  std::string status;  // empty: any
  bool oldest_first = false;
  std::string principal;  // empty: every principal's
};

inline constexpr int64_t kDayMs = 24 * 3600 * 1000;
// The UTC day of a Unix time in ms (days since 1970-01-01), the unit of the per-day job count.
inline int64_t UtcDayOf(int64_t unix_ms) { return unix_ms / kDayMs; }

// Durable jobs and their progress events. An event is stored before anyone is told about it, so
// a watcher that reconnects with the last seq it saw gets exactly what it missed. Thread-safe.
class JobStore {
 public:
  virtual ~JobStore() = default;

  // Stores a new job (principal, status, spec, created_at set by the caller) and counts it for
  // its principal's UTC day of created_unix_ms, in one transaction. AlreadyExists on a duplicate.
  virtual absl::Status Create(const JobRecord& job) = 0;
  // How many jobs `principal` created on UTC day `utc_day` (UtcDayOf). Pruning jobs does not
  // lower it: the count is kept apart from the jobs, for the current and the previous day.
  virtual absl::StatusOr<int64_t> CreatedOn(const std::string& principal, int64_t utc_day) = 0;
  // Appends `event` (its seq must be the job's last_seq + 1) and applies `update`, atomically.
  // NotFound for an unknown job, FailedPrecondition when the seq is not the next one.
  virtual absl::Status Append(const std::string& job_id, const anima::v1::SelfCodingProgress& event,
                              const JobUpdate& update) = 0;
  virtual absl::StatusOr<JobRecord> Get(const std::string& job_id) = 0;
  // Events with seq > after_seq in seq order, at most `limit` (0: all).
  virtual absl::StatusOr<std::vector<anima::v1::SelfCodingProgress>> Events(
      const std::string& job_id, int64_t after_seq, int limit) = 0;
  // Newest first unless query.oldest_first.
  virtual absl::StatusOr<std::vector<JobRecord>> List(const ListQuery& query) = 0;
  // Deletes ended jobs (and their events) created before `now - max_age`, and the oldest ended
  // jobs beyond `max_jobs` in total, and the per-day counts of days before yesterday. Returns the
  // ids removed.
  virtual absl::StatusOr<std::vector<std::string>> Prune(std::chrono::milliseconds max_age,
                                                         int max_jobs, int64_t now_unix_ms) = 0;
  // A cheap query that proves the store answers (for introspection).
  virtual absl::Status Ping() = 0;
};

}  // namespace anima::selfcoding
