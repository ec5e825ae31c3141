#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "gateway/principals.h"
#include "gateway/token_bucket.h"

namespace anima::gateway {

// Why a request was refused by its principal's quotas.
struct QuotaRefusal {
  std::string limit;  // the protocol's name: requests_per_minute, tokens_per_day, ...
  std::chrono::milliseconds retry_after{0};
  // A budget (tokens per day, cost) rather than a rate: OpenAI's insufficient_quota, not
  // rate_limit_exceeded.
  bool budget = false;
  std::string message;
};

// One row of a usage answer (PROTOCOL.md §2, usage_query).
struct UsageEntry {
  std::string limit;
  std::string window;  // "second", "minute", "day", "month", "now"
  double limit_value = 0;
  double used = 0;
  double remaining = 0;
  std::optional<std::chrono::system_clock::time_point> resets_at;
};

struct UsageTotals {
  int64_t requests = 0;
  int64_t tokens = 0;
  double cost_usd = 0;
};

struct UsageReport {
  std::string principal;
  std::string tier;
  std::vector<UsageEntry> limits;  // configured limits only
  UsageTotals day, month;
  std::chrono::system_clock::time_point day_resets_at, month_resets_at;
  // When the report was taken, by the clock of whoever keeps the counts (the gateway, or Redis):
  // the rate entries' resets_at are `at` plus the time until their bucket is full.
  std::chrono::system_clock::time_point at;
};

// OpenAI's x-ratelimit-* headers: requests from requests_per_minute (else per second), tokens
// from tokens_per_minute. Absent when the principal has no such limit.
struct RateLimitHeaders {
  struct Trio {
    int64_t limit = 0;
    int64_t remaining = 0;
    std::chrono::milliseconds reset{0};  // until the bucket is full again
  };
  std::optional<Trio> requests, tokens;
};

// True when `limits` has a rate the x-ratelimit-* headers report.
bool HasRateLimitHeaders(const QuotaLimits& limits);

// The x-ratelimit-* values a usage report implies (what an answer that admitted nothing sends).
RateLimitHeaders HeadersFromUsage(const UsageReport& report);

// The refusal of `limit` for `principal`, with the message every quota store words the same way.
// `budget` follows from the limit (tokens_per_day, cost_*: budgets; the rest: rates).
QuotaRefusal MakeQuotaRefusal(const Principal& principal, std::string limit,
                              std::chrono::milliseconds retry_after);

// The per-principal quotas of one gateway (docs/security.md): rates as token buckets, requests in
// flight as a counter, token and cost budgets as calendar windows (UTC day and month) charged
// when a request's usage is known. Checked before dispatch; a request that would start over a
// budget is refused. Jobs are counted by self-coding, which gets the job limits in metadata.
// Sessions reach it through a QuotaStore (gateway/quota_store.h): LocalQuotaStore alone, or as
// the fallback of RedisQuotaStore while Redis cannot be reached.
//
// Thread-safe: principals are spread over shards, each with its own mutex, so connections of
// different principals rarely contend. Clocks are injected; tests never sleep.
class QuotaTracker {
 public:
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  explicit QuotaTracker(SteadyClock steady = std::chrono::steady_clock::now,
                        WallClock wall = std::chrono::system_clock::now);

  // Checks the principal's rates and in-flight cap (and, when `spends` — a chat or a new job —
  // its token and cost budgets). On success the request counts as started: call Release exactly
  // once when it ends.
  std::optional<QuotaRefusal> Admit(const Principal& principal, bool spends);
  void Release(const Principal& principal);
  // Charges what a request cost, once its usage is known.
  void Charge(const Principal& principal, int64_t tokens, double cost_usd);

  UsageReport Usage(const Principal& principal);
  RateLimitHeaders Headers(const Principal& principal);

  // UTC calendar windows, for tests and the usage report.
  static int64_t DayOf(std::chrono::system_clock::time_point t);
  static std::chrono::system_clock::time_point NextDay(std::chrono::system_clock::time_point t);
  static int64_t MonthOf(std::chrono::system_clock::time_point t);
  static std::chrono::system_clock::time_point NextMonth(std::chrono::system_clock::time_point t);

 private:
  struct State {
    QuotaLimits limits;  // the limits the buckets were made for
    TokenBucket per_second, per_minute, tokens_per_minute;
    int64_t in_flight = 0;
    int64_t day = -1, month = -1;
    UsageTotals day_totals, month_totals;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, State> states;
  };
  static constexpr size_t kShards = 16;

  Shard& ShardOf(const std::string& id);
  // The state of `principal`, its buckets matching its current limits and its windows current.
  State& StateLocked(Shard& shard, const Principal& principal,
                     std::chrono::steady_clock::time_point now,
                     std::chrono::system_clock::time_point wall);
  // Runs f(state, now, wall) under the lock of the principal's shard.
  template <typename F>
  auto WithState(const Principal& principal, F&& f);

  SteadyClock steady_;
  WallClock wall_;
  std::array<Shard, kShards> shards_;
};

}  // namespace anima::gateway
