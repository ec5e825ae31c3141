#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "prometheus/registry.h"

// A small PostgreSQL client for the services' shared state (self-coding jobs and events), on
// libpq, for blocking use from worker threads. Never call it from a gRPC callback or an Asio
// strand: every call may wait for the network (bounded, see PostgresOptions).
//
// - A pool of `connections` connections, made lazily on first use and re-made after an error,
//   with jittered exponential backoff between attempts: while the server is unreachable, calls
//   fail at once with Unavailable instead of each waiting for a connect timeout.
// - Every call is bounded: connects by connect_timeout, each statement by statement_timeout on
//   the server (set on every connection) and by call_timeout on the client (a server that stops
//   answering costs the connection, not a hung thread); TCP keepalives and tcp_user_timeout find
//   dead peers.
// - TLS: libpq's default sslmode `prefer` (TLS when the server offers it) unless the URL says
//   otherwise (`?sslmode=require`, `verify-full`, ...).
// - Values only ever travel as parameters (PQexecParams' protocol); SQL text is constant.
// - LISTEN on a dedicated connection and thread (Listen()), re-LISTENed after a reconnect; the
//   subscribers are then told that they may have missed notifications.
namespace anima::store {

// One parameter of a statement. Text is parsed by the server as the type the statement gives
// its placeholder (cast where the type is not obvious: `$1::bigint`); Bytes go in binary (bytea);
// Null is SQL NULL.
class PgParam {
 public:
  static PgParam Text(std::string value) { return PgParam(std::move(value), false, false); }
  static PgParam Int(int64_t value) { return Text(std::to_string(value)); }
  static PgParam Bool(bool value) { return Text(value ? "true" : "false"); }
  static PgParam Bytes(std::string value) { return PgParam(std::move(value), true, false); }
  static PgParam Null() { return PgParam("", false, true); }

  const std::string& value() const { return value_; }
  bool binary() const { return binary_; }
  bool null() const { return null_; }

 private:
  PgParam(std::string value, bool binary, bool null)
      : value_(std::move(value)), binary_(binary), null_(null) {}
  std::string value_;
  bool binary_;
  bool null_;
};

// The rows of one statement's result, read in libpq's binary format. Cheap to copy.
class PgRows {
 public:
  PgRows() = default;
  int size() const;
  int columns() const;
  bool IsNull(int row, int col) const;
  // A text, varchar or bytea value, byte for byte; "" for NULL.
  std::string Bytes(int row, int col) const;
  // A smallint, integer or bigint value; 0 for NULL.
  int64_t Int(int row, int col) const;
  bool Bool(int row, int col) const;
  // Rows an INSERT, UPDATE or DELETE touched.
  int64_t affected() const;

  struct Result;  // the libpq result, freed with the last copy
  explicit PgRows(std::shared_ptr<Result> result) : result_(std::move(result)) {}

 private:
  std::shared_ptr<Result> result_;
};

// The connection a Transaction's body runs its statements on. Valid only inside the body.
class PgSession {
 public:
  absl::StatusOr<PgRows> Query(const std::string& sql, const std::vector<PgParam>& params = {});
  // Several statements of constant SQL text and no parameters (schema migrations).
  absl::Status ExecScript(const std::string& sql);

  class Impl;
  explicit PgSession(Impl* impl) : impl_(impl) {}

 private:
  Impl* impl_;
};

struct PostgresOptions {
  // A libpq connection URI (postgresql://user:password@host:port/db?sslmode=...) or a key=value
  // connection string. Its parameters win over the defaults below (e.g. its connect_timeout).
  std::string url;
  int connections = 4;
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds statement_timeout{5000};  // server side, on every connection
  // Client side, per statement: a server that stops answering is given up on after this.
  std::chrono::milliseconds call_timeout{7000};
  // How long a call waits for a free connection of the pool.
  std::chrono::milliseconds acquire_timeout{5000};
  std::chrono::milliseconds backoff_min{100}, backoff_max{5000};  // between reconnect attempts
  std::chrono::milliseconds slow_call{200};  // answers slower than this mark the client degraded
  std::string application_name = "anima";
};

struct PostgresStatus {
  enum class Health { kHealthy, kDegraded, kDown };
  Health health = Health::kDown;
  std::string detail;  // "postgres 10.0.0.5:5432/anima: ...", never the password
};

// A NOTIFY, or (resync) word that the LISTEN connection was (re)made: notifications sent while
// it was down are lost, so a subscriber re-reads what it follows.
struct PgNotification {
  std::string channel;
  std::string payload;
  bool resync = false;
};

// Thread-safe. Metrics (registered by name, so the Redis client's families in the same process
// are shared, not duplicated): anima_store_calls_total{backend="postgres",op,result="ok"|"error"|
// "timeout"}, anima_store_call_seconds{backend,op}, anima_store_up{backend}.
class PostgresClient {
 public:
  // Checks the URL (InvalidArgument naming what is wrong); does not connect: connections are
  // made on first use. `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<PostgresClient>> Create(PostgresOptions options,
                                                                prometheus::Registry* metrics);
  ~PostgresClient();  // joins the LISTEN thread, closes every connection
  PostgresClient(const PostgresClient&) = delete;
  PostgresClient& operator=(const PostgresClient&) = delete;

  // One statement in its own transaction. `op` labels the metrics: keep the set of values small
  // and fixed. Errors: Unavailable when the server cannot be reached (or the connection broke),
  // DeadlineExceeded after statement_timeout or call_timeout (the outcome is then unknown),
  // AlreadyExists for a unique violation, Aborted for a serialization failure or deadlock (retry),
  // Internal for any other SQL error (its SQLSTATE and message in the text).
  absl::StatusOr<PgRows> Query(std::string_view op, const std::string& sql,
                               const std::vector<PgParam>& params = {});
  // BEGIN, `body`, then COMMIT when it returns OK and ROLLBACK otherwise; returns body's error,
  // or the error of a statement. If COMMIT itself fails the outcome is unknown (Unavailable or
  // DeadlineExceeded): make what a transaction does safe to retry.
  absl::Status Transaction(std::string_view op,
                           const std::function<absl::Status(PgSession&)>& body);

  // Subscribes `fn` to NOTIFYs on `channel` ([a-z0-9_], at most 63 bytes; InvalidArgument
  // otherwise) and returns an id for Unlisten. `fn` runs on the LISTEN thread: it must be quick
  // and must not call Listen or Unlisten. Its first call is a resync, once the LISTEN is in
  // effect, and every later reconnect brings another.
  absl::StatusOr<int> Listen(const std::string& channel,
                             std::function<void(const PgNotification&)> fn);
  // Once this returns, the callback is not running and never will again.
  void Unlisten(int id);

  // Healthy: reachable and recent answers fast; degraded: recent answers slower than slow_call
  // (or timing out); down: the last attempt to reach the server failed. Never blocks on the
  // network.
  PostgresStatus status() const;
  // "host:port/dbname" of the server, for logs and details (never the password).
  const std::string& endpoint() const;

  class Impl;

 private:
  explicit PostgresClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anima::store
