#include "gateway/quota_store.h"

namespace anima::gateway {

QuotaDecision LocalQuotaStore::Decide(QuotaTracker& tracker, const Principal& principal,
                                      bool spends) {
  QuotaDecision decision;
  decision.refusal = tracker.Admit(principal, spends);
  decision.ticket.local = true;
  decision.headers = tracker.Headers(principal);
  return decision;
}

void LocalQuotaStore::Admit(const Principal& principal, bool spends, AdmitCallback done) {
  done(Decide(tracker_, principal, spends));
}

void LocalQuotaStore::Release(const Principal& principal, const QuotaTicket&) {
  tracker_.Release(principal);
}

void LocalQuotaStore::Charge(const Principal& principal, int64_t tokens, double cost_usd) {
  tracker_.Charge(principal, tokens, cost_usd);
}

void LocalQuotaStore::Usage(const Principal& principal, UsageCallback done) {
  done(tracker_.Usage(principal));
}

}  // namespace anima::gateway
