#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "anima/v1/self_coding.pb.h"

namespace anima::selfcoding {

// Job statuses as stored and reported: queued and running are live; the others are final.
inline constexpr char kQueued[] = "queued";
inline constexpr char kRunning[] = "running";
inline constexpr char kSucceeded[] = "succeeded";
inline constexpr char kFailed[] = "failed";
inline constexpr char kCancelled[] = "cancelled";

bool IsFinalStatus(const std::string& status);

// One job as stored: the request it was submitted with, where it is, and its result once ended.
struct JobRecord {
  std::string job_id;
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
};

// Durable jobs and their progress events. An event is stored before anyone is told about it, so
// a watcher that reconnects with the last seq it saw gets exactly what it missed. Thread-safe.
class JobStore {
 public:
  virtual ~JobStore() = default;

  // Stores a new job (status, spec, created_at set by the caller). AlreadyExists on a duplicate.
  virtual absl::Status Create(const JobRecord& job) = 0;
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
  // jobs beyond `max_jobs` in total. Returns the ids removed.
  virtual absl::StatusOr<std::vector<std::string>> Prune(std::chrono::milliseconds max_age,
                                                         int max_jobs, int64_t now_unix_ms) = 0;
  // A cheap query that proves the store answers (for introspection).
  virtual absl::Status Ping() = 0;
};

}  // namespace anima::selfcoding
