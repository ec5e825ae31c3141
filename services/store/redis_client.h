#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

// A small Redis client for the services' shared state (conversation memory, quotas).
//
// Built on Debian's hiredis 0.14, which has neither TLS nor an Asio adapter, so:
// - NO TLS. A `rediss://` URL is refused. Reach Redis over a private network (a Kubernetes
//   NetworkPolicy, a VPC; Memorystore's in-transit encryption is off by default and must stay
//   off for this client) or through a local TLS tunnel such as stunnel.
// - A small pool of blocking connections, each owned by one I/O thread with its own queue. The
//   thread takes every call queued at once and pipelines them (append all, then read all
//   replies), so many concurrent callers cost one round trip. Calls are spread over the
//   connections round robin.
namespace anima::store {

// A decoded hiredis reply.
struct RedisReply {
  enum class Type { kNil, kInteger, kString, kStatus, kArray, kError };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;                   // string, status or error text
  std::vector<RedisReply> elements;  // array
};

struct RedisOptions {
  std::string url{};    // redis://[:password@]host:port[/db]
  int connections = 2;  // each with its own I/O thread
  std::chrono::milliseconds connect_timeout{500};
  // How long one round trip may take, from the moment the call is written. A call also fails
  // with DeadlineExceeded when it waited this long in the queue without being sent.
  std::chrono::milliseconds call_timeout{250};
  std::chrono::milliseconds backoff_min{100}, backoff_max{5000};  // between reconnect attempts
  std::chrono::milliseconds slow_call{50};  // answers slower than this mark the client degraded
  size_t max_queued = 10000;                // calls waiting beyond this fail at once (Unavailable)
};

// Where a redis:// URL points.
struct RedisEndpoint {
  std::string host;
  int port = 6379;
  std::string user;      // empty: AUTH <password> (the "default" user)
  std::string password;  // empty: no AUTH
  int db = 0;            // SELECTed on connect when not 0
};

// redis://[[user]:password@]host[:port][/db], user and password %-decoded; with a user other
// than "default", AUTH <user> <password> (Redis 6 ACLs). Errors are InvalidArgument naming what
// is wrong; rediss:// is refused with the reason (no TLS, see above).
absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url);

// A Lua script run by EVALSHA, loaded with SCRIPT LOAD (or EVAL on NOSCRIPT) transparently.
// Cheap to copy (the text is shared); keep one per script for the life of the process.
class RedisScript {
 public:
  explicit RedisScript(std::string source);
  const std::string& sha1() const { return data_->sha1; }  // lower-case hex, as Redis names it
  const std::string& source() const { return data_->source; }

 private:
  struct Data {
    std::string source;
    std::string sha1;
  };
  std::shared_ptr<const Data> data_;
};

enum class BackendHealth { kHealthy, kDegraded, kDown };
struct BackendStatus {
  BackendHealth health = BackendHealth::kDown;
  std::string detail;  // e.g. "redis 10.0.0.3:6379: connected", or why it is down
};

// Thread-safe. Metrics (registered idempotently by name, so several clients, or a client and
// the PostgreSQL client, share the families): anima_store_calls_total{backend="redis",op,
// result="ok"|"error"|"timeout"}, anima_store_call_seconds{backend,op}, anima_store_up{backend}.
class RedisClient {
 public:
  using Callback = std::function<void(absl::StatusOr<RedisReply>)>;
  using PipelineCallback = std::function<void(absl::StatusOr<std::vector<RedisReply>>)>;

  // Parses the URL (InvalidArgument naming what is wrong); does not wait for a connection:
  // connections are made in the background and re-made with backoff. `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<RedisClient>> Create(RedisOptions options,
                                                             prometheus::Registry* metrics);
  ~RedisClient();  // fails queued calls with Cancelled, joins threads
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // One command, argv form (binary-safe). `done` runs exactly once, on one of the client's I/O
  // threads, never inline in the caller (even when the call fails at once), so a caller may
  // hold its own lock while calling; `done` must not block (post to your own executor).
  // Errors: Unavailable when not connected (calls made before the first connection is up fail
  // so too) or the queue is full, DeadlineExceeded when no answer came within call_timeout of
  // the call (its outcome on the server is then unknown), Internal for a Redis error reply (the
  // reply text in the message), Cancelled when the client is destroyed first. `op` is the
  // metrics label: keep the set of values small and fixed.
  void Command(std::string_view op, std::vector<std::string> argv, Callback done);
  // Several commands in one round trip; replies in order. Error replies of single commands are
  // returned as elements of Type::kError (the pipeline as a whole succeeded); transport errors
  // fail the whole pipeline.
  void Pipeline(std::string_view op, std::vector<std::vector<std::string>> commands,
                PipelineCallback done);
  // EVALSHA, falling back to EVAL when the server does not know the script (after a restart or
  // SCRIPT FLUSH); the script is then cached again for the next calls. A Lua error is Internal.
  void Eval(std::string_view op, const RedisScript& script, std::vector<std::string> keys,
            std::vector<std::string> args, Callback done);

  // Healthy when every connection is up and recent answers were fast; degraded when some
  // connections are down or recent answers were slower than slow_call; down when none is up.
  BackendStatus status() const;
  // "host:port" of the server, for logs and status details (never the password).
  std::string endpoint() const;
  // Calls accepted and not yet written to Redis.
  size_t queued() const;

  class Impl;

 private:
  explicit RedisClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anima::store
