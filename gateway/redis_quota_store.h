#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "absl/status/status.h"
#include "gateway/quota_store.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/store/redis_client.h"

namespace anima::gateway {

struct RedisQuotaOptions {
  // An in-flight slot is a lease that expires this long after it was taken or last renewed, so
  // the slots of a gateway that died free themselves. The gateway renews its live leases every
  // third of it.
  std::chrono::milliseconds lease_ttl{30000};
  // After Redis failed a call (unreachable, timed out), quotas are kept by the local fallback for
  // this long before one call tries Redis again.
  std::chrono::milliseconds retry_interval{1000};
  // A name for this gateway in its lease ids (with a random suffix added), for operators reading
  // the in-flight sets.
  std::string instance = "gw";
};

// Quotas shared by every gateway replica on Redis (docs/security.md, "Quotas across replicas").
//
// One principal's state is a handful of keys, all in one hash slot (Redis Cluster ready):
//   anima:quota:{P}:rate           hash: the GCRA theoretical arrival times (ms, Redis TIME) of
//                                  requests_per_second, requests_per_minute, tokens_per_minute,
//                                  each with the limit it was made for (a new limit: a full bucket)
//   anima:quota:{P}:inflight       sorted set: in-flight lease ids scored by their expiry
//   anima:quota:{P}:day:<N>        hash: requests, tokens, cost of UTC day N (days since epoch)
//   anima:quota:{P}:month:<M>      hash: the same for month M (year * 12 + month - 1)
// where P is the principal id escaped (EscapePrincipal) so that no two principals share a key
// and none can break out of the hash tag. Rates use Redis's clock, so gateways with skewed clocks
// agree; the day and month are the gateway's (UTC, NTP-synced; skew only matters at midnight).
//
// Admit is one atomic Lua script (one round trip); Release is one ZREM; Charge is one script;
// Usage is one read-only script.
//
// Redis unreachable, timing out or failing a script: the request is decided by an in-process
// QuotaTracker with the same limits (fail open to a local limit), counted in
// anima_gateway_quota_fallback_total{reason}; for retry_interval after a failure Redis is not
// asked at all, then one call probes it. anima_gateway_quota_backend_up says which it is;
// anima_gateway_quota_pending counts the Admit and Usage calls waiting for Redis now.
//
// Thread-safe. Callbacks run on the Redis client's I/O threads, or inline when the call fails at
// once or the fallback answers.
class RedisQuotaStore : public QuotaStore {
 public:
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  // `metrics` may be null. The clock picks the UTC day and month windows.
  RedisQuotaStore(std::unique_ptr<store::RedisClient> client, RedisQuotaOptions options,
                  prometheus::Registry* metrics, WallClock wall = std::chrono::system_clock::now);
  ~RedisQuotaStore() override;

  void Admit(const Principal& principal, bool spends, AdmitCallback done) override;
  void Release(const Principal& principal, const QuotaTicket& ticket) override;
  void Charge(const Principal& principal, int64_t tokens, double cost_usd) override;
  void Usage(const Principal& principal, UsageCallback done) override;
  void Quiesce() override;

  // Whether Redis answered the last call (the anima_gateway_quota_backend_up gauge).
  bool backend_up() const { return up_.load(); }

  // `id` as it appears in the keys: bytes outside [A-Za-z0-9._@-] become %XX, the empty id "%".
  // Injective, and never contains '{', '}' or ':'.
  static std::string EscapePrincipal(std::string_view id);
  // "anima:quota:{<escaped id>}:"
  static std::string KeyPrefix(std::string_view id);

 private:
  struct Lease {
    std::string key;  // the in-flight set
    std::string member;
  };
  enum class Reason { kUnavailable, kTimeout, kError };

  std::vector<std::string> AdmitKeys(const std::string& prefix,
                                     std::chrono::system_clock::time_point wall) const;
  // True when Redis should be asked now: it is up, or it is down and this call is the probe.
  bool ShouldAsk(Reason* reason);
  void MarkUp();
  // Returns why, for the fallback counter.
  Reason MarkDown(const absl::Status& status, std::string_view op);
  void CountFallback(Reason reason);
  void Started();   // an Admit or Usage went to Redis
  void Finished();  // an Admit or Usage callback ran
  void RenewLeases();

  std::unique_ptr<store::RedisClient> client_;
  const RedisQuotaOptions options_;
  const WallClock wall_;
  const std::string instance_;  // options.instance and a random suffix
  QuotaTracker fallback_;

  prometheus::Family<prometheus::Counter>* fallback_family_ = nullptr;
  prometheus::Gauge* up_gauge_ = nullptr;
  prometheus::Gauge* pending_gauge_ = nullptr;  // pending_, under pending_mu_

  std::atomic<bool> up_{true};
  std::mutex health_mu_;
  bool down_ = false;
  bool probing_ = false;
  Reason down_reason_ = Reason::kUnavailable;
  std::chrono::steady_clock::time_point retry_at_;

  std::mutex leases_mu_;
  std::unordered_map<uint64_t, Lease> leases_;  // taken on Redis and not released yet
  std::atomic<uint64_t> next_lease_{1};

  std::mutex pending_mu_;
  std::condition_variable pending_cv_;
  int64_t pending_ = 0;  // Admit and Usage callbacks still to run

  std::mutex renew_mu_;
  std::condition_variable renew_cv_;
  bool stopping_ = false;
  std::thread renewer_;
};

}  // namespace anima::gateway
