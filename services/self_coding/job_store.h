#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
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
  // Where a re-run resumes (the pipeline's checkpoint, pipeline.h); empty before the first retry.
  std::string checkpoint;
  // Times a worker holding the job was lost (its lease expired and the job was claimed again).
  int reclaims = 0;
  bool cancel_requested = false;  // a Cancel came while it was running
};

// What an appended event changes on its job, in the same transaction as the event.
struct JobUpdate {
  std::optional<std::string> status;
  std::optional<int> attempts;
  std::optional<anima::v1::SelfCodingResult> result;
  std::optional<std::string> checkpoint;
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

// What admission control decides on, read in the transaction that stores the new job, so that
// limits hold across every replica sharing the store.
struct AdmissionCounts {
  int64_t queued = 0;               // queued jobs, every principal's
  int64_t running = 0;              // running jobs, every principal's
  int64_t principal_queued = 0;     // the submitting principal's queued jobs
  int64_t principal_in_flight = 0;  // ... queued or running
  int64_t principal_today = 0;      // ... created on the new job's UTC day, before this one
};
// Decides on a new job from the counts: OK stores it, an error is returned to the caller and
// nothing is stored. It may fill in the first event (its message). Runs inside the store's
// transaction: pure computation only, no I/O, no locks.
using AdmitFn = std::function<absl::Status(const AdmissionCounts& counts,
                                           anima::v1::SelfCodingProgress& first_event)>;

// The right of one worker to run one job and write its events: the claim's fencing token.
// Another claim of the job (after the lease expired) makes a new token; writes with the old one
// are refused, so a worker that lost its lease (a network partition, a long pause) cannot fork
// the job's event stream.
struct Lease {
  std::string job_id;
  std::string token;
};

struct ClaimedJob {
  JobRecord job;  // as stored by the claim: running, reclaims and cancel_requested current
  Lease lease;
  bool reclaimed = false;  // it was running under a lease that had expired
  int last_percent = 0;    // of its last event, so that percent never goes down
};

struct HeartbeatReply {
  bool lost = false;              // another worker holds the job now, or it has ended
  bool cancel_requested = false;  // the job is to end cancelled
};

// What RequestCancel did.
struct CancelOutcome {
  enum class Kind {
    kEnded,      // the job was queued: it ended cancelled now (`job` has the result)
    kRequested,  // the job is running: its worker was asked to stop it
    kFinal,      // the job had already ended (`job.status`)
  };
  Kind kind = Kind::kFinal;
  JobRecord job;
};

// A change other parties may wait for; delivered to Subscribe()rs on any replica sharing the
// store (PostgreSQL: LISTEN/NOTIFY; SQLite: in process).
struct JobChange {
  enum class Kind {
    kEvent,            // job_id has a new event (and maybe a new status)
    kQueued,           // a job was queued (new, or given back): a claim may find it
    kCancelRequested,  // job_id, running, is to be cancelled
    kResync,           // notifications may have been lost: re-read whatever you follow
  };
  Kind kind = Kind::kEvent;
  std::string job_id;
};

// The store's health for introspection, known without a round trip.
struct StoreHealth {
  enum class Level { kHealthy, kDegraded, kDown };
  Level level = Level::kHealthy;
  std::string detail;  // names the backend
};

// Durable jobs, their progress events, and the queue that workers on every replica claim from.
// An event is stored before anyone is told about it, so a watcher that reconnects with the last
// seq it saw gets exactly what it missed. Thread-safe. Calls may block on the network (bounded):
// call them from worker threads, never from a gRPC callback.
//
// Errors common to every call: Unavailable or DeadlineExceeded when the backend cannot be
// reached in time (retry later; for a write the outcome is then unknown, which is why fenced
// appends are idempotent).
class JobStore {
 public:
  virtual ~JobStore() = default;

  // Stores a new job (principal, status, spec, created_at set by the caller), counts it for its
  // principal's UTC day of created_unix_ms and, when given, stores `first_event` (seq 1), all in
  // one transaction; `admit`, when given, decides first (see AdmitFn). AlreadyExists on a
  // duplicate id. A queued job wakes claimers (JobChange::kQueued).
  virtual absl::Status Create(const JobRecord& job,
                              const anima::v1::SelfCodingProgress* first_event,
                              const AdmitFn& admit) = 0;
  absl::Status Create(const JobRecord& job) { return Create(job, nullptr, nullptr); }
  // How many jobs `principal` created on UTC day `utc_day` (UtcDayOf). Pruning jobs does not
  // lower it: the count is kept apart from the jobs, for the current and the previous day.
  virtual absl::StatusOr<int64_t> CreatedOn(const std::string& principal, int64_t utc_day) = 0;
  // The admission counts for `principal` on `utc_day`, outside any transaction (for stats).
  virtual absl::StatusOr<AdmissionCounts> Counts(const std::string& principal, int64_t utc_day) = 0;

  // Appends `event` (its seq must be the job's last_seq + 1) and applies `update`, atomically,
  // without a lease (tools and tests; workers use AppendLeased). NotFound for an unknown job,
  // FailedPrecondition when the seq is not the next one.
  virtual absl::Status Append(const std::string& job_id, const anima::v1::SelfCodingProgress& event,
                              const JobUpdate& update) = 0;

  // Takes the next job for `worker_id` and leases it for `lease` (measured on the store's clock,
  // never the worker's): a running job whose lease has expired (its worker died) first, else a
  // queued one, principals served round robin (the principal whose turn came longest ago: its
  // last claim, or when it joined the line with nothing waiting; then its oldest job). Sets
  // running, the lease and, for an expired one, reclaims + 1, atomically; two claimers never get
  // the same job. nullopt when there is nothing to do.
  virtual absl::StatusOr<std::optional<ClaimedJob>> Claim(const std::string& worker_id,
                                                          std::chrono::milliseconds lease) = 0;
  // Extends the lease to `lease` from now (the store's clock). `lost` when the token no longer
  // holds the job (re-claimed, ended); `cancel_requested` when the job is to be cancelled.
  virtual absl::StatusOr<HeartbeatReply> Heartbeat(const Lease& lease,
                                                   std::chrono::milliseconds lease_for) = 0;
  // Appends `event` and applies `update` only while `lease` holds the job, in one transaction
  // that checks the lease. The event's seq must be last_seq + 1; a seq already stored under
  // this lease is a retry of a write whose answer was lost and succeeds without a second copy
  // (an idempotent write). A final status ends the lease; `release` gives the job back to the
  // queue (status queued, no lease, kQueued sent) for another worker to continue.
  // Aborted when the lease is lost (the job belongs to another worker or has ended);
  // FailedPrecondition for a gap in seq; NotFound for an unknown job.
  virtual absl::Status AppendLeased(const Lease& lease, const anima::v1::SelfCodingProgress& event,
                                    const JobUpdate& update, bool release) = 0;

  // Cancels a job: a queued one ends at once with `event` (its seq set to the next) and
  // `result`; a running one gets the cancel flag its worker sees (kCancelRequested, and the
  // next heartbeat), and ends cancelled by that worker. NotFound for an unknown job.
  virtual absl::StatusOr<CancelOutcome> RequestCancel(
      const std::string& job_id, const anima::v1::SelfCodingProgress& event,
      const anima::v1::SelfCodingResult& result) = 0;

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
  // A cheap query that proves the store answers.
  virtual absl::Status Ping() = 0;
  // The health seen by recent calls, without a round trip (for introspection).
  virtual StoreHealth Health() = 0;

  // Calls `fn` for every JobChange from now on, on a thread of the store's (or, in process, the
  // thread that made the change, after its transaction committed): it must be quick, must not
  // block and must not call Subscribe or Unsubscribe. Returns an id for Unsubscribe.
  virtual int Subscribe(std::function<void(const JobChange&)> fn) = 0;
  // Once this returns, the function is not running and never will again.
  virtual void Unsubscribe(int id) = 0;
};

}  // namespace anima::selfcoding
