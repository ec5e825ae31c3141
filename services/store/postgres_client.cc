#include "services/store/postgres_client.h"

#include <endian.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "services/common/metrics.h"
#include "spdlog/spdlog.h"

namespace anima::store {

using Clock = std::chrono::steady_clock;

struct PgRows::Result {
  explicit Result(PGresult* r) : res(r) {}
  ~Result() { PQclear(res); }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  PGresult* res;
};

namespace {

// Type oids of pg_type, stable across versions.
constexpr Oid kBoolOid = 16;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;

// How long without traffic before the LISTEN connection proves it is alive with a query.
constexpr auto kListenPing = std::chrono::seconds(10);
// Slow answers within this window (at least kSlowCalls of them) make the client degraded.
constexpr auto kSlowWindow = std::chrono::seconds(30);
constexpr size_t kSlowCalls = 2;

std::string Trim(const char* text) {
  if (text == nullptr) return "";
  std::string s(text);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (auto& c : s) {
    if (c == '\n') c = ' ';
  }
  return s;
}

int64_t Millis(std::chrono::milliseconds d) { return static_cast<int64_t>(d.count()); }

// Waits until `fd` has one of `events` (or `wake_fd` is readable, when given), at most until
// `deadline`. Returns the revents of `fd`, 0 on timeout; -1 when only `wake_fd` woke it.
int WaitFd(int fd, short events, Clock::time_point deadline, int wake_fd = -1) {
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() < 0) return 0;
    pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
    int n =
        poll(fds, wake_fd >= 0 ? 2 : 1, static_cast<int>(std::min<int64_t>(left.count(), 60000)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return POLLERR;
    }
    if (n == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;
    }
    if (fds[0].revents != 0) return fds[0].revents;
    return -1;
  }
}

// An error result as a status. `broken`: the connection is gone, whatever the server said.
absl::Status FromError(const PGresult* res, PGconn* pg) {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string s = state != nullptr ? state : "";
  std::string message =
      res != nullptr ? Trim(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)) : "";
  if (message.empty()) message = Trim(PQerrorMessage(pg));
  std::string text = absl::StrCat("postgres: ", message, s.empty() ? "" : " (SQLSTATE " + s + ")");
  if (s.empty() && PQstatus(pg) == CONNECTION_BAD) return absl::UnavailableError(text);
  if (s == "57014") return absl::DeadlineExceededError(text);  // statement_timeout
  if (s.rfind("08", 0) == 0 || s == "57P01" || s == "57P02" || s == "57P03" || s == "53300") {
    return absl::UnavailableError(text);
  }
  if (s == "23505") return absl::AlreadyExistsError(text);
  if (s == "40001" || s == "40P01" || s == "55P03") return absl::AbortedError(text);
  return absl::InternalError(text);
}

// Runs one statement (or, with `script`, a string of parameterless statements) on `pg`, which
// is in non-blocking mode, bounded by `deadline`. Sets *broken when the connection cannot be
// used again (it died, or it is mid-statement after a timeout).
absl::StatusOr<std::shared_ptr<PgRows::Result>> Run(PGconn* pg, const std::string& sql,
                                                    const std::vector<PgParam>* params,
                                                    Clock::time_point deadline, bool* broken) {
  int sent;
  if (params == nullptr) {
    sent = PQsendQuery(pg, sql.c_str());
  } else {
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    for (const auto& p : *params) {
      values.push_back(p.null() ? nullptr : p.value().data());
      lengths.push_back(static_cast<int>(p.value().size()));
      formats.push_back(p.binary() ? 1 : 0);
    }
    sent = PQsendQueryParams(pg, sql.c_str(), static_cast<int>(values.size()), nullptr,
                             values.data(), lengths.data(), formats.data(), /*resultFormat=*/1);
  }
  if (sent == 0) {
    *broken = true;
    return absl::UnavailableError("postgres: " + Trim(PQerrorMessage(pg)));
  }
  auto timed_out = [&] {
    *broken = true;
    return absl::DeadlineExceededError("postgres: no answer in time");
  };
  auto lost = [&] {
    *broken = true;
    return absl::UnavailableError("postgres: " + Trim(PQerrorMessage(pg)));
  };
  while (true) {
    int f = PQflush(pg);
    if (f == 0) break;
    if (f < 0) return lost();
    int ev = WaitFd(PQsocket(pg), POLLOUT | POLLIN, deadline);
    if (ev == 0) return timed_out();
    if ((ev & POLLIN) != 0 && PQconsumeInput(pg) == 0) return lost();
  }
  std::shared_ptr<PgRows::Result> last;
  absl::Status error;
  while (true) {
    while (PQisBusy(pg) != 0) {
      int ev = WaitFd(PQsocket(pg), POLLIN, deadline);
      if (ev == 0) return timed_out();
      if (PQconsumeInput(pg) == 0) return lost();
    }
    PGresult* r = PQgetResult(pg);
    if (r == nullptr) break;
    switch (PQresultStatus(r)) {
      case PGRES_COMMAND_OK:
      case PGRES_TUPLES_OK:
      case PGRES_EMPTY_QUERY:
        last = std::make_shared<PgRows::Result>(r);
        break;
      case PGRES_FATAL_ERROR:
        if (error.ok()) error = FromError(r, pg);
        PQclear(r);
        break;
      default:
        PQclear(r);
    }
  }
  if (PQstatus(pg) == CONNECTION_BAD) *broken = true;
  if (!error.ok()) return error;
  if (last == nullptr) return absl::InternalError("postgres: no result");
  return last;
}

bool ValidChannel(const std::string& channel) {
  if (channel.empty() || channel.size() > 63) return false;
  return std::all_of(channel.begin(), channel.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

struct OpMetrics {
  prometheus::Counter* ok = nullptr;
  prometheus::Counter* error = nullptr;
  prometheus::Counter* timeout = nullptr;
  prometheus::Histogram* seconds = nullptr;
};

}  // namespace

int PgRows::size() const { return result_ ? PQntuples(result_->res) : 0; }
int PgRows::columns() const { return result_ ? PQnfields(result_->res) : 0; }
bool PgRows::IsNull(int row, int col) const {
  return !result_ || PQgetisnull(result_->res, row, col) != 0;
}

std::string PgRows::Bytes(int row, int col) const {
  if (IsNull(row, col)) return "";
  return std::string(PQgetvalue(result_->res, row, col), PQgetlength(result_->res, row, col));
}

int64_t PgRows::Int(int row, int col) const {
  if (IsNull(row, col)) return 0;
  const char* p = PQgetvalue(result_->res, row, col);
  switch (PQftype(result_->res, col)) {
    case kInt8Oid: {
      uint64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<int64_t>(be64toh(v));
    }
    case kInt4Oid: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      return static_cast<int32_t>(be32toh(v));
    }
    case kInt2Oid: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return static_cast<int16_t>(be16toh(v));
    }
    case kBoolOid:
      return p[0] != 0;
    default:
      return 0;
  }
}

bool PgRows::Bool(int row, int col) const { return Int(row, col) != 0; }

int64_t PgRows::affected() const {
  if (!result_) return 0;
  const char* n = PQcmdTuples(result_->res);
  return n == nullptr || *n == '\0' ? 0 : std::strtoll(n, nullptr, 10);
}

class PostgresClient::Impl {
 public:
  Impl(PostgresOptions options, std::string endpoint, prometheus::Registry* registry);
  ~Impl();

  absl::StatusOr<PgRows> Query(std::string_view op, const std::string& sql,
                               const std::vector<PgParam>& params);
  absl::Status Transaction(std::string_view op,
                           const std::function<absl::Status(PgSession&)>& body);
  absl::StatusOr<int> Listen(const std::string& channel,
                             std::function<void(const PgNotification&)> fn);
  void Unlisten(int id);
  PostgresStatus status() const;
  const std::string& endpoint() const { return endpoint_; }

  // Runs a statement of a transaction's body on its connection.
  absl::StatusOr<std::shared_ptr<PgRows::Result>> RunOn(PGconn* pg, const std::string& sql,
                                                        const std::vector<PgParam>* params,
                                                        bool* broken) {
    return Run(pg, sql, params, Clock::now() + options_.call_timeout, broken);
  }

 private:
  struct Slot {
    PGconn* pg = nullptr;
    bool busy = false;
  };

  // A free slot with a live connection, connecting it if needed. Unavailable while the server
  // is known to be unreachable (until the next attempt is due).
  absl::StatusOr<Slot*> Acquire();
  void Give(Slot* slot, bool broken);
  // A new connection in non-blocking mode with the session settings, bounded by
  // connect_timeout. Updates the reachability state either way.
  absl::StatusOr<PGconn*> Connect();
  // After a failed connection attempt: when the next one is due.
  void ConnectFailed(const std::string& error);
  void ConnectSucceeded();
  void Record(std::string_view op, Clock::time_point start, const absl::Status& status);
  const OpMetrics* MetricsFor(std::string_view op);
  void ListenLoop();
  void Deliver(const std::vector<std::string>& channels, const PgNotification* n);
  void Wake();

  const PostgresOptions options_;
  const std::string endpoint_;

  mutable std::mutex mu_;
  std::condition_variable free_cv_;
  std::vector<Slot> slots_;
  bool up_ = false;
  std::string last_error_ = "not connected yet";
  Clock::time_point next_connect_ = Clock::time_point::min();
  std::chrono::milliseconds backoff_{0};
  std::mt19937 rng_{std::random_device{}()};
  std::deque<Clock::time_point> slow_;  // times of recent slow answers, oldest first

  prometheus::Family<prometheus::Counter>* calls_ = nullptr;
  prometheus::Family<prometheus::Histogram>* seconds_ = nullptr;
  prometheus::Gauge* up_gauge_ = nullptr;
  std::mutex ops_mu_;
  std::map<std::string, OpMetrics, std::less<>> ops_;

  // LISTEN.
  struct Subscriber {
    std::string channel;
    std::function<void(const PgNotification&)> fn;
  };
  std::mutex listen_mu_;    // subscribers_, stopping_
  std::mutex dispatch_mu_;  // held while callbacks run
  std::map<int, Subscriber> subscribers_;
  int next_id_ = 1;
  bool stopping_ = false;
  int wake_fd_ = -1;
  std::thread listen_thread_;
};

PostgresClient::Impl::Impl(PostgresOptions options, std::string endpoint,
                           prometheus::Registry* registry)
    : options_(std::move(options)), endpoint_(std::move(endpoint)) {
  slots_.resize(std::max(1, options_.connections));
  if (registry != nullptr) {
    // The same names, help and labels as the Redis client: registering again returns the family
    // that exists (prometheus-cpp's default Merge), so both clients share it.
    calls_ = &prometheus::BuildCounter()
                  .Name("anima_store_calls_total")
                  .Help("Calls to the shared-state backends, by backend, operation and result")
                  .Register(*registry);
    seconds_ = &prometheus::BuildHistogram()
                    .Name("anima_store_call_seconds")
                    .Help("From a call to a shared-state backend to its answer")
                    .Register(*registry);
    up_gauge_ = &prometheus::BuildGauge()
                     .Name("anima_store_up")
                     .Help("1 when the backend is reachable (at least one connection up)")
                     .Register(*registry)
                     .Add({{"backend", "postgres"}});
    up_gauge_->Set(0);
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

PostgresClient::Impl::~Impl() {
  {
    std::lock_guard lock(listen_mu_);
    stopping_ = true;
  }
  Wake();
  if (listen_thread_.joinable()) listen_thread_.join();
  if (wake_fd_ >= 0) close(wake_fd_);
  std::lock_guard lock(mu_);
  for (auto& slot : slots_) {
    if (slot.pg != nullptr) PQfinish(slot.pg);
    slot.pg = nullptr;
  }
}

const OpMetrics* PostgresClient::Impl::MetricsFor(std::string_view op) {
  static const OpMetrics kNone;
  if (calls_ == nullptr) return &kNone;
  std::lock_guard lock(ops_mu_);
  auto it = ops_.find(op);
  if (it != ops_.end()) return &it->second;
  std::string name(op);
  OpMetrics m;
  auto counter = [&](const char* result) {
    return &calls_->Add({{"backend", "postgres"}, {"op", name}, {"result", result}});
  };
  m.ok = counter("ok");
  m.error = counter("error");
  m.timeout = counter("timeout");
  m.seconds = &seconds_->Add({{"backend", "postgres"}, {"op", name}}, common::LatencyBuckets());
  return &ops_.emplace(std::move(name), m).first->second;
}

void PostgresClient::Impl::Record(std::string_view op, Clock::time_point start,
                                  const absl::Status& status) {
  auto now = Clock::now();
  auto elapsed = now - start;
  bool timeout = absl::IsDeadlineExceeded(status);
  {
    std::lock_guard lock(mu_);
    if (timeout || elapsed > options_.slow_call) slow_.push_back(now);
    while (!slow_.empty() && (slow_.front() < now - kSlowWindow || slow_.size() > 64)) {
      slow_.pop_front();
    }
  }
  const OpMetrics* m = MetricsFor(op);
  if (m->ok == nullptr) return;
  (status.ok() ? m->ok : timeout ? m->timeout : m->error)->Increment();
  m->seconds->Observe(std::chrono::duration<double>(elapsed).count());
}

void PostgresClient::Impl::ConnectFailed(const std::string& error) {
  std::lock_guard lock(mu_);
  backoff_ = std::clamp(backoff_ * 2, options_.backoff_min, options_.backoff_max);
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  next_connect_ =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(backoff_ * jitter(rng_));
  if (up_ || last_error_ != error) {
    spdlog::warn("postgres {}: cannot connect: {}", endpoint_, error);
  }
  up_ = false;
  last_error_ = error;
  if (up_gauge_ != nullptr) up_gauge_->Set(0);
}

void PostgresClient::Impl::ConnectSucceeded() {
  std::lock_guard lock(mu_);
  if (!up_ && last_error_ != "not connected yet") {
    spdlog::info("postgres {}: connected again", endpoint_);
  }
  up_ = true;
  backoff_ = std::chrono::milliseconds(0);
  next_connect_ = Clock::time_point::min();
  if (up_gauge_ != nullptr) up_gauge_->Set(1);
}

absl::StatusOr<PGconn*> PostgresClient::Impl::Connect() {
  auto deadline = Clock::now() + options_.connect_timeout;
  // Ours first: with expand_dbname the URL's own parameters, which come after, win.
  std::string connect_s =
      std::to_string(std::max<int64_t>(2, (Millis(options_.connect_timeout) + 999) / 1000));
  std::vector<std::pair<const char*, std::string>> params = {
      {"connect_timeout", connect_s},
      {"keepalives", "1"},
      {"keepalives_idle", "10"},
      {"keepalives_interval", "5"},
      {"keepalives_count", "3"},
      {"tcp_user_timeout", std::to_string(Millis(options_.call_timeout))},
      {"application_name", options_.application_name},
      {"dbname", options_.url},
  };
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : params) {
    keys.push_back(k);
    values.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PGconn* pg = PQconnectStartParams(keys.data(), values.data(), /*expand_dbname=*/1);
  auto fail = [&](std::string error) -> absl::Status {
    if (pg != nullptr) PQfinish(pg);
    ConnectFailed(error);
    return absl::UnavailableError(absl::StrCat("postgres ", endpoint_, ": ", error));
  };
  if (pg == nullptr) return fail("out of memory");
  if (PQstatus(pg) == CONNECTION_BAD) return fail(Trim(PQerrorMessage(pg)));
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) return fail(Trim(PQerrorMessage(pg)));
    int ev = WaitFd(PQsocket(pg), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
    if (ev == 0) {
      return fail(absl::StrCat("no connection within ", Millis(options_.connect_timeout), " ms"));
    }
    st = PQconnectPoll(pg);
  }
  if (PQsetnonblocking(pg, 1) != 0) return fail(Trim(PQerrorMessage(pg)));
  // The server's notices (and its last words when it shuts down) go to the log, not stderr.
  PQsetNoticeProcessor(
      pg, [](void*, const char* message) { spdlog::debug("postgres: {}", Trim(message)); },
      nullptr);
  // Server-side bounds: a statement, and a transaction left idle by a client that went away
  // (its locks would otherwise hold until TCP keepalives notice).
  bool broken = false;
  std::vector<PgParam> settings = {
      PgParam::Text(std::to_string(Millis(options_.statement_timeout))),
      PgParam::Text(std::to_string(Millis(options_.call_timeout) * 4))};
  auto set = Run(pg,
                 "SELECT set_config('statement_timeout', $1, false), "
                 "set_config('idle_in_transaction_session_timeout', $2, false)",
                 &settings, Clock::now() + options_.call_timeout, &broken);
  if (!set.ok()) return fail(std::string(set.status().message()));
  ConnectSucceeded();
  return pg;
}

absl::StatusOr<PostgresClient::Impl::Slot*> PostgresClient::Impl::Acquire() {
  Slot* slot = nullptr;
  {
    std::unique_lock lock(mu_);
    auto deadline = Clock::now() + options_.acquire_timeout;
    auto free_slot = [&]() -> Slot* {
      // A connected one first, so that a few busy moments do not open every connection.
      Slot* empty = nullptr;
      for (auto& s : slots_) {
        if (s.busy) continue;
        if (s.pg != nullptr) return &s;
        if (empty == nullptr) empty = &s;
      }
      return empty;
    };
    while ((slot = free_slot()) == nullptr) {
      if (free_cv_.wait_until(lock, deadline) == std::cv_status::timeout &&
          (slot = free_slot()) == nullptr) {
        return absl::DeadlineExceededError(
            absl::StrCat("postgres ", endpoint_, ": all ", slots_.size(),
                         " connections stayed busy for ", Millis(options_.acquire_timeout), " ms"));
      }
      if (slot != nullptr) break;
    }
    if (slot->pg == nullptr && Clock::now() < next_connect_) {
      return absl::UnavailableError(
          absl::StrCat("postgres ", endpoint_, " unreachable: ", last_error_));
    }
    slot->busy = true;
  }
  // A pooled connection the server has closed (a restart, an idle timeout) shows as readable:
  // find out now rather than fail the caller's statement.
  if (slot->pg != nullptr && PQsocket(slot->pg) >= 0) {
    pollfd p{PQsocket(slot->pg), POLLIN, 0};
    if (poll(&p, 1, 0) > 0 &&
        (PQconsumeInput(slot->pg) == 0 || PQstatus(slot->pg) == CONNECTION_BAD)) {
      PQfinish(slot->pg);
      slot->pg = nullptr;
    }
  }
  if (slot->pg == nullptr) {
    auto pg = Connect();
    if (!pg.ok()) {
      Give(slot, false);
      return pg.status();
    }
    slot->pg = *pg;
  }
  return slot;
}

void PostgresClient::Impl::Give(Slot* slot, bool broken) {
  {
    std::lock_guard lock(mu_);
    if (broken && slot->pg != nullptr) {
      PQfinish(slot->pg);
      slot->pg = nullptr;
    }
    slot->busy = false;
  }
  free_cv_.notify_one();
}

absl::StatusOr<PgRows> PostgresClient::Impl::Query(std::string_view op, const std::string& sql,
                                                   const std::vector<PgParam>& params) {
  auto start = Clock::now();
  absl::StatusOr<PgRows> out = [&]() -> absl::StatusOr<PgRows> {
    auto slot = Acquire();
    if (!slot.ok()) return slot.status();
    bool broken = false;
    auto result = RunOn((*slot)->pg, sql, &params, &broken);
    Give(*slot, broken);
    if (!result.ok()) return result.status();
    return PgRows(*std::move(result));
  }();
  Record(op, start, out.status());
  return out;
}

class PgSession::Impl {
 public:
  Impl(PostgresClient::Impl* client, PGconn* pg) : client_(client), pg_(pg) {}
  absl::StatusOr<PgRows> Query(const std::string& sql, const std::vector<PgParam>* params) {
    if (!first_error_.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the transaction already failed: ", first_error_.message()));
    }
    auto result = client_->RunOn(pg_, sql, params, &broken_);
    if (!result.ok()) {
      first_error_ = result.status();
      return result.status();
    }
    return PgRows(*std::move(result));
  }
  bool broken() const { return broken_; }
  const absl::Status& first_error() const { return first_error_; }

 private:
  PostgresClient::Impl* client_;
  PGconn* pg_;
  bool broken_ = false;
  absl::Status first_error_;
};

absl::StatusOr<PgRows> PgSession::Query(const std::string& sql,
                                        const std::vector<PgParam>& params) {
  return impl_->Query(sql, &params);
}

absl::Status PgSession::ExecScript(const std::string& sql) {
  return impl_->Query(sql, nullptr).status();
}

absl::Status PostgresClient::Impl::Transaction(
    std::string_view op, const std::function<absl::Status(PgSession&)>& body) {
  auto start = Clock::now();
  absl::Status out = [&]() -> absl::Status {
    auto slot = Acquire();
    if (!slot.ok()) return slot.status();
    PGconn* pg = (*slot)->pg;
    PgSession::Impl session_impl(this, pg);
    PgSession session(&session_impl);
    bool rollback_broken = false;
    absl::Status status = session.Query("BEGIN").status();
    if (status.ok()) {
      status = body(session);
      // A statement that failed aborted the transaction whatever the body made of it: COMMIT
      // would quietly roll back.
      if (status.ok() && !session_impl.first_error().ok()) status = session_impl.first_error();
      if (status.ok()) {
        auto commit = session.Query("COMMIT");
        status = commit.status();
      } else if (!session_impl.broken()) {
        RunOn(pg, "ROLLBACK", nullptr, &rollback_broken).IgnoreError();
      }
    }
    // A connection left inside a transaction (a ROLLBACK that did not get through) is not reused.
    Give(*slot, session_impl.broken() || rollback_broken || PQstatus(pg) == CONNECTION_BAD ||
                    PQtransactionStatus(pg) != PQTRANS_IDLE);
    return status;
  }();
  Record(op, start, out);
  return out;
}

PostgresStatus PostgresClient::Impl::status() const {
  std::lock_guard lock(mu_);
  PostgresStatus s;
  if (!up_) {
    s.health = PostgresStatus::Health::kDown;
    s.detail = absl::StrCat("postgres ", endpoint_, ": ", last_error_);
    return s;
  }
  auto now = Clock::now();
  size_t slow = std::count_if(slow_.begin(), slow_.end(),
                              [&](Clock::time_point t) { return t >= now - kSlowWindow; });
  if (slow >= kSlowCalls) {
    s.health = PostgresStatus::Health::kDegraded;
    s.detail =
        absl::StrCat("postgres ", endpoint_, ": ", slow, " answers slower than ",
                     Millis(options_.slow_call), " ms in the last ",
                     std::chrono::duration_cast<std::chrono::seconds>(kSlowWindow).count(), " s");
    return s;
  }
  s.health = PostgresStatus::Health::kHealthy;
  s.detail = absl::StrCat("postgres ", endpoint_, ": connected");
  return s;
}

void PostgresClient::Impl::Wake() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;
}

absl::StatusOr<int> PostgresClient::Impl::Listen(const std::string& channel,
                                                 std::function<void(const PgNotification&)> fn) {
  if (!ValidChannel(channel)) {
    return absl::InvalidArgumentError("a LISTEN channel is 1 to 63 of [a-z0-9_], not \"" +
                                      channel.substr(0, 80) + "\"");
  }
  int id;
  {
    std::lock_guard lock(listen_mu_);
    id = next_id_++;
    subscribers_[id] = Subscriber{channel, std::move(fn)};
    if (!listen_thread_.joinable()) listen_thread_ = std::thread([this] { ListenLoop(); });
  }
  Wake();
  return id;
}

void PostgresClient::Impl::Unlisten(int id) {
  std::lock_guard dispatch(dispatch_mu_);
  std::lock_guard lock(listen_mu_);
  subscribers_.erase(id);
}

void PostgresClient::Impl::Deliver(const std::vector<std::string>& channels,
                                   const PgNotification* n) {
  std::lock_guard dispatch(dispatch_mu_);
  std::vector<std::pair<std::string, std::function<void(const PgNotification&)>*>> targets;
  {
    std::lock_guard lock(listen_mu_);
    for (auto& [id, sub] : subscribers_) {
      if (std::find(channels.begin(), channels.end(), sub.channel) != channels.end()) {
        targets.emplace_back(sub.channel, &sub.fn);
      }
    }
  }
  // Unlisten waits on dispatch_mu_, so the functions stay alive while they run.
  for (auto& [channel, fn] : targets) {
    if (n != nullptr) {
      (*fn)(*n);
    } else {
      PgNotification resync;
      resync.channel = channel;
      resync.resync = true;
      (*fn)(resync);
    }
  }
}

void PostgresClient::Impl::ListenLoop() {
  PGconn* pg = nullptr;
  std::set<std::string> listening;
  Clock::time_point next_attempt = Clock::time_point::min();
  std::chrono::milliseconds backoff{0};
  std::mt19937 rng(std::random_device{}());
  Clock::time_point last_traffic = Clock::now();
  auto drop = [&](const std::string& why) {
    if (pg != nullptr) {
      spdlog::warn("postgres {}: the LISTEN connection broke: {}", endpoint_, why);
      PQfinish(pg);
    }
    pg = nullptr;
    listening.clear();
  };
  auto drain_wake = [&] {
    uint64_t v;
    while (read(wake_fd_, &v, sizeof(v)) > 0) {
    }
  };
  while (true) {
    std::vector<std::string> wanted;
    {
      std::lock_guard lock(listen_mu_);
      if (stopping_) break;
      for (const auto& [id, sub] : subscribers_) wanted.push_back(sub.channel);
    }
    if (pg == nullptr) {
      if (Clock::now() < next_attempt) {
        WaitFd(wake_fd_, POLLIN, next_attempt);
        drain_wake();
        continue;
      }
      auto connected = Connect();
      if (!connected.ok()) {
        backoff = std::clamp(backoff * 2, options_.backoff_min, options_.backoff_max);
        std::uniform_real_distribution<double> jitter(0.5, 1.0);
        next_attempt =
            Clock::now() + std::chrono::duration_cast<Clock::duration>(backoff * jitter(rng));
        continue;
      }
      pg = *connected;
      backoff = std::chrono::milliseconds(0);
      last_traffic = Clock::now();
    }
    std::vector<std::string> added;
    for (const auto& channel : wanted) {
      if (listening.count(channel) != 0) continue;
      bool broken = false;
      // The channel is [a-z0-9_] (ValidChannel): an identifier, which LISTEN cannot take as a
      // parameter.
      auto r = RunOn(pg, "LISTEN \"" + channel + "\"", nullptr, &broken);
      if (!r.ok()) {
        drop(std::string(r.status().message()));
        break;
      }
      listening.insert(channel);
      added.push_back(channel);
    }
    if (pg == nullptr) continue;
    if (!added.empty()) Deliver(added, nullptr);

    int ev = WaitFd(PQsocket(pg), POLLIN, Clock::now() + std::chrono::seconds(1), wake_fd_);
    if (ev == -1) {
      drain_wake();
    } else if (ev != 0) {
      if (PQconsumeInput(pg) == 0) {
        drop(Trim(PQerrorMessage(pg)));
        continue;
      }
      last_traffic = Clock::now();
    } else if (Clock::now() - last_traffic > kListenPing) {
      bool broken = false;
      auto r = RunOn(pg, "SELECT 1", nullptr, &broken);
      if (!r.ok()) {
        drop(std::string(r.status().message()));
        ConnectFailed(std::string(r.status().message()));
        continue;
      }
      last_traffic = Clock::now();
    }
    while (PGnotify* n = PQnotifies(pg)) {
      PgNotification note;
      note.channel = n->relname;
      note.payload = n->extra != nullptr ? n->extra : "";
      PQfreemem(n);
      Deliver({note.channel}, &note);
    }
  }
  if (pg != nullptr) PQfinish(pg);
}

PostgresClient::PostgresClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PostgresClient::~PostgresClient() = default;

absl::StatusOr<std::unique_ptr<PostgresClient>> PostgresClient::Create(
    PostgresOptions options, prometheus::Registry* metrics) {
  if (options.url.empty()) return absl::InvalidArgumentError("the PostgreSQL URL is empty");
  char* error = nullptr;
  PQconninfoOption* info = PQconninfoParse(options.url.c_str(), &error);
  if (info == nullptr) {
    std::string message = error != nullptr ? Trim(error) : "out of memory";
    PQfreemem(error);
    return absl::InvalidArgumentError("the PostgreSQL URL is not valid: " + message);
  }
  std::string host, port, dbname;
  for (PQconninfoOption* o = info; o->keyword != nullptr; ++o) {
    std::string key = o->keyword;
    std::string value = o->val != nullptr ? o->val : "";
    if (key == "host" || (key == "hostaddr" && host.empty())) host = value;
    if (key == "port") port = value;
    if (key == "dbname") dbname = value;
  }
  PQconninfoFree(info);
  if (options.connections < 1 || options.connections > 64) {
    return absl::InvalidArgumentError("PostgreSQL connections must be from 1 to 64");
  }
  std::string endpoint = absl::StrCat(host.empty() ? "localhost" : host, ":",
                                      port.empty() ? "5432" : port, "/", dbname);
  return std::unique_ptr<PostgresClient>(
      new PostgresClient(std::make_unique<Impl>(std::move(options), std::move(endpoint), metrics)));
}

absl::StatusOr<PgRows> PostgresClient::Query(std::string_view op, const std::string& sql,
                                             const std::vector<PgParam>& params) {
  return impl_->Query(op, sql, params);
}

absl::Status PostgresClient::Transaction(std::string_view op,
                                         const std::function<absl::Status(PgSession&)>& body) {
  return impl_->Transaction(op, body);
}

absl::StatusOr<int> PostgresClient::Listen(const std::string& channel,
                                           std::function<void(const PgNotification&)> fn) {
  return impl_->Listen(channel, std::move(fn));
}

void PostgresClient::Unlisten(int id) { impl_->Unlisten(id); }
PostgresStatus PostgresClient::status() const { return impl_->status(); }
const std::string& PostgresClient::endpoint() const { return impl_->endpoint(); }

}  // namespace anima::store
