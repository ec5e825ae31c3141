#include "services/self_coding/sqlite_job_store.h"

#include <sqlite3.h>

#include <chrono>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/process.h"

namespace anima::selfcoding {

bool IsFinalStatus(const std::string& status) {
  return status == kSucceeded || status == kFailed || status == kCancelled;
}

namespace {

// The schema before versions were recorded (user_version 0). A new file starts here too, so a new
// file and an upgraded one reach the current schema through the same migrations.
constexpr char kBaseSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  spec BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_seq INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  result BLOB
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, created_unix_ms);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs(created_unix_ms);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
)sql";

// kMigrations[i] takes the schema from user_version i to i + 1. Append only; never edit one that
// has shipped.
constexpr const char* kMigrations[] = {
    // 1: jobs belong to principals (jobs from before belong to the one principal of a deployment
    // without auth); jobs created per principal and UTC day, kept apart from the jobs so that
    // pruning does not reset a day's quota.
    R"sql(
ALTER TABLE jobs ADD COLUMN principal TEXT NOT NULL DEFAULT 'local';
CREATE INDEX jobs_by_principal ON jobs(principal, created_unix_ms);
CREATE TABLE job_days (
  principal TEXT NOT NULL,
  day INTEGER NOT NULL,
  created INTEGER NOT NULL,
  PRIMARY KEY (principal, day)
) WITHOUT ROWID;
INSERT INTO job_days (principal, day, created)
  SELECT principal, created_unix_ms / 86400000, COUNT(*) FROM jobs GROUP BY 1, 2;
)sql",
    // 2: the queue lives in the store, claimed under leases (job_store.h). enqueue_seq and
    // claim_seq come from one counter, so that a principal's turn is comparable with another's;
    // jobs from before keep their order.
    R"sql(
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_token TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_ms INTEGER;
ALTER TABLE jobs ADD COLUMN reclaims INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN checkpoint BLOB;
ALTER TABLE jobs ADD COLUMN enqueue_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN claim_seq INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET enqueue_seq = r.n FROM (
  SELECT job_id, row_number() OVER (ORDER BY created_unix_ms, job_id) AS n FROM jobs) AS r
  WHERE jobs.job_id = r.job_id;
CREATE INDEX jobs_queue ON jobs(status, enqueue_seq);
CREATE INDEX jobs_turns ON jobs(principal, claim_seq);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters (name, value) SELECT 'turn', COUNT(*) FROM jobs;
)sql",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  absl::Status status() const {
    return rc_ == SQLITE_OK
               ? absl::OkStatus()
               : absl::InternalError(absl::StrCat("sqlite prepare: ", sqlite3_errmsg(db_)));
  }
  void Bind(int i, const std::string& text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& blob) {
    sqlite3_bind_blob(stmt_, i, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t value) { sqlite3_bind_int64(stmt_, i, value); }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  std::string Text(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  absl::Status Error(const char* what) const {
    return absl::InternalError(absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db_)));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

constexpr char kJobColumns[] =
    "job_id, status, spec, attempts, last_seq, created_at, updated_at, created_unix_ms, result, "
    "principal, checkpoint, reclaims, cancel_requested";

absl::StatusOr<JobRecord> ReadJob(const Statement& s) {
  JobRecord job;
  job.job_id = s.Text(0);
  job.status = s.Text(1);
  if (!job.spec.ParseFromString(s.Text(2))) {
    return absl::DataLossError(absl::StrCat("job ", job.job_id, ": unreadable spec"));
  }
  job.attempts = static_cast<int>(s.Int(3));
  job.last_seq = s.Int(4);
  job.created_at = s.Text(5);
  job.updated_at = s.Text(6);
  job.created_unix_ms = s.Int(7);
  if (!s.IsNull(8)) {
    anima::v1::SelfCodingResult result;
    if (!result.ParseFromString(s.Text(8))) {
      return absl::DataLossError(absl::StrCat("job ", job.job_id, ": unreadable result"));
    }
    job.result = std::move(result);
  }
  job.principal = s.Text(9);
  job.checkpoint = s.Text(10);
  job.reclaims = static_cast<int>(s.Int(11));
  job.cancel_requested = s.Int(12) != 0;
  return job;
}

// This host's clock, which is the store's clock for leases: one file, one machine.
int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status LeaseLost(const std::string& job_id) {
  return absl::AbortedError("job " + job_id +
                            ": the lease is lost (another worker holds the job, "
                            "or it has ended)");
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open job store ", path, ": ", message));
  }
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db, path));
  sqlite3_busy_timeout(db, 5000);
  // WAL: readers never block the writer; NORMAL sync is durable across process crashes.
  // Switching a fresh file to WAL needs it to itself, and SQLite answers "database is locked" at
  // once, without the busy handler, while another connection is opening it too (replicas or a
  // restart racing): wait for it as the busy timeout would.
  absl::Status wal = store->Exec("PRAGMA journal_mode=WAL");
  for (int i = 0; i < 500 && !wal.ok() && sqlite3_errcode(db) == SQLITE_BUSY; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    wal = store->Exec("PRAGMA journal_mode=WAL");
  }
  if (!wal.ok()) return wal;
  if (auto s = store->Exec("PRAGMA synchronous=NORMAL"); !s.ok()) return s;
  if (auto s = store->Migrate(); !s.ok()) return s;
  return store;
}

absl::Status SqliteJobStore::Migrate() {
  // One immediate transaction: a second process opening the same file waits, then finds the
  // schema current.
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto fail = [&](absl::Status status) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  };
  if (auto s = Exec(kBaseSchema); !s.ok()) return fail(s);
  int64_t version = 0;
  {
    Statement s(db_, "PRAGMA user_version");
    if (auto st = s.status(); !st.ok()) return fail(st);
    if (s.Step() != SQLITE_ROW) return fail(s.Error("read the schema version"));
    version = s.Int(0);
  }
  if (version > kSchemaVersion) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("the job store has schema version ", version, ", newer than this build's ",
                     kSchemaVersion, ": run a newer anima-self-coding")));
  }
  for (int64_t v = version; v < kSchemaVersion; ++v) {
    if (auto s = Exec(kMigrations[v]); !s.ok()) {
      return fail(absl::InternalError(
          absl::StrCat("job store migration to version ", v + 1, ": ", s.message())));
    }
  }
  if (version < kSchemaVersion) {
    if (auto s = Exec(absl::StrCat("PRAGMA user_version = ", kSchemaVersion).c_str()); !s.ok()) {
      return fail(s);
    }
  }
  return Exec("COMMIT");
}

SqliteJobStore::~SqliteJobStore() { sqlite3_close(db_); }

absl::Status SqliteJobStore::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    return absl::InternalError(absl::StrCat("sqlite: ", message));
  }
  return absl::OkStatus();
}

absl::Status SqliteJobStore::InTransaction(const std::function<absl::Status()>& body) {
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status status = body();
  if (!status.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  }
  if (auto s = Exec("COMMIT"); !s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteJobStore::NextTurnLocked() {
  Statement s(db_, "UPDATE counters SET value = value + 1 WHERE name = 'turn' RETURNING value");
  if (auto st = s.status(); !st.ok()) return st;
  if (s.Step() != SQLITE_ROW) return s.Error("next turn");
  return s.Int(0);
}

absl::StatusOr<AdmissionCounts> SqliteJobStore::CountsLocked(const std::string& principal,
                                                             int64_t utc_day) {
  Statement s(
      db_,
      "SELECT (SELECT COUNT(*) FROM jobs WHERE status = 'queued'), "
      "(SELECT COUNT(*) FROM jobs WHERE status = 'running'), "
      "(SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND principal = ?1), "
      "(SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running') AND principal = ?1), "
      "(SELECT COALESCE(MAX(created), 0) FROM job_days WHERE principal = ?1 AND day = ?2)");
  if (auto st = s.status(); !st.ok()) return st;
  s.Bind(1, principal);
  s.Bind(2, utc_day);
  if (s.Step() != SQLITE_ROW) return s.Error("count jobs");
  AdmissionCounts counts;
  counts.queued = s.Int(0);
  counts.running = s.Int(1);
  counts.principal_queued = s.Int(2);
  counts.principal_in_flight = s.Int(3);
  counts.principal_today = s.Int(4);
  return counts;
}

absl::StatusOr<AdmissionCounts> SqliteJobStore::Counts(const std::string& principal,
                                                       int64_t utc_day) {
  std::lock_guard lock(mu_);
  return CountsLocked(principal, utc_day);
}

absl::Status SqliteJobStore::Create(const JobRecord& job,
                                    const anima::v1::SelfCodingProgress* first_event,
                                    const AdmitFn& admit) {
  std::optional<anima::v1::SelfCodingProgress> event;
  if (first_event != nullptr) event = *first_event;
  absl::Status status;
  {
    std::lock_guard lock(mu_);
    status = InTransaction([&]() -> absl::Status {
      if (admit) {
        auto counts = CountsLocked(job.principal, UtcDayOf(job.created_unix_ms));
        if (!counts.ok()) return counts.status();
        anima::v1::SelfCodingProgress scratch;
        if (auto s = admit(*counts, event ? *event : scratch); !s.ok()) return s;
      }
      auto turn = NextTurnLocked();
      if (!turn.ok()) return turn.status();
      {
        Statement s(db_,
                    "INSERT INTO jobs (job_id, principal, status, spec, attempts, last_seq, "
                    "created_at, updated_at, created_unix_ms, enqueue_seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        if (auto st = s.status(); !st.ok()) return st;
        s.Bind(1, job.job_id);
        s.Bind(2, job.principal);
        s.Bind(3, job.status);
        s.BindBlob(4, job.spec.SerializeAsString());
        s.Bind(5, int64_t{job.attempts});
        s.Bind(6, event ? int64_t{0} : job.last_seq);
        s.Bind(7, job.created_at);
        s.Bind(8, job.updated_at.empty() ? job.created_at : job.updated_at);
        s.Bind(9, job.created_unix_ms);
        s.Bind(10, *turn);
        int rc = s.Step();
        if (rc == SQLITE_CONSTRAINT)
          return absl::AlreadyExistsError("job " + job.job_id + " exists");
        if (rc != SQLITE_DONE) return s.Error("insert job");
      }
      {
        Statement s(db_,
                    "INSERT INTO job_days (principal, day, created) VALUES (?, ?, 1) "
                    "ON CONFLICT (principal, day) DO UPDATE SET created = created + 1");
        if (auto st = s.status(); !st.ok()) return st;
        s.Bind(1, job.principal);
        s.Bind(2, UtcDayOf(job.created_unix_ms));
        if (s.Step() != SQLITE_DONE) return s.Error("count job");
      }
      if (event) {
        event->set_job_id(job.job_id);
        event->set_seq(1);
        JobRecord fresh = job;
        fresh.last_seq = 0;
        if (auto s = WriteEventLocked(fresh, *event, {}, false); !s.ok()) return s;
      }
      return absl::OkStatus();
    });
  }
  if (status.ok()) {
    if (event) hub_.Publish({JobChange::Kind::kEvent, job.job_id});
    if (job.status == kQueued) hub_.Publish({JobChange::Kind::kQueued, job.job_id});
  }
  return status;
}

absl::StatusOr<int64_t> SqliteJobStore::CreatedOn(const std::string& principal, int64_t utc_day) {
  std::lock_guard lock(mu_);
  Statement s(db_, "SELECT created FROM job_days WHERE principal = ? AND day = ?");
  if (auto st = s.status(); !st.ok()) return st;
  s.Bind(1, principal);
  s.Bind(2, utc_day);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return 0;
  if (rc != SQLITE_ROW) return s.Error("select job count");
  return s.Int(0);
}

absl::Status SqliteJobStore::WriteEventLocked(const JobRecord& job,
                                              const anima::v1::SelfCodingProgress& event,
                                              const JobUpdate& update, bool release) {
  {
    Statement s(db_, "INSERT INTO events (job_id, seq, body) VALUES (?, ?, ?)");
    if (auto st = s.status(); !st.ok()) return st;
    s.Bind(1, job.job_id);
    s.Bind(2, event.seq());
    s.BindBlob(3, event.SerializeAsString());
    if (s.Step() != SQLITE_DONE) return s.Error("insert event");
  }
  std::string status = release ? std::string(kQueued) : update.status.value_or(job.status);
  // A final status or a release ends the lease; the token stays, so that a retry of this very
  // write by its worker is recognised.
  bool lease_ends = release || IsFinalStatus(status);
  Statement s(db_,
              "UPDATE jobs SET last_seq = ?, status = ?, attempts = ?, updated_at = ?, "
              "result = COALESCE(?, result), checkpoint = COALESCE(?, checkpoint), "
              "lease_expires_ms = CASE WHEN ? THEN NULL ELSE lease_expires_ms END, "
              "lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END WHERE job_id = ?");
  if (auto st = s.status(); !st.ok()) return st;
  s.Bind(1, event.seq());
  s.Bind(2, status);
  s.Bind(3, int64_t{update.attempts.value_or(job.attempts)});
  s.Bind(4, event.ts().empty() ? common::Rfc3339Now() : event.ts());
  if (update.result) s.BindBlob(5, update.result->SerializeAsString());
  if (update.checkpoint) s.BindBlob(6, *update.checkpoint);
  s.Bind(7, int64_t{lease_ends});
  s.Bind(8, int64_t{lease_ends});
  s.Bind(9, job.job_id);
  if (s.Step() != SQLITE_DONE) return s.Error("update job");
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Append(const std::string& job_id,
                                    const anima::v1::SelfCodingProgress& event,
                                    const JobUpdate& update) {
  absl::Status status;
  {
    std::lock_guard lock(mu_);
    status = InTransaction([&]() -> absl::Status {
      auto job = GetLocked(job_id);
      if (!job.ok()) return job.status();
      if (event.seq() != job->last_seq + 1) {
        return absl::FailedPreconditionError(
            absl::StrCat("job ", job_id, ": event seq ", event.seq(), " after ", job->last_seq));
      }
      return WriteEventLocked(*job, event, update, false);
    });
  }
  if (status.ok()) hub_.Publish({JobChange::Kind::kEvent, job_id});
  return status;
}

absl::StatusOr<std::optional<ClaimedJob>> SqliteJobStore::Claim(const std::string& worker_id,
                                                                std::chrono::milliseconds lease) {
  std::lock_guard lock(mu_);
  std::optional<ClaimedJob> claimed;
  absl::Status status = InTransaction([&]() -> absl::Status {
    const int64_t now = NowMs();
    std::string job_id;
    bool reclaim = false;
    {
      // A running job whose worker is gone comes first: it was started already.
      Statement s(db_,
                  "SELECT job_id FROM jobs WHERE status = 'running' AND "
                  "(lease_expires_ms IS NULL OR lease_expires_ms <= ?) ORDER BY enqueue_seq "
                  "LIMIT 1");
      if (auto st = s.status(); !st.ok()) return st;
      s.Bind(1, now);
      int rc = s.Step();
      if (rc == SQLITE_ROW) {
        job_id = s.Text(0);
        reclaim = true;
      } else if (rc != SQLITE_DONE) {
        return s.Error("select expired job");
      }
    }
    if (job_id.empty()) {
      // Round robin: a principal's turn is its last claim or, when it joined the line after
      // that, its oldest waiting job; the earliest turn goes first, then that principal's
      // oldest job.
      Statement s(db_,
                  "SELECT j.job_id FROM jobs j JOIN ("
                  "  SELECT q.principal, MAX(COALESCE((SELECT MAX(c.claim_seq) FROM jobs c "
                  "    WHERE c.principal = q.principal), 0), MIN(q.enqueue_seq)) AS turn "
                  "  FROM jobs q WHERE q.status = 'queued' GROUP BY q.principal) t "
                  "ON t.principal = j.principal WHERE j.status = 'queued' "
                  "ORDER BY t.turn, j.enqueue_seq LIMIT 1");
      if (auto st = s.status(); !st.ok()) return st;
      int rc = s.Step();
      if (rc == SQLITE_DONE) return absl::OkStatus();
      if (rc != SQLITE_ROW) return s.Error("select queued job");
      job_id = s.Text(0);
    }
    auto turn = NextTurnLocked();
    if (!turn.ok()) return turn.status();
    std::string token = common::NewSecureId("lease-");
    {
      Statement s(db_,
                  "UPDATE jobs SET status = 'running', lease_owner = ?, lease_token = ?, "
                  "lease_expires_ms = ?, claim_seq = ?, reclaims = reclaims + ? WHERE job_id = ?");
      if (auto st = s.status(); !st.ok()) return st;
      s.Bind(1, worker_id);
      s.Bind(2, token);
      s.Bind(3, now + static_cast<int64_t>(lease.count()));
      s.Bind(4, *turn);
      s.Bind(5, int64_t{reclaim ? 1 : 0});
      s.Bind(6, job_id);
      if (s.Step() != SQLITE_DONE) return s.Error("claim job");
    }
    auto job = GetLocked(job_id);
    if (!job.ok()) return job.status();
    ClaimedJob c;
    c.job = std::move(*job);
    c.lease = Lease{job_id, token};
    c.reclaimed = reclaim;
    if (c.job.last_seq > 0) {
      Statement s(db_, "SELECT body FROM events WHERE job_id = ? AND seq = ?");
      if (auto st = s.status(); !st.ok()) return st;
      s.Bind(1, job_id);
      s.Bind(2, c.job.last_seq);
      anima::v1::SelfCodingProgress last;
      if (s.Step() == SQLITE_ROW && last.ParseFromString(s.Text(0))) {
        c.last_percent = last.percent();
      }
    }
    claimed = std::move(c);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return claimed;
}

absl::StatusOr<HeartbeatReply> SqliteJobStore::Heartbeat(const Lease& lease,
                                                         std::chrono::milliseconds lease_for) {
  std::lock_guard lock(mu_);
  Statement s(db_,
              "UPDATE jobs SET lease_expires_ms = ? WHERE job_id = ? AND lease_token = ? AND "
              "status = 'running' RETURNING cancel_requested");
  if (auto st = s.status(); !st.ok()) return st;
  s.Bind(1, NowMs() + static_cast<int64_t>(lease_for.count()));
  s.Bind(2, lease.job_id);
  s.Bind(3, lease.token);
  HeartbeatReply reply;
  int rc = s.Step();
  if (rc == SQLITE_DONE) {
    reply.lost = true;
    return reply;
  }
  if (rc != SQLITE_ROW) return s.Error("heartbeat");
  reply.cancel_requested = s.Int(0) != 0;
  while (s.Step() == SQLITE_ROW) {
  }
  return reply;
}

absl::Status SqliteJobStore::AppendLeased(const Lease& lease,
                                          const anima::v1::SelfCodingProgress& event,
                                          const JobUpdate& update, bool release) {
  bool wrote = false;
  absl::Status status;
  {
    std::lock_guard lock(mu_);
    status = InTransaction([&]() -> absl::Status {
      auto job = GetLocked(lease.job_id);
      if (!job.ok()) return job.status();
      std::string token;
      {
        Statement s(db_, "SELECT COALESCE(lease_token, '') FROM jobs WHERE job_id = ?");
        if (auto st = s.status(); !st.ok()) return st;
        s.Bind(1, lease.job_id);
        if (s.Step() != SQLITE_ROW) return s.Error("select lease");
        token = s.Text(0);
      }
      if (token != lease.token) return LeaseLost(lease.job_id);
      if (event.seq() <= job->last_seq) return absl::OkStatus();  // a retry that got through
      if (job->status != kRunning) return LeaseLost(lease.job_id);
      if (event.seq() != job->last_seq + 1) {
        return absl::FailedPreconditionError(absl::StrCat("job ", lease.job_id, ": event seq ",
                                                          event.seq(), " after ", job->last_seq));
      }
      wrote = true;
      return WriteEventLocked(*job, event, update, release);
    });
  }
  if (status.ok() && wrote) {
    hub_.Publish({JobChange::Kind::kEvent, lease.job_id});
    if (release) hub_.Publish({JobChange::Kind::kQueued, lease.job_id});
  }
  return status;
}

absl::StatusOr<CancelOutcome> SqliteJobStore::RequestCancel(
    const std::string& job_id, const anima::v1::SelfCodingProgress& event,
    const anima::v1::SelfCodingResult& result) {
  CancelOutcome outcome;
  absl::Status status;
  {
    std::lock_guard lock(mu_);
    status = InTransaction([&]() -> absl::Status {
      auto job = GetLocked(job_id);
      if (!job.ok()) return job.status();
      if (IsFinalStatus(job->status)) {
        outcome.kind = CancelOutcome::Kind::kFinal;
      } else if (job->status == kQueued) {
        anima::v1::SelfCodingProgress e = event;
        e.set_job_id(job_id);
        e.set_seq(job->last_seq + 1);
        anima::v1::SelfCodingResult r = result;
        r.set_job_id(job_id);
        JobUpdate update{.status = std::string(kCancelled),
                         .attempts = r.attempts(),
                         .result = r,
                         .checkpoint = std::nullopt};
        if (auto s = WriteEventLocked(*job, e, update, false); !s.ok()) return s;
        outcome.kind = CancelOutcome::Kind::kEnded;
      } else {
        Statement s(db_, "UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?");
        if (auto st = s.status(); !st.ok()) return st;
        s.Bind(1, job_id);
        if (s.Step() != SQLITE_DONE) return s.Error("request cancel");
        outcome.kind = CancelOutcome::Kind::kRequested;
      }
      auto now = GetLocked(job_id);
      if (!now.ok()) return now.status();
      outcome.job = std::move(*now);
      return absl::OkStatus();
    });
  }
  if (!status.ok()) return status;
  if (outcome.kind == CancelOutcome::Kind::kEnded) {
    hub_.Publish({JobChange::Kind::kEvent, job_id});
  } else if (outcome.kind == CancelOutcome::Kind::kRequested) {
    hub_.Publish({JobChange::Kind::kCancelRequested, job_id});
  }
  return outcome;
}

absl::StatusOr<JobRecord> SqliteJobStore::GetLocked(const std::string& job_id) {
  Statement s(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE job_id = ?").c_str());
  if (auto st = s.status(); !st.ok()) return st;
  s.Bind(1, job_id);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError("unknown job " + job_id);
  if (rc != SQLITE_ROW) return s.Error("select job");
  return ReadJob(s);
}

absl::StatusOr<JobRecord> SqliteJobStore::Get(const std::string& job_id) {
  std::lock_guard lock(mu_);
  return GetLocked(job_id);
}

absl::StatusOr<std::vector<anima::v1::SelfCodingProgress>> SqliteJobStore::Events(
    const std::string& job_id, int64_t after_seq, int limit) {
  std::lock_guard lock(mu_);
  Statement s(db_, "SELECT body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?");
  if (auto st = s.status(); !st.ok()) return st;
  s.Bind(1, job_id);
  s.Bind(2, after_seq);
  s.Bind(3, limit > 0 ? int64_t{limit} : int64_t{-1});
  std::vector<anima::v1::SelfCodingProgress> events;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    anima::v1::SelfCodingProgress event;
    if (!event.ParseFromString(s.Text(0))) {
      return absl::DataLossError(absl::StrCat("job ", job_id, ": unreadable event"));
    }
    events.push_back(std::move(event));
  }
  if (rc != SQLITE_DONE) return s.Error("select events");
  return events;
}

absl::StatusOr<std::vector<JobRecord>> SqliteJobStore::List(const ListQuery& query) {
  std::lock_guard lock(mu_);
  std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE 1");
  if (!query.status.empty()) sql += " AND status = ?";
  if (!query.principal.empty()) sql += " AND principal = ?";
  sql += query.oldest_first ? " ORDER BY created_unix_ms ASC, job_id ASC"
                            : " ORDER BY created_unix_ms DESC, job_id DESC";
  sql += " LIMIT ?";
  Statement s(db_, sql.c_str());
  if (auto st = s.status(); !st.ok()) return st;
  int i = 1;
  if (!query.status.empty()) s.Bind(i++, query.status);
  if (!query.principal.empty()) s.Bind(i++, query.principal);
  s.Bind(i, query.limit > 0 ? int64_t{query.limit} : int64_t{-1});
  std::vector<JobRecord> jobs;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    auto job = ReadJob(s);
    if (!job.ok()) return job.status();
    jobs.push_back(std::move(*job));
  }
  if (rc != SQLITE_DONE) return s.Error("list jobs");
  return jobs;
}

absl::Status SqliteJobStore::DeleteJobLocked(const std::string& job_id) {
  for (const char* sql :
       {"DELETE FROM events WHERE job_id = ?", "DELETE FROM jobs WHERE job_id = ?"}) {
    Statement s(db_, sql);
    if (auto st = s.status(); !st.ok()) return st;
    s.Bind(1, job_id);
    if (s.Step() != SQLITE_DONE) return s.Error("delete job");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> SqliteJobStore::Prune(std::chrono::milliseconds max_age,
                                                               int max_jobs, int64_t now_unix_ms) {
  std::lock_guard lock(mu_);
  {
    // Only today's count is read; yesterday's stays for a clock that steps back over midnight.
    Statement s(db_, "DELETE FROM job_days WHERE day < ?");
    if (auto st = s.status(); !st.ok()) return st;
    s.Bind(1, UtcDayOf(now_unix_ms) - 1);
    if (s.Step() != SQLITE_DONE) return s.Error("prune job counts");
  }
  std::vector<std::string> doomed;
  {
    // Ended jobs, oldest first: the ones past max_jobs (counting every job) or too old go.
    Statement count(db_, "SELECT COUNT(*) FROM jobs");
    if (auto st = count.status(); !st.ok()) return st;
    if (count.Step() != SQLITE_ROW) return count.Error("count jobs");
    int64_t total = count.Int(0);
    Statement s(db_,
                "SELECT job_id, created_unix_ms FROM jobs WHERE status IN ('succeeded', "
                "'failed', 'cancelled') ORDER BY created_unix_ms ASC, job_id ASC");
    if (auto st = s.status(); !st.ok()) return st;
    int64_t cutoff = now_unix_ms - max_age.count();
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      bool too_many = max_jobs > 0 && total > max_jobs;
      bool too_old = max_age.count() > 0 && s.Int(1) < cutoff;
      if (!too_many && !too_old) continue;
      doomed.push_back(s.Text(0));
      total--;
    }
    if (rc != SQLITE_DONE) return s.Error("select prunable jobs");
  }
  if (doomed.empty()) return doomed;
  auto status = InTransaction([&]() -> absl::Status {
    for (const auto& id : doomed) {
      if (auto s = DeleteJobLocked(id); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return doomed;
}

absl::Status SqliteJobStore::Ping() {
  std::lock_guard lock(mu_);
  Statement s(db_, "SELECT 1");
  if (auto st = s.status(); !st.ok()) return st;
  if (s.Step() != SQLITE_ROW) return s.Error("ping");
  return absl::OkStatus();
}

StoreHealth SqliteJobStore::Health() {
  StoreHealth health;
  if (auto s = Ping(); !s.ok()) {
    health.level = StoreHealth::Level::kDown;
    health.detail = absl::StrCat("sqlite ", path_, ": ", s.message());
  } else {
    health.detail = "sqlite " + path_;
  }
  return health;
}

}  // namespace anima::selfcoding
