#include "services/self_coding/sqlite_job_store.h"

#include <sqlite3.h>

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
    "principal";

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
  return job;
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
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db));
  sqlite3_busy_timeout(db, 5000);
  // WAL: readers never block the writer; NORMAL sync is durable across process crashes.
  if (auto s = store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"); !s.ok()) {
    return s;
  }
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

absl::Status SqliteJobStore::Create(const JobRecord& job) {
  std::lock_guard lock(mu_);
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto fail = [&](absl::Status status) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  };
  {
    Statement s(
        db_,
        "INSERT INTO jobs (job_id, principal, status, spec, attempts, last_seq, created_at, "
        "updated_at, created_unix_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (auto st = s.status(); !st.ok()) return fail(st);
    s.Bind(1, job.job_id);
    s.Bind(2, job.principal);
    s.Bind(3, job.status);
    s.BindBlob(4, job.spec.SerializeAsString());
    s.Bind(5, int64_t{job.attempts});
    s.Bind(6, job.last_seq);
    s.Bind(7, job.created_at);
    s.Bind(8, job.updated_at.empty() ? job.created_at : job.updated_at);
    s.Bind(9, job.created_unix_ms);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return fail(absl::AlreadyExistsError("job " + job.job_id + " exists"));
    }
    if (rc != SQLITE_DONE) return fail(s.Error("insert job"));
  }
  {
    Statement s(db_,
                "INSERT INTO job_days (principal, day, created) VALUES (?, ?, 1) "
                "ON CONFLICT (principal, day) DO UPDATE SET created = created + 1");
    if (auto st = s.status(); !st.ok()) return fail(st);
    s.Bind(1, job.principal);
    s.Bind(2, UtcDayOf(job.created_unix_ms));
    if (s.Step() != SQLITE_DONE) return fail(s.Error("count job"));
  }
  return Exec("COMMIT");
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

absl::Status SqliteJobStore::Append(const std::string& job_id,
                                    const anima::v1::SelfCodingProgress& event,
                                    const JobUpdate& update) {
  std::lock_guard lock(mu_);
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto fail = [&](absl::Status status) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  };
  auto job = GetLocked(job_id);
  if (!job.ok()) return fail(job.status());
  if (event.seq() != job->last_seq + 1) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, ": event seq ", event.seq(), " after ", job->last_seq)));
  }
  {
    Statement s(db_, "INSERT INTO events (job_id, seq, body) VALUES (?, ?, ?)");
    if (auto st = s.status(); !st.ok()) return fail(st);
    s.Bind(1, job_id);
    s.Bind(2, event.seq());
    s.BindBlob(3, event.SerializeAsString());
    if (s.Step() != SQLITE_DONE) return fail(s.Error("insert event"));
  }
  {
    Statement s(db_,
                "UPDATE jobs SET last_seq = ?, status = ?, attempts = ?, updated_at = ?, "
                "result = COALESCE(?, result) WHERE job_id = ?");
    if (auto st = s.status(); !st.ok()) return fail(st);
    s.Bind(1, event.seq());
    s.Bind(2, update.status.value_or(job->status));
    s.Bind(3, int64_t{update.attempts.value_or(job->attempts)});
    s.Bind(4, event.ts().empty() ? common::Rfc3339Now() : event.ts());
    if (update.result) s.BindBlob(5, update.result->SerializeAsString());
    s.Bind(6, job_id);
    if (s.Step() != SQLITE_DONE) return fail(s.Error("update job"));
  }
  return Exec("COMMIT");
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
    // Ended jobs, newest first: the ones past max_jobs (counting every job) or too old go.
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
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  for (const auto& id : doomed) {
    if (auto s = DeleteJobLocked(id); !s.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return s;
    }
  }
  if (auto s = Exec("COMMIT"); !s.ok()) return s;
  return doomed;
}

absl::Status SqliteJobStore::Ping() {
  std::lock_guard lock(mu_);
  Statement s(db_, "SELECT 1");
  if (auto st = s.status(); !st.ok()) return st;
  if (s.Step() != SQLITE_ROW) return s.Error("ping");
  return absl::OkStatus();
}

}  // namespace anima::selfcoding
