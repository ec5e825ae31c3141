#include "gateway/redis_quota_store.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/common/identity.h"
#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;
using store::RedisReply;

// Rates are GCRA over Redis's clock (TIME, allowed before writes since Redis 5 replicates a
// script's effects rather than the script): a bucket of `limit` tokens per `period` ms is one
// theoretical arrival time (TAT) in ms; it holds limit - (tat - now) * limit / period tokens, and
// it is full again at tat. This is the in-process TokenBucket to the millisecond, including the
// debt a charge after the fact may leave. `eps` forgives float rounding of stored TATs.
const store::RedisScript& AdmitScript() {
  static const store::RedisScript script(R"lua(
-- KEYS: rate hash, in-flight set, day hash, month hash.
-- ARGV: requests_per_second, requests_per_minute, tokens_per_minute, requests_in_flight,
--       spends (1/0), tokens_per_day, cost_per_day, cost_per_month, lease id ('' for none),
--       lease ttl ms, day hash expiry (unix s), month hash expiry (unix s).
-- Returns {admitted 1/0, refused limit, retry_after_ms (0 for budgets: the caller knows the
--          window's end), requests limit, remaining, reset_ms, tokens limit, remaining, reset_ms}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local eps = 0.001
local rps, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local st = redis.call('HMGET', KEYS[1], 's', 'sl', 'm', 'ml', 't', 'tl')
local function tat(v, made_for, limit)
  if limit <= 0 or tonumber(made_for) ~= limit then return now end
  return math.max(tonumber(v) or now, now)
end
local s, m, t = tat(st[1], st[2], rps), tat(st[3], st[4], rpm), tat(st[5], st[6], tpm)
local function available(limit, period, at) return limit - (at - now) * limit / period end
local function wait(limit, period, at)
  return math.max(1, math.ceil((1 - available(limit, period, at)) * period / limit))
end
local function result(admitted, limit, retry)
  local r = {admitted, limit, retry, 0, 0, 0, 0, 0, 0}
  local function trio(i, lim, period, at)
    r[i] = lim
    r[i + 1] = math.max(0, math.floor(available(lim, period, at) + eps))
    r[i + 2] = math.ceil(at - now)
  end
  if rpm > 0 then trio(4, rpm, 60000, m) elseif rps > 0 then trio(4, rps, 1000, s) end
  if tpm > 0 then trio(7, tpm, 60000, t) end
  return r
end
local in_flight = tonumber(ARGV[4])
if in_flight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= in_flight then return result(0, 'requests_in_flight', 100) end
end
if ARGV[5] == '1' then
  local day = redis.call('HMGET', KEYS[3], 'tokens', 'cost')
  local tpd, cpd, cpm = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  if tpd > 0 and (tonumber(day[1]) or 0) >= tpd then return result(0, 'tokens_per_day', 0) end
  if cpd > 0 and (tonumber(day[2]) or 0) >= cpd then return result(0, 'cost_per_day', 0) end
  if cpm > 0 and (tonumber(redis.call('HGET', KEYS[4], 'cost')) or 0) >= cpm then
    return result(0, 'cost_per_month', 0)
  end
  if tpm > 0 and available(tpm, 60000, t) < 1 - eps then
    return result(0, 'tokens_per_minute', wait(tpm, 60000, t))
  end
end
-- Both rates are checked before either is taken, so a refusal costs no token.
if rps > 0 and available(rps, 1000, s) < 1 - eps then
  return result(0, 'requests_per_second', wait(rps, 1000, s))
end
if rpm > 0 and available(rpm, 60000, m) < 1 - eps then
  return result(0, 'requests_per_minute', wait(rpm, 60000, m))
end
local fields = {}
if rps > 0 then
  s = s + 1000 / rps
  for _, v in ipairs({'s', string.format('%.3f', s), 'sl', ARGV[1]}) do fields[#fields + 1] = v end
end
if rpm > 0 then
  m = m + 60000 / rpm
  for _, v in ipairs({'m', string.format('%.3f', m), 'ml', ARGV[2]}) do fields[#fields + 1] = v end
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
  local last = math.max(s, m)
  if tpm > 0 then last = math.max(last, t) end
  -- Once every TAT has passed the hash says nothing a missing one would not: full buckets.
  redis.call('PEXPIRE', KEYS[1], math.ceil(last - now) + 1000)
end
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[10]), ARGV[9])
  redis.call('PEXPIRE', KEYS[2], ARGV[10])
end
redis.call('HINCRBY', KEYS[3], 'requests', 1)
redis.call('EXPIREAT', KEYS[3], ARGV[11])
redis.call('HINCRBY', KEYS[4], 'requests', 1)
redis.call('EXPIREAT', KEYS[4], ARGV[12])
return result(1, '', 0)
)lua");
  return script;
}

const store::RedisScript& ChargeScript() {
  static const store::RedisScript script(R"lua(
-- KEYS: rate hash, day hash, month hash.
-- ARGV: tokens_per_minute, tokens, cost (USD), day hash expiry, month hash expiry (unix s).
local tpm, tokens, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 and tokens > 0 then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
  local st = redis.call('HMGET', KEYS[1], 't', 'tl')
  local t = now
  if tonumber(st[2]) == tpm then t = math.max(tonumber(st[1]) or now, now) end
  t = t + tokens * 60000 / tpm
  redis.call('HSET', KEYS[1], 't', string.format('%.3f', t), 'tl', ARGV[1])
  local ttl = math.ceil(t - now) + 1000
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
if tokens > 0 then
  redis.call('HINCRBY', KEYS[2], 'tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[3], 'tokens', ARGV[2])
end
if cost > 0 then
  redis.call('HINCRBYFLOAT', KEYS[2], 'cost', ARGV[3])
  redis.call('HINCRBYFLOAT', KEYS[3], 'cost', ARGV[3])
end
redis.call('EXPIREAT', KEYS[2], ARGV[4])
redis.call('EXPIREAT', KEYS[3], ARGV[5])
return 1
)lua");
  return script;
}

const store::RedisScript& UsageScript() {
  static const store::RedisScript script(R"lua(
-- KEYS: rate hash, in-flight set, day hash, month hash. Reads only.
-- Returns {now ms, s, sl, m, ml, t, tl, in flight, day requests, tokens, cost, month requests,
--          tokens, cost}; absent fields are nil.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local st = redis.call('HMGET', KEYS[1], 's', 'sl', 'm', 'ml', 't', 'tl')
local in_flight = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.3f', now), '+inf')
local d = redis.call('HMGET', KEYS[3], 'requests', 'tokens', 'cost')
local mo = redis.call('HMGET', KEYS[4], 'requests', 'tokens', 'cost')
return {string.format('%.3f', now), st[1], st[2], st[3], st[4], st[5], st[6], in_flight,
        d[1], d[2], d[3], mo[1], mo[2], mo[3]}
)lua");
  return script;
}

const store::RedisScript& RenewScript() {
  static const store::RedisScript script(R"lua(
-- KEYS: in-flight set. ARGV: lease ttl ms, then lease ids. Renews those still in the set.
local time = redis.call('TIME')
local expiry = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
)lua");
  return script;
}

constexpr double kEps = 0.001;  // as the scripts' eps

milliseconds Until(system_clock::time_point from, system_clock::time_point to) {
  return std::max(milliseconds(1), std::chrono::ceil<milliseconds>(to - from));
}

int64_t UnixSeconds(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// A reply element as a number: an integer, a numeric string, else `otherwise` (nil).
double Number(const RedisReply& r, double otherwise = 0) {
  if (r.type == RedisReply::Type::kInteger) return static_cast<double>(r.integer);
  double v = 0;
  if (r.type == RedisReply::Type::kString && absl::SimpleAtod(r.str, &v)) return v;
  return otherwise;
}

std::string Usd(double v) { return absl::StrFormat("%.12g", v); }

// A rate's state as the usage script read it.
struct Bucket {
  double available = 0;
  milliseconds until_full{0};
};

Bucket BucketOf(int64_t limit, double period_ms, const RedisReply& tat, const RedisReply& made_for,
                double now) {
  double at = now;
  if (Number(made_for, -1) == static_cast<double>(limit)) at = std::max(now, Number(tat, now));
  return {static_cast<double>(limit) - (at - now) * static_cast<double>(limit) / period_ms,
          milliseconds(static_cast<int64_t>(std::ceil(at - now)))};
}

absl::Status ParseAdmit(const RedisReply& reply, const Principal& principal,
                        system_clock::time_point wall, QuotaDecision* decision) {
  if (reply.type != RedisReply::Type::kArray || reply.elements.size() != 9) {
    return absl::InternalError("quota admit script: unexpected reply");
  }
  const auto& e = reply.elements;
  auto trio = [&](size_t i) -> std::optional<RateLimitHeaders::Trio> {
    auto limit = static_cast<int64_t>(Number(e[i]));
    if (limit <= 0) return std::nullopt;
    return RateLimitHeaders::Trio{limit, static_cast<int64_t>(Number(e[i + 1])),
                                  milliseconds(static_cast<int64_t>(Number(e[i + 2])))};
  };
  decision->headers.requests = trio(3);
  decision->headers.tokens = trio(6);
  if (Number(e[0]) == 1) return absl::OkStatus();
  const std::string& limit = e[1].str;
  milliseconds retry(static_cast<int64_t>(Number(e[2])));
  if (limit == "tokens_per_day" || limit == "cost_per_day") {
    retry = Until(wall, QuotaTracker::NextDay(wall));
  } else if (limit == "cost_per_month") {
    retry = Until(wall, QuotaTracker::NextMonth(wall));
  } else if (limit.empty()) {
    return absl::InternalError("quota admit script: a refusal without a limit");
  }
  decision->refusal = MakeQuotaRefusal(principal, limit, retry);
  return absl::OkStatus();
}

absl::StatusOr<UsageReport> ParseUsage(const RedisReply& reply, const Principal& principal,
                                       system_clock::time_point wall) {
  if (reply.type != RedisReply::Type::kArray || reply.elements.size() != 14) {
    return absl::InternalError("quota usage script: unexpected reply");
  }
  const auto& e = reply.elements;
  double now = Number(e[0], -1);
  if (now < 0) return absl::InternalError("quota usage script: no time");
  const QuotaLimits& l = principal.limits;
  UsageReport r;
  r.principal = principal.id;
  r.tier = principal.tier;
  r.at = system_clock::time_point(
      std::chrono::duration_cast<system_clock::duration>(milliseconds(static_cast<int64_t>(now))));
  r.day = {static_cast<int64_t>(Number(e[8])), static_cast<int64_t>(Number(e[9])), Number(e[10])};
  r.month = {static_cast<int64_t>(Number(e[11])), static_cast<int64_t>(Number(e[12])),
             Number(e[13])};
  r.day_resets_at = QuotaTracker::NextDay(wall);
  r.month_resets_at = QuotaTracker::NextMonth(wall);
  auto bucket = [&](const char* name, const char* window, int64_t limit, double period, size_t i) {
    if (limit <= 0) return;
    Bucket b = BucketOf(limit, period, e[i], e[i + 1], now);
    auto max = static_cast<double>(limit);
    r.limits.push_back(UsageEntry{name, window, max, max - std::max(0.0, b.available),
                                  std::max(0.0, std::floor(b.available + kEps)),
                                  r.at + b.until_full});
  };
  bucket("requests_per_second", "second", l.requests_per_second, 1000, 1);
  bucket("requests_per_minute", "minute", l.requests_per_minute, 60000, 3);
  if (l.requests_in_flight > 0) {
    auto max = static_cast<double>(l.requests_in_flight);
    double used = Number(e[7]);
    r.limits.push_back(UsageEntry{"requests_in_flight", "now", max, used, std::max(0.0, max - used),
                                  std::nullopt});
  }
  bucket("tokens_per_minute", "minute", l.tokens_per_minute, 60000, 5);
  auto window = [&](const char* name, const char* span, double limit, double used,
                    system_clock::time_point resets) {
    if (limit <= 0) return;
    r.limits.push_back(UsageEntry{name, span, limit, used, std::max(0.0, limit - used), resets});
  };
  window("tokens_per_day", "day", static_cast<double>(l.tokens_per_day),
         static_cast<double>(r.day.tokens), r.day_resets_at);
  window("cost_per_day", "day", l.cost_per_day, r.day.cost_usd, r.day_resets_at);
  window("cost_per_month", "month", l.cost_per_month, r.month.cost_usd, r.month_resets_at);
  return r;
}

}  // namespace

std::string RedisQuotaStore::EscapePrincipal(std::string_view id) {
  if (id.empty()) return "%";
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(id.size());
  for (char c : id) {
    auto b = static_cast<unsigned char>(c);
    bool plain = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
                 b == '.' || b == '_' || b == '-' || b == '@';
    if (plain) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 15]);
    }
  }
  return out;
}

std::string RedisQuotaStore::KeyPrefix(std::string_view id) {
  return absl::StrCat("anima:quota:{", EscapePrincipal(id), "}:");
}

RedisQuotaStore::RedisQuotaStore(std::unique_ptr<store::RedisClient> client,
                                 RedisQuotaOptions options, prometheus::Registry* metrics,
                                 WallClock wall)
    : client_(std::move(client)),
      options_(std::move(options)),
      wall_(std::move(wall)),
      instance_(absl::StrCat(options_.instance, "-", common::NewSecureId("").substr(0, 12))) {
  if (metrics) {
    fallback_family_ = &prometheus::BuildCounter()
                            .Name("anima_gateway_quota_fallback_total")
                            .Help(
                                "Quota admissions decided by the gateway's local fallback "
                                "because Redis could not be asked, by reason.")
                            .Register(*metrics);
    // Every reason at 0 from the start, so that rate() sees the first fallback.
    for (const char* reason : {"unavailable", "timeout", "error"}) {
      fallback_family_->Add({{"reason", reason}});
    }
    up_gauge_ = &prometheus::BuildGauge()
                     .Name("anima_gateway_quota_backend_up")
                     .Help(
                         "1 while the shared quota store (Redis) answers, 0 while quotas are "
                         "kept by the local fallback.")
                     .Register(*metrics)
                     .Add({});
    up_gauge_->Set(1);
    pending_gauge_ = &prometheus::BuildGauge()
                          .Name("anima_gateway_quota_pending")
                          .Help(
                              "Requests and usage queries waiting for the shared quota store "
                              "(Redis) to answer now.")
                          .Register(*metrics)
                          .Add({});
  }
  renewer_ = std::thread([this] {
    auto every = std::max(milliseconds(10), options_.lease_ttl / 3);
    std::unique_lock<std::mutex> lock(renew_mu_);
    while (!renew_cv_.wait_for(lock, every, [this] { return stopping_; })) {
      lock.unlock();
      RenewLeases();
      lock.lock();
    }
  });
}

RedisQuotaStore::~RedisQuotaStore() {
  {
    std::lock_guard<std::mutex> lock(renew_mu_);
    stopping_ = true;
  }
  renew_cv_.notify_all();
  renewer_.join();
  // First, while every member its callbacks touch is still alive: calls still queued end with
  // Cancelled (and the fallback answers them).
  client_.reset();
}

std::vector<std::string> RedisQuotaStore::AdmitKeys(const std::string& prefix,
                                                    system_clock::time_point wall) const {
  return {prefix + "rate", prefix + "inflight",
          absl::StrCat(prefix, "day:", QuotaTracker::DayOf(wall)),
          absl::StrCat(prefix, "month:", QuotaTracker::MonthOf(wall))};
}

namespace {
// The window hashes live a day past their window, so a gateway whose clock is behind still
// finds the one it writes.
std::string DayExpiry(system_clock::time_point wall) {
  return absl::StrCat(UnixSeconds(QuotaTracker::NextDay(wall)) + 86400);
}
std::string MonthExpiry(system_clock::time_point wall) {
  return absl::StrCat(UnixSeconds(QuotaTracker::NextMonth(wall)) + 86400);
}
}  // namespace

void RedisQuotaStore::Admit(const Principal& principal, bool spends, AdmitCallback done) {
  Reason reason = Reason::kUnavailable;
  if (!ShouldAsk(&reason)) {
    CountFallback(reason);
    done(LocalQuotaStore::Decide(fallback_, principal, spends));
    return;
  }
  system_clock::time_point wall = wall_();
  const QuotaLimits& l = principal.limits;
  std::string prefix = KeyPrefix(principal.id);
  uint64_t lease = 0;
  std::string member;
  if (l.requests_in_flight > 0) {
    lease = next_lease_.fetch_add(1);
    member = absl::StrCat(instance_, ":", lease);
  }
  std::vector<std::string> args = {absl::StrCat(l.requests_per_second),
                                   absl::StrCat(l.requests_per_minute),
                                   absl::StrCat(l.tokens_per_minute),
                                   absl::StrCat(l.requests_in_flight),
                                   spends ? "1" : "0",
                                   absl::StrCat(l.tokens_per_day),
                                   Usd(l.cost_per_day),
                                   Usd(l.cost_per_month),
                                   member,
                                   absl::StrCat(options_.lease_ttl.count()),
                                   DayExpiry(wall),
                                   MonthExpiry(wall)};
  Started();
  client_->Eval(
      "quota_admit", AdmitScript(), AdmitKeys(prefix, wall), std::move(args),
      [this, principal, spends, wall, lease, member = std::move(member), key = prefix + "inflight",
       done = std::move(done)](absl::StatusOr<RedisReply> reply) {
        QuotaDecision decision;
        absl::Status status =
            reply.ok() ? ParseAdmit(*reply, principal, wall, &decision) : reply.status();
        if (status.ok()) {
          MarkUp();
          decision.ticket.local = false;
          if (decision.admitted() && lease != 0) {
            decision.ticket.lease = lease;
            std::lock_guard<std::mutex> lock(leases_mu_);
            leases_[lease] = Lease{key, member};
          }
        } else {
          CountFallback(MarkDown(status, "admit"));
          decision = LocalQuotaStore::Decide(fallback_, principal, spends);
        }
        done(std::move(decision));
        Finished();
      });
}

void RedisQuotaStore::Release(const Principal& principal, const QuotaTicket& ticket) {
  if (ticket.local) {
    fallback_.Release(principal);
    return;
  }
  if (ticket.lease == 0) return;
  Lease lease;
  {
    std::lock_guard<std::mutex> lock(leases_mu_);
    auto it = leases_.find(ticket.lease);
    if (it == leases_.end()) return;
    lease = std::move(it->second);
    leases_.erase(it);
  }
  // Not sent, or lost: the lease expires within lease_ttl, since nobody renews it any more.
  client_->Command("quota_release", {"ZREM", std::move(lease.key), std::move(lease.member)},
                   [this](absl::StatusOr<RedisReply> reply) {
                     if (reply.ok()) {
                       MarkUp();
                     } else {
                       MarkDown(reply.status(), "release");
                     }
                   });
}

void RedisQuotaStore::Charge(const Principal& principal, int64_t tokens, double cost_usd) {
  tokens = std::max<int64_t>(0, tokens);
  cost_usd = std::max(0.0, cost_usd);
  if (tokens == 0 && cost_usd == 0) return;
  Reason reason = Reason::kUnavailable;
  if (!ShouldAsk(&reason)) {
    fallback_.Charge(principal, tokens, cost_usd);
    return;
  }
  system_clock::time_point wall = wall_();
  std::vector<std::string> keys = AdmitKeys(KeyPrefix(principal.id), wall);
  keys.erase(keys.begin() + 1);  // no in-flight set
  client_->Eval("quota_charge", ChargeScript(), std::move(keys),
                {absl::StrCat(principal.limits.tokens_per_minute), absl::StrCat(tokens),
                 Usd(cost_usd), DayExpiry(wall), MonthExpiry(wall)},
                [this, principal, tokens, cost_usd](absl::StatusOr<RedisReply> reply) {
                  if (reply.ok()) {
                    MarkUp();
                    return;
                  }
                  MarkDown(reply.status(), "charge");
                  // Kept where the fallback's budgets can see it; the shared ones miss it.
                  fallback_.Charge(principal, tokens, cost_usd);
                });
}

void RedisQuotaStore::Usage(const Principal& principal, UsageCallback done) {
  Reason reason = Reason::kUnavailable;
  if (!ShouldAsk(&reason)) {
    done(fallback_.Usage(principal));
    return;
  }
  system_clock::time_point wall = wall_();
  Started();
  client_->Eval("quota_usage", UsageScript(), AdmitKeys(KeyPrefix(principal.id), wall), {},
                [this, principal, wall, done = std::move(done)](absl::StatusOr<RedisReply> reply) {
                  absl::StatusOr<UsageReport> report =
                      reply.ok() ? ParseUsage(*reply, principal, wall)
                                 : absl::StatusOr<UsageReport>(reply.status());
                  if (report.ok()) {
                    MarkUp();
                    done(std::move(*report));
                  } else {
                    MarkDown(report.status(), "usage");
                    done(fallback_.Usage(principal));
                  }
                  Finished();
                });
}

void RedisQuotaStore::Quiesce() {
  std::unique_lock<std::mutex> lock(pending_mu_);
  // Every call has a deadline (the client's call_timeout), so this ends; the bound is a guard.
  pending_cv_.wait_for(lock, std::chrono::seconds(10), [this] { return pending_ == 0; });
}

void RedisQuotaStore::Started() {
  std::lock_guard<std::mutex> lock(pending_mu_);
  ++pending_;
  if (pending_gauge_) pending_gauge_->Set(static_cast<double>(pending_));
}

void RedisQuotaStore::Finished() {
  std::lock_guard<std::mutex> lock(pending_mu_);
  if (--pending_ == 0) pending_cv_.notify_all();
  if (pending_gauge_) pending_gauge_->Set(static_cast<double>(pending_));
}

bool RedisQuotaStore::ShouldAsk(Reason* reason) {
  std::lock_guard<std::mutex> lock(health_mu_);
  if (!down_) return true;
  *reason = down_reason_;
  if (probing_ || std::chrono::steady_clock::now() < retry_at_) return false;
  probing_ = true;
  return true;
}

void RedisQuotaStore::MarkUp() {
  {
    std::lock_guard<std::mutex> lock(health_mu_);
    probing_ = false;
    if (!down_) return;
    down_ = false;
  }
  up_.store(true);
  if (up_gauge_) up_gauge_->Set(1);
  spdlog::info("quotas: redis {} answers again; quotas are shared again", client_->endpoint());
}

RedisQuotaStore::Reason RedisQuotaStore::MarkDown(const absl::Status& status, std::string_view op) {
  // The client shutting down, not Redis failing.
  if (status.code() == absl::StatusCode::kCancelled) return Reason::kUnavailable;
  Reason reason = status.code() == absl::StatusCode::kDeadlineExceeded ? Reason::kTimeout
                  : status.code() == absl::StatusCode::kInternal       ? Reason::kError
                                                                       : Reason::kUnavailable;
  {
    std::lock_guard<std::mutex> lock(health_mu_);
    probing_ = false;
    down_reason_ = reason;
    retry_at_ = std::chrono::steady_clock::now() + options_.retry_interval;
    if (down_) return reason;
    down_ = true;
  }
  up_.store(false);
  if (up_gauge_) up_gauge_->Set(0);
  // Once per outage, not per call: the fallback counter says how much it is used.
  spdlog::warn(
      "quotas: redis {} failed a {} ({}): each gateway keeps every principal's limits on its "
      "own until redis answers again",
      client_->endpoint(), op, status.ToString());
  return reason;
}

void RedisQuotaStore::CountFallback(Reason reason) {
  if (!fallback_family_) return;
  const char* label = reason == Reason::kTimeout ? "timeout"
                      : reason == Reason::kError ? "error"
                                                 : "unavailable";
  fallback_family_->Add({{"reason", label}}).Increment();
}

void RedisQuotaStore::RenewLeases() {
  std::map<std::string, std::vector<std::string>> by_key;
  {
    std::lock_guard<std::mutex> lock(leases_mu_);
    for (const auto& [id, lease] : leases_) by_key[lease.key].push_back(lease.member);
  }
  for (auto& [key, members] : by_key) {
    std::vector<std::string> args;
    args.reserve(members.size() + 1);
    args.push_back(absl::StrCat(options_.lease_ttl.count()));
    for (auto& m : members) args.push_back(std::move(m));
    client_->Eval("quota_renew", RenewScript(), {key}, std::move(args),
                  [](absl::StatusOr<RedisReply>) {});
  }
}

}  // namespace anima::gateway
