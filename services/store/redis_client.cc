#include "services/store/redis_client.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "services/common/metrics.h"
#include "spdlog/spdlog.h"

namespace anima::store {

namespace {

using Clock = std::chrono::steady_clock;
using Replies = std::vector<RedisReply>;
using Done = std::function<void(absl::StatusOr<Replies>)>;

// How long a slow answer keeps the client "degraded", and how often an idle connection is
// checked with PING (so that status() notices a server gone quiet without traffic).
constexpr std::chrono::seconds kSlowWindow{10};
constexpr std::chrono::seconds kIdlePing{1};

int FromHex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> PercentDecode(std::string_view in, const char* what) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) {
      return absl::InvalidArgumentError(absl::StrCat("Redis URL: bad %-escape in the ", what));
    }
    int hi = FromHex(in[i + 1]), lo = FromHex(in[i + 2]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(absl::StrCat("Redis URL: bad %-escape in the ", what));
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::optional<int> ParseInt(std::string_view s) {
  int v = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

RedisReply Decode(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(Decode(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::kNil;
  }
  return out;
}

timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

std::string ErrorText(const redisContext* ctx) {
  if (ctx == nullptr) return "out of memory";
  std::string text = ctx->errstr;
  return text.empty() ? "I/O error" : text;
}

// Exponential backoff between min and max, each delay drawn from [d/2, d] so that replicas that
// lost Redis together do not reconnect in lockstep.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds min, std::chrono::milliseconds max)
      : min_(std::max<std::chrono::milliseconds>(min, std::chrono::milliseconds(1))),
        max_(std::max(max, min_)),
        next_(min_),
        rng_(std::random_device{}()) {}
  std::chrono::milliseconds Next() {
    auto d = next_;
    next_ = std::min(max_, next_ * 2);
    std::uniform_int_distribution<int64_t> pick(d.count() / 2, d.count());
    return std::chrono::milliseconds(pick(rng_));
  }
  void Reset() { next_ = min_; }

 private:
  std::chrono::milliseconds min_, max_, next_;
  std::mt19937_64 rng_;
};

}  // namespace

absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.rfind("rediss://", 0) == 0) {
    return absl::InvalidArgumentError(
        "Redis URL: rediss:// (TLS) is not supported: Debian's hiredis 0.14 has no TLS; reach "
        "Redis over a private network or through a TLS tunnel (stunnel) and use redis://");
  }
  if (url.rfind(kScheme, 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Redis URL must start with redis:// (redis://[:password@]host:port[/db]), got \"",
        std::string(url.substr(0, 40)), "\""));
  }
  std::string_view rest = url.substr(kScheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return absl::InvalidArgumentError("Redis URL: query strings and fragments are not supported");
  }
  RedisEndpoint ep;
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t colon = userinfo.find(':');
    std::string_view user = userinfo.substr(0, colon);
    std::string_view password = colon == std::string_view::npos ? "" : userinfo.substr(colon + 1);
    if (colon == std::string_view::npos) {
      // redis://password@host: a bare secret, as several clients accept.
      password = user;
      user = "";
    }
    auto u = PercentDecode(user, "user");
    if (!u.ok()) return u.status();
    auto p = PercentDecode(password, "password");
    if (!p.ok()) return p.status();
    ep.user = *u == "default" ? "" : *u;
    ep.password = *p;
    if (!ep.user.empty() && ep.password.empty()) {
      return absl::InvalidArgumentError("Redis URL: a user without a password");
    }
  }
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError("Redis URL: unterminated [ in the IPv6 host");
    }
    ep.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return absl::InvalidArgumentError("Redis URL: expected :port after the IPv6 host");
      }
      port_text = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    ep.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (ep.host.empty()) return absl::InvalidArgumentError("Redis URL: the host is missing");
  if (!port_text.empty() || authority.find(':') != std::string_view::npos) {
    auto port = ParseInt(port_text);
    if (!port || *port < 1 || *port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("Redis URL: bad port \"", std::string(port_text), "\" (1 to 65535)"));
    }
    ep.port = *port;
  }
  if (!path.empty()) {
    auto db = ParseInt(path);
    if (!db || *db < 0 || *db > 1000000) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Redis URL: bad database \"", std::string(path.substr(0, 40)), "\" (a number, /0)"));
    }
    ep.db = *db;
  }
  return ep;
}

RedisScript::RedisScript(std::string source) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(source.data(), source.size(), digest, &size, EVP_sha1(), nullptr);
  std::string hex;
  hex.reserve(size * 2);
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < size; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xF];
  }
  data_ = std::make_shared<const Data>(Data{std::move(source), std::move(hex)});
}

// --- Impl ------------------------------------------------------------------------------------

namespace {

struct OpMetrics {
  prometheus::Counter* ok = nullptr;
  prometheus::Counter* error = nullptr;
  prometheus::Counter* timeout = nullptr;
  prometheus::Histogram* seconds = nullptr;
};

struct Call {
  const OpMetrics* metrics = nullptr;
  std::vector<std::vector<std::string>> commands;
  std::optional<RedisScript> script;  // an EVALSHA call: commands[0] is its argv
  Clock::time_point start;
  Clock::time_point deadline;
  Done done;
};

}  // namespace

class RedisClient::Impl {
 public:
  Impl(RedisOptions options, RedisEndpoint endpoint, prometheus::Registry* registry);
  ~Impl();

  void Start();
  void Submit(std::string_view op, std::vector<std::vector<std::string>> commands,
              std::optional<RedisScript> script, Done done);
  BackendStatus status() const;
  std::string endpoint() const { return endpoint_text_; }
  size_t queued() const { return queued_.load(); }

 private:
  struct Connection {
    int index = 0;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Call> queue;  // guarded by mu
    bool stopping = false;   // guarded by mu
    bool connected = false;  // guarded by mu; calls are queued only while true
    std::string last_error;  // guarded by mu
    std::atomic<bool> up{false};
    std::thread thread;
  };

  const OpMetrics* MetricsFor(std::string_view op);
  // Completes `call` now on the calling thread (an I/O thread), recording its metrics.
  void Complete(Call& call, absl::StatusOr<Replies> result);
  // Completes `done` with `status` on the failure thread, never inline in the caller.
  void FailSoon(Call call, absl::Status status);

  void Run(Connection* conn);
  redisContext* Connect(std::string* error);
  // Sends `batch` and reads every answer; false when the connection must be dropped (every call
  // of the batch has been completed either way).
  bool RoundTrip(redisContext* ctx, std::deque<Call>& batch);
  bool Ping(redisContext* ctx);
  void SetUp(Connection* conn, bool up);
  // Drops every call waiting on `conn` with Unavailable; the connection is no longer used.
  void Disconnect(Connection* conn, const std::string& why);

  const RedisOptions options_;
  const RedisEndpoint endpoint_;
  const std::string endpoint_text_;

  prometheus::Family<prometheus::Counter>* calls_ = nullptr;
  prometheus::Family<prometheus::Histogram>* seconds_ = nullptr;
  prometheus::Gauge* up_gauge_ = nullptr;
  std::mutex ops_mu_;
  std::map<std::string, OpMetrics, std::less<>> ops_;
  OpMetrics no_metrics_;

  std::vector<std::unique_ptr<Connection>> connections_;
  std::atomic<size_t> next_{0};
  std::atomic<size_t> queued_{0};
  std::atomic<int64_t> last_slow_ns_{0};  // steady clock, 0: never

  // Calls failed before reaching a connection, completed here so that no callback runs inline.
  std::mutex fail_mu_;
  std::condition_variable fail_cv_;
  std::deque<std::pair<Call, absl::Status>> failures_;
  bool fail_stopping_ = false;
  std::thread fail_thread_;
};

RedisClient::Impl::Impl(RedisOptions options, RedisEndpoint endpoint,
                        prometheus::Registry* registry)
    : options_(std::move(options)),
      endpoint_(std::move(endpoint)),
      endpoint_text_(endpoint_.host.find(':') != std::string::npos
                         ? absl::StrCat("[", endpoint_.host, "]:", endpoint_.port)
                         : absl::StrCat(endpoint_.host, ":", endpoint_.port)) {
  if (registry != nullptr) {
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
                     .Add({{"backend", "redis"}});
    up_gauge_->Set(0);
  }
  int n = std::max(1, options_.connections);
  for (int i = 0; i < n; ++i) {
    auto conn = std::make_unique<Connection>();
    conn->index = i;
    conn->last_error = "connecting";
    connections_.push_back(std::move(conn));
  }
}

void RedisClient::Impl::Start() {
  fail_thread_ = std::thread([this] {
    std::unique_lock lock(fail_mu_);
    for (;;) {
      fail_cv_.wait(lock, [this] { return fail_stopping_ || !failures_.empty(); });
      if (failures_.empty()) return;
      auto batch = std::move(failures_);
      failures_.clear();
      lock.unlock();
      for (auto& [call, status] : batch) Complete(call, std::move(status));
      lock.lock();
    }
  });
  for (auto& conn : connections_) {
    Connection* c = conn.get();
    c->thread = std::thread([this, c] { Run(c); });
  }
}

RedisClient::Impl::~Impl() {
  for (auto& conn : connections_) {
    {
      std::lock_guard lock(conn->mu);
      conn->stopping = true;
    }
    conn->cv.notify_all();
  }
  for (auto& conn : connections_) {
    if (conn->thread.joinable()) conn->thread.join();
  }
  {
    std::lock_guard lock(fail_mu_);
    fail_stopping_ = true;
  }
  fail_cv_.notify_all();
  if (fail_thread_.joinable()) fail_thread_.join();
}

const OpMetrics* RedisClient::Impl::MetricsFor(std::string_view op) {
  if (calls_ == nullptr) return &no_metrics_;
  std::lock_guard lock(ops_mu_);
  auto it = ops_.find(op);
  if (it != ops_.end()) return &it->second;
  std::string name(op);
  OpMetrics m;
  auto counter = [&](const char* result) {
    return &calls_->Add({{"backend", "redis"}, {"op", name}, {"result", result}});
  };
  m.ok = counter("ok");
  m.error = counter("error");
  m.timeout = counter("timeout");
  m.seconds = &seconds_->Add({{"backend", "redis"}, {"op", name}}, common::LatencyBuckets());
  return &ops_.emplace(std::move(name), m).first->second;
}

void RedisClient::Impl::Complete(Call& call, absl::StatusOr<Replies> result) {
  auto elapsed = Clock::now() - call.start;
  if (elapsed > options_.slow_call || absl::IsDeadlineExceeded(result.status())) {
    last_slow_ns_ = Clock::now().time_since_epoch().count();
  }
  if (call.metrics->ok != nullptr) {
    bool ok = result.ok() && std::none_of(result->begin(), result->end(), [](const RedisReply& r) {
                return r.type == RedisReply::Type::kError;
              });
    (ok                                          ? call.metrics->ok
     : absl::IsDeadlineExceeded(result.status()) ? call.metrics->timeout
                                                 : call.metrics->error)
        ->Increment();
    call.metrics->seconds->Observe(std::chrono::duration<double>(elapsed).count());
  }
  Done done = std::move(call.done);
  done(std::move(result));
}

void RedisClient::Impl::FailSoon(Call call, absl::Status status) {
  {
    std::lock_guard lock(fail_mu_);
    failures_.emplace_back(std::move(call), std::move(status));
  }
  fail_cv_.notify_one();
}

void RedisClient::Impl::Submit(std::string_view op, std::vector<std::vector<std::string>> commands,
                               std::optional<RedisScript> script, Done done) {
  Call call;
  call.metrics = MetricsFor(op);
  call.commands = std::move(commands);
  call.script = std::move(script);
  call.start = Clock::now();
  call.deadline = call.start + options_.call_timeout;
  call.done = std::move(done);
  if (call.commands.empty()) {
    FailSoon(std::move(call), absl::InvalidArgumentError("Redis call without a command"));
    return;
  }
  if (queued_.fetch_add(1) >= options_.max_queued) {
    queued_--;
    FailSoon(std::move(call), absl::UnavailableError(absl::StrCat(
                                  "Redis client at ", endpoint_text_, ": ", options_.max_queued,
                                  " calls are waiting already (queue full)")));
    return;
  }
  size_t n = connections_.size();
  size_t first = next_.fetch_add(1);
  std::string why;
  for (size_t i = 0; i < n; ++i) {
    Connection* conn = connections_[(first + i) % n].get();
    std::unique_lock lock(conn->mu);
    if (conn->connected && !conn->stopping) {
      conn->queue.push_back(std::move(call));
      lock.unlock();
      conn->cv.notify_one();
      return;
    }
    if (why.empty()) why = conn->last_error;
  }
  queued_--;
  FailSoon(std::move(call), absl::UnavailableError(absl::StrCat("Redis at ", endpoint_text_,
                                                                " is unreachable: ", why)));
}

BackendStatus RedisClient::Impl::status() const {
  size_t up = 0;
  std::string why;
  for (const auto& conn : connections_) {
    if (conn->up.load()) {
      ++up;
    } else if (why.empty()) {
      std::lock_guard lock(conn->mu);
      why = conn->last_error;
    }
  }
  std::string where = "redis " + endpoint_text_;
  if (up == 0) return {BackendHealth::kDown, absl::StrCat(where, ": unreachable: ", why)};
  if (up < connections_.size()) {
    return {BackendHealth::kDegraded, absl::StrCat(where, ": ", up, " of ", connections_.size(),
                                                   " connections up (", why, ")")};
  }
  int64_t slow = last_slow_ns_.load();
  if (slow != 0 && Clock::now() - Clock::time_point(Clock::duration(slow)) < kSlowWindow) {
    return {BackendHealth::kDegraded,
            absl::StrCat(where, ": answers slower than ", options_.slow_call.count(), " ms")};
  }
  return {BackendHealth::kHealthy, where};
}

void RedisClient::Impl::SetUp(Connection* conn, bool up) {
  conn->up = up;
  if (up_gauge_ == nullptr) return;
  bool any = std::any_of(connections_.begin(), connections_.end(),
                         [](const auto& c) { return c->up.load(); });
  up_gauge_->Set(any ? 1 : 0);
}

redisContext* RedisClient::Impl::Connect(std::string* error) {
  redisContext* ctx = redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port,
                                              ToTimeval(options_.connect_timeout));
  if (ctx == nullptr || ctx->err != 0) {
    *error = "connect: " + ErrorText(ctx);
    if (ctx != nullptr) redisFree(ctx);
    return nullptr;
  }
  redisSetTimeout(ctx, ToTimeval(options_.call_timeout));
  redisEnableKeepAlive(ctx);
  // AUTH, SELECT and a PING in one round trip: the PING proves the server answers (a stopped
  // server still completes TCP handshakes from its listen backlog).
  std::vector<std::vector<std::string>> hello;
  if (!endpoint_.password.empty()) {
    if (endpoint_.user.empty()) {
      hello.push_back({"AUTH", endpoint_.password});
    } else {
      hello.push_back({"AUTH", endpoint_.user, endpoint_.password});
    }
  }
  if (endpoint_.db != 0) hello.push_back({"SELECT", std::to_string(endpoint_.db)});
  hello.push_back({"PING"});
  for (const auto& argv : hello) {
    std::vector<const char*> args;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    redisAppendCommandArgv(ctx, static_cast<int>(args.size()), args.data(), lens.data());
  }
  for (const auto& argv : hello) {
    void* raw = nullptr;
    if (redisGetReply(ctx, &raw) != REDIS_OK || raw == nullptr) {
      *error = absl::StrCat(argv[0], ": ", ErrorText(ctx));
      redisFree(ctx);
      return nullptr;
    }
    auto* reply = static_cast<redisReply*>(raw);
    bool failed = reply->type == REDIS_REPLY_ERROR;
    if (failed) *error = absl::StrCat(argv[0], ": ", std::string(reply->str, reply->len));
    freeReplyObject(reply);
    if (failed) {
      redisFree(ctx);
      return nullptr;
    }
  }
  return ctx;
}

namespace {

// Reads the next reply, waiting at most until `deadline`. Returns the reply, or nullptr with
// `*timed_out` telling whether the deadline passed (else an I/O or protocol error, in ctx).
redisReply* ReadReply(redisContext* ctx, Clock::time_point deadline, bool* timed_out) {
  *timed_out = false;
  void* reply = nullptr;
  for (;;) {
    if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK) return nullptr;
    if (reply != nullptr) return static_cast<redisReply*>(reply);
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      *timed_out = true;
      return nullptr;
    }
    pollfd p{ctx->fd, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60000)));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) continue;  // the deadline is checked above
    if (n < 0 || redisBufferRead(ctx) != REDIS_OK) {
      if (ctx->err == 0) std::snprintf(ctx->errstr, sizeof(ctx->errstr), "poll failed");
      return nullptr;
    }
  }
}

void Append(redisContext* ctx, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  args.reserve(argv.size());
  lens.reserve(argv.size());
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  redisAppendCommandArgv(ctx, static_cast<int>(args.size()), args.data(), lens.data());
}

bool Flush(redisContext* ctx) {
  int done = 0;
  while (!done) {
    if (redisBufferWrite(ctx, &done) != REDIS_OK) return false;
  }
  return true;
}

}  // namespace

bool RedisClient::Impl::RoundTrip(redisContext* ctx, std::deque<Call>& batch) {
  for (const Call& call : batch) {
    for (const auto& argv : call.commands) Append(ctx, argv);
  }
  auto fail_rest = [&](size_t from, const absl::Status& status) {
    for (size_t i = from; i < batch.size(); ++i) Complete(batch[i], status);
  };
  if (!Flush(ctx)) {
    std::string why = ErrorText(ctx);
    fail_rest(0, absl::UnavailableError(
                     absl::StrCat("Redis at ", endpoint_text_, ": connection lost: ", why)));
    return false;
  }
  std::vector<size_t> noscript;  // EVALSHA calls the server did not know the script of
  std::vector<Replies> results(batch.size());
  auto read_all = [&](const std::vector<size_t>& which, size_t* failed_at,
                      absl::Status* failure) -> bool {
    for (size_t k = 0; k < which.size(); ++k) {
      Call& call = batch[which[k]];
      Replies replies;
      replies.reserve(call.commands.size());
      for (size_t j = 0; j < call.commands.size(); ++j) {
        bool timed_out = false;
        redisReply* r = ReadReply(ctx, call.deadline, &timed_out);
        if (r == nullptr) {
          *failed_at = k;
          *failure = timed_out
                         ? absl::DeadlineExceededError(
                               absl::StrCat("Redis at ", endpoint_text_, " did not answer within ",
                                            options_.call_timeout.count(), " ms"))
                         : absl::UnavailableError(absl::StrCat(
                               "Redis at ", endpoint_text_, ": connection lost: ", ErrorText(ctx)));
          return false;
        }
        replies.push_back(Decode(r));
        freeReplyObject(r);
      }
      results[which[k]] = std::move(replies);
    }
    return true;
  };
  auto finish = [&](size_t i) {
    Replies& replies = results[i];
    Complete(batch[i], std::move(replies));
  };

  std::vector<size_t> all(batch.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  size_t failed_at = 0;
  absl::Status failure;
  bool ok = read_all(all, &failed_at, &failure);
  size_t answered = ok ? batch.size() : failed_at;
  for (size_t i = 0; i < answered; ++i) {
    const Replies& replies = results[i];
    if (batch[i].script && replies.size() == 1 && replies[0].type == RedisReply::Type::kError &&
        replies[0].str.rfind("NOSCRIPT", 0) == 0) {
      noscript.push_back(i);
    } else {
      finish(i);
    }
  }
  if (!ok) {
    for (size_t i : noscript) Complete(batch[i], failure);
    fail_rest(answered, failure);
    return false;
  }
  if (noscript.empty()) return true;
  // The server lost its script cache (a restart, SCRIPT FLUSH): EVAL sends the text, which
  // caches it again for the next EVALSHA.
  for (size_t i : noscript) {
    auto argv = batch[i].commands[0];
    argv[0] = "EVAL";
    argv[1] = batch[i].script->source();
    Append(ctx, argv);
  }
  if (!Flush(ctx)) {
    failure = absl::UnavailableError(
        absl::StrCat("Redis at ", endpoint_text_, ": connection lost: ", ErrorText(ctx)));
    for (size_t i : noscript) Complete(batch[i], failure);
    return false;
  }
  ok = read_all(noscript, &failed_at, &failure);
  size_t retried = ok ? noscript.size() : failed_at;
  for (size_t k = 0; k < retried; ++k) finish(noscript[k]);
  for (size_t k = retried; k < noscript.size(); ++k) Complete(batch[noscript[k]], failure);
  return ok;
}

bool RedisClient::Impl::Ping(redisContext* ctx) {
  Append(ctx, {"PING"});
  if (!Flush(ctx)) return false;
  bool timed_out = false;
  redisReply* r = ReadReply(ctx, Clock::now() + options_.call_timeout, &timed_out);
  if (r == nullptr) {
    if (timed_out) std::snprintf(ctx->errstr, sizeof(ctx->errstr), "no answer to PING");
    return false;
  }
  bool ok = r->type != REDIS_REPLY_ERROR;
  freeReplyObject(r);
  return ok;
}

void RedisClient::Impl::Disconnect(Connection* conn, const std::string& why) {
  std::deque<Call> stranded;
  bool stopping;
  {
    std::lock_guard lock(conn->mu);
    conn->connected = false;
    conn->last_error = why;
    stranded.swap(conn->queue);
    stopping = conn->stopping;
  }
  queued_ -= stranded.size();
  SetUp(conn, false);
  auto status = stopping ? absl::CancelledError("the Redis client is shutting down")
                         : absl::UnavailableError(absl::StrCat("Redis at ", endpoint_text_,
                                                               ": connection lost: ", why));
  for (Call& call : stranded) Complete(call, status);
}

void RedisClient::Impl::Run(Connection* conn) {
  Backoff backoff(options_.backoff_min, options_.backoff_max);
  bool was_up = false, logged_down = false;
  for (;;) {
    {
      std::lock_guard lock(conn->mu);
      if (conn->stopping) break;
    }
    std::string error;
    redisContext* ctx = Connect(&error);
    if (ctx == nullptr) {
      {
        std::lock_guard lock(conn->mu);
        conn->last_error = error;
      }
      if (!logged_down) {
        spdlog::warn("redis {}: connection {} cannot connect: {}; retrying with backoff",
                     endpoint_text_, conn->index, error);
        logged_down = true;
      }
      std::unique_lock lock(conn->mu);
      conn->cv.wait_for(lock, backoff.Next(), [conn] { return conn->stopping; });
      continue;
    }
    backoff.Reset();
    if (was_up || logged_down) {
      spdlog::info("redis {}: connection {} up", endpoint_text_, conn->index);
    }
    was_up = true;
    logged_down = false;
    {
      std::lock_guard lock(conn->mu);
      conn->connected = true;
      conn->last_error.clear();
    }
    SetUp(conn, true);

    std::string lost;
    for (;;) {
      std::deque<Call> batch;
      bool stopping;
      {
        std::unique_lock lock(conn->mu);
        conn->cv.wait_for(lock, kIdlePing,
                          [conn] { return conn->stopping || !conn->queue.empty(); });
        stopping = conn->stopping;
        batch.swap(conn->queue);
        if (stopping) conn->connected = false;
      }
      queued_ -= batch.size();
      if (stopping) {
        for (Call& call : batch) {
          Complete(call, absl::CancelledError("the Redis client is shutting down"));
        }
        break;
      }
      if (batch.empty()) {
        if (!Ping(ctx)) {
          lost = ErrorText(ctx);
          break;
        }
        continue;
      }
      // Calls that waited in the queue past their deadline are not sent.
      auto now = Clock::now();
      for (auto it = batch.begin(); it != batch.end();) {
        if (it->deadline <= now) {
          Complete(*it, absl::DeadlineExceededError(
                            absl::StrCat("Redis at ", endpoint_text_, " did not answer within ",
                                         options_.call_timeout.count(), " ms (still queued)")));
          it = batch.erase(it);
        } else {
          ++it;
        }
      }
      if (batch.empty()) continue;
      if (!RoundTrip(ctx, batch)) {
        lost = ErrorText(ctx);
        if (ctx->err == 0) lost = "no answer within the call timeout";
        break;
      }
    }
    redisFree(ctx);
    if (lost.empty()) {  // stopping
      SetUp(conn, false);
      break;
    }
    spdlog::warn("redis {}: connection {} lost: {}; reconnecting", endpoint_text_, conn->index,
                 lost);
    logged_down = true;
    Disconnect(conn, lost);
  }
  // Calls queued after the loop ended (none can be: `connected` is false once stopping).
  std::deque<Call> rest;
  {
    std::lock_guard lock(conn->mu);
    conn->connected = false;
    rest.swap(conn->queue);
  }
  queued_ -= rest.size();
  for (Call& call : rest) Complete(call, absl::CancelledError("the Redis client is shutting down"));
}

// --- RedisClient -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::Create(RedisOptions options,
                                                                 prometheus::Registry* metrics) {
  auto endpoint = ParseRedisUrl(options.url);
  if (!endpoint.ok()) return endpoint.status();
  if (options.connections < 1 || options.connections > 64) {
    return absl::InvalidArgumentError("Redis client: connections must be between 1 and 64");
  }
  if (options.call_timeout.count() <= 0 || options.connect_timeout.count() <= 0) {
    return absl::InvalidArgumentError("Redis client: timeouts must be positive");
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(*endpoint), metrics);
  impl->Start();
  return std::unique_ptr<RedisClient>(new RedisClient(std::move(impl)));
}

RedisClient::RedisClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RedisClient::~RedisClient() = default;

void RedisClient::Command(std::string_view op, std::vector<std::string> argv, Callback done) {
  std::vector<std::vector<std::string>> commands;
  commands.push_back(std::move(argv));
  impl_->Submit(op, std::move(commands), std::nullopt,
                [done = std::move(done)](absl::StatusOr<Replies> replies) {
                  if (!replies.ok()) return done(replies.status());
                  RedisReply& r = replies->front();
                  if (r.type == RedisReply::Type::kError) {
                    return done(absl::InternalError("Redis: " + r.str));
                  }
                  done(std::move(r));
                });
}

void RedisClient::Pipeline(std::string_view op, std::vector<std::vector<std::string>> commands,
                           PipelineCallback done) {
  impl_->Submit(op, std::move(commands), std::nullopt, std::move(done));
}

void RedisClient::Eval(std::string_view op, const RedisScript& script,
                       std::vector<std::string> keys, std::vector<std::string> args,
                       Callback done) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(script.sha1());
  argv.push_back(std::to_string(keys.size()));
  for (auto& k : keys) argv.push_back(std::move(k));
  for (auto& a : args) argv.push_back(std::move(a));
  std::vector<std::vector<std::string>> commands;
  commands.push_back(std::move(argv));
  impl_->Submit(op, std::move(commands), script,
                [done = std::move(done)](absl::StatusOr<Replies> replies) {
                  if (!replies.ok()) return done(replies.status());
                  RedisReply& r = replies->front();
                  if (r.type == RedisReply::Type::kError) {
                    return done(absl::InternalError("Redis script: " + r.str));
                  }
                  done(std::move(r));
                });
}

BackendStatus RedisClient::status() const { return impl_->status(); }
std::string RedisClient::endpoint() const { return impl_->endpoint(); }
size_t RedisClient::queued() const { return impl_->queued(); }

}  // namespace anima::store
