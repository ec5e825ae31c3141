#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "gateway/principals.h"
#include "gateway/quota.h"

namespace anima::gateway {

// What a store admitted, so that Release finds the slot again. Copyable, opaque to sessions.
struct QuotaTicket {
  // Counted by the in-process tracker: LocalQuotaStore always, RedisQuotaStore while Redis could
  // not be reached (its fallback).
  bool local = true;
  uint64_t lease = 0;  // RedisQuotaStore's in-flight lease; 0: none was taken
};

// The answer to an admission.
struct QuotaDecision {
  std::optional<QuotaRefusal> refusal;  // set: refused, and nothing was counted
  QuotaTicket ticket;                   // admitted: give it to Release exactly once
  // OpenAI's x-ratelimit-* values as this decision left them, refused or not, so the HTTP door
  // needs no second round trip for its headers.
  RateLimitHeaders headers;
  bool admitted() const { return !refusal; }
};

// Where the gateway keeps its principals' quotas (docs/security.md, "Quotas across replicas"):
// LocalQuotaStore in the process, RedisQuotaStore shared by every gateway replica. Sessions ask
// and continue in the callback; main.cc chooses which store they have.
//
// Threading: every method may be called from any thread. A callback runs exactly once, either
// inline (before the call returns: LocalQuotaStore, or a Redis call that fails at once) or on a
// thread of the store (a Redis I/O thread): it must not block, and a session posts (or
// dispatches) its continuation to its own executor.
class QuotaStore {
 public:
  using AdmitCallback = std::function<void(QuotaDecision)>;
  using UsageCallback = std::function<void(UsageReport)>;

  virtual ~QuotaStore() = default;

  // Checks `principal`'s rates and in-flight cap (and, when `spends` — a chat or a new job — its
  // token and cost budgets). Admitted, the request counts as started: Release its ticket exactly
  // once when it ends.
  virtual void Admit(const Principal& principal, bool spends, AdmitCallback done) = 0;
  // Fire and forget.
  virtual void Release(const Principal& principal, const QuotaTicket& ticket) = 0;
  // Charges what a request cost once its usage is known (tokens_per_minute after the fact, as the
  // budgets). Fire and forget.
  virtual void Charge(const Principal& principal, int64_t tokens, double cost_usd) = 0;
  // The usage answer (PROTOCOL.md §2, usage_query).
  virtual void Usage(const Principal& principal, UsageCallback done) = 0;
  // Blocks until no Admit or Usage callback is still to come. The gateway calls it on shutdown,
  // after its io threads stopped and before the io_context (which those callbacks post to) goes.
  virtual void Quiesce() {}
};

// The quotas of this gateway alone: a QuotaTracker, every callback inline. With N replicas a
// principal gets up to N times its limits.
class LocalQuotaStore : public QuotaStore {
 public:
  explicit LocalQuotaStore(QuotaTracker::SteadyClock steady = std::chrono::steady_clock::now,
                           QuotaTracker::WallClock wall = std::chrono::system_clock::now)
      : tracker_(std::move(steady), std::move(wall)) {}

  void Admit(const Principal& principal, bool spends, AdmitCallback done) override;
  void Release(const Principal& principal, const QuotaTicket& ticket) override;
  void Charge(const Principal& principal, int64_t tokens, double cost_usd) override;
  void Usage(const Principal& principal, UsageCallback done) override;

  // The decision the tracker makes now (also RedisQuotaStore's fallback).
  static QuotaDecision Decide(QuotaTracker& tracker, const Principal& principal, bool spends);

 private:
  QuotaTracker tracker_;
};

}  // namespace anima::gateway
