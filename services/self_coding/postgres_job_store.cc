#include "services/self_coding/postgres_job_store.h"

#include <iterator>

#include "absl/strings/str_cat.h"
#include "services/common/process.h"
#include "services/store/postgres_migrations.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {
namespace {

using store::PgParam;
using store::PgRows;
using store::PgSession;

constexpr char kComponent[] = "selfcoding";
// The pg_advisory_xact_lock key Create takes (admission); migrations take the one before it
// (services/store/postgres_migrations.cc).
constexpr int64_t kAdmissionLock = 0x616e696d61000002;

constexpr char kEventChannel[] = "selfcoding_event";
constexpr char kQueueChannel[] = "selfcoding_queue";
constexpr char kCancelChannel[] = "selfcoding_cancel";

// kMigrations[i] takes the schema from version i to i + 1. Append only; never edit one that has
// shipped. Constant SQL only.
constexpr const char* kMigrations[] = {
    // 1: jobs, their events and the per-day counts, as in SQLite's schema version 2, with the
    // queue: leases (the database's clock), the fencing token, and one sequence for the turns
    // of principals (enqueue_seq when a job is queued, claim_seq when it is claimed).
    R"sql(
CREATE SEQUENCE selfcoding_turns;
CREATE TABLE selfcoding_jobs (
  job_id text PRIMARY KEY,
  principal text NOT NULL,
  status text NOT NULL,
  spec bytea NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  last_seq bigint NOT NULL DEFAULT 0,
  created_at text NOT NULL,
  updated_at text NOT NULL,
  created_unix_ms bigint NOT NULL,
  result bytea,
  checkpoint bytea,
  lease_owner text,
  lease_token text,
  lease_expires_at timestamptz,
  reclaims integer NOT NULL DEFAULT 0,
  cancel_requested boolean NOT NULL DEFAULT false,
  enqueue_seq bigint NOT NULL,
  claim_seq bigint NOT NULL DEFAULT 0
);
CREATE INDEX selfcoding_jobs_queue ON selfcoding_jobs (enqueue_seq) WHERE status = 'queued';
CREATE INDEX selfcoding_jobs_leases ON selfcoding_jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX selfcoding_jobs_by_status ON selfcoding_jobs (status, created_unix_ms);
CREATE INDEX selfcoding_jobs_by_time ON selfcoding_jobs (created_unix_ms);
CREATE INDEX selfcoding_jobs_by_principal ON selfcoding_jobs (principal, created_unix_ms);
CREATE INDEX selfcoding_jobs_turns ON selfcoding_jobs (principal, claim_seq);
CREATE TABLE selfcoding_events (
  job_id text NOT NULL REFERENCES selfcoding_jobs (job_id) ON DELETE CASCADE,
  seq bigint NOT NULL,
  body bytea NOT NULL,
  PRIMARY KEY (job_id, seq)
);
CREATE TABLE selfcoding_job_days (
  principal text NOT NULL,
  day bigint NOT NULL,
  created bigint NOT NULL,
  PRIMARY KEY (principal, day)
);
)sql",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

constexpr char kJobColumns[] =
    "job_id, status, spec, attempts, last_seq, created_at, updated_at, created_unix_ms, result, "
    "principal, checkpoint, reclaims, cancel_requested";
constexpr int kJobColumnCount = 13;

absl::StatusOr<JobRecord> ReadJob(const PgRows& rows, int row) {
  JobRecord job;
  job.job_id = rows.Bytes(row, 0);
  job.status = rows.Bytes(row, 1);
  if (!job.spec.ParseFromString(rows.Bytes(row, 2))) {
    return absl::DataLossError(absl::StrCat("job ", job.job_id, ": unreadable spec"));
  }
  job.attempts = static_cast<int>(rows.Int(row, 3));
  job.last_seq = rows.Int(row, 4);
  job.created_at = rows.Bytes(row, 5);
  job.updated_at = rows.Bytes(row, 6);
  job.created_unix_ms = rows.Int(row, 7);
  if (!rows.IsNull(row, 8)) {
    anima::v1::SelfCodingResult result;
    if (!result.ParseFromString(rows.Bytes(row, 8))) {
      return absl::DataLossError(absl::StrCat("job ", job.job_id, ": unreadable result"));
    }
    job.result = std::move(result);
  }
  job.principal = rows.Bytes(row, 9);
  job.checkpoint = rows.Bytes(row, 10);
  job.reclaims = static_cast<int>(rows.Int(row, 11));
  job.cancel_requested = rows.Bool(row, 12);
  return job;
}

absl::StatusOr<JobRecord> GetIn(PgSession& tx, const std::string& job_id, bool for_update) {
  auto rows = tx.Query(absl::StrCat("SELECT ", kJobColumns,
                                    " FROM selfcoding_jobs WHERE job_id = "
                                    "$1::text",
                                    for_update ? " FOR UPDATE" : ""),
                       {PgParam::Text(job_id)});
  if (!rows.ok()) return rows.status();
  if (rows->size() == 0) return absl::NotFoundError("unknown job " + job_id);
  return ReadJob(*rows, 0);
}

absl::StatusOr<AdmissionCounts> CountsIn(PgRows rows) {
  if (rows.size() != 1) return absl::InternalError("postgres: no counts");
  AdmissionCounts counts;
  counts.queued = rows.Int(0, 0);
  counts.running = rows.Int(0, 1);
  counts.principal_queued = rows.Int(0, 2);
  counts.principal_in_flight = rows.Int(0, 3);
  counts.principal_today = rows.Int(0, 4);
  return counts;
}

constexpr char kCountsSql[] =
    "SELECT (SELECT count(*) FROM selfcoding_jobs WHERE status = 'queued'), "
    "(SELECT count(*) FROM selfcoding_jobs WHERE status = 'running'), "
    "(SELECT count(*) FROM selfcoding_jobs WHERE status = 'queued' AND principal = $1::text), "
    "(SELECT count(*) FROM selfcoding_jobs WHERE status IN ('queued', 'running') "
    "  AND principal = $1::text), "
    "(SELECT COALESCE(max(created), 0) FROM selfcoding_job_days WHERE principal = $1::text "
    "  AND day = $2::bigint)";

// Inserts `event` and moves the job to it: one statement, in the caller's transaction, which
// also sends the notifications (delivered when it commits).
absl::Status WriteEvent(PgSession& tx, const JobRecord& job,
                        const anima::v1::SelfCodingProgress& event, const JobUpdate& update,
                        bool release) {
  std::string status = release ? std::string(kQueued) : update.status.value_or(job.status);
  // A final status or a release ends the lease; the token stays, so that a retry of this very
  // write by its worker is recognised.
  bool lease_ends = release || IsFinalStatus(status);
  auto rows = tx.Query(
      "WITH e AS (INSERT INTO selfcoding_events (job_id, seq, body) "
      "  VALUES ($1::text, $2::bigint, $3::bytea) RETURNING 1) "
      "UPDATE selfcoding_jobs SET last_seq = $2::bigint, status = $4::text, "
      "  attempts = $5::integer, updated_at = $6::text, result = COALESCE($7::bytea, result), "
      "  checkpoint = COALESCE($8::bytea, checkpoint), "
      "  lease_expires_at = CASE WHEN $9::boolean THEN NULL ELSE lease_expires_at END, "
      "  lease_owner = CASE WHEN $9::boolean THEN NULL ELSE lease_owner END "
      "WHERE job_id = $1::text AND EXISTS (SELECT 1 FROM e) "
      "RETURNING pg_notify('selfcoding_event', job_id)::text, "
      "  CASE WHEN $10::boolean THEN pg_notify('selfcoding_queue', job_id)::text END",
      {PgParam::Text(job.job_id), PgParam::Int(event.seq()),
       PgParam::Bytes(event.SerializeAsString()), PgParam::Text(status),
       PgParam::Int(update.attempts.value_or(job.attempts)),
       PgParam::Text(event.ts().empty() ? common::Rfc3339Now() : event.ts()),
       update.result ? PgParam::Bytes(update.result->SerializeAsString()) : PgParam::Null(),
       update.checkpoint ? PgParam::Bytes(*update.checkpoint) : PgParam::Null(),
       PgParam::Bool(lease_ends), PgParam::Bool(release || status == kQueued)});
  if (!rows.ok()) return rows.status();
  if (rows->size() != 1) return absl::InternalError("job " + job.job_id + ": event not stored");
  return absl::OkStatus();
}

absl::Status LeaseLost(const std::string& job_id) {
  return absl::AbortedError("job " + job_id +
                            ": the lease is lost (another worker holds the job, or it has ended)");
}

}  // namespace

int PostgresJobStore::SchemaVersion() { return kSchemaVersion; }

absl::StatusOr<std::unique_ptr<PostgresJobStore>> PostgresJobStore::Open(
    std::unique_ptr<store::PostgresClient> client) {
  std::unique_ptr<PostgresJobStore> store(new PostgresJobStore(std::move(client)));
  if (auto s = store->Migrate(); !s.ok()) return s;
  if (auto s = store->StartListening(); !s.ok()) return s;
  return store;
}

PostgresJobStore::~PostgresJobStore() {
  for (int id : listens_) client_->Unlisten(id);
}

absl::Status PostgresJobStore::Migrate() {
  static const store::Schema kSchema{
      kComponent, "the PostgreSQL job store", "anima-self-coding",
      std::vector<const char*>(std::begin(kMigrations), std::end(kMigrations))};
  return store::ApplyMigrations(*client_, kSchema);
}

absl::Status PostgresJobStore::StartListening() {
  auto to_hub = [this](JobChange::Kind kind) {
    return [this, kind, first = true](const store::PgNotification& n) mutable {
      if (n.resync && first) {
        first = false;
        std::lock_guard lock(listening_mu_);
        listening_++;
        listening_cv_.notify_all();
      }
      hub_.Publish({n.resync ? JobChange::Kind::kResync : kind, n.payload});
    };
  };
  const std::pair<const char*, JobChange::Kind> channels[] = {
      {kEventChannel, JobChange::Kind::kEvent},
      {kQueueChannel, JobChange::Kind::kQueued},
      {kCancelChannel, JobChange::Kind::kCancelRequested}};
  for (const auto& [channel, kind] : channels) {
    auto id = client_->Listen(channel, to_hub(kind));
    if (!id.ok()) return id.status();
    listens_.push_back(*id);
  }
  std::unique_lock lock(listening_mu_);
  if (!listening_cv_.wait_for(lock, std::chrono::seconds(5),
                              [&] { return listening_ == static_cast<int>(listens_.size()); })) {
    spdlog::warn(
        "PostgreSQL job store: not listening yet; changes on other replicas are noticed "
        "by polling until it is");
  }
  return absl::OkStatus();
}

absl::Status PostgresJobStore::Create(const JobRecord& job,
                                      const anima::v1::SelfCodingProgress* first_event,
                                      const AdmitFn& admit) {
  return client_->Transaction("create", [&](PgSession& tx) -> absl::Status {
    std::optional<anima::v1::SelfCodingProgress> event;
    if (first_event != nullptr) event = *first_event;
    if (admit) {
      // Every replica's admission waits here: the counts cannot change until COMMIT.
      if (auto s =
              tx.Query("SELECT pg_advisory_xact_lock($1::bigint)", {PgParam::Int(kAdmissionLock)});
          !s.ok()) {
        return s.status();
      }
      auto rows = tx.Query(
          kCountsSql, {PgParam::Text(job.principal), PgParam::Int(UtcDayOf(job.created_unix_ms))});
      if (!rows.ok()) return rows.status();
      auto counts = CountsIn(*rows);
      if (!counts.ok()) return counts.status();
      anima::v1::SelfCodingProgress scratch;
      if (auto s = admit(*counts, event ? *event : scratch); !s.ok()) return s;
    }
    auto inserted = tx.Query(
        "INSERT INTO selfcoding_jobs (job_id, principal, status, spec, attempts, last_seq, "
        "  created_at, updated_at, created_unix_ms, enqueue_seq) "
        "VALUES ($1::text, $2::text, $3::text, $4::bytea, $5::integer, $6::bigint, $7::text, "
        "  $8::text, $9::bigint, nextval('selfcoding_turns')) "
        "ON CONFLICT (job_id) DO NOTHING RETURNING job_id",
        {PgParam::Text(job.job_id), PgParam::Text(job.principal), PgParam::Text(job.status),
         PgParam::Bytes(job.spec.SerializeAsString()), PgParam::Int(job.attempts),
         PgParam::Int(event ? 0 : job.last_seq), PgParam::Text(job.created_at),
         PgParam::Text(job.updated_at.empty() ? job.created_at : job.updated_at),
         PgParam::Int(job.created_unix_ms)});
    if (!inserted.ok()) return inserted.status();
    if (inserted->size() == 0) return absl::AlreadyExistsError("job " + job.job_id + " exists");
    auto counted = tx.Query(
        "INSERT INTO selfcoding_job_days (principal, day, created) "
        "VALUES ($1::text, $2::bigint, 1) "
        "ON CONFLICT (principal, day) DO UPDATE SET created = selfcoding_job_days.created + 1",
        {PgParam::Text(job.principal), PgParam::Int(UtcDayOf(job.created_unix_ms))});
    if (!counted.ok()) return counted.status();
    if (event) {
      event->set_job_id(job.job_id);
      event->set_seq(1);
      JobRecord fresh = job;
      fresh.last_seq = 0;
      return WriteEvent(tx, fresh, *event, {}, false);
    }
    if (job.status == kQueued) {
      auto notified = tx.Query("SELECT pg_notify('selfcoding_queue', $1::text)::text",
                               {PgParam::Text(job.job_id)});
      if (!notified.ok()) return notified.status();
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<int64_t> PostgresJobStore::CreatedOn(const std::string& principal, int64_t utc_day) {
  auto rows = client_->Query(
      "count",
      "SELECT created FROM selfcoding_job_days WHERE principal = $1::text AND day = $2::bigint",
      {PgParam::Text(principal), PgParam::Int(utc_day)});
  if (!rows.ok()) return rows.status();
  return rows->size() == 0 ? 0 : rows->Int(0, 0);
}

absl::StatusOr<AdmissionCounts> PostgresJobStore::Counts(const std::string& principal,
                                                         int64_t utc_day) {
  auto rows =
      client_->Query("count", kCountsSql, {PgParam::Text(principal), PgParam::Int(utc_day)});
  if (!rows.ok()) return rows.status();
  return CountsIn(*rows);
}

absl::Status PostgresJobStore::Append(const std::string& job_id,
                                      const anima::v1::SelfCodingProgress& event,
                                      const JobUpdate& update) {
  return client_->Transaction("append", [&](PgSession& tx) -> absl::Status {
    auto job = GetIn(tx, job_id, /*for_update=*/true);
    if (!job.ok()) return job.status();
    if (event.seq() != job->last_seq + 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, ": event seq ", event.seq(), " after ", job->last_seq));
    }
    return WriteEvent(tx, *job, event, update, false);
  });
}

absl::StatusOr<std::optional<ClaimedJob>> PostgresJobStore::Claim(const std::string& worker_id,
                                                                  std::chrono::milliseconds lease) {
  std::string token = common::NewSecureId("lease-");
  // One statement, so one transaction. A running job whose lease expired (by the database's
  // clock) comes first; else the queued job of the principal whose turn came longest ago (its
  // last claim, or when it joined the line with nothing waiting), its oldest first. SKIP LOCKED:
  // a row another claimer is taking is passed over, never waited for.
  auto rows = client_->Query(
      "claim",
      absl::StrCat(
          "WITH expired AS ("
          "  SELECT job_id, true AS reclaim FROM selfcoding_jobs "
          "  WHERE status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= now()) "
          "  ORDER BY enqueue_seq LIMIT 1 FOR UPDATE SKIP LOCKED), "
          "turns AS ("
          "  SELECT q.principal, GREATEST(COALESCE((SELECT max(c.claim_seq) FROM selfcoding_jobs c "
          "    WHERE c.principal = q.principal), 0), min(q.enqueue_seq)) AS turn "
          "  FROM selfcoding_jobs q WHERE q.status = 'queued' GROUP BY q.principal), "
          "queued AS ("
          "  SELECT j.job_id, false AS reclaim FROM selfcoding_jobs j "
          "  JOIN turns t ON t.principal = j.principal "
          "  WHERE j.status = 'queued' AND NOT EXISTS (SELECT 1 FROM expired) "
          "  ORDER BY t.turn, j.enqueue_seq LIMIT 1 FOR UPDATE OF j SKIP LOCKED), "
          "next AS (SELECT * FROM expired UNION ALL SELECT * FROM queued LIMIT 1) "
          "UPDATE selfcoding_jobs s SET status = 'running', lease_owner = $1::text, "
          "  lease_token = $2::text, "
          "  lease_expires_at = now() + $3::bigint * interval '1 millisecond', "
          "  claim_seq = nextval('selfcoding_turns'), "
          "  reclaims = s.reclaims + CASE WHEN next.reclaim THEN 1 ELSE 0 END "
          "FROM next WHERE s.job_id = next.job_id "
          "RETURNING s.job_id, s.status, s.spec, s.attempts, s.last_seq, s.created_at, "
          "  s.updated_at, s.created_unix_ms, s.result, s.principal, s.checkpoint, s.reclaims, "
          "  s.cancel_requested, next.reclaim, "
          "  (SELECT e.body FROM selfcoding_events e WHERE e.job_id = s.job_id "
          "    AND e.seq = s.last_seq)"),
      {PgParam::Text(worker_id), PgParam::Text(token),
       PgParam::Int(static_cast<int64_t>(lease.count()))});
  if (!rows.ok()) return rows.status();
  if (rows->size() == 0) return std::optional<ClaimedJob>();
  auto job = ReadJob(*rows, 0);
  if (!job.ok()) return job.status();
  ClaimedJob claimed;
  claimed.job = std::move(*job);
  claimed.lease = Lease{claimed.job.job_id, token};
  claimed.reclaimed = rows->Bool(0, kJobColumnCount);
  anima::v1::SelfCodingProgress last;
  if (!rows->IsNull(0, kJobColumnCount + 1) &&
      last.ParseFromString(rows->Bytes(0, kJobColumnCount + 1))) {
    claimed.last_percent = last.percent();
  }
  return std::optional<ClaimedJob>(std::move(claimed));
}

absl::StatusOr<HeartbeatReply> PostgresJobStore::Heartbeat(const Lease& lease,
                                                           std::chrono::milliseconds lease_for) {
  auto rows = client_->Query(
      "heartbeat",
      "UPDATE selfcoding_jobs SET lease_expires_at = now() + $3::bigint * interval '1 millisecond' "
      "WHERE job_id = $1::text AND lease_token = $2::text AND status = 'running' "
      "RETURNING cancel_requested",
      {PgParam::Text(lease.job_id), PgParam::Text(lease.token),
       PgParam::Int(static_cast<int64_t>(lease_for.count()))});
  if (!rows.ok()) return rows.status();
  HeartbeatReply reply;
  if (rows->size() == 0) {
    reply.lost = true;
  } else {
    reply.cancel_requested = rows->Bool(0, 0);
  }
  return reply;
}

absl::Status PostgresJobStore::AppendLeased(const Lease& lease,
                                            const anima::v1::SelfCodingProgress& event,
                                            const JobUpdate& update, bool release) {
  return client_->Transaction("append", [&](PgSession& tx) -> absl::Status {
    // The row lock orders this write after any claim of the job and before the next one.
    auto rows = tx.Query(absl::StrCat("SELECT ", kJobColumns,
                                      ", COALESCE(lease_token, '') FROM selfcoding_jobs "
                                      "WHERE job_id = $1::text FOR UPDATE"),
                         {PgParam::Text(lease.job_id)});
    if (!rows.ok()) return rows.status();
    if (rows->size() == 0) return absl::NotFoundError("unknown job " + lease.job_id);
    auto job = ReadJob(*rows, 0);
    if (!job.ok()) return job.status();
    if (rows->Bytes(0, kJobColumnCount) != lease.token) return LeaseLost(lease.job_id);
    if (event.seq() <= job->last_seq) return absl::OkStatus();  // a retry that got through
    if (job->status != kRunning) return LeaseLost(lease.job_id);
    if (event.seq() != job->last_seq + 1) {
      return absl::FailedPreconditionError(absl::StrCat("job ", lease.job_id, ": event seq ",
                                                        event.seq(), " after ", job->last_seq));
    }
    return WriteEvent(tx, *job, event, update, release);
  });
}

absl::StatusOr<CancelOutcome> PostgresJobStore::RequestCancel(
    const std::string& job_id, const anima::v1::SelfCodingProgress& event,
    const anima::v1::SelfCodingResult& result) {
  CancelOutcome outcome;
  auto status = client_->Transaction("cancel", [&](PgSession& tx) -> absl::Status {
    auto job = GetIn(tx, job_id, /*for_update=*/true);
    if (!job.ok()) return job.status();
    if (IsFinalStatus(job->status)) {
      outcome.kind = CancelOutcome::Kind::kFinal;
      outcome.job = std::move(*job);
      return absl::OkStatus();
    }
    if (job->status == kQueued) {
      anima::v1::SelfCodingProgress e = event;
      e.set_job_id(job_id);
      e.set_seq(job->last_seq + 1);
      anima::v1::SelfCodingResult r = result;
      r.set_job_id(job_id);
      JobUpdate update{.status = std::string(kCancelled),
                       .attempts = r.attempts(),
                       .result = r,
                       .checkpoint = std::nullopt};
      if (auto s = WriteEvent(tx, *job, e, update, false); !s.ok()) return s;
      outcome.kind = CancelOutcome::Kind::kEnded;
    } else {
      auto flagged = tx.Query(
          "UPDATE selfcoding_jobs SET cancel_requested = true WHERE job_id = $1::text "
          "RETURNING pg_notify('selfcoding_cancel', job_id)::text",
          {PgParam::Text(job_id)});
      if (!flagged.ok()) return flagged.status();
      outcome.kind = CancelOutcome::Kind::kRequested;
    }
    auto now = GetIn(tx, job_id, false);
    if (!now.ok()) return now.status();
    outcome.job = std::move(*now);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return outcome;
}

absl::StatusOr<JobRecord> PostgresJobStore::Get(const std::string& job_id) {
  auto rows = client_->Query(
      "get", absl::StrCat("SELECT ", kJobColumns, " FROM selfcoding_jobs WHERE job_id = $1::text"),
      {PgParam::Text(job_id)});
  if (!rows.ok()) return rows.status();
  if (rows->size() == 0) return absl::NotFoundError("unknown job " + job_id);
  return ReadJob(*rows, 0);
}

absl::StatusOr<std::vector<anima::v1::SelfCodingProgress>> PostgresJobStore::Events(
    const std::string& job_id, int64_t after_seq, int limit) {
  auto rows = client_->Query(
      "events",
      "SELECT body FROM selfcoding_events WHERE job_id = $1::text AND seq > $2::bigint "
      "ORDER BY seq LIMIT $3::bigint",
      {PgParam::Text(job_id), PgParam::Int(after_seq),
       limit > 0 ? PgParam::Int(limit) : PgParam::Null()});
  if (!rows.ok()) return rows.status();
  std::vector<anima::v1::SelfCodingProgress> events;
  for (int i = 0; i < rows->size(); ++i) {
    anima::v1::SelfCodingProgress event;
    if (!event.ParseFromString(rows->Bytes(i, 0))) {
      return absl::DataLossError(absl::StrCat("job ", job_id, ": unreadable event"));
    }
    events.push_back(std::move(event));
  }
  return events;
}

absl::StatusOr<std::vector<JobRecord>> PostgresJobStore::List(const ListQuery& query) {
  // The statement varies in constant pieces only; the values are parameters.
  std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM selfcoding_jobs WHERE true");
  std::vector<PgParam> params;
  if (!query.status.empty()) {
    params.push_back(PgParam::Text(query.status));
    absl::StrAppend(&sql, " AND status = $", params.size(), "::text");
  }
  if (!query.principal.empty()) {
    params.push_back(PgParam::Text(query.principal));
    absl::StrAppend(&sql, " AND principal = $", params.size(), "::text");
  }
  sql += query.oldest_first ? " ORDER BY created_unix_ms ASC, job_id ASC"
                            : " ORDER BY created_unix_ms DESC, job_id DESC";
  params.push_back(query.limit > 0 ? PgParam::Int(query.limit) : PgParam::Null());
  absl::StrAppend(&sql, " LIMIT $", params.size(), "::bigint");
  auto rows = client_->Query("list", sql, params);
  if (!rows.ok()) return rows.status();
  std::vector<JobRecord> jobs;
  for (int i = 0; i < rows->size(); ++i) {
    auto job = ReadJob(*rows, i);
    if (!job.ok()) return job.status();
    jobs.push_back(std::move(*job));
  }
  return jobs;
}

absl::StatusOr<std::vector<std::string>> PostgresJobStore::Prune(std::chrono::milliseconds max_age,
                                                                 int max_jobs,
                                                                 int64_t now_unix_ms) {
  std::vector<std::string> doomed;
  auto status = client_->Transaction("prune", [&](PgSession& tx) -> absl::Status {
    doomed.clear();
    // Only today's count is read; yesterday's stays for a clock that steps back over midnight.
    auto days = tx.Query("DELETE FROM selfcoding_job_days WHERE day < $1::bigint",
                         {PgParam::Int(UtcDayOf(now_unix_ms) - 1)});
    if (!days.ok()) return days.status();
    auto count = tx.Query("SELECT count(*) FROM selfcoding_jobs");
    if (!count.ok()) return count.status();
    int64_t total = count->Int(0, 0);
    // Ended jobs, oldest first: the ones past max_jobs (counting every job) or too old go.
    auto ended = tx.Query(
        "SELECT job_id, created_unix_ms FROM selfcoding_jobs "
        "WHERE status IN ('succeeded', 'failed', 'cancelled') "
        "ORDER BY created_unix_ms ASC, job_id ASC");
    if (!ended.ok()) return ended.status();
    int64_t cutoff = now_unix_ms - max_age.count();
    for (int i = 0; i < ended->size(); ++i) {
      bool too_many = max_jobs > 0 && total > max_jobs;
      bool too_old = max_age.count() > 0 && ended->Int(i, 1) < cutoff;
      if (!too_many && !too_old) continue;
      doomed.push_back(ended->Bytes(i, 0));
      total--;
    }
    for (const auto& id : doomed) {
      // Its events go with it (ON DELETE CASCADE).
      auto gone =
          tx.Query("DELETE FROM selfcoding_jobs WHERE job_id = $1::text", {PgParam::Text(id)});
      if (!gone.ok()) return gone.status();
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return doomed;
}

absl::Status PostgresJobStore::Ping() { return client_->Query("ping", "SELECT 1").status(); }

StoreHealth PostgresJobStore::Health() {
  store::PostgresStatus s = client_->status();
  StoreHealth health;
  health.detail = s.detail;
  switch (s.health) {
    case store::PostgresStatus::Health::kHealthy:
      health.level = StoreHealth::Level::kHealthy;
      break;
    case store::PostgresStatus::Health::kDegraded:
      health.level = StoreHealth::Level::kDegraded;
      break;
    case store::PostgresStatus::Health::kDown:
      health.level = StoreHealth::Level::kDown;
      break;
  }
  return health;
}

}  // namespace anima::selfcoding
